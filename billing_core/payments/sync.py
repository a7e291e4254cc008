"""`sync`: pull Stripe's Events API onward from a cursor (cron; no public URL needed).

The cursor moves once every new event is stored; an event that fails to apply is retried
from the database by later passes (with backoff) and makes `sync` exit 1. The webhook receiver
(`payments.webhook_server`) is the other way in; both store and apply through
`payments.events`."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from datetime import datetime
from typing import Any

from sqlalchemy.engine import Engine
from sqlalchemy.exc import SQLAlchemyError
from sqlmodel import Session, col, select

from billing_core import audit
from billing_core.db import session_scope
from billing_core.errors import BillingError, PaymentProviderError
from billing_core.models import Invoice, StripeEvent, SyncState
from billing_core.payments.events import (
    CURSOR,
    FailedEvent,
    SyncResult,
    failed_events,
    make_failed_due,
    process_pending,
    store_event,
)
from billing_core.periods import utcnow
from billing_core.states import EventOutcome, display_status
from billing_core.stripe.errors import StripeFailure
from billing_core.stripe.events import EVENTS_PAGE_SIZE, events_page
from billing_core.stripe.gateway import Gateway

log = logging.getLogger(__name__)


def get_cursor(session: Session) -> str | None:
    state = session.get(SyncState, CURSOR)
    return state.value if state else None


def set_cursor(session: Session, value: str | None, now: datetime) -> None:
    state = session.get(SyncState, CURSOR)
    if value is None:
        if state is not None:
            session.delete(state)
        return
    if state is None:
        state = SyncState(name=CURSOR, value=value)
    state.value = value
    state.updated_at = now
    session.add(state)


def _store_page(engine: Engine, page: list[dict[str, Any]]) -> int:
    new = 0
    with session_scope(engine) as session:
        for payload in reversed(page):  # oldest first, so received order follows Stripe's
            new += store_event(session, payload, source="sync").created
    return new


def _fetch_newer(
    engine: Engine, gw: Gateway, cursor: str, page_size: int, result: SyncResult
) -> str:
    """Walk towards newer events from the cursor, a page at a time; returns the newest id."""
    newest = cursor
    while True:
        page, has_more = events_page(gw, ending_before=newest, limit=page_size)
        if not page:
            return newest
        result.fetched += len(page)
        result.stored += _store_page(engine, page)
        newest = str(page[0]["id"])
        if not has_more:
            return newest


def _fetch_all(engine: Engine, gw: Gateway, page_size: int, result: SyncResult) -> str | None:
    """First sync: everything Stripe still holds (30 days), newest page first."""
    newest: str | None = None
    after: str | None = None
    while True:
        page, has_more = events_page(gw, starting_after=after, limit=page_size)
        if not page:
            return newest
        newest = newest or str(page[0]["id"])
        result.fetched += len(page)
        result.stored += _store_page(engine, page)
        after = str(page[-1]["id"])
        if not has_more:
            return newest


def _cursor_gone(cursor: str) -> PaymentProviderError:
    return PaymentProviderError(
        f"Stripe no longer knows the sync cursor event {cursor} (Stripe keeps events for 30 "
        "days, or STRIPE_API_KEY points at another account). Run `python -m billing_core sync "
        "--reset` to start again from the oldest event Stripe holds; events already stored are "
        "not applied twice."
    )


def sync(
    engine: Engine,
    gw: Gateway,
    *,
    page_size: int = EVENTS_PAGE_SIZE,
    reset: bool = False,
    retry_failed: bool = False,
    now_fn: Callable[[], datetime] = utcnow,
    actor: str = "system",
) -> SyncResult:
    """Pull new events, store them, apply every pending one and retry failed ones that are due.

    Raises PaymentProviderError when events cannot be listed (the cursor stays); events that
    fail to apply are in `result.failed` (exit code 1). `retry_failed`: every failed event is
    tried in this pass, its backoff and the attempt cap notwithstanding. A pass that updated
    invoices from Stripe is audited as `actor` (`cli`, `cron`): which invoices, and the status
    each has now."""
    started = time.perf_counter()
    result = SyncResult()
    with session_scope(engine) as session:
        result.cursor_before = None if reset else get_cursor(session)
        if retry_failed:
            make_failed_due(session, now_fn())
    cursor = result.cursor_before
    try:
        if cursor:
            newest: str | None = _fetch_newer(engine, gw, cursor, page_size, result)
        else:
            newest = _fetch_all(engine, gw, page_size, result)
    except StripeFailure as exc:
        if exc.kind == "invalid":
            if cursor and exc.param == "ending_before":
                raise _cursor_gone(cursor) from None
            raise exc.reworded("listing Stripe events") from None
        raise exc.reworded("listing Stripe events (the sync cursor was not moved)") from None
    # Every fetched event is stored, so the cursor may move past one that fails to apply:
    # a failed event is retried from the database by later passes, not re-fetched.
    applying_since = now_fn()
    try:
        result.outcomes = process_pending(engine, gw, now_fn=now_fn)
    except PaymentProviderError as exc:  # an outage: stored events wait for the next pass
        raise PaymentProviderError(f"{exc} The sync cursor was not moved.") from None
    finally:  # events applied before a failure changed invoices too
        _audit_pass(engine, actor, applying_since, result)
    with session_scope(engine) as session:
        set_cursor(session, newest, now_fn())
        result.failed = [FailedEvent.of(e) for e in failed_events(session)]
    result.cursor_after = newest
    result.seconds = time.perf_counter() - started
    log.info(result.describe())
    for failed in result.failed:
        log.warning(failed.describe())
    return result


# Invoices named in one audit entry of a sync pass; the count says how many there were.
_AUDIT_INVOICES = 200


def _audit_pass(engine: Engine, actor: str, since: datetime, result: SyncResult) -> None:
    """One audit entry for a pass that updated invoices (their ids and status now)."""
    try:
        with session_scope(engine) as session:
            changed = session.exec(
                select(Invoice.id, Invoice.status, Invoice.outcome)
                .join(StripeEvent, col(StripeEvent.invoice_id) == col(Invoice.id))
                .where(
                    col(StripeEvent.processed_at) >= since,
                    StripeEvent.outcome == EventOutcome.APPLIED,
                )
                .distinct()
                .order_by(col(Invoice.id))
            ).all()
            if not changed:
                return
            audit.record(
                session,
                actor=actor,
                action="stripe.sync",
                target=f"{len(changed)} invoices",
                after={
                    "events_fetched": result.fetched,
                    "invoices_updated": len(changed),
                    "invoices": {
                        str(i): display_status(st, oc) for i, st, oc in changed[:_AUDIT_INVOICES]
                    },
                },
            )
    except (BillingError, SQLAlchemyError):  # never hide the pass's own outcome
        log.warning("could not audit the sync pass", exc_info=True)


def recent_events(
    session: Session, *, limit: int = 200, outcome: str | None = None
) -> list[StripeEvent]:
    """Newest stored events first, for the page's event list."""
    query = select(StripeEvent)
    if outcome:
        query = query.where(StripeEvent.outcome == outcome)
    query = query.order_by(col(StripeEvent.created).desc(), col(StripeEvent.received_at).desc())
    return list(session.exec(query.limit(limit)).all())
