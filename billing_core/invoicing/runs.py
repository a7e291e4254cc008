"""Invoice runs: drafts for a period, then a resumable, idempotent push of each to Stripe.

A run for period P (DESIGN.md section 6):
1. refuses a period that is not closed yet, then takes the run lock for P;
2. prices every active customer that has no invoice for P yet and saves all drafts in one
   transaction (`invoicing.drafts`);
3. pushes every unfinished invoice of P with bounded concurrency under one rate limiter
   (`invoicing.push`); one customer's failure is recorded and the others carry on.
The run row holds the heartbeat, counts and errors the run page shows."""

from __future__ import annotations

import logging
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy.engine import Engine
from sqlalchemy.exc import IntegrityError, SQLAlchemyError
from sqlmodel import Session, col, or_, select

from billing_core import audit
from billing_core.config import Settings
from billing_core.costs.refresh import refresh_for_billing
from billing_core.costs.snapshots import CostSource
from billing_core.db import session_scope
from billing_core.errors import (
    BillingError,
    ConfigError,
    DatabaseError,
)
from billing_core.invoicing.drafts import (
    CostsMissing,
    CustomerProblem,
    DraftSet,
    SharedCosts,
    build_drafts,
    describe_shared,
    save_drafts,
)
from billing_core.invoicing.explain import explain_text
from billing_core.invoicing.pricing import below_minimum_note
from billing_core.invoicing.push import (
    DONE_STEPS,
    FINAL_STATUSES,
    Progress,
    Pusher,
    PushMeter,
    PushOutcome,
    StepHook,
)
from billing_core.invoicing.run_lock import DatabaseLock, default_owner, lock_name
from billing_core.models import (
    Invoice,
    InvoiceRun,
)
from billing_core.money import display
from billing_core.periods import Period, utcnow
from billing_core.states import CARRIED_OUTCOMES, RunStatus
from billing_core.stripe.client import concurrency, is_live
from billing_core.stripe.gateway import Gateway
from billing_core.stripe.keys import install_id

log = logging.getLogger(__name__)


@dataclass
class RunOptions:
    period: Period
    dry_run: bool = False
    customer_id: int | None = None
    trigger: str = "cli"
    actor: str = "system"
    attach_test_cards: bool = False
    # Who executes a recorded request (the worker, or `cli`/`cron` for --pending), when not
    # the actor who asked for it; recorded in the audit log.
    executor: str | None = None
    # A run taken over from a worker that died: if its lock is still held, leave it running
    # (the next takeover finishes it) instead of marking it locked.
    resume: bool = False


@dataclass
class RunResult:
    period: str
    run_id: int | None
    status: str
    drafts: DraftSet
    saved: int = 0
    pushed: int = 0
    outcomes: list[PushOutcome] = field(default_factory=list)
    problems: list[CustomerProblem] = field(default_factory=list)
    stripe_calls: int = 0
    fatal: str | None = None

    @property
    def failed(self) -> int:
        return len({p.customer_id for p in self.problems})

    @property
    def exit_code(self) -> int:
        if self.fatal is not None:
            return 2
        return 1 if self.problems else 0


def check_period(period: Period, now: datetime) -> None:
    """Only closed months are invoiced: AWS keeps adding to an open one."""
    if not period.is_closed(now):
        last = Period.containing(now).previous()
        raise ConfigError(
            f"{period} is not closed yet (it ends {period.end.isoformat()} UTC); invoice a "
            f"closed month such as --period {last}."
        )


def test_cards_allowed(settings: Settings) -> bool:
    """Attaching Stripe test cards is for emulators and test keys, never live accounts."""
    return bool(settings.stripe_api_base) and not is_live(settings)


def pending_invoice_ids(session: Session, period: Period, customer_id: int | None) -> list[int]:
    query = (
        select(Invoice.id)
        .where(
            Invoice.period == str(period),
            col(Invoice.is_demo).is_(False),
            col(Invoice.status).not_in(FINAL_STATUSES),
            or_(
                col(Invoice.outcome).is_(None),
                col(Invoice.outcome).not_in(CARRIED_OUTCOMES),
            ),
            col(Invoice.push_step).not_in(DONE_STEPS),
        )
        .order_by(col(Invoice.id))
    )
    if customer_id is not None:
        query = query.where(Invoice.customer_id == customer_id)
    return [i for i in session.exec(query).all() if i is not None]


