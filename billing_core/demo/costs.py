"""Demo AWS costs: Cost Explorer-shaped responses fed through the real parser into snapshots.

13 closed months plus the running month, daily, for the demo customers' accounts and some
unattributed spend (the company's own account). Closed months get the DAILY snapshot taken
just after the month ended (still estimated) and the final MONTHLY one a few days later, as
cron would. Each customer's month adds up exactly to `catalog.monthly_service_costs`, so demo
invoices match the costs. The last closed month (not invoiced yet) holds a credit and a refund.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import date, datetime, timedelta
from decimal import Decimal
from typing import Any

from sqlmodel import Session

from billing_core.costs import cost_explorer as ce
from billing_core.costs.snapshots import CostSource, store_snapshot
from billing_core.demo.catalog import (
    CUSTOMERS,
    SERVICES,
    UNATTRIBUTED_ACCOUNTS,
    DemoCustomer,
    monthly_service_costs,
    rng,
)
from billing_core.periods import Period, as_utc

#: What the demo's snapshots hold (the settings' defaults); demo readers ask for it.
DEMO_COST_SOURCE = CostSource("UnblendedCost", "LINKED_ACCOUNT")

CLOSED_MONTHS = 13
PAGE_SIZE = 2000  # groups per response page, so the demo goes through paging too
_PLACES = Decimal("0.0000000001")
# The company's own tooling: spend no customer pays for.
INTERNAL = DemoCustomer(
    "internal",
    "Internal tooling",
    "ops@example.com",
    "USD",
    "enterprise",
    UNATTRIBUTED_ACCOUNTS,
    "",
    monthly_usd=650,
    services=(SERVICES[0], SERVICES[1], SERVICES[3], SERVICES[9], SERVICES[12]),
)
# (account, record type, USD) in the last closed month.
ADJUSTMENTS: tuple[tuple[str, str, Decimal], ...] = (
    ("333333333333", "Credit", Decimal("-250.0000000000")),  # Cobalt: promotional credit
    ("222222222222", "Refund", Decimal("-12.5000000000")),  # Birch: refunded overcharge
)


def _spenders() -> tuple[DemoCustomer, ...]:
    return (*CUSTOMERS, INTERNAL)


def _account_of(spec: DemoCustomer, index: int) -> str:
    # Customers with several accounts run different services in each.
    return spec.accounts[index % len(spec.accounts)]


def _split_by_day(total: Decimal, key: tuple[object, ...], days: list[date]) -> list[Decimal]:
    """Spread a month's amount over its days (weekday dip, noise); sums back exactly."""
    r = rng("daily", *key)
    weights = [
        Decimal(r.randint(85, 115)) * (Decimal("0.8") if d.weekday() >= 5 else Decimal(1))
        for d in days
    ]
    whole = sum(weights, Decimal(0))
    parts = [(total * w / whole).quantize(_PLACES) for w in weights[:-1]]
    return [*parts, total - sum(parts, Decimal(0))]


def _usage_amounts(
    period: Period, granularity: str, covered: int, today_share: Decimal
) -> Iterator[tuple[date, str, str, Decimal]]:
    """(bucket, account, service, amount) for every spender's usage in a period."""
    days = period.dates()
    for spec in _spenders():
        for index, (service, amount) in enumerate(
            sorted(monthly_service_costs(spec, period).items())
        ):
            account = _account_of(spec, index)
            if granularity == "MONTHLY":
                yield period.start, account, service, amount
                continue
            for n, (day, part) in enumerate(
                zip(days, _split_by_day(amount, (spec.key, period, service), days), strict=True)
            ):
                if n >= covered:
                    break
                share = today_share if n == covered - 1 else Decimal(1)
                yield day, account, service, (part * share).quantize(_PLACES)


def _amount(value: Decimal) -> dict[str, str]:
    return {"Amount": str(value), "Unit": "USD"}


