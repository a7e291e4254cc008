"""Invoice history for finance: filters, headline figures per currency, chart data, detail.

Everything is aggregated in SQL (GROUP BY currency, status, period), so the page stays quick
with tens of thousands of invoices; money is never summed across currencies.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

import pandas as pd
import plotly.graph_objects as go
from sqlalchemy import select as sa_select
from sqlmodel import Session, col, func, select

from billing_core.invoicing.figures import OUTSTANDING_STATUSES, Figures, by_currency
from billing_core.invoicing.line_text import amount_text, quantity_text
from billing_core.models import (
    AuditEntry,
    Customer,
    Invoice,
    InvoiceLine,
    StripeEvent,
    bill_to_name,
    display_status_in,
    refund_state,
    shown_status,
)
from billing_core.money import Money, display, exponent, minor_to_decimal
from billing_core.payments import events as payments_events
from billing_core.payments import sync
from billing_core.payments.payment_methods import parse_payment_method
from billing_core.periods import utcnow, when_text
from billing_core.states import DisplayStatus, credit_state, display_status
from billing_core.views.common_text import status_label
from billing_core.views.invoice_filter import InvoiceFilter, apply_filter
from billing_core.views.receivables import days_past_due

__all__ = ["InvoiceFilter", "apply_filter"]  # their first address; the page imports them here

STATUSES = (
    DisplayStatus.DRAFT,
    DisplayStatus.OPEN,
    DisplayStatus.PAID,
    DisplayStatus.PARTIALLY_REFUNDED,
    DisplayStatus.REFUNDED,
    DisplayStatus.FAILED,
    DisplayStatus.VOID,
    DisplayStatus.UNCOLLECTIBLE,
    DisplayStatus.CREDIT,
)
# Colours finance can read at a glance, the same on every chart.
STATUS_COLOURS = {
    DisplayStatus.PAID: "#2e7d32",
    DisplayStatus.PARTIALLY_REFUNDED: "#81c784",
    DisplayStatus.REFUNDED: "#00838f",
    DisplayStatus.CREDIT: "#ef6c00",
    DisplayStatus.OPEN: "#1565c0",
    DisplayStatus.FAILED: "#c62828",
    DisplayStatus.UNCOLLECTIBLE: "#6a1b9a",
    DisplayStatus.VOID: "#9e9e9e",
    DisplayStatus.DRAFT: "#ffb300",
}
# Rows shown in the table; the CSV export always holds every filtered invoice.
TABLE_LIMIT = 5_000


@dataclass
class FilterOptions:
    periods: list[str]
    customers: dict[int, str]
    currencies: list[str]


def filter_options(session: Session) -> FilterOptions:
    periods = session.exec(select(Invoice.period).distinct().order_by(col(Invoice.period))).all()
    currencies = session.exec(
        select(Invoice.currency).distinct().order_by(col(Invoice.currency))
    ).all()
    customers = session.exec(select(Customer.id, Customer.name).order_by(col(Customer.name))).all()
    return FilterOptions(
        periods=list(periods),
        customers={int(cid): name for cid, name in customers if cid is not None},
        currencies=list(currencies),
    )


# ------------------------------------------------------------------------------ headline


# The page's figures are the one definition in invoicing.figures (the CSV summary uses it too).
Headline = Figures


def headline_figures(session: Session, f: InvoiceFilter) -> list[Headline]:
    """Per currency, the selection's billed, paid, outstanding, refunded and credited amounts."""
    query = sa_select(
        col(Invoice.currency),
        col(Invoice.status),
        col(Invoice.outcome),
        refund_state(),
        func.count(),
        func.sum(col(Invoice.total_minor)),
        func.sum(col(Invoice.amount_paid_minor)),
        func.sum(col(Invoice.amount_refunded_minor)),
        func.sum(col(Invoice.pre_payment_credit_notes_minor)),
        func.sum(col(Invoice.post_payment_credit_notes_minor)),
    ).group_by(col(Invoice.currency), col(Invoice.status), col(Invoice.outcome), refund_state())
    figures: dict[str, Figures] = {}
    rows = session.execute(apply_filter(query, f)).all()
    for currency, stripe_status, outcome, state, count, total, paid, refunded, pre, post in rows:
        by_currency(figures, currency).add(
            shown_status(stripe_status, outcome, state),
            count=int(count),
            total=int(total or 0),
            paid=int(paid or 0),
            refunded=int(refunded or 0),
            credit_notes_before=int(pre or 0),
            credit_notes_after=int(post or 0),
        )
    return [figures[c] for c in sorted(figures)]