def preview(
    session: Session,
    period: Period,
    *,
    source: CostSource,
    customer_id: int | None = None,
    shared: SharedCosts | None = None,
) -> DraftSet:
    """What a run would draft now (the CLI's --dry-run and the page's Preview); writes nothing.

    Never calls Cost Explorer: a snapshot taken before the month ended shows as refused
    customers here, while the run itself refreshes it first when AWS is configured.
    """
    return build_drafts(session, period, source=source, customer_id=customer_id, shared=shared)


def run_invoices(
    engine: Engine,
    settings: Settings,
    opts: RunOptions,
    *,
    now: datetime | None = None,
    run_id: int | None = None,
    gateway: Gateway | None = None,
    progress: Progress | None = None,
    hook: StepHook | None = None,
) -> RunResult:
    """Run the invoicing of a period: lock, drafts, push, summary (the CLI and the worker)."""
    say = progress or (lambda msg: log.info("%s", msg))
    now = now or utcnow()
    check_period(opts.period, now)
    period = str(opts.period)
    if opts.attach_test_cards and not test_cards_allowed(settings):
        raise ConfigError(
            "Test cards can only be attached against a local Stripe emulator "
            "(STRIPE_API_BASE set) with a test key; never on a live account."
        )
    if opts.dry_run:
        with session_scope(engine) as s:
            drafts = preview(
                s,
                opts.period,
                source=CostSource.of(settings),
                customer_id=opts.customer_id,
                shared=SharedCosts.of(settings),
            )
        return RunResult(period, None, "preview", drafts)
    gateway = gateway or Gateway.from_settings(settings)
    # The lock first, then the run row: the period's one active row (a unique index) belongs
    # to the lock holder, who retires whatever other active row it finds (see _start_run).
    lock = DatabaseLock(
        engine,
        lock_name(period),
        owner=default_owner(run_id),
        stale_seconds=settings.run_lock_stale_seconds,
    )
    try:
        lock.acquire()
    except BillingError as exc:
        _record_locked(engine, opts, run_id, str(exc))
        raise
    try:
        run_id = _start_run(engine, opts, run_id, took_over_from=lock.took_over_from)
        lock.rename(default_owner(run_id))
    except BaseException:
        lock.release()
        raise
    lock.on_beat = lambda: _beat_run(engine, run_id)
    lock.start_heartbeat()
    try:
        if lock.took_over_from:
            say(f"took over the stale lock of {lock.took_over_from}")
        return _run_locked(engine, settings, opts, run_id, gateway, say, hook, now)
    except Exception as exc:
        _record_stop(engine, run_id, exc, opts.actor)
        raise
    finally:
        lock.stop_heartbeat()
        try:
            lock.release()
        except SQLAlchemyError:  # the database is still unusable: the lock goes stale instead
            log.warning(
                "could not release the run lock %s; it is taken over after %d s without heartbeat",
                lock.name,
                lock.stale_seconds,
            )


def _check_costs(drafts: DraftSet, refresh_error: str | None) -> None:
    if not drafts.costs_found:
        why = f" ({refresh_error})" if refresh_error else ""
        raise CostsMissing(
            f"AWS costs cannot be billed: {drafts.cost_source.missing(Period.parse(drafts.period))}"
            f" first{why}."
        )


def _record_locked(engine: Engine, opts: RunOptions, run_id: int | None, message: str) -> None:
    """Say on the run that another run held the lock (a row of its own for a CLI run).

    A run taken over from a dead worker (`opts.resume`) stays running: its lock is still
    fresh, and the next takeover finishes it once the lock is stale.
    """
    errors = [{"step": "lock", "message": message}]
    if run_id is None:
        with session_scope(engine) as s:
            now = utcnow()
            s.add(
                InvoiceRun(
                    period=str(opts.period),
                    trigger=opts.trigger,
                    actor=opts.actor,
                    customer_filter=opts.customer_id,
                    status=RunStatus.LOCKED,
                    errors=errors,
                    started_at=now,
                    finished_at=now,
                )
            )
    elif not opts.resume:
        _finish_run(engine, run_id, RunStatus.LOCKED, errors)


