"""The demo's operating history: invoice runs, Stripe syncs, reconciliations and their audit log.

Twelve months of the monthly routine, as the cron jobs and two admins would have left it: on
the 4th a cron `invoice-run` bills the month (one month needed a second run after Stripe timed
out on one invoice, resumed from the page by an admin), syncs pick up payments over the next
days, and a cron `reconcile` finds the month clean. Figures (counts, amounts billed) are read
from the seeded invoices, so the run history and the audit log agree with the invoices page.
The newest month's reconciliation is left to `discrepancies.py`, which seeds its findings.
"""

from __future__ import annotations

from collections import defaultdict
from datetime import datetime, timedelta
from typing import Any

from sqlmodel import Session, col, select

from billing_core import audit
from billing_core.models import Invoice, InvoiceRun, ReconciliationRun
from billing_core.periods import Period
from billing_core.states import DisplayStatus, ReconciliationStatus, RunStatus

#: Who clicks in the demo's audit log (the cron jobs record "cron").
DEMO_ADMIN = "maria.keller@example.com"
# Months before the newest demo month whose cron run lost one invoice to a Stripe timeout.
_PARTIAL_RUN_AGE = 4
# Audit entries (audit.record's keyword arguments), recorded in time order at the end.
_Log = list[dict[str, Any]]
_TIMEOUT = (
    "Stripe did not answer in time (request timed out after 3 retries); nothing was lost, "
    "the next run resumes this invoice."
)


def seed_activity(session: Session, now: datetime) -> dict[str, int]:
    from billing_core.demo import demo_history_periods

    periods = demo_history_periods(now)
    by_period: dict[str, list[Invoice]] = defaultdict(list)
    for inv in session.exec(select(Invoice).order_by(col(Invoice.id))).all():
        by_period[inv.period].append(inv)
    log: _Log = []
    runs = recs = 0
    for index, period in enumerate(periods):  # oldest first: ids follow time
        age = len(periods) - 1 - index
        invoices = by_period.get(str(period), [])
        if not invoices:
            continue
        runs += _runs_of(session, log, period, invoices, partial=age == _PARTIAL_RUN_AGE)
        _syncs_of(log, invoices)
        if age > 0:  # the newest month's reconciliation comes with its findings
            _reconciliation_of(session, log, period, invoices)
            recs += 1
    for entry in sorted(log, key=lambda e: e["at"]):  # the audit log reads in time order
        audit.record(session, **entry)
    return {"invoice runs": runs, "reconciliation runs": recs, "audit entries": len(log)}


def _billed(invoices: list[Invoice]) -> dict[str, int]:
    out: dict[str, int] = defaultdict(int)
    for inv in invoices:
        out[inv.currency] += inv.total_minor
    return dict(sorted(out.items()))


def _run(
    session: Session,
    log: _Log,
    period: Period,
    invoices: list[Invoice],
    *,
    start: datetime,
    trigger: str,
    actor: str,
    failed: list[Invoice],
) -> InvoiceRun:
    failed_ids = {i.id for i in failed}
    done = [i for i in invoices if i.id not in failed_ids]
    minutes = 1 + len(invoices) // 4
    run = InvoiceRun(
        period=str(period),
        trigger=trigger,
        actor=actor,
        status=RunStatus.PARTIAL if failed else RunStatus.SUCCEEDED,
        cost_metric="UnblendedCost",
        cost_group_by="LINKED_ACCOUNT",
        total_count=len(invoices),
        done_count=len(done),
        failed_count=len(failed),
        errors=[
            {"customer": i.customer_name, "step": "finalize", "message": _TIMEOUT} for i in failed
        ],
        requested_at=start,
        started_at=start,
        finished_at=start + timedelta(minutes=minutes, seconds=17),
        heartbeat_at=start + timedelta(minutes=minutes, seconds=17),
    )
    session.add(run)
    session.flush()
    log.append(
        {
            "actor": actor,
            "action": "invoice_run.start",
            "target": f"run {run.id} {period}",
            "after": {
                "trigger": trigger,
                "customer_id": None,
                "executed_by": "worker" if trigger == "button" else "cli",
                "took_over_lock_from": None,
                "retired_runs": [],
            },
            "at": start,
        }
    )
    after: dict[str, Any] = {
        "status": run.status,
        "trigger": trigger,
        "invoices": run.total_count,
        "done": run.done_count,
        "failed": run.failed_count,
        "saved": len(invoices) if trigger == "cron" else 0,
        "pushed": len(done),
        "customers_failed": len(failed),
        "already_invoiced": 0,
        "billed_minor": _billed(done),
        "stripe_calls": sum(4 + _lines(i) for i in done),
        "fatal": None,
    }
    log.append(
        {
            "actor": actor,
            "action": "invoice_run.finish",
            "target": f"run {run.id} {period}",
            "after": after,
            "at": run.finished_at,
        }
    )
    return run


