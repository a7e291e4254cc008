"""Stripe events: store every event (deduplicated by id), then apply it by re-reading its object.

Applying an event never trusts its payload: the object is read again from Stripe and the local
mirror takes Stripe's current state, so duplicates and out-of-order delivery end in the right
place. Each stored event keeps its outcome (applied, ignored, unmatched, error). An event whose
application fails (error) keeps its last error and attempt count and is tried again by later
passes after a growing wait (next_attempt_at), up to MAX_ATTEMPTS; each event is applied in its
own transaction, so one that keeps failing holds up no other."""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy.engine import Engine
from sqlalchemy.exc import IntegrityError
from sqlalchemy.sql.elements import ColumnElement
from sqlmodel import Session, and_, col, or_, select

from billing_core.corrections.credit_notes import apply_stripe_credit_note
from billing_core.db import session_scope
from billing_core.errors import PaymentProviderError, ValidationError
from billing_core.models import Customer, Invoice, StripeEvent
from billing_core.periods import utcnow
from billing_core.states import EventOutcome, InvoiceStatus
from billing_core.stripe import customers as stripe_customers
from billing_core.stripe import invoices as stripe_invoices
from billing_core.stripe import payments as stripe_payments
from billing_core.stripe.errors import StripeFailure
from billing_core.stripe.gateway import Gateway
from billing_core.stripe.keys import install_id, keys_for
from billing_core.stripe.mapping import (
    default_payment_method,
    find_local_invoice,
    mirror_customer,
    mirror_invoice,
    record_missing_locally,
)

log = logging.getLogger(__name__)


CURSOR = "stripe_events_cursor"


# Outcomes stored on StripeEvent.outcome once an event has been looked at.
APPLIED = EventOutcome.APPLIED


IGNORED = EventOutcome.IGNORED  # a type we do not act on: stored and visible, nothing changed


UNMATCHED = EventOutcome.UNMATCHED  # about an object we do not know locally (a finding is recorded)


ERROR = EventOutcome.ERROR  # applying failed: retried with backoff (attempts, next_attempt_at)


# A failed event is tried again after 1, 2, 4, ... minutes (at most 6 hours between attempts),
# MAX_ATTEMPTS times in all (about a day and a half); then it stays failed, shown on the Stripe
# events tab and reported by `sync` (exit 1).
MAX_ATTEMPTS = 12
# Reads of this many different objects failing in a row as an outage stop a pass: Stripe is
# down, and every further event would only spend its retries and an attempt.
OUTAGE_OBJECTS = 3
RETRY_BASE_SECONDS = 60
RETRY_MAX_SECONDS = 6 * 3600


# Invoices a refunded charge is looked up in when no stored PaymentIntent matches.
_REFUND_LOOKBACK = 12


@dataclass
class StoreResult:
    event: StripeEvent
    created: bool  # False: this event id was stored before (a duplicate)


@dataclass
class SyncResult:
    fetched: int = 0
    stored: int = 0
    outcomes: Counter[str] = field(default_factory=Counter)
    cursor_before: str | None = None
    cursor_after: str | None = None
    seconds: float = 0.0
    failed: list[FailedEvent] = field(default_factory=list)  # failed after this pass

    @property
    def applied(self) -> int:
        return sum(self.outcomes.values())

    @property
    def exit_code(self) -> int:
        """1 while any stored event failed to apply (retrying or given up), else 0."""
        return 1 if self.failed else 0

    def describe(self) -> str:
        parts = ", ".join(f"{n} {k}" for k, n in sorted(self.outcomes.items())) or "nothing to do"
        return (
            f"stripe events: {self.fetched} fetched, {self.stored} new; processed: {parts}; "
            f"{len(self.failed)} failed; cursor {self.cursor_after or 'unset'} "
            f"({self.seconds:.1f} s)"
        )


