"""Plotly figures for the AWS costs page (pure: a CostsView in, a figure out).

Bars are plotted from floats (plotly needs numbers); every label and hover text is formatted
from the exact Decimal so what people read is the stored figure rounded once.
"""

from __future__ import annotations

from collections import defaultdict
from decimal import Decimal

import plotly.graph_objects as go

from billing_core import money
from billing_core.costs import UNATTRIBUTED_LABEL, CostsView, chart_values

#: Services drawn on their own in the daily chart; the rest are summed as "Other services".
TOP_SERVICES = 8
_UNATTRIBUTED_COLOUR = "#d62728"
_ADJUSTMENT_COLOUR = "#2ca02c"
_COLOUR = "#1f77b4"


def _label(amount: Decimal, currency: str) -> str:
    return money.display(money.round_minor(amount, currency), currency)


def _layout(fig: go.Figure, title: str, height: int) -> go.Figure:
    fig.update_layout(
        title=title, height=height, margin={"l": 10, "r": 10, "t": 40, "b": 10}, showlegend=False
    )
    return fig


def by_service_figure(view: CostsView) -> go.Figure:
    """Horizontal bars per service, largest on top; credits and refunds in their own colour."""
    frame = view.by_service.iloc[::-1]
    adjustments = set(view.adjustments)
    fig = go.Figure(
        go.Bar(
            x=chart_values(frame["amount"]),
            y=list(frame["service"]),
            orientation="h",
            marker_color=[
                _ADJUSTMENT_COLOUR if s in adjustments else _COLOUR for s in frame["service"]
            ],
            text=[_label(a, view.currency) for a in frame["amount"]],
            hovertemplate="%{y}<br>%{text}<extra></extra>",
        )
    )
    return _layout(fig, "By service", max(300, 26 * len(frame) + 80))


def by_customer_figure(view: CostsView) -> go.Figure:
    """Bars per customer; unattributed spend stands out in red."""
    frame = view.by_customer.iloc[::-1]
    colours = [
        _UNATTRIBUTED_COLOUR if c == UNATTRIBUTED_LABEL else _COLOUR for c in frame["customer"]
    ]
    fig = go.Figure(
        go.Bar(
            x=chart_values(frame["amount"]),
            y=list(frame["customer"]),
            orientation="h",
            marker_color=colours,
            text=[_label(a, view.currency) for a in frame["amount"]],
            hovertemplate="%{y}<br>%{text}<extra></extra>",
        )
    )
    return _layout(fig, "By customer", max(300, 30 * len(frame) + 80))


def daily_figure(view: CostsView) -> go.Figure:
    """Daily amounts stacked by service: the biggest services, then "Other services"."""
    frame = view.daily
    totals: dict[str, Decimal] = defaultdict(Decimal)
    for service, amount in zip(frame["service"], frame["amount"], strict=True):
        totals[service] += amount
    top = sorted(totals, key=lambda s: totals[s], reverse=True)[:TOP_SERVICES]
    series: dict[str, dict[object, Decimal]] = defaultdict(lambda: defaultdict(Decimal))
    for day, service, amount in zip(frame["day"], frame["service"], frame["amount"], strict=True):
        series[service if service in top else "Other services"][day] += amount
    days = sorted(set(frame["day"]))
    fig = go.Figure()
    for name in [*top, "Other services"]:
        if name not in series:
            continue
        values = [series[name].get(d, Decimal(0)) for d in days]
        fig.add_bar(
            x=days,
            y=chart_values(values),
            name=name,
            text=[_label(v, view.currency) for v in values],
            hovertemplate=f"{name}<br>%{{x}}: %{{text}}<extra></extra>",
            textposition="none",
        )
    fig.update_layout(barmode="relative", legend={"orientation": "h", "y": -0.2})
    _layout(fig, "Daily, by service", 420)
    fig.update_layout(showlegend=True)
    return fig
