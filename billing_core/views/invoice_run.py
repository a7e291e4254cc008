"""Data for the invoice run page: preview rows, results and run history as pandas frames."""

from __future__ import annotations

from datetime import datetime

import pandas as pd
from sqlmodel import Session, col, select

from billing_core.invoicing.drafts import DraftSet
from billing_core.models import Customer, Invoice, InvoiceRun
from billing_core.money import minor_to_decimal
from billing_core.periods import Period
from billing_core.states import RunStatus

FINISHED = (RunStatus.SUCCEEDED, RunStatus.PARTIAL, RunStatus.FAILED, RunStatus.LOCKED)


def closed_periods(now: datetime, count: int = 12) -> list[Period]:
    """The last `count` closed months, newest first (what the period picker offers)."""
    last = Period.containing(now).previous()
    return [last.shift(-i) for i in range(count)]


def preview_frame(drafts: DraftSet) -> pd.DataFrame:
    rows = [
        {
            "customer": d.customer_name,
            "currency": d.currency,
            "total": float(minor_to_decimal(d.total_minor, d.currency)),  # display only
            "lines": len(d.lines),
            "collection": d.collection_method.replace("_", " "),
            "warnings": "; ".join(d.warnings),
        }
        for d in drafts.drafts
    ]
    rows += [
        {
            "customer": p.customer,
            "currency": "",
            "total": None,
            "lines": 0,
            "collection": "",
            "warnings": f"refused: {p.message}",
        }
        for p in drafts.problems
    ]
    return pd.DataFrame(
        rows, columns=["customer", "currency", "total", "lines", "collection", "warnings"]
    )


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
            "status": inv.display_status,
            "total": f"{inv.currency} {minor_to_decimal(inv.total_minor, inv.currency):,}",
            "step": inv.push_step,
            "estimated": inv.costs_estimated,
            "stripe": inv.hosted_invoice_url,
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


def history_frame(runs: list[InvoiceRun]) -> pd.DataFrame:
    data = [
        {
            "run": r.id,
            "period": r.period,
            "trigger": r.trigger,
            "actor": r.actor,
            "status": r.status,
            "invoices": r.total_count,
            "done": r.done_count,
            "failed": r.failed_count,
            "estimated costs": r.costs_estimated,
            "started": r.started_at or r.requested_at,
            "finished": r.finished_at,
            "errors": " | ".join(str(e.get("message", "")) for e in (r.errors or [])[:3]),
        }
        for r in runs
    ]
    return pd.DataFrame(
        data,
        columns=[
            "run", "period", "trigger", "actor", "status", "invoices", "done", "failed",
            "estimated costs", "started", "finished", "errors",
        ],
    )  # fmt: skip


def latest_run(session: Session, period: Period) -> InvoiceRun | None:
    return session.exec(
        select(InvoiceRun)
        .where(InvoiceRun.period == str(period), col(InvoiceRun.dry_run).is_(False))
        .order_by(col(InvoiceRun.id).desc())
    ).first()
