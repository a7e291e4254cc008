"""Demo usage: daily figures for the last closed month and the current month so far.

Most customers use 30 to 70 % of their plan; a few are near (80 to 99 %) or over their
limits, so the usage page, the alerts and the next invoice run's overage lines all have
something to show. Records go through the same ingestion code as an upload, and alerts through
the same code as `check-alerts`.
"""

from __future__ import annotations

import hashlib
import random
from datetime import UTC, datetime, time, timedelta
from decimal import ROUND_HALF_UP, Decimal

from sqlmodel import Session, select

from billing_core.customers.plans import effective_plan_id, plan_metrics
from billing_core.demo.catalog import CUSTOMERS
from billing_core.demo.costs import DEMO_COST_SOURCE
from billing_core.models import Customer, Plan
from billing_core.periods import Period
from billing_core.usage.alerts import check_alerts
from billing_core.usage.import_checks import UsageInput
from billing_core.usage.import_csv import record_usage

DEMO_THRESHOLDS = (80, 100)
# (customer key, metric) -> share of the included quantity used so far this month.
CURRENT: dict[tuple[str, str], Decimal] = {
    ("acme", "api_calls"): Decimal("0.92"),
    ("acme", "seats"): Decimal("1.2"),
    ("acme", "clusters"): Decimal("1"),  # at the limit: a 100 % alert, no overage
    ("birch", "storage_gb"): Decimal("1.16"),
    ("birch", "api_calls"): Decimal("0.85"),
    ("cobalt", "licences"): Decimal("0.9"),
    ("dune", "api_calls"): Decimal("1.18"),
    ("fjord", "seats"): Decimal("1.34"),
    ("granite", "clusters"): Decimal("1.34"),
    ("harbor", "storage_gb"): Decimal("0.88"),
}
# The same for the whole last closed month (what the next invoice run bills).
LAST_MONTH: dict[tuple[str, str], Decimal] = {
    ("acme", "seats"): Decimal("1.1"),
    ("birch", "storage_gb"): Decimal("1.1"),
    ("dune", "api_calls"): Decimal("1.12"),
    ("fjord", "seats"): Decimal("1.34"),
    ("granite", "clusters"): Decimal("1.34"),
}
_LEVEL_STEP = Decimal("0.01")


def _rng(*parts: object) -> random.Random:
    seed = hashlib.sha256("|".join(map(str, parts)).encode()).hexdigest()
    return random.Random(int(seed[:16], 16))


def _default_share(key: str, metric: str, period: Period) -> Decimal:
    return Decimal(_rng(key, metric, period, "share").randint(30, 70)) / 100


def _sum_series(target: int, days: int, rng: random.Random) -> list[int]:
    """`days` daily amounts adding up to exactly `target`, growing slightly with noise."""
    weights = [Decimal(100 + i * 2 + rng.randint(-15, 15)) for i in range(days)]
    total = sum(weights, Decimal(0))
    amounts = [int(target * w / total) for w in weights]
    amounts[-1] += target - sum(amounts)
    return amounts


def _level_series(target: Decimal, days: int, integer: bool, rng: random.Random) -> list[Decimal]:
    """Daily levels that climb towards `target` and reach it on the last day (the peak)."""
    values = []
    for i in range(days):
        share = Decimal("0.8") + Decimal("0.2") * Decimal(i + 1) / Decimal(days)
        value = target * share * Decimal(rng.randint(97, 100)) / 100
        value = value.quantize(Decimal(1) if integer else _LEVEL_STEP, rounding=ROUND_HALF_UP)
        values.append(min(value, target))
    values[-1] = target
    return values


def _records(
    key: str,
    customer: Customer,
    metric: str,
    aggregation: str,
    included: Decimal,
    share: Decimal,
    period: Period,
    days: int,
) -> list[UsageInput]:
    rng = _rng(key, metric, period)
    target = included * share
    integer = metric != "storage_gb"
    if aggregation == "max":
        # Rounded down, so a default share never lands a small limit (1 cluster) at 100 %.
        level = Decimal(int(target)) if integer else target.quantize(_LEVEL_STEP)
        values = _level_series(level, days, integer, rng)
    else:
        values = [Decimal(v) for v in _sum_series(int(target), days, rng)]
    start = datetime.combine(period.start, time(12), tzinfo=UTC)
    return [
        UsageInput(customer.email, metric, value, start + timedelta(days=i))
        for i, value in enumerate(values)
    ]


def seed_usage(session: Session, now: datetime) -> dict[str, int]:
    current = Period.containing(now)
    last = current.previous()
    customers = {c.email: c for c in session.exec(select(Customer)).all()}
    plans = {p.id: p for p in session.exec(select(Plan)).all()}
    records: list[UsageInput] = []
    for period, days, overrides in (
        (last, last.days, LAST_MONTH),
        (current, current.days_elapsed(now), CURRENT),
    ):
        if days == 0:
            continue
        for spec in CUSTOMERS:
            customer = customers[spec.email]
            plan = plans.get(effective_plan_id(customer, period) or -1)
            if plan is None:
                continue
            for pm in plan_metrics(session, plan.id or 0):
                share = overrides.get((spec.key, pm.metric)) or _default_share(
                    spec.key, pm.metric, period
                )
                records += _records(
                    spec.key,
                    customer,
                    pm.metric,
                    pm.aggregation,
                    pm.included_quantity,
                    share,
                    period,
                    days,
                )
    result = record_usage(session, records, now=now, actor="demo", source="demo", audited=False)
    alerts = 0
    for period in (last, current):
        alerts += len(
            check_alerts(
                session,
                now=now,
                period=period,
                thresholds=DEMO_THRESHOLDS,
                source=DEMO_COST_SOURCE,
            )
        )
    return {"usage records": result.imported, "alerts": alerts}