# ------------------------------------------------------------------------------ chart


def monthly_billed(session: Session, f: InvoiceFilter) -> pd.DataFrame:
    """Total per period, currency and status (minor units), for the chart."""
    query = (
        sa_select(
            col(Invoice.period),
            col(Invoice.currency),
            col(Invoice.status),
            col(Invoice.outcome),
            refund_state(),
            func.sum(col(Invoice.total_minor)),
        )
        .group_by(
            Invoice.period,
            Invoice.currency,
            col(Invoice.status),
            col(Invoice.outcome),
            refund_state(),
        )
        .order_by(Invoice.period)
    )
    rows = session.execute(apply_filter(query, f)).all()
    frame = pd.DataFrame(
        [(p, c, shown_status(s, o, r), int(t or 0)) for p, c, s, o, r, t in rows],
        columns=["period", "currency", "status", "total_minor"],
    )
    # Two (status, outcome) pairs may show as one word: one row per shown word.
    keys = ["period", "currency", "status"]
    return frame.groupby(keys, as_index=False, sort=False)[["total_minor"]].sum()


def billed_chart(frame: pd.DataFrame) -> go.Figure:
    """Stacked bars of invoice totals per month by status, one panel per currency; credits
    carried forward (negative totals) stack below zero."""
    from plotly.subplots import make_subplots

    currencies = sorted(frame["currency"].unique()) if not frame.empty else []
    fig = make_subplots(
        rows=max(1, len(currencies)),
        cols=1,
        shared_xaxes=True,
        subplot_titles=[f"Invoiced in {c}, by status" for c in currencies] or ["No invoices"],
        vertical_spacing=0.12,
    )
    # Every month of the selection on every panel, in order: a category axis keeps one bar per
    # month (a date axis draws a single month as a hairline) and never clips year labels.
    months = sorted(frame["period"].unique()) if not frame.empty else []
    in_legend: set[str] = set()
    for row, currency in enumerate(currencies, 1):
        part = frame[frame["currency"] == currency]
        for status in STATUSES:
            sub = part[part["status"] == status]
            if sub.empty:
                continue
            # Plotting needs numbers: major units for display only, never summed back.
            amounts = [float(minor_to_decimal(int(m), currency)) for m in sub["total_minor"]]
            fig.add_bar(
                x=list(sub["period"]),
                y=amounts,
                name=status_label(status),
                legendgroup=status,
                # A status first seen in a later panel still gets its legend entry.
                showlegend=status not in in_legend,
                marker_color=STATUS_COLOURS[status],
                hovertemplate=f"%{{x}} {status_label(status)}: {currency} %{{y:,.2f}}"
                "<extra></extra>",
                row=row,
                col=1,
            )
            in_legend.add(status)
        fig.update_yaxes(
            title_text=f"{currency} (invoice totals)", tickformat=",.0f", row=row, col=1
        )
    fig.update_xaxes(type="category", categoryorder="array", categoryarray=months)
    fig.update_layout(
        barmode="relative",
        height=280 * max(1, len(currencies)),
        margin={"t": 40, "b": 40, "l": 80},
        legend_title_text="Status",
    )
    return fig


# ------------------------------------------------------------------------------ table


# The invoice columns the table shows or derives its words from: plain columns rather than ORM
# objects, since the table holds up to TABLE_LIMIT rows on every visit.
_TABLE_COLUMNS = (
    "id",
    "number",
    "period",
    "currency",
    "status",
    "outcome",
    "total_minor",
    "amount_paid_minor",
    "amount_refunded_minor",
    "pre_payment_credit_notes_minor",
    "post_payment_credit_notes_minor",
    "due_at",
    "attempt_count",
    "next_payment_attempt",
    "issued_at",
    "paid_at",
    "hosted_invoice_url",
    "invoice_pdf",
)