def _start_run(
    engine: Engine, opts: RunOptions, run_id: int | None, *, took_over_from: str | None
) -> int:
    """Make this run the period's one active run (the lock is held); audited.

    Another active row of the period is retired in the same transaction: a running one died
    (we hold its lock now), a requested one is billed by this run (its worker's claim then
    finds it taken). A request recorded between our look and our insert makes the insert
    fail on the unique index; we look again.
    """
    for _ in range(_START_ATTEMPTS):
        try:
            with session_scope(engine) as s:
                return _own_period(s, opts, run_id, took_over_from)
        except IntegrityError:
            continue
    raise DatabaseError(
        f"Could not record the run of {opts.period}: its run rows kept changing; try again."
    )


# Each attempt lost a race with a Run click recording a request at the same moment.
_START_ATTEMPTS = 5


def _own_period(
    s: Session, opts: RunOptions, run_id: int | None, took_over_from: str | None
) -> int:
    now = utcnow()
    period = str(opts.period)
    others = s.exec(
        select(InvoiceRun).where(
            InvoiceRun.period == period,
            col(InvoiceRun.status).in_((RunStatus.REQUESTED, RunStatus.RUNNING)),
            col(InvoiceRun.dry_run).is_(False),
            InvoiceRun.id != run_id,
        )
    ).all()
    for other in others:
        other.status = RunStatus.FAILED if other.status == RunStatus.RUNNING else RunStatus.LOCKED
        other.finished_at = now
        s.add(other)
    s.flush()  # out of the unique index before ours goes in
    run = s.get(InvoiceRun, run_id) if run_id is not None else None
    if run is None:
        run = InvoiceRun(
            period=period,
            trigger=opts.trigger,
            actor=opts.actor,
            customer_filter=opts.customer_id,
        )
    run.status = RunStatus.RUNNING
    run.started_at = run.started_at or now
    run.heartbeat_at = now
    s.add(run)
    s.flush()
    for other in others:
        message = (
            f"stopped before finishing; resumed by run {run.id}"
            if other.status == RunStatus.FAILED
            else f"not started: run {run.id} took the lock and billed {period}"
        )
        other.errors = [*other.errors, {"step": "run", "message": message}]
        s.add(other)
    audit.record(
        s,
        actor=opts.actor,
        action="invoice_run.resume" if opts.resume else "invoice_run.start",
        target=f"run {run.id} {period}",
        after={
            "trigger": run.trigger,
            "customer_id": opts.customer_id,
            "executed_by": opts.executor,
            "took_over_lock_from": took_over_from,
            "retired_runs": [o.id for o in others],
        },
        at=now,
    )
    return run.id or 0


def _beat_run(engine: Engine, run_id: int) -> None:
    with session_scope(engine) as s:
        run = s.get(InvoiceRun, run_id)
        if run is not None:
            run.heartbeat_at = utcnow()
            s.add(run)


def _finish_run(
    engine: Engine,
    run_id: int,
    status: str,
    errors: list[dict[str, Any]],
    *,
    actor: str | None = None,
    summary: dict[str, Any] | None = None,
) -> None:
    """Record how a run ended; with `actor`, also in the audit log (same transaction)."""
    with session_scope(engine) as s:
        run = s.get(InvoiceRun, run_id)
        if run is not None:
            run.status = RunStatus(status)
            run.errors = list(run.errors or []) + errors
            run.finished_at = run.heartbeat_at = utcnow()
            s.add(run)
            if actor is not None:
                _audit_outcome(s, run, actor, summary or {})


def _audit_outcome(s: Session, run: InvoiceRun, actor: str, summary: dict[str, Any]) -> None:
    audit.record(
        s,
        actor=actor,
        action="invoice_run.finish",
        target=f"run {run.id} {run.period}",
        after={
            "status": run.status,
            "trigger": run.trigger,
            "invoices": run.total_count,
            "done": run.done_count,
            "failed": run.failed_count,
            **summary,
        },
    )


