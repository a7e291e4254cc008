"""Figures for the overview page, read from the database only."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

from sqlmodel import Session, col, func, select

from billing_core.invoicing.figures import BILLED_STATUSES
from billing_core.models import Customer
from billing_core.periods import Period
from billing_core.states import DisplayStatus
from billing_core.views.invoices import InvoiceFilter, headline_figures


@dataclass
class Overview:
    period: Period
    last_period: Period
    active_customers: int
    billed_last_month: dict[str, int] = field(default_factory=dict)  # currency -> minor
    # Taken back from last month's invoices by credit notes (billed less this: net revenue).
    credit_notes_last_month: dict[str, int] = field(default_factory=dict)
    invoices_last_month: int = 0
    open_count: int = 0
    open_minor: dict[str, int] = field(default_factory=dict)
    failed_count: int = 0
    failed_minor: dict[str, int] = field(default_factory=dict)
    days_elapsed: int = 0
    days_in_month: int = 0


def build_overview(session: Session, now: datetime) -> Overview:
    period = Period.containing(now)
    last = period.previous()
    active = session.exec(
        select(func.count()).select_from(Customer).where(col(Customer.active).is_(True))
    ).one()
    out = Overview(
        period=period,
        last_period=last,
        active_customers=active,
        days_elapsed=period.days_elapsed(now),
        days_in_month=period.days,
    )
    # Per currency, never summed across currencies; billed as the invoices page defines it.
    last_month = headline_figures(
        session, InvoiceFilter(period_from=str(last), period_to=str(last))
    )
    for fig in last_month:
        billed = sum(n for word, n in fig.counts.items() if word in BILLED_STATUSES)
        if billed:  # a currency with only drafts, voids or carried amounts billed nothing
            out.billed_last_month[fig.currency] = fig.billed
        if fig.credit_notes:
            out.credit_notes_last_month[fig.currency] = fig.credit_notes
        out.invoices_last_month += billed
    # What is still due, of any month: the unpaid remainder, as the invoices page shows it.
    for fig in headline_figures(session, InvoiceFilter()):
        opened = fig.counts.get(DisplayStatus.OPEN, 0)
        failed = fig.counts.get(DisplayStatus.FAILED, 0)
        out.open_count += opened
        out.failed_count += failed
        if opened:
            out.open_minor[fig.currency] = fig.open
        if failed:
            out.failed_minor[fig.currency] = fig.failed
    return out
