"""Page data for the usage page: daily drill-down series, tables and charts of a UsageReport.

Figures are exact up to this point; the frames hold floats only for display (progress bars,
sorting), and money arrives as already rounded minor units formatted per currency."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from decimal import ROUND_HALF_UP, Decimal

import pandas as pd
import plotly.graph_objects as go
from sqlmodel import Session, col, select

from billing_core.costs.snapshots import CostSource
from billing_core.models import (
    UsageRecord,
)
from billing_core.money import display, round_minor
from billing_core.periods import Period, as_utc
from billing_core.usage.limits import MetricUsage, UsageReport
from billing_core.usage.totals import aws_costs_by_day


@dataclass(frozen=True)
class DailyPoint:
    day: date
    value: Decimal  # the day's sum (cumulative metrics) or peak (levels)
    running: Decimal  # billable so far: running sum, or running peak


def daily_usage(
    session: Session, customer_id: int, period: Period, aggregations: Mapping[str, str]
) -> dict[str, list[DailyPoint]]:
    """Per metric, one point per day with data: the day's figure and the billable so far."""
    per_day: dict[str, dict[date, Decimal]] = defaultdict(dict)
    rows = session.exec(
        select(
            col(UsageRecord.metric), col(UsageRecord.occurred_at), col(UsageRecord.quantity)
        ).where(UsageRecord.customer_id == customer_id, UsageRecord.period == str(period))
    ).all()
    for metric, occurred_at, quantity in rows:
        day = as_utc(occurred_at).date()
        days = per_day[metric]
        if aggregations.get(metric, "sum") == "max":
            days[day] = max(days.get(day, quantity), quantity)
        else:
            days[day] = days.get(day, Decimal(0)) + quantity
    return {m: _running(days, aggregations.get(m, "sum")) for m, days in per_day.items()}


def _running(days: Mapping[date, Decimal], aggregation: str) -> list[DailyPoint]:
    points: list[DailyPoint] = []
    running = Decimal(0)
    for day in sorted(days):
        value = days[day]
        running = max(running, value) if aggregation == "max" else running + value
        points.append(DailyPoint(day, value, running))
    return points


def spend_by_day(
    session: Session, customer_id: int, period: Period, source: CostSource
) -> list[DailyPoint]:
    """The customer's AWS cost per day (USD, without markup) and running total, from the
    latest snapshot of `source` (the configured metric and grouping)."""
    days = aws_costs_by_day(session, period, source).get(customer_id, {})
    return _running(days, "sum")


def period_choices(session: Session, now: datetime, *, recent: int = 3) -> list[Period]:
    """The current and last few months, plus older months that hold usage; newest first."""
    current = Period.containing(now)
    stored = {Period.parse(p) for p in session.exec(select(UsageRecord.period).distinct()).all()}
    months = {current.shift(-i) for i in range(recent)} | {p for p in stored if p <= current}
    return sorted(months, reverse=True)[:24]


def iter_rows(report: UsageReport, statuses: Iterable[str] | None = None) -> list[MetricUsage]:
    wanted = set(statuses) if statuses else None
    return [r for r in report.rows if wanted is None or r.status in wanted]


STATUS_ORDER = {"over": 0, "near": 1, "projected over": 2, "ok": 3, "no limit": 4}


STATUS_LABELS = {
    "over": "🔴 over",
    "near": "🟠 near",
    "projected over": "🟡 projected over",
    "ok": "🟢 ok",
    "no limit": "no limit",
}


# What a person reads first comes first, so status and cost are on screen at 1440 px.
COLUMNS = [
    "customer_id",
    "Customer",
    "Metric",
    "Status",
    "Used",
    "Limit",
    "Used %",
    "Projected %",
    "Overage cost",
    "Projected overage cost",
    "Projected",
    "Overage",
    "Plan",
    "Alerts",
]


def metric_label(row: MetricUsage) -> str:
    if row.is_spend:
        return f"AWS spend ({row.plan_currency})"
    return f"{row.metric} ({row.unit})" if row.unit else row.metric


def _money(minor: int | None, currency: str, spend: bool) -> str:
    if spend:
        return "—"  # the spend limit has no overage price: AWS costs are billed as they are
    if minor is None:
        return "no FX rate"
    return display(minor, currency)


def is_count(row: MetricUsage) -> bool:
    """A metric counted in whole units (calls, seats): its used and included figures are
    whole, so a projection is shown whole as well, never as 1,234.7 calls."""
    whole = (row.used, row.included)
    return not row.is_spend and all(v == v.to_integral_value() for v in whole)


