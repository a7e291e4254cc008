"""Usage against plan limits: totals per customer and metric, and overage amounts."""

from __future__ import annotations

from decimal import Decimal

from sqlmodel import Session, col, func, select

from billing_core.models import UsageRecord
from billing_core.periods import Period


def totals_by_metric(
    session: Session, period: Period, customer_id: int | None = None
) -> dict[tuple[int, str], Decimal]:
    """Recorded usage per (customer id, metric) for a period, summed exactly in SQL."""
    query = (
        select(UsageRecord.customer_id, UsageRecord.metric, func.sum(UsageRecord.quantity))
        .where(UsageRecord.period == str(period))
        .group_by(col(UsageRecord.customer_id), col(UsageRecord.metric))
    )
    if customer_id is not None:
        query = query.where(UsageRecord.customer_id == customer_id)
    return {(cid, metric): Decimal(total or 0) for cid, metric, total in session.exec(query).all()}


def overage_quantity(used: Decimal, included: Decimal) -> Decimal:
    """How much of `used` lies above the included quantity (never negative)."""
    return max(Decimal(0), used - included)


def overage_amount(used: Decimal, included: Decimal, unit_price: Decimal) -> Decimal:
    """Full-precision overage charge in the plan currency; rounded only on the invoice line."""
    return overage_quantity(used, included) * unit_price
