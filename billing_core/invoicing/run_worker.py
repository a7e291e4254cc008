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
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import func, update
from sqlalchemy.engine import Engine
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, col, select

from billing_core import audit
from billing_core.auth import Identity, require
from billing_core.config import Settings
from billing_core.db import session_scope
from billing_core.errors import BillingError, DatabaseError, LockHeld, ValidationError
from billing_core.invoicing.push import Progress
from billing_core.invoicing.run_lock import lock_name
from billing_core.invoicing.runs import RunOptions, RunResult, check_period, run_invoices
from billing_core.models import InvoiceRun, RunLock
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
    """Record a run request for the button (admins only); any click while one is active gets it.

    The database keeps one active (requested or running) run per period (the partial unique
    index `uq_invoicerun_active_period`): of several admins clicking at once, one inserts the
    request and the others get that row back, never an IntegrityError. A run still marked
    running whose heartbeat is older than `stale_seconds` (the RUN_LOCK_STALE_SECONDS setting)
    died (killed, or stopped by an error it could not record): it is marked failed (a
    compare-and-swap on its heartbeat) and a new request is made, else the button would wait on
    it forever.
    """
    require(identity, "admin", "run invoices")
    check_period(period, now or utcnow())
    for _ in range(_INSERT_ATTEMPTS):
        active = active_run(session, period)
        if active is not None and not _dead(active, stale_seconds):
            return active
        if active is not None and not _retire_dead(session, active, stale_seconds):
            continue  # someone else retired or took it over just now: look again
        run = _insert_request(session, identity, period, customer_id)
        if run is not None:
            return run
    raise DatabaseError(
        f"The runs of {period} kept changing under this click; reload the page and try again."
    )


# Attempts at converging on the period's one active run before giving up (each attempt lost a
# race to another writer; more than a few means something else keeps changing the runs).
_INSERT_ATTEMPTS = 5


def active_run(session: Session, period: Period) -> InvoiceRun | None:
    """The period's one requested or running run (the unique index allows no second)."""
    return session.exec(
        select(InvoiceRun)
        .where(
            InvoiceRun.period == str(period),
            col(InvoiceRun.status).in_(ACTIVE),
            col(InvoiceRun.dry_run).is_(False),
        )
        .execution_options(populate_existing=True)
    ).first()


def _insert_request(
    session: Session, identity: Identity, period: Period, customer_id: int | None
) -> InvoiceRun | None:
    """Insert the request and its audit entry; None if another active run won the race."""
    try:
        with session.begin_nested():
            run = InvoiceRun(
                period=str(period),
                trigger="button",
                actor=identity.actor,
                status=RunStatus.REQUESTED,
                customer_filter=customer_id,
            )
            session.add(run)
            session.flush()
    except IntegrityError:
        return None
    audit.record(
        session,
        actor=identity.actor,
        action="invoice_run.request",
        target=f"run {run.id} {period}",
        after={"customer_id": customer_id},
    )
    return run


def _retire_dead(session: Session, run: InvoiceRun, stale_seconds: int) -> bool:
    """Mark a dead run failed, if it is still the same dead run (compare-and-swap)."""
    beat = run.heartbeat_at or run.started_at or run.requested_at
    silent = int((utcnow() - as_utc(beat)).total_seconds())
    errors = [
        *run.errors,
        {
            "step": "run",
            "message": f"stopped without finishing (no heartbeat for {silent} s); "
            "a new run was requested",
        },
    ]
    table = InvoiceRun.__table__  # type: ignore[attr-defined]
    count = (
        session.connection()
        .execute(
            update(table)
            .where(
                table.c.id == run.id,
                table.c.status == RunStatus.RUNNING,
                _silent_since(table, utcnow() - timedelta(seconds=stale_seconds)),
            )
            .values(status=RunStatus.FAILED, finished_at=utcnow(), errors=errors)
        )
        .rowcount
    )
    return count == 1


def _dead(run: InvoiceRun, stale_seconds: int) -> bool:
    """A running run beats every few seconds (invoicing heartbeats); silence means it died.

    Measured on the real clock, like the heartbeats themselves. A request nobody claimed yet is
    never dead: the page starts a worker for it again.
    """
    if run.status != RunStatus.RUNNING:
        return False
    beat = as_utc(run.heartbeat_at or run.started_at or run.requested_at)
    return (utcnow() - beat).total_seconds() > stale_seconds


def _silent_since(table: Any, cutoff: datetime) -> Any:
    """SQL: the run's last sign of life (heartbeat, else start, else request) is before cutoff."""
    return func.coalesce(table.c.heartbeat_at, table.c.started_at, table.c.requested_at) < cutoff


def claim(engine: Engine, run_id: int) -> bool:
    """Move a request from requested to running; False if another executor got it first.

    The claim is the run's first sign of life (a request may have waited longer than the stale
    limit), so a takeover never mistakes a run just claimed for a dead one.
    """
    table = InvoiceRun.__table__  # type: ignore[attr-defined]
    now = utcnow()
    with engine.begin() as conn:
        count = conn.execute(
            update(table)
            .where(table.c.id == run_id, table.c.status == RunStatus.REQUESTED)
            .values(status=RunStatus.RUNNING, started_at=now, heartbeat_at=now)
        ).rowcount
    return count == 1


def execute_run(
    engine: Engine,
    settings: Settings,
    run_id: int,
    *,
    attach_test_cards: bool = False,
    progress: Progress | None = None,
    executor: str = "worker",
) -> RunResult | None:
    """Execute one requested run (None if someone else claimed it); errors land on the run.

    The run is audited as its requester's, with `executor` (the dashboard's worker, or the
    `cli`/`cron` actor of `--pending`) saying who carried it out.
    """
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
            executor=executor,
        )
    return _execute(engine, settings, opts, run_id, progress)


