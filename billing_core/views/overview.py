"""Figures for the Overview page, the month's cockpit, read from the database only.

Per currency, never summed across currencies: billed revenue of 13 months, AWS cost at cost
and gross margin per month and per customer (`invoicing.margin`, the figures `margin-report`
prints), the running month's AWS cost so far and its forecast against last month (the AWS
costs page's own figures, `views.aws_costs`), and the customers whose AWS cost or invoice
moved most between the chosen month and the one before. `build_overview` keeps the headline
counts (billed last month, open and failed invoices) as the invoices page defines them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal

import plotly.graph_objects as go
from sqlmodel import Session, col, func, select

from billing_core.config import Settings
from billing_core.costs.snapshots import CostSource
from billing_core.invoicing.figures import BILLED_STATUSES
from billing_core.invoicing.margin import (
    PART_LABELS,
    REVENUE_PARTS,
    Margin,
    MarginFacts,
    billed_in_range,
    group_margin,
    margin_facts,
    months_between,
)
from billing_core.models import Customer, Invoice
from billing_core.money import display, minor_to_decimal
from billing_core.periods import Period
from billing_core.states import DisplayStatus
from billing_core.views.aws_costs import build_costs_view
from billing_core.views.invoices import InvoiceFilter, headline_figures
from billing_core.views.receivables import ReceivablesSummary

#: Months of revenue the Overview charts: the chosen month and the twelve before it.
CHART_MONTHS = 13
#: Customers listed as top movers, per list.
TOP_MOVERS = 5
ZERO = Decimal(0)


@dataclass
class Overview:
    period: Period
    last_period: Period
    active_customers: int
    billed_last_month: dict[str, int] = field(default_factory=dict)  # currency -> minor
    # Taken back from last month's invoices by credit notes (billed less this: net revenue).
    credit_notes_last_month: dict[str, int] = field(default_factory=dict)
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
    # Per currency, never summed across currencies; billed as the invoices page defines it.
    last_month = headline_figures(
        session, InvoiceFilter(period_from=str(last), period_to=str(last))
    )
    for fig in last_month:
        billed = sum(n for word, n in fig.counts.items() if word in BILLED_STATUSES)
        if billed:  # a currency with only drafts, voids or carried amounts billed nothing
            out.billed_last_month[fig.currency] = fig.billed
        if fig.credit_notes:
            out.credit_notes_last_month[fig.currency] = fig.credit_notes
        out.invoices_last_month += billed
    # What is still due, of any month: the unpaid remainder, as the invoices page shows it.
    for fig in headline_figures(session, InvoiceFilter()):
        opened = fig.counts.get(DisplayStatus.OPEN, 0)
        failed = fig.counts.get(DisplayStatus.FAILED, 0)
        out.open_count += opened
        out.failed_count += failed
        if opened:
            out.open_minor[fig.currency] = fig.open
        if failed:
            out.failed_minor[fig.currency] = fig.failed
    return out


# --------------------------------------------------------------------------- the cockpit


@dataclass(frozen=True)
class Mover:
    """One customer's figure in two months; `change` = now - before (None: absent then)."""

    customer_id: int
    customer: str
    currency: str
    before: Decimal
    now: Decimal

    @property
    def change(self) -> Decimal:
        return self.now - self.before

    @property
    def change_pct(self) -> Decimal | None:
        """Change as a percentage of the earlier month (None when that was zero)."""
        return None if self.before == 0 else self.change / abs(self.before) * 100


@dataclass
class MonthToDate:
    """The running month's AWS cost so far (USD at cost) and where it is heading."""

    period: Period
    total: Decimal | None = None  # None: no snapshot of the running month
    covered_days: int = 0
    forecast: Decimal | None = None
    forecast_source: str | None = None  # "Cost Explorer" or "run rate of the first N days"
    last_month_total: Decimal | None = None
    # The change shown: this month's first complete days against the same days of last month
    # (today is partial in Cost Explorer); None for either on the 1st, or without figures.
    change: Decimal | None = None
    compared: str = ""  # what the change compares, in words (CostsView.compared_what)
    currency: str = "USD"

    @property
    def forecast_change_pct(self) -> Decimal | None:
        """Forecast against last month's whole total, in percent."""
        if self.forecast is None or not self.last_month_total:
            return None
        return (self.forecast - self.last_month_total) / self.last_month_total * 100


