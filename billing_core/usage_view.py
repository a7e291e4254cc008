"""Tables and charts of the usage page, built from a UsageReport (no streamlit here).

Figures are exact up to this point; the frames hold floats only for display (progress bars,
sorting), and money arrives as already rounded minor units formatted per currency.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from datetime import date, timedelta
from decimal import Decimal

import pandas as pd
import plotly.graph_objects as go

from billing_core.money import display
from billing_core.periods import Period
from billing_core.usage import DailyPoint, MetricUsage, UsageReport

STATUS_ORDER = {"over": 0, "near": 1, "projected over": 2, "ok": 3, "no limit": 4}
STATUS_LABELS = {
    "over": "🔴 over",
    "near": "🟠 near",
    "projected over": "🟡 projected over",
    "ok": "🟢 ok",
    "no limit": "no limit",
}
COLUMNS = [
    "customer_id",
    "Customer",
    "Plan",
    "Metric",
    "Used",
    "Limit",
    "Used %",
    "Projected",
    "Projected %",
    "Overage",
    "Overage cost",
    "Projected overage cost",
    "Status",
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


def _pct(value: Decimal | None) -> float | None:
    return None if value is None else float(value)


def alert_badges(thresholds: Sequence[int]) -> str:
    return " · ".join(f"🔔 {t}%" for t in thresholds)


def report_frame(rows: Sequence[MetricUsage]) -> pd.DataFrame:
    """One display row per customer and metric, worst status first."""
    ordered = sorted(rows, key=lambda r: (STATUS_ORDER[r.status], r.customer, r.metric))
    records = [
        {
            "customer_id": r.customer_id,
            "Customer": r.customer,
            "Plan": r.plan,
            "Metric": metric_label(r),
            "Used": float(r.used),
            "Limit": float(r.included),
            "Used %": _pct(r.used_pct),
            "Projected": float(r.projected),
            "Projected %": _pct(r.projected_pct),
            "Overage": float(r.overage),
            "Overage cost": _money(r.overage_minor, r.currency, r.is_spend),
            "Projected overage cost": _money(r.projected_overage_minor, r.currency, r.is_spend),
            "Status": STATUS_LABELS[r.status],
            "Alerts": alert_badges(r.alerts),
        }
        for r in ordered
    ]
    return pd.DataFrame(records, columns=COLUMNS)


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
    fig.update_layout(
        title=metric_label(row),
        height=300,
        margin={"l": 10, "r": 10, "t": 40, "b": 10},
        legend={"orientation": "h"},
        xaxis={"range": [period.start, last_day]},
    )
    return fig