def _table_query(f: InvoiceFilter) -> Any:
    # The name each invoice was issued to, not the customer's current one.
    columns = [getattr(Invoice, name) for name in _TABLE_COLUMNS]
    query = sa_select(*columns, bill_to_name().label("bill_to")).join(
        Customer, col(Customer.id) == col(Invoice.customer_id)
    )
    query = apply_filter(query, f)
    return query.order_by(col(Invoice.period).desc(), col(Invoice.id).desc())


def count_invoices(session: Session, f: InvoiceFilter) -> int:
    query = apply_filter(sa_select(func.count()).select_from(Invoice), f)
    return int(session.execute(query).scalar_one())


def scheduled_retry(next_attempt: datetime | None, now: datetime) -> datetime | None:
    """Stripe's next automatic attempt while it is still ahead; a date in the past (Stripe
    gave up, or the row was not refreshed since) schedules nothing."""
    return next_attempt if next_attempt is not None and next_attempt > now else None


def retry_text(invoice: Invoice, now: datetime) -> str:
    """'Next automatic attempt: 2026-11-25 06:00 UTC.' or 'No retry scheduled.'"""
    when = scheduled_retry(invoice.next_payment_attempt, now)
    return f"Next automatic attempt: {when:%Y-%m-%d %H:%M} UTC." if when else "No retry scheduled."


def days_late(invoice: Invoice, now: datetime) -> int | None:
    """Whole days past due of an invoice still owing something (None: not late, or owes
    nothing: paid, void, written off, credit, draft)."""
    return _days_late(
        invoice.display_status, invoice.total_minor, invoice.amount_paid_minor, invoice.due_at, now
    )


def _days_late(
    shown: DisplayStatus, total_minor: int, paid_minor: int, due_at: datetime | None, now: datetime
) -> int | None:
    if shown not in OUTSTANDING_STATUSES or total_minor <= paid_minor:
        return None
    days = days_past_due(due_at, now)
    return days if days is not None and days > 0 else None


def invoice_table(
    session: Session, f: InvoiceFilter, limit: int = TABLE_LIMIT, *, now: datetime | None = None
) -> pd.DataFrame:
    """The newest `limit` filtered invoices, money shown in each invoice's own currency;
    `next_attempt` only where a retry is still scheduled after `now` (default: the filter's
    as_of, else the clock); `days_past_due` only on invoices still owing and late."""
    now = now or f.as_of or utcnow()
    rows: list[dict[str, Any]] = []
    for inv in session.execute(_table_query(f).limit(limit)).all():
        cur = inv.currency
        shown = display_status(
            inv.status,
            inv.outcome,
            paid_minor=inv.amount_paid_minor,
            refunded_minor=inv.amount_refunded_minor,
        )
        credited = inv.pre_payment_credit_notes_minor + inv.post_payment_credit_notes_minor
        rows.append(
            {
                "id": inv.id,
                "number": inv.number or f"(local #{inv.id})",
                "customer": inv.bill_to,
                "period": inv.period,
                "status": status_label(
                    shown, credit_state(inv.total_minor, credited, inv.amount_refunded_minor)
                ),
                "total": display(inv.total_minor, cur),
                "paid": display(inv.amount_paid_minor, cur),
                "refunded": display(inv.amount_refunded_minor, cur)
                if inv.amount_refunded_minor
                else "",
                "due": inv.due_at,
                "days_past_due": _days_late(
                    shown, inv.total_minor, inv.amount_paid_minor, inv.due_at, now
                ),
                "attempts": inv.attempt_count,
                "next_attempt": scheduled_retry(inv.next_payment_attempt, now),
                "issued": inv.issued_at,
                "paid_at": inv.paid_at,
                "invoice_url": inv.hosted_invoice_url,
                "pdf_url": inv.invoice_pdf,
            }
        )
    return pd.DataFrame(
        rows,
        columns=[
            "id",
            "number",
            "customer",
            "period",
            "status",
            "total",
            "paid",
            "refunded",
            "due",
            "days_past_due",
            "attempts",
            "next_attempt",
            "issued",
            "paid_at",
            "invoice_url",
            "pdf_url",
        ],
    )


