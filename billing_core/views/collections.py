"""Data for the Collections page: receivables by due date, reminders sent, failed automatic
payments with Stripe's retry schedule, write-offs per month (no streamlit here).

Amounts are integer minor units in the invoice's currency, shown with `money.display`; an
amount due is the invoice total less what was paid. Currencies are never summed together.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from datetime import datetime

import pandas as pd
import plotly.graph_objects as go
from sqlmodel import Session, col, select

from billing_core.models import CollectionStep, Customer, Invoice, bill_to_name
from billing_core.money import display, minor_to_decimal
from billing_core.payments.dunning import (
    UNCOLLECTIBLE,
    CollectionsPolicy,
    days_past_due,
    describe_step,
    next_step,
    short_step,
)
from billing_core.states import InvoiceOutcome, InvoiceStatus

BUCKETS = ("not yet due", "overdue", "uncollectible")


def _amount_due(invoice: Invoice) -> int:
    return invoice.total_minor - invoice.amount_paid_minor


def _open_rows(session: Session) -> list[tuple[Invoice, str]]:
    rows = session.exec(
        select(Invoice, bill_to_name())
        .join(Customer, col(Customer.id) == col(Invoice.customer_id))
        .where(col(Invoice.status).in_([InvoiceStatus.OPEN, InvoiceStatus.UNCOLLECTIBLE]))
        .order_by(col(Invoice.due_at), col(Invoice.id))
    ).all()
    return [(inv, str(name)) for inv, name in rows]


@dataclass(frozen=True)
class Receivable:
    currency: str
    bucket: str  # one of BUCKETS
    count: int
    amount_minor: int

    @property
    def amount(self) -> str:
        return display(self.amount_minor, self.currency)


def receivables(session: Session, now: datetime) -> list[Receivable]:
    """Open invoices not yet due and overdue, and uncollectible ones, per currency."""
    sums: dict[tuple[str, str], list[int]] = defaultdict(lambda: [0, 0])
    for inv, _name in _open_rows(session):
        if inv.status == InvoiceStatus.UNCOLLECTIBLE:
            bucket = "uncollectible"
        elif inv.due_at is not None and inv.due_at < now:
            bucket = "overdue"
        else:
            bucket = "not yet due"
        entry = sums[(inv.currency, bucket)]
        entry[0] += 1
        entry[1] += _amount_due(inv)
    return [
        Receivable(currency, bucket, n, amount)
        for (currency, bucket), (n, amount) in sorted(
            sums.items(), key=lambda kv: (kv[0][0], BUCKETS.index(kv[0][1]))
        )
    ]


def receivables_frame(items: list[Receivable]) -> pd.DataFrame:
    """One row per currency: count and amount of each bucket, as text with the currency."""
    by_currency: dict[str, dict[str, str]] = {}
    for item in items:
        row = by_currency.setdefault(
            item.currency, {"currency": item.currency, **dict.fromkeys(BUCKETS, "—")}
        )
        row[item.bucket] = f"{item.amount} ({item.count})"
    return pd.DataFrame(list(by_currency.values()), columns=["currency", *BUCKETS])


def _steps_by_invoice(session: Session) -> dict[int, dict[str, CollectionStep]]:
    out: dict[int, dict[str, CollectionStep]] = defaultdict(dict)
    for step in session.exec(select(CollectionStep)).all():
        out[step.invoice_id][step.step] = step
    return out


def open_invoices_frame(session: Session, now: datetime, policy: CollectionsPolicy) -> pd.DataFrame:
    """Open invoices by due date: amount due, days past due, last and next collections step."""
    steps = _steps_by_invoice(session)
    records = []
    for inv, name in _open_rows(session):
        if inv.status != InvoiceStatus.OPEN:
            continue
        assert inv.id is not None
        taken = steps.get(inv.id, {})
        done = {s.step: s.done_at for s in taken.values() if s.done_at is not None}
        last = max(done.items(), key=lambda kv: kv[1], default=None)
        past = days_past_due(inv.due_at, now) if inv.due_at else None
        if inv.collection_method != "send_invoice":
            plan_text = "charged by Stripe"
        elif inv.is_demo or not inv.stripe_invoice_id:
            plan_text = "demo record" if inv.is_demo else "not in Stripe yet"
        elif inv.due_at is None:
            plan_text = "no due date yet"
        else:
            plan = next_step(policy, due_at=inv.due_at, now=now, done=done)
            plan_text = short_step(plan.step) + ", due now" if plan else _upcoming(policy, past)
        records.append(
            {
                "invoice": inv.number or f"#{inv.id}",
                "customer": name,
                "amount due": display(_amount_due(inv), inv.currency),
                "due": inv.due_at,
                "days past due": past,
                "collection": "send invoice"
                if inv.collection_method == "send_invoice"
                else "automatic",
                "last step": f"{short_step(last[0])}, {last[1]:%b %d}" if last else "—",
                "next step": plan_text,
            }
        )
    columns = [
        "invoice",
        "customer",
        "amount due",
        "due",
        "days past due",
        "collection",
        "last step",
        "next step",
    ]
    return pd.DataFrame(records, columns=columns)


def _upcoming(policy: CollectionsPolicy, past: int | None) -> str:
    if past is None:
        return "—"
    later = [(d, s) for d, s in policy.send_steps if d > past]
    if later:
        day, step = later[0]
        return f"{short_step(step)} in {day - past} d"
    return f"uncollectible from day {policy.uncollectible_after_days}"


def reminders_frame(session: Session, limit: int = 500) -> pd.DataFrame:
    """Collections steps taken (reminders, final notices, write-offs), newest first."""
    rows = session.exec(
        select(CollectionStep, Invoice, bill_to_name())
        .join(Invoice, col(Invoice.id) == col(CollectionStep.invoice_id))
        .join(Customer, col(Customer.id) == col(Invoice.customer_id))
        .where(col(CollectionStep.done_at).is_not(None))
        .order_by(col(CollectionStep.done_at).desc(), col(CollectionStep.id).desc())
        .limit(limit)
    ).all()
    columns = ["when", "step", "invoice", "customer", "days past due", "by"]
    records = [
        {
            "when": step.done_at,
            "step": describe_step(step.step),
            "invoice": inv.number or f"#{inv.id}",
            "customer": str(name),
            "days past due": step.days_past_due,
            "by": step.actor,
        }
        for step, inv, name in rows
    ]
    return pd.DataFrame(records, columns=columns)


def pending_claims(session: Session) -> list[CollectionStep]:
    """Steps of open invoices claimed but not done (a pass in flight, a crash, a refusal)."""
    return list(
        session.exec(
            select(CollectionStep)
            .join(Invoice, col(Invoice.id) == col(CollectionStep.invoice_id))
            .where(CollectionStep.status != "done", Invoice.status == InvoiceStatus.OPEN)
            .order_by(col(CollectionStep.claimed_at))
        ).all()
    )


@dataclass(frozen=True)
class FailedPayment:
    """An invoice charged automatically whose payment failed, with Stripe's retry schedule."""

    invoice_id: int
    customer_id: int
    number: str
    customer: str
    amount_due: str
    attempt_count: int
    next_payment_attempt: datetime | None  # None: Stripe makes no further automatic attempt
    last_error: str
    in_stripe: bool

    def schedule(self, now: datetime) -> str:
        if self.next_payment_attempt is not None and self.next_payment_attempt > now:
            return f"Stripe retries on {self.next_payment_attempt:%Y-%m-%d %H:%M} UTC"
        return "no automatic retry scheduled"


