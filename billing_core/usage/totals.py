"""Usage totals from the database: the month's billable quantity per customer and metric (sum for
cumulative metrics, max for levels) and AWS cost by day."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date, datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import select as sa_select
from sqlmodel import Session, col, func

from billing_core.costs.snapshots import CostSource
from billing_core.customers.plans import metrics_by_plan
from billing_core.customers.terms import Terms, terms_in_force
from billing_core.models import (
    CostAccountDailyRollup,
    UsageRecord,
)
from billing_core.periods import Period


@dataclass(frozen=True)
class _Stats:
    total: Decimal
    peak: Decimal
    last_at: datetime | None


def _grouped_usage(period: Period, customer_id: int | None, *extra: Any) -> Any:
    """(customer id, metric, sum, peak, *extra) per customer and metric of the period's usage,
    of one customer when `customer_id` is given."""
    query = (
        sa_select(
            col(UsageRecord.customer_id),
            col(UsageRecord.metric),
            func.sum(UsageRecord.quantity),
            func.max(UsageRecord.quantity),
            *extra,
        )
        .where(col(UsageRecord.period) == str(period))
        .group_by(col(UsageRecord.customer_id), col(UsageRecord.metric))
    )
    if customer_id is not None:
        query = query.where(col(UsageRecord.customer_id) == customer_id)
    return query


def _usage_stats(
    session: Session, period: Period, customer_id: int | None = None
) -> dict[tuple[int, str], _Stats]:
    query = _grouped_usage(period, customer_id, func.max(UsageRecord.occurred_at))
    return {
        (cid, metric): _Stats(Decimal(total or 0), Decimal(peak or 0), last)
        for cid, metric, total, peak, last in session.execute(query).all()
    }


def _aggregations(
    session: Session, period: Period, in_force: Mapping[int, Terms] | None = None
) -> dict[tuple[int, str], str]:
    """(customer id, metric) -> aggregation, from each customer's plan for the period."""
    by_plan = metrics_by_plan(session)
    out: dict[tuple[int, str], str] = {}
    if in_force is None:
        in_force = terms_in_force(session, period)
    for cid, terms in in_force.items():
        for metric, pm in by_plan.get(terms.plan_id or -1, {}).items():
            out[(cid, metric)] = pm.aggregation
    return out


def totals_by_metric(
    session: Session,
    period: Period,
    customer_id: int | None = None,
    *,
    in_force: Mapping[int, Terms] | None = None,
) -> dict[tuple[int, str], Decimal]:
    """Billable usage per (customer id, metric) for a period: sum, or peak for level metrics.

    Metrics outside the customer's plan are summed (they carry no price, so bill nothing).
    `in_force`: every customer's `terms_in_force` for the period when the caller has read them
    already (read here otherwise).
    """
    query = _grouped_usage(period, customer_id)
    # Sum and peak only (not the last record's time, as the usage page needs): a run reads
    # one row per customer and metric.
    rows = session.execute(query).all()
    if not rows:
        return {}  # no usage: every customer's terms (a large read) are not needed
    kinds = _aggregations(session, period, in_force)
    return {
        (cid, metric): Decimal((peak if kinds.get((cid, metric), "sum") == "max" else total) or 0)
        for cid, metric, total, peak in rows
    }


def aws_costs_by_day(
    session: Session, period: Period, source: CostSource, customer_id: int | None = None
) -> dict[int, dict[date, Decimal]]:
    """Month-to-date AWS cost (USD, full precision) per customer and day, from the latest
    snapshot of `source` (the configured metric and grouping); {} when there is none. With
    `customer_id`, that customer's accounts only (selected in SQL by its attribution). Read
    from the snapshot's rollup by account and day (costs/rollups.py), not its lines."""
    from billing_core.costs.attribution import Attribution
    from billing_core.costs.snapshots import latest_snapshot

    snapshot = latest_snapshot(session, period, source)
    if snapshot is None:
        return {}
    who = Attribution.load(session, period)
    rollup = CostAccountDailyRollup
    query = (
        sa_select(
            col(rollup.account_id),
            col(rollup.tag_value),
            col(rollup.day),
            func.sum(col(rollup.amount)),
        )
        .where(col(rollup.snapshot_id) == snapshot.id)
        .group_by(col(rollup.account_id), col(rollup.tag_value), col(rollup.day))
    )
    if customer_id is not None:
        condition = who.condition(snapshot.group_by, customer_id, rollup)
        if condition is not None:
            query = query.where(condition)
    out: dict[int, dict[date, Decimal]] = defaultdict(lambda: defaultdict(Decimal))
    # Summed in SQL per account, tag and day (currencies of the rollup rows added up, as the
    # lines were): no row object per cost line.
    for account_id, tag_value, day, amount in session.execute(query):
        owner = who.customer_for(snapshot.group_by, account_id, tag_value)
        if owner is not None:
            out[owner][date.fromisoformat(day)] += Decimal(amount or 0)
    return {cid: dict(days) for cid, days in out.items()}