def find_invoice(session: Session, text: str) -> int | None:
    """An invoice id from what someone typed: a number like DEMO-2026-09-0001, or an id."""
    text = text.strip()
    if not text:
        return None
    by_number = session.exec(
        select(Invoice).where((Invoice.number == text) | (Invoice.stripe_invoice_id == text))
    ).first()
    if by_number is not None:
        return by_number.id
    digits = text.lstrip("#")
    if not digits.isdigit():
        return None
    by_id = session.get(Invoice, int(digits))
    return by_id.id if by_id is not None else None


# ------------------------------------------------------------------------------ detail


@dataclass
class Attempt:
    at: datetime
    outcome: str  # failed, succeeded, paid outside Stripe
    detail: str


@dataclass
class TimelineItem:
    at: datetime
    source: str  # stripe, local, audit
    what: str


@dataclass
class InvoiceDetail:
    invoice: Invoice
    customer: str
    lines: pd.DataFrame
    attempts: list[Attempt]
    timeline: list[TimelineItem]

    @property
    def lines_total_minor(self) -> int:
        return int(self.lines["amount_minor"].sum()) if not self.lines.empty else 0


def _priced_by(line: InvoiceLine) -> str:
    """'USD 141.03 at AWS rates, plan rule for all AWS costs: +10% markup' ('' before rules)."""
    cost = "" if line.aws_cost is None else f"{Money(line.aws_cost, 'USD')} at AWS rates"
    return ", ".join(x for x in (cost, line.pricing_rule or "") if x)


def _lines_frame(session: Session, invoice: Invoice) -> pd.DataFrame:
    lines = session.exec(
        select(InvoiceLine)
        .where(InvoiceLine.invoice_id == invoice.id)
        .order_by(col(InvoiceLine.position), col(InvoiceLine.id))
    ).all()
    cur = invoice.currency
    digits = exponent(cur)
    return pd.DataFrame(
        [
            {
                "position": line.position,
                "kind": line.kind,
                "description": line.description,
                "quantity": quantity_text(line.quantity),
                "unit_amount": amount_text(line.unit_amount, digits),
                "amount": display(line.amount_minor, cur),
                # How the line was priced (invoices drafted with pricing rules; issue 17)
                "priced by": _priced_by(line),
                "amount_minor": line.amount_minor,
            }
            for line in lines
        ],
        columns=[
            "position",
            "kind",
            "description",
            "quantity",
            "unit_amount",
            "amount",
            "priced by",
            "amount_minor",
        ],
    )


def _event_text(event: StripeEvent, currency: str) -> str:
    obj: dict[str, Any] = (event.payload.get("data") or {}).get("object") or {}
    attempt = obj.get("attempt_count")
    texts = {
        "invoice.created": "Created in Stripe",
        "invoice.finalized": "Finalized (invoice number issued)",
        "invoice.sent": "Sent to the customer",
        "invoice.payment_failed": f"Payment attempt {attempt} failed",
        "invoice.payment_succeeded": f"Payment attempt {attempt} succeeded",
        "invoice.voided": "Voided",
        "invoice.marked_uncollectible": "Marked uncollectible",
    }
    if event.type == "invoice.paid":
        paid = obj.get("amount_paid")
        return f"Paid {display(int(paid), currency)}" if isinstance(paid, int) else "Paid"
    if event.type == "charge.refunded":
        refunded = obj.get("amount_refunded")
        amount = display(int(refunded), currency) if isinstance(refunded, int) else ""
        return f"Refunded (total refunded {amount})"
    return texts.get(event.type, event.type)