@dataclass
class Cockpit:
    """Everything the Overview shows about `month` (a closed month) and the running month."""

    month: Period
    months: list[Period]
    by_month: dict[str, list[Margin]]  # currency -> one Margin per month of `months`
    by_customer: dict[str, list[Margin]]  # currency -> customers of `month`, largest first
    month_to_date: MonthToDate
    cost_movers: list[Mover]  # USD, at cost, `month` against the month before
    invoice_movers: dict[str, list[Mover]]  # currency -> billed, `month` against before
    # Split by customer for `month` and the month before only (`margin_facts` customers_in).
    facts: MarginFacts

    def margin_of(self, currency: str, period: Period) -> Margin:
        """The currency's figures of one month (zero when nothing was billed)."""
        for row in self.by_month.get(currency, []):
            if row.key == str(period):
                return row
        return Margin(currency, key=str(period), ref=str(period))

    @property
    def currencies(self) -> list[str]:
        return sorted(self.by_month)


def build_cockpit(
    session: Session, settings: Settings, *, now: datetime, month: Period | None = None
) -> Cockpit:
    """The Overview's figures: `month` (default: the last closed month) and the twelve months
    before it, the running month's AWS cost so far, and the top movers of `month`."""
    running = Period.containing(now)
    month = month or running.previous()
    months = months_between(month.shift(1 - CHART_MONTHS), month)
    # Customers are listed for `month` and compared with the month before only: the other
    # months are read summed over their customers (the same totals, from far fewer rows).
    facts = margin_facts(
        session,
        months,
        CostSource.of(settings),
        services=False,
        customers_in=[month, month.previous()],
    )
    by_month = every_month(group_margin(facts, "month"), months)
    one_month = MarginFacts(
        [month],
        facts.source,
        facts={f: m for f, m in facts.facts.items() if f.period == str(month)},
        names=facts.names,
    )
    return Cockpit(
        month=month,
        months=months,
        by_month=by_month,
        by_customer=group_margin(one_month, "customer"),
        month_to_date=month_to_date(session, settings, running),
        cost_movers=cost_movers(facts, month),
        invoice_movers=invoice_movers(facts, month),
        facts=facts,
    )


def every_month(by_month: dict[str, list[Margin]], months: list[Period]) -> dict[str, list[Margin]]:
    """`by_month` with a zero row for each of `months` nothing was billed in (for charts)."""
    for currency, rows in by_month.items():
        have = {row.key for row in rows}
        rows += [Margin(currency, key=str(p), ref=str(p)) for p in months if str(p) not in have]
        rows.sort(key=lambda m: m.key)
    return by_month


def latest_billed_month(session: Session, at_most: Period) -> Period | None:
    """The newest month up to `at_most` with a billed invoice (None: nothing billed yet)."""
    # Walks the period index from `at_most` down and stops at the first billed invoice (0.2 ms
    # at 50,000 invoices); MAX() with the status indexes in the plan read every billed invoice
    # of every month first (75 ms, on every rerun of the Overview).
    newest = session.exec(
        select(Invoice.period)
        .where(col(Invoice.period) <= str(at_most), billed_in_range())
        .order_by(col(Invoice.period).desc())
        .limit(1)
    ).first()
    return Period.parse(newest) if newest else None


def month_to_date(session: Session, settings: Settings, running: Period) -> MonthToDate:
    """The AWS costs page's own figures of the running month (unfiltered)."""
    view = build_costs_view(session, settings, running, totals_only=True)
    out = MonthToDate(period=running, currency=view.currency)
    if view.snapshot is None:
        return out
    out.total, out.covered_days = view.total, view.snapshot.covered_days
    out.forecast, out.forecast_source = view.forecast, view.forecast_source
    out.last_month_total = view.previous_total
    out.change, out.compared = view.change, view.compared_what
    return out


def _top(movers: list[Mover]) -> list[Mover]:
    moved = [m for m in movers if m.change != 0]
    return sorted(moved, key=lambda m: (-abs(m.change), m.customer))[:TOP_MOVERS]


def cost_movers(facts: MarginFacts, month: Period) -> list[Mover]:
    """Customers whose AWS cost (USD, at cost, billed or not) changed most from the month
    before `month` to `month`, largest absolute change first."""
    now = facts.months.get(str(month))
    before = facts.months.get(str(month.previous()))
    now_usd = now.customer_usd if now else {}
    before_usd = before.customer_usd if before else {}
    return _top(
        [
            Mover(
                cid,
                facts.names.get(cid, f"customer {cid}"),
                "USD",
                before_usd.get(cid, ZERO),
                now_usd.get(cid, ZERO),
            )
            for cid in set(now_usd) | set(before_usd)
        ]
    )


