"""Reconciliation service (DESIGN.md section 8): gather, compare, store, resolve.

A run for period P compares
  (a) local invoices with Stripe invoices (skipped when Stripe is not configured),
  (b) invoiced AWS costs with the latest cost snapshot of P,
  (c) overage billed with usage recorded,
and upserts its findings into ReconciliationDiff by (period, kind, subject).

Rules worth knowing:
- Stripe is read first, before anything is written: if it fails, the run is stored as
  ``failed`` with the error and every earlier diff stays as it was.
- Stripe window: invoices are created after their month ends, so the run lists invoices
  created from the period start to 45 days after its end (about one request per 100 invoices)
  and keeps those whose metadata ``period`` is P; an invoice without that metadata (made
  outside this tool) belongs to the month it was created in. Linked local invoices not found
  in the window are read one by one (each one is an anomaly anyway).
- A diff seen before and not seen now becomes ``gone`` (the difference disappeared, e.g.
  fixed in Stripe); resolved diffs stay resolved unless their values change, which reopens
  them. A section that did not run (Stripe not configured, no cost snapshot) leaves its
  diffs untouched. Demo findings (subjects starting ``demo/``) are only touched by the demo.
- Differences within the tolerance are stored with ``within_tolerance`` set and counted, but
  are not "raised": the CLI exits 1 only for open diffs above the tolerance."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy.engine import Engine
from sqlmodel import Session, col, func, select

from billing_core import audit
from billing_core.config import Settings
from billing_core.costs.snapshots import CostSource
from billing_core.db import session_scope
from billing_core.errors import BillingError
from billing_core.invoicing.drafts import SharedCosts
from billing_core.models import (
    Customer,
    Invoice,
    ReconciliationDiff,
    ReconciliationRun,
)
from billing_core.periods import Period, utcnow
from billing_core.reconciliation.describe import DiffFacts, describe_diff
from billing_core.reconciliation.diffing import (
    AWS_KINDS,
    STRIPE_KINDS,
    USAGE_KINDS,
    Finding,
    Tolerance,
    compare_invoices,
    tally,
)
from billing_core.reconciliation.findings import aws_findings, usage_findings
from billing_core.reconciliation.gather import DEMO_SCOPE, read_stripe_side
from billing_core.reconciliation.resolve import _section
from billing_core.states import DiffStatus, ReconciliationStatus
from billing_core.stripe.gateway import Gateway
from billing_core.versions import bump

log = logging.getLogger(__name__)


@dataclass
class RunResult:
    run_id: int
    period: str
    status: str
    counts: dict[str, Any] = field(default_factory=dict)
    stripe_requests: int = 0
    open_above_tolerance: int = 0
    error: str | None = None

    @property
    def exit_code(self) -> int:
        """1 when the run failed or open diffs above the tolerance remain (cron alerts)."""
        return 1 if self.status != ReconciliationStatus.COMPLETE or self.open_above_tolerance else 0

    def describe(self) -> list[str]:
        if self.status != ReconciliationStatus.COMPLETE:
            return [f"reconcile {self.period}: run {self.run_id} FAILED: {self.error}"]
        out = [
            f"reconcile {self.period}: run {self.run_id} complete, "
            f"{self.stripe_requests} Stripe requests"
        ]
        for kind, row in sorted(self.counts.get("kinds", {}).items()):
            out.append(
                f"  {kind}: {row['raised']} raised, {row['within_tolerance']} within tolerance"
            )
        for note in self.counts.get("notes", []):
            out.append(f"  note: {note}")
        out.append(f"  open diffs above tolerance: {self.open_above_tolerance}")
        return out


def _in_scope(subject: str, scope: str) -> bool:
    return (
        subject.startswith(DEMO_SCOPE)
        if scope == DEMO_SCOPE
        else not subject.startswith(DEMO_SCOPE)
    )


def _shown(diff: ReconciliationDiff) -> tuple[object, ...]:
    """What an admin sees of a diff and decides on; a change here moves its version."""
    return (
        diff.status,
        diff.customer_id,
        diff.invoice_id,
        diff.currency,
        diff.local_value,
        diff.remote_value,
        diff.delta_minor,
        diff.within_tolerance,
    )


def store_findings(
    session: Session,
    run: ReconciliationRun,
    findings: Sequence[Finding],
    checked_kinds: Iterable[str],
    *,
    now: datetime,
    scope: str = "",
) -> dict[str, int]:
    """Upsert findings by (period, kind, subject); unseen open diffs of checked kinds go 'gone'."""
    existing = {
        (d.kind, d.subject): d
        for d in session.exec(
            select(ReconciliationDiff).where(ReconciliationDiff.period == run.period)
        ).all()
    }
    stats = {"new": 0, "updated": 0, "reopened": 0, "gone": 0}
    seen: set[tuple[str, str]] = set()
    for f in findings:
        seen.add((f.kind, f.subject))
        diff = existing.get((f.kind, f.subject))
        seen_before = _shown(diff) if diff is not None else None
        if diff is None:
            diff = ReconciliationDiff(
                period=run.period, kind=f.kind, subject=f.subject, first_seen_at=now
            )
            stats["new"] += 1
        else:
            stats["updated"] += 1
            changed = (diff.local_value, diff.remote_value, diff.delta_minor) != (
                f.local_value,
                f.remote_value,
                f.delta_minor,
            )
            if diff.status == DiffStatus.GONE or (diff.status == DiffStatus.RESOLVED and changed):
                if diff.status == DiffStatus.RESOLVED:
                    audit.record(
                        session,
                        actor=run.actor,
                        action="reconcile.reopen",
                        target=f"diff:{diff.id}",
                        before={
                            "status": diff.status,
                            "resolution": diff.resolution,
                            "delta": diff.delta_minor,
                        },
                        after={"status": DiffStatus.OPEN, "delta": f.delta_minor},
                        at=now,
                    )
                diff.status = DiffStatus.OPEN
                stats["reopened"] += 1
        diff.run_id = run.id
        diff.customer_id = f.customer_id
        diff.invoice_id = f.invoice_id
        diff.currency = f.currency
        diff.local_value = f.local_value
        diff.remote_value = f.remote_value
        diff.delta_minor = f.delta_minor
        diff.within_tolerance = f.within_tolerance
        diff.last_seen_at = now
        if seen_before is not None and _shown(diff) != seen_before:
            bump(diff, actor=run.actor, now=now)  # a page showing the old values is stale
        session.add(diff)
    kinds = set(checked_kinds)
    for key, diff in existing.items():
        if (
            key not in seen
            and diff.kind in kinds
            and diff.status == DiffStatus.OPEN
            and _in_scope(diff.subject, scope)
        ):
            diff.status = DiffStatus.GONE
            diff.last_seen_at = now
            bump(diff, actor=run.actor, now=now)
            session.add(diff)
            stats["gone"] += 1
    session.flush()
    return stats


def open_above_tolerance(session: Session, period: str) -> int:
    query = (
        select(func.count())
        .select_from(ReconciliationDiff)
        .where(
            ReconciliationDiff.period == period,
            ReconciliationDiff.status == DiffStatus.OPEN,
            col(ReconciliationDiff.within_tolerance).is_(False),
        )
    )
    return int(session.exec(query).one())


def open_diff_lines(session: Session, period: str) -> list[str]:
    """Each open diff above the tolerance of `period`, in words (invoice, customer, values)."""
    query = (
        # An invoice's diff names the customer as invoiced; other diffs the customer as now.
        select(
            ReconciliationDiff, Invoice.number, func.coalesce(Invoice.customer_name, Customer.name)
        )
        .outerjoin(Invoice, col(Invoice.id) == col(ReconciliationDiff.invoice_id))
        .outerjoin(Customer, col(Customer.id) == col(ReconciliationDiff.customer_id))
        .where(
            ReconciliationDiff.period == period,
            ReconciliationDiff.status == DiffStatus.OPEN,
            col(ReconciliationDiff.within_tolerance).is_(False),
        )
        .order_by(col(ReconciliationDiff.kind), col(ReconciliationDiff.id))
    )
    return [
        describe_diff(
            DiffFacts(
                kind=diff.kind,
                subject=diff.subject,
                local_value=diff.local_value,
                remote_value=diff.remote_value,
                invoice_number=number,
                customer_name=name,
            )
        )
        for diff, number, name in session.exec(query).all()
    ]


def make_reader(settings: Settings) -> Gateway | None:
    """The Stripe gateway reconciliation reads through, when Stripe is configured."""
    if not settings.stripe_enabled:
        return None
    return Gateway.from_settings(settings)


def _start_run(
    engine: Engine, period: Period, tolerance: Tolerance, actor: str, now: datetime
) -> int:
    with session_scope(engine) as session:
        run = ReconciliationRun(
            period=str(period),
            actor=actor,
            status=ReconciliationStatus.RUNNING,
            tolerance_pct=tolerance.pct,
            started_at=now,
        )
        session.add(run)
        session.flush()
        return run.id or 0


def _fail_run(engine: Engine, run_id: int, error: str, requests: int) -> None:
    with session_scope(engine) as session:
        run = session.get(ReconciliationRun, run_id)
        if run is not None:
            run.status = ReconciliationStatus.FAILED
            run.error = error
            run.stripe_requests = requests
            run.finished_at = utcnow()
            session.add(run)
            _audit_run(session, run, {"error": error})


def _audit_run(session: Session, run: ReconciliationRun, after: dict[str, Any]) -> None:
    """A reconciliation run changes billing state (diffs opened, reopened, gone): audited with
    whoever started it (an admin's email from the page, `cli` or `cron` from the CLI)."""
    audit.record(
        session,
        actor=run.actor,
        action="reconcile.run",
        target=f"reconciliation run {run.id} {run.period}",
        after={"status": run.status, "stripe_requests": run.stripe_requests, **after},
    )


def reconcile_period(
    engine: Engine,
    period: Period,
    *,
    source: CostSource,
    tolerance: Tolerance | None = None,
    reader: Gateway | None = None,
    actor: str = "system",
    now: datetime | None = None,
    deep_lines: bool = False,
    shared: SharedCosts | None = None,
) -> RunResult:
    """One reconciliation run; a Stripe failure leaves a failed run and the old diffs intact.

    AWS restatements (b) compare with the latest snapshot of `source` (the configured metric
    and grouping), attributed and shared as `shared` says (the settings' SharedCosts.of, as
    the invoice run used); without a snapshot the section is skipped and the notes say so.
    """
    tolerance = tolerance or Tolerance()
    now = now or utcnow()
    run_id = _start_run(engine, period, tolerance, actor, now)
    notes: list[str] = []
    findings: list[Finding] = []
    checked: list[str] = []
    counts: dict[str, Any] = {}
    started, cpu_started = time.perf_counter(), time.thread_time()
    try:
        with session_scope(engine) as session:
            if reader is not None:
                side = read_stripe_side(session, period, reader, deep_lines=deep_lines)
                findings += compare_invoices(side.local, side.remote, tolerance)
                checked += STRIPE_KINDS
                counts["invoices_local"] = len(side.local)
                counts["invoices_stripe"] = len(side.remote)
            else:
                notes.append("Stripe not configured: local vs Stripe (a) was skipped")
            aws = aws_findings(session, period, tolerance, source, shared)
            if aws is None:
                notes.append(f"{source.missing(period)}: AWS restatements (b) were skipped")
            else:
                findings += aws[0]
                checked += AWS_KINDS
                notes += aws[1]["skipped"]
            findings += usage_findings(session, period, tolerance)
            checked += USAGE_KINDS
    except Exception as exc:
        requests = reader.calls if reader else 0
        message = str(exc) if isinstance(exc, BillingError) else f"unexpected {exc!r}"
        _fail_run(engine, run_id, message, requests)
        log.error("reconcile %s failed: %s", period, message)
        if not isinstance(exc, BillingError):
            raise
        return RunResult(
            run_id,
            str(period),
            ReconciliationStatus.FAILED,
            stripe_requests=requests,
            error=message,
        )
    waited = reader.seconds if reader else 0.0
    stripe_cpu = reader.cpu_seconds if reader else 0.0
    # Compute: the run's own time, Stripe's requests taken out; as wall time, and as this
    # thread's CPU time (what a busy machine does not inflate).
    counts["timings"] = {
        "stripe_wait_s": round(waited, 3),
        "compute_s": round(time.perf_counter() - started - waited, 3),
    }
    compute_cpu = time.thread_time() - cpu_started - stripe_cpu
    counts.update(
        kinds=tally(findings), sections=sorted({_section(k) for k in checked}), notes=notes
    )
    try:
        with session_scope(engine) as session:
            run = session.get(ReconciliationRun, run_id)
            assert run is not None
            store_started, store_cpu = time.perf_counter(), time.thread_time()
            counts["diffs"] = store_findings(session, run, findings, checked, now=now)
            counts["timings"]["compute_s"] += round(time.perf_counter() - store_started, 3)
            compute_cpu += time.thread_time() - store_cpu
            counts["timings"]["compute_cpu_s"] = round(compute_cpu, 3)
            run.status = ReconciliationStatus.COMPLETE
            run.counts = counts
            run.stripe_requests = reader.calls if reader else 0
            run.finished_at = utcnow()
            session.add(run)
            session.flush()
            remaining = open_above_tolerance(session, str(period))
            _audit_run(
                session,
                run,
                {
                    "diffs": counts["diffs"],
                    "open_above_tolerance": remaining,
                    "tolerance_pct": tolerance.pct,
                },
            )
    except Exception as exc:
        _fail_run(
            engine, run_id, f"storing the findings failed: {exc}", reader.calls if reader else 0
        )
        raise
    return RunResult(
        run_id, str(period), ReconciliationStatus.COMPLETE, counts, run.stripe_requests, remaining
    )


def latest_run(session: Session, period: str | None = None) -> ReconciliationRun | None:
    query = select(ReconciliationRun)
    if period:
        query = query.where(ReconciliationRun.period == period)
    return session.exec(query.order_by(col(ReconciliationRun.id).desc())).first()


def runs(session: Session, limit: int = 50) -> list[ReconciliationRun]:
    query = select(ReconciliationRun).order_by(col(ReconciliationRun.id).desc()).limit(limit)
    return list(session.exec(query).all())


def diffs(
    session: Session,
    *,
    period: str | None = None,
    kinds: Sequence[str] | None = None,
    statuses: Sequence[str] | None = None,
    include_within_tolerance: bool = False,
) -> list[ReconciliationDiff]:
    query = select(ReconciliationDiff)
    if period:
        query = query.where(ReconciliationDiff.period == period)
    if kinds:
        query = query.where(col(ReconciliationDiff.kind).in_(list(kinds)))
    if statuses:
        query = query.where(col(ReconciliationDiff.status).in_(list(statuses)))
    if not include_within_tolerance:
        query = query.where(col(ReconciliationDiff.within_tolerance).is_(False))
    order = (
        col(ReconciliationDiff.period).desc(),
        col(ReconciliationDiff.kind),
        col(ReconciliationDiff.id),
    )
    return list(session.exec(query.order_by(*order)).all())


def periods_with_diffs(session: Session) -> list[str]:
    rows = session.exec(select(ReconciliationDiff.period).distinct()).all()
    return sorted(set(rows), reverse=True)


# Kinds whose words need more than their underscores turned into spaces.
_KIND_LABELS = {
    "missing_in_stripe": "missing in Stripe",
    "aws_restatement": "AWS restatement",
    "customer": "Stripe customer",
}


def kind_label(kind: str) -> str:
    """A diff kind as people read it: 'aws_restatement' -> 'AWS restatement'."""
    return _KIND_LABELS.get(kind, kind.replace("_", " "))