def _attempts(events: list[StripeEvent], currency: str) -> list[Attempt]:
    out: list[Attempt] = []
    paid_by_charge = any(e.type == "invoice.payment_succeeded" for e in events)
    for e in events:
        obj: dict[str, Any] = (e.payload.get("data") or {}).get("object") or {}
        if e.type == "invoice.payment_failed":
            reason = e.detail or "reason not known"
            out.append(
                Attempt(e.created, "failed", f"attempt {obj.get('attempt_count')}: {reason}")
            )
        elif e.type == "invoice.payment_succeeded":
            out.append(Attempt(e.created, "succeeded", _event_text(e, currency)))
        elif e.type == "invoice.paid" and not paid_by_charge:
            out.append(Attempt(e.created, "paid outside Stripe", _event_text(e, currency)))
    return out


def invoice_detail(session: Session, invoice_id: int) -> InvoiceDetail | None:
    invoice = session.get(Invoice, invoice_id)
    if invoice is None:
        return None
    customer = session.get(Customer, invoice.customer_id)
    events = list(
        session.exec(
            select(StripeEvent)
            .where(StripeEvent.invoice_id == invoice_id)
            .order_by(col(StripeEvent.created), col(StripeEvent.received_at))
        ).all()
    )
    timeline = [TimelineItem(invoice.created_at, "local", "Draft built")]
    timeline += [
        TimelineItem(e.created, "stripe", _event_text(e, invoice.currency)) for e in events
    ]
    audits = session.exec(
        select(AuditEntry).where(AuditEntry.target == f"invoice:{invoice_id}")
    ).all()
    timeline += [TimelineItem(a.at, "audit", f"{a.action} by {a.actor}") for a in audits]
    timeline.sort(key=lambda item: item.at)
    return InvoiceDetail(
        invoice=invoice,
        customer=invoice.customer_name
        or (customer.name if customer else f"customer #{invoice.customer_id}"),
        lines=_lines_frame(session, invoice),
        attempts=_attempts(events, invoice.currency),
        timeline=timeline,
    )


def payment_method_table(session: Session) -> pd.DataFrame:
    """Per customer: default payment method (type, last four), failed invoices waiting."""
    failed = dict(
        session.exec(
            select(Invoice.customer_id, func.count())
            .where(display_status_in([DisplayStatus.FAILED]))
            .group_by(col(Invoice.customer_id))
        ).all()
    )
    rows = []
    for c in session.exec(select(Customer).order_by(col(Customer.name))).all():
        pm = parse_payment_method(c.default_payment_method)
        rows.append(
            {
                "id": c.id,
                "customer": c.name,
                "collection": c.collection_method.replace("_", " "),
                "has_payment_method": pm.present,
                "type": f"{pm.kind} {pm.brand}".strip(),
                "last4": pm.last4,
                "failed_invoices": failed.get(c.id or 0, 0),
                "in_stripe": bool(c.stripe_customer_id),
            }
        )
    return pd.DataFrame(
        rows,
        columns=[
            "id",
            "customer",
            "collection",
            "has_payment_method",
            "type",
            "last4",
            "failed_invoices",
            "in_stripe",
        ],
    )


@dataclass
class EventsTab:
    """The Stripe events tab: newest events as rows, and the failed ones apart.

    rows: created, type, id, source, outcome ("pending" before a first attempt), attempts,
    next_attempt ('2026-11-30 14:05 UTC', '' when none is scheduled: a blank cell, not the
    grid's grey None), note (the last error or a finding).
    """

    rows: list[dict[str, Any]]
    pending: int  # stored, never tried yet
    failed: list[StripeEvent]  # last attempt failed: retrying, or given up (next_attempt None)


def events_tab(session: Session, *, outcome: str | None = None, limit: int = 200) -> EventsTab:
    recent = sync.recent_events(session, outcome=outcome, limit=limit)
    rows = [
        {
            "created": when_text(e.created),  # one time format on every page
            "type": e.type,
            "id": e.id,
            "source": e.source,
            "outcome": e.outcome or "pending",
            "attempts": e.attempts,
            "next_attempt": when_text(e.next_attempt_at),
            "note": e.error or "",
        }
        for e in recent
    ]
    pending = len(payments_events.pending_event_ids(session))
    return EventsTab(rows, pending, payments_events.failed_events(session, limit))
