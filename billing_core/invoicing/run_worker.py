"""Run requests: the admin page records one; a worker outside the page script executes it.

Streamlit stops a page script when its user navigates away, so the Run button never does the
work itself. It records an InvoiceRun with status "requested" and starts `start_in_background`,
a daemon thread in the server process that never calls st.*. cron can pick up requests too
(`python -m billing_core invoice-run --pending`), e.g. when the dashboard restarted before its
thread finished. Claiming a request is a compare-and-swap on its status, so two executors never
run the same request, and the period's run lock keeps them from overlapping anyway.
"""

from __future__ import annotations

import logging
import threading
from datetime import datetime

from sqlalchemy import update
from sqlalchemy.engine import Engine
from sqlmodel import Session, col, select

from billing_core import audit
from billing_core.auth import Identity, require
from billing_core.config import Settings
from billing_core.db import session_scope
from billing_core.errors import BillingError, ValidationError
from billing_core.invoicing.push import Progress
from billing_core.invoicing.runs import RunOptions, RunResult, check_period, run_invoices
from billing_core.models import InvoiceRun
from billing_core.periods import Period, as_utc, utcnow
from billing_core.states import RunStatus

log = logging.getLogger(__name__)

ACTIVE = (RunStatus.REQUESTED, RunStatus.RUNNING)
DEFAULT_STALE_SECONDS: int = Settings.model_fields["run_lock_stale_seconds"].default


def request_run(
    session: Session,
    *,
    identity: Identity,
    period: Period,
    customer_id: int | None = None,
    now: datetime | None = None,
    stale_seconds: int = DEFAULT_STALE_SECONDS,
) -> InvoiceRun:
    """Record a run request for the button (admins only); a second click returns the first.

    A run still marked running whose heartbeat is older than `stale_seconds` (the
    RUN_LOCK_STALE_SECONDS setting) died (killed, or stopped by an error it could not record):
    it is marked failed and a new request is made, else the button would wait on it forever.
    """
    require(identity, "admin", "run invoices")
    check_period(period, now or utcnow())
    active = session.exec(
        select(InvoiceRun).where(
            InvoiceRun.period == str(period),
            col(InvoiceRun.status).in_(ACTIVE),
            col(InvoiceRun.dry_run).is_(False),
        )
    ).first()
    if active is not None and not _dead(active, stale_seconds):
        return active
    if active is not None:
        silent = int(
            (utcnow() - as_utc(active.heartbeat_at or active.requested_at)).total_seconds()
        )
        active.status = RunStatus.FAILED
        active.finished_at = utcnow()
        active.errors = [
            *active.errors,
            {
                "step": "run",
                "message": f"stopped without finishing (no heartbeat for {silent} s); "
                "a new run was requested",
            },
        ]
        session.add(active)
    run = InvoiceRun(
        period=str(period),
        trigger="button",
        actor=identity.actor,
        status=RunStatus.REQUESTED,
        customer_filter=customer_id,
    )
    session.add(run)
    session.flush()
    audit.record(
        session,
        actor=identity.actor,
        action="invoice_run.request",
        target=f"run {run.id} {period}",
        after={"customer_id": customer_id},
    )
    return run


def _dead(run: InvoiceRun, stale_seconds: int) -> bool:
    """A running run beats every few seconds (invoicing heartbeats); silence means it died.

    Measured on the real clock, like the heartbeats themselves. A request nobody claimed yet is
    never dead: the page starts a worker for it again.
    """
    if run.status != RunStatus.RUNNING:
        return False
    beat = as_utc(run.heartbeat_at or run.started_at or run.requested_at)
    return (utcnow() - beat).total_seconds() > stale_seconds


def claim(engine: Engine, run_id: int) -> bool:
    """Move a request from requested to running; False if another executor got it first."""
    table = InvoiceRun.__table__  # type: ignore[attr-defined]
    with engine.begin() as conn:
        count = conn.execute(
            update(table)
            .where(table.c.id == run_id, table.c.status == RunStatus.REQUESTED)
            .values(status=RunStatus.RUNNING)
        ).rowcount
    return count == 1


def execute_run(
    engine: Engine,
    settings: Settings,
    run_id: int,
    *,
    attach_test_cards: bool = False,
    progress: Progress | None = None,
) -> RunResult | None:
    """Execute one requested run (None if someone else claimed it); errors land on the run."""
    if not claim(engine, run_id):
        return None
    with session_scope(engine) as s:
        run = s.get(InvoiceRun, run_id)
        assert run is not None
        opts = RunOptions(
            period=Period.parse(run.period),
            customer_id=run.customer_filter,
            trigger=run.trigger,
            actor=run.actor,
            attach_test_cards=attach_test_cards,
        )
    try:
        return run_invoices(engine, settings, opts, run_id=run_id, progress=progress)
    except BillingError as exc:
        _record_failure(engine, run_id, str(exc))
        return None
    except Exception as exc:  # a bug: keep the worker alive and say so on the run
        log.exception("invoice run %s failed", run_id)
        _record_failure(engine, run_id, f"unexpected {type(exc).__name__}: {exc}")
        return None


def _record_failure(engine: Engine, run_id: int, message: str) -> None:
    with session_scope(engine) as s:
        run = s.get(InvoiceRun, run_id)
        if run is None:
            return
        if run.status in ACTIVE:
            run.status = RunStatus.FAILED
        if not any(e.get("message") == message for e in run.errors):
            run.errors = [*run.errors, {"step": "run", "message": message}]
        run.finished_at = utcnow()
        s.add(run)


def start_in_background(
    engine: Engine, settings: Settings, run_id: int, *, attach_test_cards: bool = False
) -> threading.Thread:
    """Execute a request in a daemon thread of this process (what the Run button does)."""
    thread = threading.Thread(
        target=execute_run,
        args=(engine, settings, run_id),
        kwargs={"attach_test_cards": attach_test_cards},
        name=f"invoice-run-{run_id}",
        daemon=True,
    )
    thread.start()
    return thread


def execute_pending(
    engine: Engine,
    settings: Settings,
    *,
    progress: Progress | None = None,
    attach_test_cards: bool = False,
) -> list[RunResult]:
    """Execute every recorded request, oldest first (cron: `invoice-run --pending`)."""
    with session_scope(engine) as s:
        ids = [
            r.id
            for r in s.exec(
                select(InvoiceRun)
                .where(InvoiceRun.status == RunStatus.REQUESTED)
                .order_by(col(InvoiceRun.id))
            ).all()
            if r.id is not None
        ]
    results = []
    for run_id in ids:
        result = execute_run(
            engine, settings, run_id, attach_test_cards=attach_test_cards, progress=progress
        )
        if result is not None:
            results.append(result)
    return results


def run_history(
    session: Session, period: Period | None = None, limit: int = 50
) -> list[InvoiceRun]:
    query = select(InvoiceRun).order_by(col(InvoiceRun.id).desc()).limit(limit)
    if period is not None:
        query = query.where(InvoiceRun.period == str(period))
    return list(session.exec(query).all())


def get_run(session: Session, run_id: int) -> InvoiceRun:
    run = session.get(InvoiceRun, run_id)
    if run is None:
        raise ValidationError(f"There is no invoice run {run_id}.")
    return run