def _lines(invoice: Invoice) -> int:
    # One Stripe request per invoice line is what the push spends beyond its fixed steps.
    return 1 + (invoice.id or 0) % 8


def _runs_of(
    session: Session, log: _Log, period: Period, invoices: list[Invoice], *, partial: bool
) -> int:
    start = period.end_at + timedelta(days=3, hours=6)
    failed = invoices[-1:] if partial else []
    _run(session, log, period, invoices, start=start, trigger="cron", actor="cron", failed=failed)
    if not failed:
        return 1
    again = start + timedelta(hours=2, minutes=41)
    rerun = _run(
        session, log, period, failed, start=again, trigger="button", actor=DEMO_ADMIN, failed=[]
    )
    log.append(
        {
            "actor": DEMO_ADMIN,
            "action": "invoice_run.request",
            "target": f"run {rerun.id} {period}",
            "after": {"customer_id": None},
            "at": again - timedelta(seconds=1),
        }
    )
    return 2


def _syncs_of(log: _Log, invoices: list[Invoice]) -> None:
    """Payments arrive over the days after the run: one audited sync pass per day with news."""
    by_day: dict[datetime, list[Invoice]] = defaultdict(list)
    for inv in invoices:
        if inv.paid_at is not None:
            day = inv.paid_at.replace(hour=6, minute=0, second=0, microsecond=0)
            by_day[day + timedelta(days=1)].append(inv)
        elif inv.issued_at is not None and inv.display_status in (
            DisplayStatus.FAILED,
            DisplayStatus.OPEN,
        ):
            day = inv.issued_at.replace(hour=6, minute=0, second=0, microsecond=0)
            by_day[day + timedelta(days=1)].append(inv)
    for at, changed in sorted(by_day.items()):
        log.append(
            {
                "actor": "cron",
                "action": "stripe.sync",
                "target": f"{len(changed)} invoices",
                "after": {
                    "events_fetched": 3 * len(changed),
                    "invoices_updated": len(changed),
                    "invoices": {str(i.id): str(i.display_status) for i in changed},
                },
                "at": at,
            }
        )


def _reconciliation_of(
    session: Session, log: _Log, period: Period, invoices: list[Invoice]
) -> None:
    start = period.end_at + timedelta(days=10, hours=5)
    diffs = {"new": 0, "updated": 0, "reopened": 0, "gone": 0}
    run = ReconciliationRun(
        period=str(period),
        actor="cron",
        status=ReconciliationStatus.COMPLETE,
        counts={"kinds": {}, "sections": ["aws", "stripe", "usage"], "diffs": diffs},
        stripe_requests=1 + len(invoices) // 100,
        started_at=start,
        finished_at=start + timedelta(seconds=42),
    )
    session.add(run)
    session.flush()
    log.append(
        {
            "actor": "cron",
            "action": "reconcile.run",
            "target": f"reconciliation run {run.id} {period}",
            "after": {
                "status": run.status,
                "stripe_requests": run.stripe_requests,
                "diffs": diffs,
                "open_above_tolerance": 0,
                "tolerance_pct": run.tolerance_pct,
            },
            "at": run.finished_at,
        }
    )
