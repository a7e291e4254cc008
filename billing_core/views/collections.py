"""Data for the Collections page: receivables by due date, reminders sent, failed automatic
payments with Stripe's retry schedule, write-offs per month (no streamlit here).

Amounts are integer minor units in the invoice's currency, shown with `money.display`; an
amount due is the invoice total less what was paid. Currencies are never summed together.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import pandas as pd
import plotly.graph_objects as go
from sqlalchemy import case, func
from sqlalchemy import select as sa_select
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


# Open invoices shown in the table: the earliest due first (the most overdue, what a person
# chases today); the rest are counted above it. Thousands of rows would only slow the page.
OPEN_TABLE_LIMIT = 500


def _amount_due(invoice: Invoice) -> int:
    return invoice.total_minor - invoice.amount_paid_minor


def _due_minor() -> Any:
    """SQL: what is still owed on an invoice, in minor units (total less what was paid)."""
    return col(Invoice.total_minor) - col(Invoice.amount_paid_minor)


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
    """Open invoices not yet due and overdue, and uncollectible ones, per currency.

    Summed in SQL (one row per currency and status): the page opens on every visit and there
    may be thousands of open invoices. An open invoice without a due date is not yet due.
    """
    late = col(Invoice.due_at) < now
    rows = session.execute(
        sa_select(
            col(Invoice.currency),
            col(Invoice.status),
            func.count(),
            func.coalesce(func.sum(_due_minor()), 0),
            func.coalesce(func.sum(case((late, 1), else_=0)), 0),
            func.coalesce(func.sum(case((late, _due_minor()), else_=0)), 0),
        )
        .where(col(Invoice.status).in_([InvoiceStatus.OPEN, InvoiceStatus.UNCOLLECTIBLE]))
        .group_by(col(Invoice.currency), col(Invoice.status))
    ).all()
    sums: dict[tuple[str, str], tuple[int, int]] = {}
    for currency, status, count, amount, late_count, late_amount in rows:
        if status == InvoiceStatus.UNCOLLECTIBLE:
            sums[(currency, "uncollectible")] = (int(count), int(amount))
            continue
        if late_count:
            sums[(currency, "overdue")] = (int(late_count), int(late_amount))
        if count - late_count:
            sums[(currency, "not yet due")] = (
                int(count - late_count),
                int(amount - late_amount),
            )
    return [
        Receivable(currency, bucket, n, amount)
        for (currency, bucket), (n, amount) in sorted(
            sums.items(), key=lambda kv: (kv[0][0], BUCKETS.index(kv[0][1]))
        )
    ]


def open_count(items: list[Receivable]) -> int:
    """How many invoices are open (not yet due and overdue), from `receivables`."""
    return sum(r.count for r in items if r.bucket != "uncollectible")


def open_table_note(shown: int, total: int) -> str | None:
    """The sentence above a cut open-invoices table (None when every open invoice is shown)."""
    if shown >= total:
        return None
    return (
        f"The {shown:,} open invoices due first (the most overdue) of {total:,}; "
        "filter the Invoices page by status to see the others."
    )


def receivables_frame(items: list[Receivable]) -> pd.DataFrame:
    """One row per currency: count and amount of each bucket, as text with the currency."""
    by_currency: dict[str, dict[str, str]] = {}
    for item in items:
        row = by_currency.setdefault(
            item.currency, {"currency": item.currency, **dict.fromkeys(BUCKETS, "—")}
        )
        row[item.bucket] = f"{item.amount} ({item.count})"
    return pd.DataFrame(list(by_currency.values()), columns=["currency", *BUCKETS])


def _steps_done(session: Session, invoice_ids: list[int]) -> dict[int, dict[str, datetime]]:
    """{invoice id: {step: when it was done}} for these invoices' finished steps."""
    out: dict[int, dict[str, datetime]] = defaultdict(dict)
    if not invoice_ids:
        return out
    for invoice_id, step, done_at in session.execute(
        sa_select(
            col(CollectionStep.invoice_id), col(CollectionStep.step), col(CollectionStep.done_at)
        ).where(
            col(CollectionStep.invoice_id).in_(invoice_ids),
            col(CollectionStep.done_at).is_not(None),
        )
    ).all():
        out[invoice_id][step] = done_at
    return out


def open_invoices_frame(
    session: Session, now: datetime, policy: CollectionsPolicy, limit: int = OPEN_TABLE_LIMIT
) -> pd.DataFrame:
    """Open invoices by due date, the earliest first (those without one last), at most `limit`
    of them: amount due, days past due, last and next collections step. `open_count` says how
    many there are.

    Plain columns rather than ORM objects, and the steps of the shown invoices only.
    """
    rows = session.execute(
        sa_select(
            col(Invoice.id),
            col(Invoice.number),
            bill_to_name(),
            _due_minor(),
            col(Invoice.currency),
            col(Invoice.due_at),
            col(Invoice.collection_method),
            col(Invoice.is_demo),
            col(Invoice.stripe_invoice_id),
        )
        .join(Customer, col(Customer.id) == col(Invoice.customer_id))
        .where(col(Invoice.status) == InvoiceStatus.OPEN)
        # Without a due date last, on every database (SQLite sorts NULL first, PostgreSQL last).
        .order_by(col(Invoice.due_at).is_(None), col(Invoice.due_at), col(Invoice.id))
        .limit(limit)
    ).all()
    steps = _steps_done(session, [row[0] for row in rows])
    records = []
    for invoice_id, number, name, due_minor, currency, due_at, method, is_demo, stripe_id in rows:
        done = steps.get(invoice_id, {})
        last = max(done.items(), key=lambda kv: kv[1], default=None)
        past = days_past_due(due_at, now) if due_at else None
        if method != "send_invoice":
            plan_text = "charged by Stripe"
        elif is_demo or not stripe_id:
            plan_text = "demo record" if is_demo else "not in Stripe yet"
        elif due_at is None:
            plan_text = "no due date yet"
        else:
            plan = next_step(policy, due_at=due_at, now=now, done=done)
            plan_text = short_step(plan.step) + ", due now" if plan else _upcoming(policy, past)
        records.append(
            {
                "invoice": number or f"#{invoice_id}",
                "customer": str(name),
                "amount due": display(int(due_minor), currency),
                "due": due_at,
                "days past due": past,
                "collection": "send invoice" if method == "send_invoice" else "automatic",
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
    for invoice_id, currency, updated_at, due_minor in session.execute(
        sa_select(col(Invoice.id), col(Invoice.currency), col(Invoice.updated_at), _due_minor())
        .where(col(Invoice.status) == InvoiceStatus.UNCOLLECTIBLE)
        .order_by(col(Invoice.id))
    ).all():
        when = marked.get(invoice_id) or updated_at
        entry = sums[(f"{when:%Y-%m}", currency)]
        entry[0] += 1
        entry[1] += int(due_minor)
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