def _responses(
    query: ce.CostQuery, groups: list[tuple[date, str, str, Decimal]], estimated: bool
) -> list[dict[str, Any]]:
    """Cost Explorer pages: ResultsByTime per bucket, groups split over pages of PAGE_SIZE."""
    buckets = (
        [query.period.start]
        if query.granularity == "MONTHLY"
        else [d for d in query.period.dates() if d < query.end]
    )
    by_bucket: dict[date, list[dict[str, Any]]] = {b: [] for b in buckets}
    for bucket, key, second, amount in groups:
        by_bucket[bucket].append(
            {"Keys": [key, second], "Metrics": {query.metric: _amount(amount)}}
        )
    pages: list[dict[str, Any]] = []
    current: list[dict[str, Any]] = []
    size = 0
    for bucket in buckets:
        end = bucket + timedelta(days=1) if query.granularity == "DAILY" else query.period.end
        result: dict[str, Any] = {
            "TimePeriod": {"Start": bucket.isoformat(), "End": end.isoformat()},
            "Total": {},
            "Groups": [],
            "Estimated": estimated,
        }
        current.append(result)
        for group in by_bucket[bucket]:
            if size == PAGE_SIZE:
                pages.append({"ResultsByTime": current, "NextPageToken": f"demo-{len(pages) + 1}"})
                result = {**result, "Groups": []}
                current, size = [result], 0
            result["Groups"].append(group)
            size += 1
    pages.append({"ResultsByTime": current, "DimensionValueAttributes": []})
    return pages


def _snapshot(
    session: Session,
    period: Period,
    granularity: str,
    *,
    fetched_at: datetime,
    estimated: bool,
    adjustments: bool,
) -> int:
    if granularity == "MONTHLY":
        query = ce.CostQuery(period, "MONTHLY", period.start, period.end)
        covered, today_share = period.days, Decimal(1)
    else:
        last = min(fetched_at.date(), period.end - timedelta(days=1))
        covered = (last - period.start).days + 1
        query = ce.CostQuery(period, "DAILY", period.start, last + timedelta(days=1))
        running = fetched_at < period.end_at
        # Today's figures are partial, as Cost Explorer shows them during the day.
        today_share = Decimal(fetched_at.hour + 1) / 24 if running else Decimal(1)
    usage = list(_usage_amounts(period, granularity, covered, today_share))
    extra: list[tuple[date, str, str, Decimal]] = []
    if adjustments:
        bucket = period.start if granularity == "MONTHLY" else period.end - timedelta(days=1)
        extra = [(bucket, acct, kind, amount) for acct, kind, amount in ADJUSTMENTS]
    result = ce.parse_responses(
        query,
        _responses(query, usage, estimated),
        _responses(query, extra, estimated),
        currency="USD",
    )
    if granularity == "DAILY" and fetched_at < period.end_at:
        # What Cost Explorer's forecast would say: the month's full demo amounts.
        full = sum(
            (a for spec in _spenders() for a in monthly_service_costs(spec, period).values()),
            Decimal(0),
        )
        result.forecast = full
    store_snapshot(session, result, fetched_at=fetched_at, source="demo")
    return len(result.rows)


def seed_costs(session: Session, now: datetime) -> dict[str, int]:
    """Cost snapshots for the 13 closed months before `now` and the running month."""
    now = as_utc(now)
    current = Period.containing(now)
    lines = snapshots = 0
    last_closed = current.previous()
    for age in range(CLOSED_MONTHS, 0, -1):
        period = current.shift(-age)
        adjust = period == last_closed
        lines += _snapshot(
            session,
            period,
            "DAILY",
            # Never after `now`: a demo seeded early on the 1st has no fetch from the future.
            fetched_at=min(period.end_at + timedelta(hours=2), now),
            estimated=True,
            adjustments=adjust,
        )
        final_at = min(
            max(
                min(period.end_at + timedelta(days=4), now - timedelta(hours=1)),
                period.end_at + timedelta(hours=3),
            ),
            now,
        )
        lines += _snapshot(
            session, period, "MONTHLY", fetched_at=final_at, estimated=False, adjustments=adjust
        )
        snapshots += 2
    lines += _snapshot(
        session,
        current,
        "DAILY",
        fetched_at=max(now - timedelta(minutes=30), current.start_at),
        estimated=True,
        adjustments=False,
    )
    return {"cost snapshots": snapshots + 1, "cost lines": lines}