def _execute(
    engine: Engine,
    settings: Settings,
    opts: RunOptions,
    run_id: int,
    progress: Progress | None,
) -> RunResult | None:
    try:
        return run_invoices(engine, settings, opts, run_id=run_id, progress=progress)
    except LockHeld as exc:
        if opts.resume:  # the dead run's lock is not stale yet: the next takeover finishes it
            (progress or log.info)(f"run {run_id}: {exc}")
            return None
        _record_failure(engine, run_id, str(exc))
        return None
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
    actor: str = "cron",
    stale_seconds: int | None = None,
) -> list[RunResult]:
    """Execute every recorded request, oldest first, then finish runs whose worker died.

    cron's `invoice-run --pending`. A run still marked running whose heartbeat (and run lock)
    has been silent for `stale_seconds` (default RUN_LOCK_STALE_SECONDS) lost its process: it
    is taken over (a compare-and-swap on its heartbeat, so of two concurrent executors one
    wins) and finished under the run lock, resuming where it stopped. `actor` (`cli`, `cron`)
    is recorded as the executor in the audit log.
    """
    stale = settings.run_lock_stale_seconds if stale_seconds is None else stale_seconds
    with session_scope(engine) as s:
        requested = _run_ids(s, InvoiceRun.status == RunStatus.REQUESTED)
    results = []
    for run_id in requested:
        result = execute_run(
            engine,
            settings,
            run_id,
            attach_test_cards=attach_test_cards,
            progress=progress,
            executor=actor,
        )
        if result is not None:
            results.append(result)
    for run_id in dead_run_ids(engine, stale):
        result = resume_run(
            engine,
            settings,
            run_id,
            actor=actor,
            stale_seconds=stale,
            attach_test_cards=attach_test_cards,
            progress=progress,
        )
        if result is not None:
            results.append(result)
    return results


def _run_ids(session: Session, *conditions: Any) -> list[int]:
    query = (
        select(InvoiceRun.id)
        .where(col(InvoiceRun.dry_run).is_(False), *conditions)
        .order_by(col(InvoiceRun.id))
    )
    return [i for i in session.exec(query).all() if i is not None]


def dead_run_ids(engine: Engine, stale_seconds: int) -> list[int]:
    """Runs marked running whose heartbeat and run lock are older than `stale_seconds`.

    The lock is asked too: its heartbeat can be a beat younger than the row's, and a run
    whose lock is still fresh would only be refused (exit 3) by the lock.
    """
    cutoff = utcnow() - timedelta(seconds=stale_seconds)
    table = InvoiceRun.__table__  # type: ignore[attr-defined]
    with session_scope(engine) as s:
        candidates = s.exec(
            select(InvoiceRun).where(
                InvoiceRun.status == RunStatus.RUNNING,
                col(InvoiceRun.dry_run).is_(False),
                _silent_since(table, cutoff),
            )
        ).all()
        return [
            r.id
            for r in sorted(candidates, key=lambda r: r.id or 0)
            if r.id is not None and not _lock_fresh(s, r.period, cutoff)
        ]


def _lock_fresh(session: Session, period: str, cutoff: datetime) -> bool:
    lock = session.get(RunLock, lock_name(period))
    return lock is not None and as_utc(lock.heartbeat_at) >= cutoff


def take_over(session: Session, run_id: int, stale_seconds: int, *, actor: str) -> bool:
    """Claim a dead running run for this process (compare-and-swap on its heartbeat); audited.

    Of two executors that both found it dead, the first write moves its heartbeat to now, so
    the second's condition (silent since the cutoff) no longer holds and it gets False.
    """
    now = utcnow()
    run = session.get(InvoiceRun, run_id)
    if run is None:
        return False
    silent_since = run.heartbeat_at or run.started_at or run.requested_at
    table = InvoiceRun.__table__  # type: ignore[attr-defined]
    count = (
        session.connection()
        .execute(
            update(table)
            .where(
                table.c.id == run_id,
                table.c.status == RunStatus.RUNNING,
                _silent_since(table, now - timedelta(seconds=stale_seconds)),
            )
            .values(heartbeat_at=now)
        )
        .rowcount
    )
    if count != 1:
        return False
    audit.record(
        session,
        actor=actor,
        action="invoice_run.takeover",
        target=f"run {run_id} {run.period}",
        before={"status": RunStatus.RUNNING, "heartbeat_at": silent_since},
        after={"status": RunStatus.RUNNING, "heartbeat_at": now, "requested_by": run.actor},
        at=now,
    )
    return True


def resume_run(
    engine: Engine,
    settings: Settings,
    run_id: int,
    *,
    actor: str,
    stale_seconds: int,
    attach_test_cards: bool = False,
    progress: Progress | None = None,
) -> RunResult | None:
    """Take over a dead run and finish it; None if another executor took it first."""
    with session_scope(engine) as s:
        if not take_over(s, run_id, stale_seconds, actor=actor):
            return None
        run = s.get(InvoiceRun, run_id)
        assert run is not None
        opts = RunOptions(
            period=Period.parse(run.period),
            customer_id=run.customer_filter,
            trigger=run.trigger,
            actor=actor,
            attach_test_cards=attach_test_cards,
            executor=actor,
            resume=True,
        )
    (progress or log.info)(f"run {run_id} ({run.period}) stopped heartbeating: finishing it")
    return _execute(engine, settings, opts, run_id, progress)


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