def _record_stop(engine: Engine, run_id: int, exc: Exception, actor: str) -> None:
    """Say on the run why it stopped (e.g. the database stayed locked), if the database lets us.

    Without this a run stopped by an error stays "running" on the page until the next run.
    """
    message = str(exc) if isinstance(exc, BillingError) else f"unexpected {type(exc).__name__}"
    try:
        with session_scope(engine) as s:
            run = s.get(InvoiceRun, run_id)
            if run is None or run.status != RunStatus.RUNNING:
                return  # already finished with its own message
            run.status = RunStatus.FAILED
            run.errors = [*run.errors, {"step": "run", "message": message}]
            run.finished_at = run.heartbeat_at = utcnow()
            s.add(run)
            _audit_outcome(s, run, actor, {"error": message})
    except (BillingError, SQLAlchemyError):
        log.warning("could not record why run %s stopped: %s", run_id, message)


def _run_locked(
    engine: Engine,
    settings: Settings,
    opts: RunOptions,
    run_id: int,
    gateway: Gateway,
    say: Progress,
    hook: StepHook | None,
    now: datetime,
) -> RunResult:
    period = str(opts.period)
    source = CostSource.of(settings)
    # Its own transaction: a fetched snapshot is kept even if drafting fails afterwards.
    with session_scope(engine) as s:
        refresh_error = refresh_for_billing(s, settings, opts.period, now=now)
    if refresh_error:
        say(f"{period}: the {source} cost snapshot does not cover the month: {refresh_error}")
    try:
        with session_scope(engine) as s:
            drafts = build_drafts(
                s,
                opts.period,
                source=source,
                customer_id=opts.customer_id,
                shared=SharedCosts.of(settings),
            )
            _check_costs(drafts, refresh_error)
            saved = save_drafts(s, drafts, run_id=run_id)
            namespace = install_id(s)
            run = s.get(InvoiceRun, run_id)
            assert run is not None
            run.costs_estimated = drafts.costs_estimated
            run.cost_metric, run.cost_group_by = source.metric, source.group_by
            run.cost_snapshot_id = drafts.cost_snapshot.id if drafts.cost_snapshot else None
            s.add(run)
    except (BillingError, IntegrityError) as exc:
        message = str(exc) if isinstance(exc, BillingError) else "an invoice already exists"
        _finish_run(
            engine,
            run_id,
            RunStatus.FAILED,
            [{"step": "draft", "message": message}],
            actor=opts.actor,
            summary={"error": message},
        )
        raise
    result = RunResult(period, run_id, RunStatus.RUNNING, drafts, saved=len(saved))
    result.problems.extend(drafts.problems)
    estimated = (
        " (AWS costs still estimated: flagged on the invoices)" if drafts.costs_estimated else ""
    )
    say(
        f"{period}: {len(saved)} drafts saved, {len(drafts.already_invoiced)} customers already "
        f"invoiced, {len(drafts.problems)} refused{estimated}"
    )
    for p in drafts.problems:
        say(f"  REFUSED {p.customer}: {p.message}")
    for d in drafts.drafts:
        if d.below_minimum:
            amount = display(d.total_minor, d.currency)
            say(f"  CARRIED {d.customer_name} {amount}: {below_minimum_note(d)}")
    with session_scope(engine) as s:
        todo = pending_invoice_ids(s, opts.period, opts.customer_id)
        run = s.get(InvoiceRun, run_id)
        assert run is not None
        run.total_count = len(todo) + len(drafts.problems)
        run.done_count = 0  # a resumed run counts what is left
        run.failed_count = len(drafts.problems)
        run.errors = [p.as_json() for p in drafts.problems]
        if refresh_error and drafts.costs_incomplete:
            run.errors.insert(0, {"step": "costs", "message": refresh_error})
        s.add(run)
    pusher = Pusher(
        engine, gateway, namespace=namespace, attach_test_cards=opts.attach_test_cards, hook=hook
    )
    workers = concurrency(settings)
    say(
        f"pushing {len(todo)} invoices to Stripe ({workers} at a time, at most "
        f"{gateway.bucket.rate:g} requests/s)"
    )
    meter = PushMeter(say, gateway, len(todo))
    with ThreadPoolExecutor(max_workers=workers) as pool:
        futures = [pool.submit(pusher.push, iid) for iid in todo]
        for future in as_completed(futures):
            outcome = future.result()
            result.outcomes.append(outcome)
            _record_outcome(engine, run_id, outcome)
            amount = display(outcome.total_minor, outcome.currency)
            if outcome.problem is None:
                result.pushed += 1
                say(f"  invoice {outcome.invoice_id} {outcome.customer} {amount}: {outcome.status}")
            else:
                result.problems.append(outcome.problem)
                say(
                    f"  FAILED invoice {outcome.invoice_id} {outcome.customer} {amount}: "
                    f"{outcome.problem.message}"
                )
            meter.tick(failed=outcome.problem is not None)
    meter.report()
    result.stripe_calls = gateway.calls
    if pusher.abort_reason and not result.pushed:
        result.fatal = pusher.abort_reason
    failed = result.failed
    if result.fatal:
        result.status = RunStatus.FAILED
    elif failed == 0:
        result.status = RunStatus.SUCCEEDED
    else:
        partial = result.pushed or result.saved > failed
        result.status = RunStatus.PARTIAL if partial else RunStatus.FAILED
    _finish_run(engine, run_id, result.status, [], actor=opts.actor, summary=_summary(result))
    say(
        f"{period}: {result.pushed} pushed, {failed} failed, {len(drafts.already_invoiced)} "
        f"already invoiced, {gateway.calls} Stripe calls ({gateway.rate_limited} rate-limited) "
        f"-> {result.status}"
    )
    return result


