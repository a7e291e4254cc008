"""Figures for the overview page, read from the database only."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from datetime import datetime

from sqlalchemy import select as sa_select
from sqlmodel import Session, col, func, select

from billing_core.models import Customer, Invoice, display_status_in
from billing_core.periods import Period
from billing_core.states import DisplayStatus, display_status

# Shown words of invoices that billed nothing (a carried amount is billed the month after).
_NOT_BILLED = (DisplayStatus.DRAFT, DisplayStatus.VOID, DisplayStatus.CARRIED)


@dataclass
class Overview:
    period: Period
    last_period: Period
    active_customers: int
    billed_last_month: dict[str, int] = field(default_factory=dict)  # currency -> minor
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
    # Per currency, never summed across currencies.
    billed = session.exec(
        select(Invoice.currency, func.count(), func.sum(Invoice.total_minor))
        .where(Invoice.period == str(last), ~display_status_in(_NOT_BILLED))
        .group_by(Invoice.currency)
    ).all()
    for currency, count, total in billed:
        out.billed_last_month[currency] = int(total or 0)
        out.invoices_last_month += count
    by_status: dict[str, dict[str, int]] = defaultdict(dict)
    rows = session.execute(
        sa_select(
            col(Invoice.status),
            col(Invoice.outcome),
            col(Invoice.currency),
            func.count(),
            func.sum(col(Invoice.total_minor)),
        )
        .where(display_status_in([DisplayStatus.OPEN, DisplayStatus.FAILED]))
        .group_by(col(Invoice.status), col(Invoice.outcome), col(Invoice.currency))
    ).all()
    for stripe_status, outcome, currency, count, total in rows:
        status = display_status(stripe_status, outcome)
        by_status[status][currency] = by_status[status].get(currency, 0) + int(total or 0)
        if status == DisplayStatus.OPEN:
            out.open_count += count
        else:
            out.failed_count += count
    out.open_minor = by_status[DisplayStatus.OPEN]
    out.failed_minor = by_status[DisplayStatus.FAILED]
    return out
