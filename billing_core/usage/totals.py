"""Usage totals from the database: the month's billable quantity per customer and metric (sum for
cumulative metrics, max for levels), AWS cost by day, and the overage charges of a period."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date, datetime
from decimal import Decimal

from sqlalchemy import select as sa_select
from sqlmodel import Session, col, func, select

from billing_core.customers.plans import effective_plan_id, metrics_by_plan
from billing_core.models import (
    CostLine,
    Customer,
    Plan,
    UsageRecord,
)
from billing_core.periods import Period
from billing_core.usage.overage import overage_charge_minor, overage_quantity


@dataclass(frozen=True)
class _Stats:
    total: Decimal
    peak: Decimal
    last_at: datetime | None


def _usage_stats(
    session: Session, period: Period, customer_id: int | None = None
) -> dict[tuple[int, str], _Stats]:
    query = (
        sa_select(
            col(UsageRecord.customer_id),
            col(UsageRecord.metric),
            func.sum(UsageRecord.quantity),
            func.max(UsageRecord.quantity),
            func.max(UsageRecord.occurred_at),
        )
        .where(col(UsageRecord.period) == str(period))
        .group_by(col(UsageRecord.customer_id), col(UsageRecord.metric))
    )
    if customer_id is not None:
        query = query.where(col(UsageRecord.customer_id) == customer_id)
    return {
        (cid, metric): _Stats(Decimal(total or 0), Decimal(peak or 0), last)
        for cid, metric, total, peak, last in session.execute(query).all()
    }


def _aggregations(session: Session, period: Period) -> dict[tuple[int, str], str]:
    """(customer id, metric) -> aggregation, from each customer's plan for the period."""
    by_plan = metrics_by_plan(session)
    out: dict[tuple[int, str], str] = {}
    for customer in session.exec(select(Customer)).all():
        plan_id = effective_plan_id(customer, period)
        for metric, pm in by_plan.get(plan_id or -1, {}).items():
            out[(customer.id or 0, metric)] = pm.aggregation
    return out


def totals_by_metric(
    session: Session, period: Period, customer_id: int | None = None
) -> dict[tuple[int, str], Decimal]:
    """Billable usage per (customer id, metric) for a period: sum, or peak for level metrics.

    Metrics outside the customer's plan are summed (they carry no price, so bill nothing).
    """
    stats = _usage_stats(session, period, customer_id)
    kinds = _aggregations(session, period)
    return {
        key: (s.peak if kinds.get(key, "sum") == "max" else s.total) for key, s in stats.items()
    }


# Lead: swap for billing_core.costs at merge (latest snapshot, attribution by account or tag).
def aws_costs_by_day(session: Session, period: Period) -> dict[int, dict[date, Decimal]]:
    """Month-to-date AWS cost (USD, full precision) per customer and day, latest snapshot."""
    from billing_core.costs.attribution import Attribution
    from billing_core.costs.snapshots import latest_snapshot

    snapshot = latest_snapshot(session, period)
    if snapshot is None:
        return {}
    who = Attribution.load(session)
    out: dict[int, dict[date, Decimal]] = defaultdict(lambda: defaultdict(Decimal))
    for line in session.exec(select(CostLine).where(CostLine.snapshot_id == snapshot.id)).all():
        customer_id = who.customer_for(snapshot.group_by, line.account_id, line.tag_value)
        if customer_id is not None:
            out[customer_id][date.fromisoformat(line.day)] += line.amount
    return {cid: dict(days) for cid, days in out.items()}


@dataclass(frozen=True)
class OverageCharge:
    """One metric's overage for an invoice line: quantity above the plan, rounded amount."""

    metric: str
    unit: str
    used: Decimal
    included: Decimal
    quantity: Decimal
    unit_price: Decimal  # plan currency, full precision
    plan_currency: str
    currency: str  # the customer's (invoice) currency
    amount_minor: int  # rounded once, in `currency`


def overage_charges(
    session: Session, customer: Customer, period: Period, *, usd_rates: Mapping[str, Decimal]
) -> list[OverageCharge]:
    """The customer's overage for a period, per metric of its plan (for invoice lines).

    Raises ExchangeRateMissing when the plan and customer currencies differ and no rate is
    given; the usage page shows the same figures for a closed month.
    """
    plan_id = effective_plan_id(customer, period)
    metrics = metrics_by_plan(session).get(plan_id or -1, {})
    plan = session.get(Plan, plan_id) if plan_id is not None else None
    if plan is None:
        return []
    totals = totals_by_metric(session, period, customer.id)
    out: list[OverageCharge] = []
    for metric, pm in metrics.items():
        used = totals.get((customer.id or 0, metric), Decimal(0))
        quantity = overage_quantity(used, pm.included_quantity)
        if quantity <= 0:
            continue
        out.append(
            OverageCharge(
                metric=metric,
                unit=pm.unit,
                used=used,
                included=pm.included_quantity,
                quantity=quantity,
                unit_price=pm.overage_unit_price,
                plan_currency=plan.currency,
                currency=customer.currency,
                amount_minor=overage_charge_minor(
                    used,
                    pm.included_quantity,
                    pm.overage_unit_price,
                    plan_currency=plan.currency,
                    currency=customer.currency,
                    usd_rates=usd_rates,
                ),
            )
        )
    return out