def _summary(result: RunResult) -> dict[str, Any]:
    """Counts and amounts of a finished run for the audit log (minor units per currency)."""
    billed: dict[str, int] = {}
    for outcome in result.outcomes:
        if outcome.problem is None:
            billed[outcome.currency] = billed.get(outcome.currency, 0) + outcome.total_minor
    return {
        "saved": result.saved,
        "pushed": result.pushed,
        "customers_failed": result.failed,
        "already_invoiced": len(result.drafts.already_invoiced),
        "billed_minor": billed,
        "stripe_calls": result.stripe_calls,
        "fatal": result.fatal,
    }


def _record_outcome(engine: Engine, run_id: int, outcome: PushOutcome) -> None:
    """Progress for the page; written only by the run's main thread (no lost updates).

    An invoice counts as done (pushed) or failed, never both: done + failed of total is the
    share of the run finished, as the page's progress bar shows it."""
    with session_scope(engine) as s:
        run = s.get(InvoiceRun, run_id)
        if run is None:
            return
        if outcome.problem is None:
            run.done_count += 1
        else:
            run.failed_count += 1
            run.errors = [*run.errors, outcome.problem.as_json()]
        run.heartbeat_at = utcnow()
        s.add(run)


def describe_drafts(drafts: DraftSet) -> list[str]:
    """Plain lines for the CLI's --dry-run: one per draft, then problems and totals."""
    out = [f"{drafts.period}: {len(drafts.drafts)} drafts (nothing saved)"]
    if not drafts.costs_found:
        out.append(f"  WARNING {drafts.cost_coverage}")
    else:
        out.append(f"  AWS costs: {drafts.cost_coverage}")
    if drafts.shared is not None and drafts.shared.pool:
        out.append(f"  {describe_shared(drafts.shared)}")
    if drafts.costs_incomplete:
        out.append(
            "  WARNING the snapshot was taken before the month ended: the run refreshes it "
            "from Cost Explorer first, or refuses the customers with AWS costs"
        )
    for d in drafts.drafts:
        flags = f"  [{'; '.join(d.warnings)}]" if d.warnings else ""
        out.append(
            f"  {d.customer_name}: {display(d.total_minor, d.currency)} in {len(d.lines)} lines"
            f"{flags}"
        )
        out += explain_text(d)
    for p in drafts.problems:
        out.append(f"  REFUSED {p.customer}: {p.message}")
    for name in drafts.already_invoiced:
        out.append(f"  already invoiced: {name}")
    totals = ", ".join(display(v, c) for c, v in sorted(drafts.totals_by_currency().items()))
    out.append(f"  total: {totals or 'nothing'}")
    return out