def failed_payments(session: Session) -> list[FailedPayment]:
    """Open invoices whose automatic payment failed (Stripe's attempt count and next attempt)."""
    rows = session.exec(
        select(Invoice, bill_to_name())
        .join(Customer, col(Customer.id) == col(Invoice.customer_id))
        .where(
            Invoice.status == InvoiceStatus.OPEN,
            Invoice.collection_method == "charge_automatically",
            (col(Invoice.outcome) == InvoiceOutcome.PAYMENT_FAILED)
            | (col(Invoice.attempt_count) > 0),
        )
        .order_by(col(Invoice.due_at), col(Invoice.id))
    ).all()
    out = []
    for inv, name in rows:
        assert inv.id is not None
        out.append(
            FailedPayment(
                invoice_id=inv.id,
                customer_id=inv.customer_id,
                number=inv.number or f"#{inv.id}",
                customer=str(name),
                amount_due=display(_amount_due(inv), inv.currency),
                attempt_count=inv.attempt_count,
                next_payment_attempt=inv.next_payment_attempt,
                last_error=inv.last_error or "",
                in_stripe=bool(inv.stripe_invoice_id) and not inv.is_demo,
            )
        )
    return out


def failed_payments_frame(items: list[FailedPayment], now: datetime) -> pd.DataFrame:
    columns = ["invoice", "customer", "amount due", "attempts", "retry schedule", "last error"]
    records = [
        {
            "invoice": f.number,
            "customer": f.customer,
            "amount due": f.amount_due,
            "attempts": f.attempt_count,
            "retry schedule": f.schedule(now),
            "last error": f.last_error,
        }
        for f in items
    ]
    return pd.DataFrame(records, columns=columns)


def write_offs_frame(session: Session) -> pd.DataFrame:
    """Uncollectible invoices per month written off and currency: count and amount.

    The month is when collections marked it (its step), else when the row last changed (an
    invoice marked uncollectible in Stripe directly, mirrored by sync).
    """
    marked = {
        s.invoice_id: s.done_at
        for s in session.exec(
            select(CollectionStep).where(
                CollectionStep.step == UNCOLLECTIBLE, col(CollectionStep.done_at).is_not(None)
            )
        ).all()
    }
    sums: dict[tuple[str, str], list[int]] = defaultdict(lambda: [0, 0])
    for inv, _name in _open_rows(session):
        if inv.status != InvoiceStatus.UNCOLLECTIBLE:
            continue
        when = marked.get(inv.id or 0) or inv.updated_at
        entry = sums[(f"{when:%Y-%m}", inv.currency)]
        entry[0] += 1
        entry[1] += _amount_due(inv)
    records = [
        {
            "month": month,
            "currency": currency,
            "invoices": n,
            "written off": display(amount, currency),
            "amount_minor": amount,
        }
        for (month, currency), (n, amount) in sorted(sums.items(), reverse=True)
    ]
    return pd.DataFrame(
        records, columns=["month", "currency", "invoices", "written off", "amount_minor"]
    )


def write_offs_figure(frame: pd.DataFrame) -> go.Figure:
    """Written off per month, one bar series per currency (each in its own units)."""
    fig = go.Figure()
    for currency, sub in frame.sort_values("month").groupby("currency"):
        amounts = [float(minor_to_decimal(int(m), str(currency))) for m in sub["amount_minor"]]
        fig.add_bar(x=sub["month"], y=amounts, name=str(currency))  # display only
    fig.update_layout(
        barmode="group",
        height=280,
        margin={"l": 10, "r": 10, "t": 40, "b": 10},
        title="Written off per month",
        xaxis_title="month marked uncollectible",
        yaxis_title="written off (in the currency)",
        legend_title="currency",
        showlegend=True,
    )
    fig.update_xaxes(type="category")
    return fig