def quantity_text(value: Decimal, row: MetricUsage, count: bool | None = None) -> str:
    """A used, limit or projected figure as people read it: AWS spend as money in the plan's
    currency ('EUR 3,456.17'), counts whole ('1,234'), other quantities to 3 decimals.
    `count`: `is_count(row)` when the caller has it already."""
    if row.is_spend:
        return display(round_minor(value, row.plan_currency), row.plan_currency)
    if is_count(row) if count is None else count:
        return f"{value.quantize(Decimal(1), rounding=ROUND_HALF_UP):,}"
    shown = value.quantize(Decimal("0.001"), rounding=ROUND_HALF_UP).normalize()
    return f"{shown:,f}"


def _pct(value: Decimal | None) -> float | None:
    return None if value is None else float(value)


def alert_badges(thresholds: Sequence[int]) -> str:
    return " · ".join(f"🔔 {t}%" for t in thresholds)


def report_frame(rows: Sequence[MetricUsage]) -> pd.DataFrame:
    """One display row per customer and metric, worst status first."""
    keyed = sorted(
        ((r.status, r) for r in rows),
        key=lambda sr: (STATUS_ORDER[sr[0]], sr[1].customer, sr[1].metric),
    )
    records = [_record(r, status) for status, r in keyed]
    return pd.DataFrame(records, columns=COLUMNS)


def _record(r: MetricUsage, status: str) -> dict[str, object]:
    count = is_count(r)
    return {
        "customer_id": r.customer_id,
        "Customer": r.customer,
        "Plan": r.plan,
        "Metric": metric_label(r),
        "Used": quantity_text(r.used, r, count),
        "Limit": quantity_text(r.included, r, count),
        "Used %": _pct(r.used_pct),
        "Projected": quantity_text(r.projected, r, count),
        "Projected %": _pct(r.projected_pct),
        "Overage": quantity_text(r.overage, r, count),
        "Overage cost": _money(r.overage_minor, r.currency, r.is_spend),
        "Projected overage cost": _money(r.projected_overage_minor, r.currency, r.is_spend),
        "Status": STATUS_LABELS[status],
        "Alerts": alert_badges(r.alerts),
    }


def overage_totals(rows: Sequence[MetricUsage], *, projected: bool = False) -> dict[str, int]:
    """Estimated overage per customer currency: the sum of the rounded per-metric charges."""
    out: dict[str, int] = defaultdict(int)
    for r in rows:
        minor = r.projected_overage_minor if projected else r.overage_minor
        if minor and not r.is_spend:
            out[r.currency] += minor
    return dict(out)


def status_counts(report: UsageReport) -> dict[str, int]:
    """How many customers have at least one metric in each status (worst status wins)."""
    worst: dict[int, str] = {}
    for r in report.rows:
        current = worst.get(r.customer_id)
        if current is None or STATUS_ORDER[r.status] < STATUS_ORDER[current]:
            worst[r.customer_id] = r.status
    counts: dict[str, int] = defaultdict(int)
    for status in worst.values():
        counts[status] += 1
    return dict(counts)


def metric_figure(
    row: MetricUsage, points: Sequence[DailyPoint], period: Period, *, scale: Decimal = Decimal(1)
) -> go.Figure:
    """Daily usage against the limit line, with the projection to month end.

    `scale` turns the points into the row's terms (e.g. USD cost into spend with markup in
    the plan currency).
    """
    days = [p.day for p in points]
    running = [float(p.running * scale) for p in points]
    fig = go.Figure()
    if row.aggregation == "sum":
        fig.add_bar(x=days, y=[float(p.value * scale) for p in points], name="per day", opacity=0.4)
        fig.add_scatter(x=days, y=running, name="total so far", mode="lines+markers")
    else:
        fig.add_scatter(
            x=days, y=[float(p.value * scale) for p in points], name="level", line_shape="hv"
        )
    last_day: date = period.end - timedelta(days=1)
    if points and row.projected != row.used:
        fig.add_scatter(
            x=[days[-1], last_day],
            y=[running[-1], float(row.projected)],
            name="projection",
            mode="lines",
            line={"dash": "dot"},
        )
    fig.add_scatter(
        x=[period.start, last_day],
        y=[float(row.included)] * 2,
        name="limit",
        mode="lines",
        line={"dash": "dash", "color": "crimson"},
    )
    unit = row.plan_currency if row.is_spend else (row.unit or row.metric)
    # Legend above the plot: below it, it covered the dates and their year.
    fig.update_layout(
        title={"text": metric_label(row), "y": 0.97},
        height=320,
        margin={"l": 10, "r": 10, "t": 80, "b": 10},
        legend={"orientation": "h", "yanchor": "bottom", "y": 1.0, "x": 0},
        xaxis={"range": [period.start, last_day], "tickformat": "%b %d<br>%Y"},
        yaxis={"title": {"text": unit}, "tickformat": ",.2f" if row.is_spend else ",~r"},
    )
    return fig