@dataclass(frozen=True)
class FailedEvent:
    """A stored event whose last attempt failed; next_attempt_at None: no more retries."""

    id: str
    type: str
    attempts: int
    next_attempt_at: datetime | None
    error: str

    @classmethod
    def of(cls, event: StripeEvent) -> FailedEvent:
        return cls(event.id, event.type, event.attempts, event.next_attempt_at, event.error or "")

    def describe(self) -> str:
        retry = (
            f"next attempt {self.next_attempt_at:%Y-%m-%d %H:%M} UTC"
            if self.next_attempt_at
            else f"given up after {self.attempts} attempts"
        )
        return f"failed: {self.id} {self.type} ({self.attempts} attempt(s), {retry}): {self.error}"


def parse_event(payload: Any) -> dict[str, Any]:
    """Check an event's shape (id, type, created, data.object) or raise ValidationError."""
    problems: list[str] = []
    if not isinstance(payload, dict):
        raise ValidationError("A Stripe event must be a JSON object.")
    event_id = payload.get("id")
    if not isinstance(event_id, str) or not event_id.startswith("evt_"):
        problems.append("id must be a string starting with evt_")
    if not isinstance(payload.get("type"), str) or not payload.get("type"):
        problems.append("type must be a non-empty string")
    created = payload.get("created")
    if isinstance(created, bool) or not isinstance(created, int):
        problems.append("created must be a Unix timestamp")
    data = payload.get("data")
    if not isinstance(data, dict) or not isinstance(data.get("object"), dict):
        problems.append("data.object must be an object")
    if problems:
        raise ValidationError("This is not a Stripe event; nothing was stored.", problems)
    return payload


def _object_id(payload: dict[str, Any]) -> str | None:
    obj_id = payload["data"]["object"].get("id")
    return obj_id if isinstance(obj_id, str) else None


def store_event(session: Session, payload: dict[str, Any], *, source: str) -> StoreResult:
    """Store an event unless its id is already stored; the unique id makes this race-safe."""
    parse_event(payload)
    existing = session.get(StripeEvent, payload["id"])
    if existing is not None:
        return StoreResult(existing, created=False)
    event = StripeEvent(
        id=payload["id"],
        type=payload["type"],
        created=datetime.fromtimestamp(payload["created"], UTC),
        object_id=_object_id(payload),
        payload=payload,
        source=source,
    )
    try:
        with session.begin_nested():
            session.add(event)
    except IntegrityError:  # the other way in (webhook vs sync) stored it a moment ago
        stored = session.get(StripeEvent, payload["id"])
        if stored is None:
            raise
        return StoreResult(stored, created=False)
    return StoreResult(event, created=True)


@dataclass
class _Ctx:
    session: Session
    gw: Gateway
    event: StripeEvent
    now: datetime

    @property
    def obj(self) -> dict[str, Any]:
        data: dict[str, Any] = self.event.payload["data"]["object"]
        return data


def _apply_invoice(ctx: _Ctx) -> EventOutcome:
    remote = stripe_invoices.read_invoice(ctx.gw, str(ctx.obj["id"]))
    install = install_id(ctx.session)
    if not remote.metadata.mine(install):
        return EventOutcome.IGNORED  # another database sharing this Stripe account made it
    if remote.metadata.retired:
        return EventOutcome.IGNORED  # left on a deleted customer; its invoice was pushed anew
    local = find_local_invoice(ctx.session, remote, install)
    if local is None:
        record_missing_locally(ctx.session, remote, ctx.now)
        ctx.event.error = (
            f"Stripe invoice {remote.id} is not known locally; recorded as a "
            "reconciliation finding (missing_locally)."
        )
        return UNMATCHED
    mirror_invoice(local, remote, ctx.now)
    ctx.session.add(local)
    ctx.event.invoice_id = local.id
    if ctx.event.type == "invoice.payment_failed" and remote.payment_error is not None:
        ctx.event.detail = remote.payment_error.describe()
    return APPLIED


def _refresh_customer(ctx: _Ctx, customer_id: str) -> EventOutcome:
    local = ctx.session.exec(
        select(Customer).where(Customer.stripe_customer_id == customer_id)
    ).first()
    if local is None:
        ctx.event.error = f"Stripe customer {customer_id} is not linked to a local customer."
        return UNMATCHED
    mirror_customer(local, stripe_customers.read_customer(ctx.gw, customer_id), ctx.now)
    ctx.session.add(local)
    return APPLIED


