"""Data for the invoice run page: preview rows, results and run history as pandas frames."""

from __future__ import annotations

from datetime import datetime

import pandas as pd
from sqlmodel import Session, col, select

from billing_core.invoicing.drafts import DraftSet
from billing_core.invoicing.explain import explain
from billing_core.invoicing.pricing import Draft
from billing_core.models import Customer, Invoice, InvoiceRun
from billing_core.money import display, minor_to_decimal
from billing_core.periods import Period, when_text
from billing_core.states import PushStep, RunStatus
from billing_core.views.common_text import status_label

FINISHED = (RunStatus.SUCCEEDED, RunStatus.PARTIAL, RunStatus.FAILED, RunStatus.LOCKED)


def closed_periods(now: datetime, count: int = 12) -> list[Period]:
    """The last `count` closed months, newest first (what the period picker offers)."""
    last = Period.containing(now).previous()
    return [last.shift(-i) for i in range(count)]


PREVIEW_COLUMNS = [
    "customer",
    "currency",
    "total",
    "lines",
    "collection",
    "costs as of",
    "days covered",
    "warnings",
]


def preview_frame(drafts: DraftSet) -> pd.DataFrame:
    """One row per draft and per refused customer, with the AWS figures' as-of time and
    coverage (days of the month the snapshot covers; a closed month is billed only whole)."""
    snap = drafts.cost_snapshot
    as_of = snap.fetched_at if snap else None
    covered = f"{snap.covered_days} of {snap.period.days}" if snap else "no snapshot"
    rows = [
        {
            "customer": d.customer_name,
            "currency": d.currency,
            "total": display(d.total_minor, d.currency),  # money with its currency
            "lines": len(d.lines),
            "collection": d.collection_method.replace("_", " "),
            "costs as of": as_of,
            "days covered": covered,
            "warnings": "; ".join(d.warnings),
        }
        for d in drafts.drafts
    ]
    rows += [
        {
            "customer": p.customer,
            "currency": "",
            "total": "",
            "lines": 0,
            "collection": "",
            "costs as of": as_of,
            "days covered": covered,
            "warnings": f"refused: {p.message}",
        }
        for p in drafts.problems
    ]
    return pd.DataFrame(rows, columns=PREVIEW_COLUMNS)


LINE_COLUMNS = ["line", "cost at AWS rates", "rule applied", "amount"]


def lines_frame(draft: Draft) -> pd.DataFrame:
    """How each line of a draft was priced: the AWS cost at AWS rates (USD), the rule applied
    (scoped rule, charge model, minimum, discount) and the result in the invoice currency;
    adjustments the plan keeps are listed as not billed. Amounts are display text with their
    currency (exact figures stay in the draft)."""
    rows = [
        {
            "line": e.description,
            "cost at AWS rates": e.aws_cost,
            "rule applied": e.rule,
            "amount": e.amount,
        }
        for e in explain(draft)
    ]
    if draft.fx_rate is not None:
        rows.append(
            {
                "line": "Exchange rate",
                "cost at AWS rates": "",
                "rule applied": f"{draft.fx_rate.normalize():f} {draft.currency} per USD "
                f"({draft.fx_source})",
                "amount": "",
            }
        )
    return pd.DataFrame(rows, columns=LINE_COLUMNS)


def results_frame(session: Session, period: Period) -> pd.DataFrame:
    """Every invoice of the period with its Stripe state and link."""
    rows = session.exec(
        select(Invoice, Customer)
        .join(Customer, col(Customer.id) == col(Invoice.customer_id))
        .where(Invoice.period == str(period))
        .order_by(col(Customer.name))
    ).all()
    data = [
        {
            "invoice": inv.id,
            "customer": inv.customer_name or cus.name,  # as invoiced (bill-to)
            "status": status_label(inv.display_status, inv.credit_state),
            "total": f"{inv.currency} {minor_to_decimal(inv.total_minor, inv.currency):,}",
            "step": _step_text(inv.push_step),
            "estimated": inv.costs_estimated,
            "stripe": inv.hosted_invoice_url or "",  # '' reads blank; None, a grey "None"
            "message": inv.last_error or "",
        }
        for inv, cus in rows
    ]
    return pd.DataFrame(
        data,
        columns=[
            "invoice",
            "customer",
            "status",
            "total",
            "step",
            "estimated",
            "stripe",
            "message",
        ],
    )


def _step_text(step: str) -> str:
    """How far the push to Stripe got, as people read it: 'lines added'; 'not pushed' for an
    invoice no call was made for yet (the step's name, 'none', would read as a missing value)."""
    return "not pushed" if step == PushStep.NONE else str(step).replace("_", " ")


def history_frame(runs: list[InvoiceRun]) -> pd.DataFrame:
    data = [
        {
            "run": r.id,
            "period": r.period,
            "trigger": r.trigger,
            "actor": r.actor,
            "status": str(r.status),
            "invoices": r.total_count,
            "done": r.done_count,
            "failed": r.failed_count,
            "estimated costs": r.costs_estimated,
            "costs from": _cost_source(r),
            "started": when_text(r.started_at or r.requested_at),
            "finished": when_text(r.finished_at),
            "errors": " | ".join(str(e.get("message", "")) for e in (r.errors or [])[:3]),
        }
        for r in runs
    ]
    return pd.DataFrame(
        data,
        columns=[
            "run", "period", "trigger", "actor", "status", "invoices", "done", "failed",
            "estimated costs", "costs from", "started", "finished", "errors",
        ],
    )  # fmt: skip


def _cost_source(run: InvoiceRun) -> str:
    """'UnblendedCost by LINKED_ACCOUNT, snapshot 12' (empty for runs before it was recorded)."""
    if run.cost_metric is None:
        return ""
    snapshot = f", snapshot {run.cost_snapshot_id}" if run.cost_snapshot_id else ""
    return f"{run.cost_metric} by {run.cost_group_by}{snapshot}"


def current_run(session: Session, period: Period) -> InvoiceRun | None:
    """The run the page follows for a period: the one active run (the lock holder's, a unique
    index allows no second), else the newest run that got the lock (the one that billed; a
    click refused by the lock is history, not the period's state), else the newest run."""
    runs = select(InvoiceRun).where(
        InvoiceRun.period == str(period), col(InvoiceRun.dry_run).is_(False)
    )
    newest = col(InvoiceRun.id).desc()
    active = session.exec(
        runs.where(col(InvoiceRun.status).in_((RunStatus.REQUESTED, RunStatus.RUNNING)))
    ).first()
    if active is not None:
        return active
    ran = session.exec(runs.where(InvoiceRun.status != RunStatus.LOCKED).order_by(newest)).first()
    return ran or session.exec(runs.order_by(newest)).first()
