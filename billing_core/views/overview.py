"""Figures for the overview page, read from the database only."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from datetime import datetime

from sqlmodel import Session, col, func, select

from billing_core.models import Customer, Invoice
from billing_core.periods import Period


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
        .where(Invoice.period == str(last), col(Invoice.status).not_in(["draft", "void"]))
        .group_by(Invoice.currency)
    ).all()
    for currency, count, total in billed:
        out.billed_last_month[currency] = int(total or 0)
        out.invoices_last_month += count
    by_status: dict[str, dict[str, int]] = defaultdict(dict)
    rows = session.exec(
        select(Invoice.status, Invoice.currency, func.count(), func.sum(Invoice.total_minor))
        .where(col(Invoice.status).in_(["open", "failed"]))
        .group_by(Invoice.status, Invoice.currency)
    ).all()
    for status, currency, count, total in rows:
        by_status[status][currency] = int(total or 0)
        if status == "open":
            out.open_count += count
        else:
            out.failed_count += count
    out.open_minor = by_status["open"]
    out.failed_minor = by_status["failed"]
    return out