def _apply_customer(ctx: _Ctx) -> EventOutcome:
    return _refresh_customer(ctx, str(ctx.obj["id"]))


def _apply_payment_method(ctx: _Ctx) -> EventOutcome:
    customer = ctx.obj.get("customer")
    if not isinstance(customer, str):
        return IGNORED  # detached or not a customer's method
    return _refresh_customer(ctx, customer)


def _apply_setup_intent(ctx: _Ctx) -> EventOutcome:
    seti = stripe_payments.read_setup_intent(ctx.gw, str(ctx.obj["id"]))
    customer, pm = seti.get("customer"), seti.get("payment_method")
    if (
        not isinstance(customer, str)
        or not isinstance(pm, str)
        or seti.get("status") != "succeeded"
    ):
        return IGNORED
    remote = stripe_customers.read_customer(ctx.gw, customer)
    if not default_payment_method(remote):
        # Checkout in setup mode attaches the card but does not make it the default.
        key = keys_for(ctx.session).default_payment_method(str(seti["id"]))
        stripe_payments.set_default_payment_method(ctx.gw, customer, pm, key=key)
    return _refresh_customer(ctx, customer)


def _invoice_for_charge(ctx: _Ctx, charge: dict[str, Any]) -> Invoice | None:
    intent = charge.get("payment_intent")
    if isinstance(intent, str):
        found = ctx.session.exec(
            select(Invoice).where(Invoice.stripe_payment_intent_id == intent)
        ).first()
        if found is not None:
            return found
    # Charges do not name their invoice: read the customer's recent paid invoices' payments.
    customer = ctx.session.exec(
        select(Customer).where(Customer.stripe_customer_id == charge.get("customer"))
    ).first()
    if customer is None or not isinstance(intent, str):
        return None
    candidates = ctx.session.exec(
        select(Invoice)
        .where(
            Invoice.customer_id == customer.id,
            col(Invoice.stripe_invoice_id).is_not(None),
            Invoice.status == InvoiceStatus.PAID,
        )
        .order_by(col(Invoice.period).desc())
        .limit(_REFUND_LOOKBACK)
    ).all()
    for candidate in candidates:
        remote = stripe_invoices.read_invoice(ctx.gw, str(candidate.stripe_invoice_id))
        if remote.paying_intent == intent:
            mirror_invoice(candidate, remote, ctx.now)
            return candidate
    return None


def _apply_charge_refunded(ctx: _Ctx) -> EventOutcome:
    charge = stripe_payments.read_charge(ctx.gw, str(ctx.obj["id"]))
    local = _invoice_for_charge(ctx, charge)
    if local is None:
        ctx.event.error = f"Refunded charge {charge['id']} matches no local invoice."
        return UNMATCHED
    local.amount_refunded_minor = int(charge.get("amount_refunded") or 0)
    local.updated_at = ctx.now
    ctx.session.add(local)
    ctx.event.invoice_id = local.id
    return APPLIED


def _apply_credit_note(ctx: _Ctx) -> EventOutcome:
    found = apply_stripe_credit_note(ctx.session, ctx.gw, str(ctx.obj["id"]), ctx.now)
    if found is None:
        ctx.event.error = "The credit note's invoice is not a local invoice."
        return UNMATCHED
    ctx.event.invoice_id = found
    return APPLIED


_INVOICE_EVENTS = (
    "invoice.created",
    "invoice.updated",
    "invoice.finalized",
    "invoice.sent",
    "invoice.paid",
    "invoice.payment_succeeded",
    "invoice.payment_failed",
    "invoice.voided",
    "invoice.marked_uncollectible",
)


HANDLERS: dict[str, Callable[[_Ctx], EventOutcome]] = {
    **dict.fromkeys(_INVOICE_EVENTS, _apply_invoice),
    "customer.updated": _apply_customer,
    "payment_method.attached": _apply_payment_method,
    "setup_intent.succeeded": _apply_setup_intent,
    "charge.refunded": _apply_charge_refunded,
    **dict.fromkeys(
        ("credit_note.created", "credit_note.updated", "credit_note.voided"), _apply_credit_note
    ),
}