def invoice_movers(facts: MarginFacts, month: Period) -> dict[str, list[Mover]]:
    """Per currency, customers whose billed total changed most from the month before `month`
    to `month` (major units), largest absolute change first."""
    this, last = str(month), str(month.previous())
    billed: dict[tuple[str, int, str], int] = {}
    for fact, piece in facts.facts.items():
        if fact.period != this and fact.period != last:
            continue  # the other months' thousands of pieces play no part
        key = (fact.currency, fact.customer_id, fact.period)
        billed[key] = billed.get(key, 0) + piece.revenue_minor
    out: dict[str, list[Mover]] = {}
    pairs = {(cur, cid) for cur, cid, _period in billed}
    for currency in sorted({cur for cur, _ in pairs}):
        movers = [
            Mover(
                cid,
                facts.names.get(cid, f"customer {cid}"),
                currency,
                minor_to_decimal(billed.get((currency, cid, last), 0), currency),
                minor_to_decimal(billed.get((currency, cid, this), 0), currency),
            )
            for cur, cid in pairs
            if cur == currency
        ]
        if top := _top(movers):
            out[currency] = top
    return out


# --------------------------------------------------------------------------- charts

PART_COLOURS = {
    "base_fees": "#1565c0",
    "aws_resale": "#64b5f6",
    "usage_overage": "#7e57c2",
    "adjustments": "#ffb300",
}
COST_COLOUR = "#c62828"
MARGIN_COLOUR = "#2e7d32"


def revenue_figure(rows: list[Margin], currency: str) -> go.Figure:
    """13 months of billed revenue stacked by part, AWS cost at cost as a line, and the gross
    margin percentage on a second axis. Floats for plotting only; hover texts are exact."""
    fig = go.Figure()
    months = [row.key for row in rows]
    for part in REVENUE_PARTS:
        values = [minor_to_decimal(r.revenue_parts.get(part, 0), currency) for r in rows]
        if not any(values):
            continue
        fig.add_bar(
            x=months,
            y=[float(v) for v in values],
            name=PART_LABELS[part],
            marker_color=PART_COLOURS[part],
            hovertemplate=f"%{{x}} {PART_LABELS[part]}: {currency} %{{y:,.2f}}<extra></extra>",
        )
    fig.add_scatter(
        x=months,
        # No point for a month with nothing billed: its cost is on no invoice.
        y=[float(r.cost) if r.invoices else None for r in rows],
        name="AWS cost (at cost)",
        mode="lines+markers",
        line={"color": COST_COLOUR},
        hovertemplate=f"%{{x}} AWS cost: {currency} %{{y:,.2f}}<extra></extra>",
    )
    pct = [None if r.margin_pct is None else float(r.margin_pct) for r in rows]
    fig.add_scatter(
        x=months,
        y=pct,
        name="Gross margin %",
        yaxis="y2",
        mode="lines+markers",
        line={"color": MARGIN_COLOUR, "dash": "dot"},
        hovertemplate="%{x} gross margin: %{y:.1f} %<extra></extra>",
    )
    fig.update_layout(
        barmode="relative",
        height=380,
        margin={"l": 10, "r": 10, "t": 40, "b": 10},
        title=f"Billed revenue and AWS cost, {currency}",
        xaxis={"type": "category", "title": "Month"},
        yaxis={"title": currency, "tickformat": ",.0f", "rangemode": "tozero"},
        yaxis2={
            "title": "Gross margin %",
            "overlaying": "y",
            "side": "right",
            "ticksuffix": " %",
            "showgrid": False,
            "rangemode": "tozero",
        },
        legend={"orientation": "h", "y": -0.25},
    )
    return fig


AGE_COLOURS = ["#2e7d32", "#f9a825", "#ef6c00", "#d84315", "#b71c1c"]


def aging_figure(summary: ReceivablesSummary, currency: str) -> go.Figure:
    """Amount due per age bucket (current first), one bar each, in `currency`."""
    buckets = list(summary.buckets.values())
    fig = go.Figure(
        go.Bar(
            x=[b.label for b in buckets],
            y=[float(minor_to_decimal(b.amount_minor, currency)) for b in buckets],
            marker_color=AGE_COLOURS[: len(buckets)],
            text=[display(b.amount_minor, currency) for b in buckets],
            textposition="none",
            hovertemplate="%{x}: %{text}<extra></extra>",
        )
    )
    fig.update_layout(
        height=230,
        margin={"l": 10, "r": 10, "t": 30, "b": 10},
        title=f"Amount due by days past due, {currency}",
        xaxis={"type": "category", "title": "Days past due"},
        yaxis={"title": currency, "tickformat": ",.0f", "rangemode": "tozero"},
        showlegend=False,
    )
    return fig