def apply_event(
    session: Session, gw: Gateway, event: StripeEvent, *, now: datetime
) -> EventOutcome:
    """Apply one stored event and mark it processed.

    Raises whatever prevented applying it (StripeFailure, unexpected data, a bug): the caller
    rolls the transaction back and records the failure with `record_failure`.
    """
    handler = HANDLERS.get(event.type)
    event.error = None
    outcome = IGNORED if handler is None else handler(_Ctx(session, gw, event, now))
    event.outcome = outcome
    event.processed_at = now
    event.next_attempt_at = None
    session.add(event)
    return outcome


def retry_delay(attempts: int) -> timedelta:
    """Wait after the n-th failed attempt (n >= 1): 1, 2, 4, ... minutes, at most 6 hours."""
    seconds = RETRY_BASE_SECONDS * 2 ** max(0, attempts - 1)
    return timedelta(seconds=min(seconds, RETRY_MAX_SECONDS))


def failure_text(event: StripeEvent, exc: Exception) -> str:
    """The sentence stored as the event's last error."""
    if isinstance(exc, StripeFailure):
        return str(exc)  # names the read that failed; the event is named beside it
    if isinstance(exc, (KeyError, TypeError, ValueError)):
        return f"Cannot apply {event.type}: unexpected data ({type(exc).__name__}: {exc})."
    return f"Cannot apply {event.type}: {type(exc).__name__}: {exc}"


def record_failure(event: StripeEvent, error: str, now: datetime) -> None:
    """Count a failed attempt; schedule the next one, or stop at MAX_ATTEMPTS (stays failed)."""
    event.outcome = ERROR
    event.error = error
    event.attempts += 1
    event.processed_at = now
    event.next_attempt_at = (
        now + retry_delay(event.attempts) if event.attempts < MAX_ATTEMPTS else None
    )


def _due(event: StripeEvent, now: datetime) -> bool:
    if event.processed_at is None:
        return True
    return (
        event.outcome == ERROR
        and event.next_attempt_at is not None
        and event.next_attempt_at <= now
    )


def pending_event_ids(
    session: Session, limit: int = 500, *, now: datetime | None = None
) -> list[str]:
    """Stored but not yet applied, oldest first; with `now`, also failed events due a retry."""
    waiting: ColumnElement[bool] = col(StripeEvent.processed_at).is_(None)
    if now is not None:
        waiting = or_(
            waiting,
            and_(
                StripeEvent.outcome == ERROR,
                col(StripeEvent.next_attempt_at).is_not(None),
                col(StripeEvent.next_attempt_at) <= now,
            ),
        )
    query = (
        select(StripeEvent.id)
        .where(waiting)
        .order_by(col(StripeEvent.created), col(StripeEvent.received_at))
        .limit(limit)
    )
    return list(session.exec(query).all())


def failed_events(session: Session, limit: int = 200) -> list[StripeEvent]:
    """Events whose last attempt failed (awaiting a retry or given up), oldest first."""
    query = (
        select(StripeEvent)
        .where(StripeEvent.outcome == ERROR)
        .order_by(col(StripeEvent.created), col(StripeEvent.received_at))
        .limit(limit)
    )
    return list(session.exec(query).all())


def make_failed_due(session: Session, now: datetime) -> int:
    """Make every failed event due now, those given up included (after fixing the cause).

    Returns how many; each gets one more attempt, and MAX_ATTEMPTS more only by doing it again.
    """
    failed = failed_events(session, limit=100_000)
    for event in failed:
        event.next_attempt_at = now
        session.add(event)
    return len(failed)


@dataclass
class ReadMemo:
    """Objects re-read during one processing pass, so later events about them skip the read.

    Sound only for events stored before the pass began: the read is newer than each of them,
    so it already shows what they announce. A webhook stored mid-pass is read again. Failures
    are not remembered: each event's attempt is its own.
    """

    started: datetime
    results: dict[tuple[str, str], tuple[EventOutcome, int | None, str | None]] = field(
        default_factory=dict
    )
    # Objects whose reads failed as an outage (5xx, network, 429) since the last success.
    failing_objects: set[str] = field(default_factory=set)

    @staticmethod
    def key(event: StripeEvent) -> tuple[str, str] | None:
        handler = HANDLERS.get(event.type)
        return (handler.__name__, event.object_id) if handler and event.object_id else None


def _apply_with_memo(
    session: Session,
    gw: Gateway,
    event: StripeEvent,
    now: datetime,
    memo: ReadMemo | None,
) -> EventOutcome:
    key = ReadMemo.key(event)
    if memo is not None and key is not None:
        known = memo.results.get(key)
        if known is not None and event.received_at <= memo.started:
            event.outcome, event.invoice_id, event.error = known
            event.processed_at = now
            event.next_attempt_at = None
            session.add(event)
            return known[0]
    outcome = apply_event(session, gw, event, now=now)
    if memo is not None and key is not None:
        memo.results[key] = (outcome, event.invoice_id, event.error)
    return outcome


def process_event_id(
    engine: Engine,
    gw: Gateway,
    event_id: str,
    *,
    now_fn: Callable[[], datetime],
    memo: ReadMemo | None = None,
) -> str | None:
    """Apply one stored event in its own transaction, if it is pending or due a retry.

    Returns its outcome, ERROR when this attempt failed (the failure is recorded on the event
    in a second transaction, after the first rolled back), None when there was nothing to do.
    """
    now = now_fn()
    try:
        with session_scope(engine) as session:
            event = session.get(StripeEvent, event_id)
            if event is None or not _due(event, now):
                return None
            outcome = _apply_with_memo(session, gw, event, now, memo)
        if memo is not None:
            memo.failing_objects.clear()
        return outcome
    # Any failure, a bug included, is recorded and retried later: one event whose application
    # breaks must not stop the ones after it, and must not be lost.
    except Exception as exc:
        with session_scope(engine) as session:
            event = session.get(StripeEvent, event_id)
            if event is None:
                raise
            record_failure(event, failure_text(event, exc), now)
            session.add(event)
            if memo is not None and isinstance(exc, StripeFailure) and exc.transient:
                memo.failing_objects.add(event.object_id or event.id)
            log.warning(
                "stripe event %s (%s) failed, attempt %d: %s",
                event.id,
                event.type,
                event.attempts,
                event.error,
            )
        return ERROR


def process_pending(
    engine: Engine,
    gw: Gateway,
    *,
    now_fn: Callable[[], datetime] = utcnow,
    retries_only: bool = False,
) -> Counter[str]:
    """Apply every pending event and every failed one due a retry, oldest first, each in its
    own transaction; a failure is recorded on its event and the pass goes on.

    Raises PaymentProviderError when reads of OUTAGE_OBJECTS different objects fail in a row
    as an outage (Stripe down): the events not tried yet wait for the next pass.
    `retries_only`: only failed events due a retry (the webhook receiver's extra pass)."""
    outcomes: Counter[str] = Counter()
    memo = ReadMemo(started=utcnow())
    due_at = now_fn()
    tried: set[str] = set()
    while True:
        with session_scope(engine) as session:
            batch = [
                i
                for i in pending_event_ids(session, now=due_at)
                if i not in tried and (not retries_only or _is_retry(session, i))
            ]
        if not batch:
            return outcomes
        for event_id in batch:
            tried.add(event_id)
            outcome = process_event_id(engine, gw, event_id, now_fn=now_fn, memo=memo)
            if outcome:
                outcomes[outcome] += 1
            if len(memo.failing_objects) >= OUTAGE_OBJECTS:
                raise PaymentProviderError(
                    f"Stripe kept failing for {len(memo.failing_objects)} different objects in "
                    "a row, so this pass stopped; the events not applied are kept and retried "
                    "by the next pass."
                )


def _is_retry(session: Session, event_id: str) -> bool:
    event = session.get(StripeEvent, event_id)
    return event is not None and event.processed_at is not None
