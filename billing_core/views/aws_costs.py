"""Page data for the AWS costs page: totals, breakdowns, daily trend and forecast of one month
and filter (`build_costs_view`), and its plotly figures.

Figures are exact Decimals up to here; bars are plotted from floats (plotly needs numbers) but
every label and hover text is formatted from the exact amounts."""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import date, timedelta
from decimal import Decimal

import pandas as pd
import plotly.graph_objects as go
from sqlalchemy.sql.elements import ColumnElement
from sqlmodel import Session, col, func, select

from billing_core import money
from billing_core.config import Settings
from billing_core.costs import cost_explorer as ce
from billing_core.costs.attribution import Attribution, SharedScope, _grouped_lines
from billing_core.costs.snapshots import (
    UNATTRIBUTED,
    UNATTRIBUTED_LABEL,
    ZERO,
    CostSource,
    CustomerFilter,
    SnapshotInfo,
    latest_snapshot,
)
from billing_core.invoicing.drafts import SharedCosts, describe_shared, shared_participants
from billing_core.invoicing.shared_costs import SharedAllocation, allocate
from billing_core.models import CostAccountDailyRollup, CostDailyRollup, CostLine, CostRollup
from billing_core.periods import Period

log = logging.getLogger(__name__)


#: Tables with the account, the tag value and the service: filters apply to them as they are.
ByService = type[CostRollup] | type[CostLine]


@dataclass(frozen=True)
class CostFilter:
    customer: CustomerFilter = None
    service: str | None = None

    @property
    def any(self) -> bool:
        return self.customer is not None or self.service is not None


@dataclass
class CostsView:
    """Everything the AWS costs page and `costs-report` show for one month and filter."""

    period: Period
    filters: CostFilter
    snapshot: SnapshotInfo | None = None
    daily_snapshot: SnapshotInfo | None = None
    currency: str = "USD"
    total: Decimal = ZERO  # net: charges + credits, refunds, tax
    adjustments: dict[str, Decimal] = field(default_factory=dict)
    unattributed: Decimal = ZERO  # unfiltered: unattributed and shared spend (the shared pool)
    account_total: Decimal = ZERO  # unfiltered, for the unattributed share
    # How invoicing splits the pool by SHARED_COST_RULE at these figures (None: no snapshot).
    shared: SharedAllocation | None = None
    # Unattributed spend inside the selection (the service filter applies; zero when one
    # customer is selected): what the page's card shows, so it follows the filters.
    selected_unattributed: Decimal = ZERO
    previous_period: Period | None = None
    previous_total: Decimal | None = None
    # Running month: its first `compared_days` complete days (today is partial in Cost
    # Explorer), this month and last, within the filters; None when there is none yet.
    compared_days: int = 0
    compared_total: Decimal | None = None
    previous_same_days: Decimal | None = None
    forecast: Decimal | None = None
    forecast_source: str | None = None  # "Cost Explorer" or "run rate of the first N days"
    by_service: pd.DataFrame = field(default_factory=pd.DataFrame)
    by_customer: pd.DataFrame = field(default_factory=pd.DataFrame)
    daily: pd.DataFrame = field(default_factory=pd.DataFrame)
    breakdown: pd.DataFrame = field(default_factory=pd.DataFrame)
    customers: list[tuple[int, str]] = field(default_factory=list)
    services: list[str] = field(default_factory=list)

    @property
    def has_data(self) -> bool:
        return self.snapshot is not None

    @property
    def running(self) -> bool:
        return self.snapshot is not None and self.snapshot.running

    def _compared(self) -> tuple[Decimal | None, Decimal | None]:
        """(this month, last month) as `change` compares them."""
        if self.running:
            return self.compared_total, self.previous_same_days
        return self.total, self.previous_total

    @property
    def change(self) -> Decimal | None:
        """A running month's complete days against the same days of last month; a closed
        month's total against last month's. None when there is nothing to compare (the 1st)."""
        now, before = self._compared()
        return None if now is None or before is None else now - before

    @property
    def change_pct(self) -> Decimal | None:
        """`change` as a percentage of last month's figure (None when that was zero)."""
        now, before = self._compared()
        if now is None or before is None or before == 0:
            return None
        return (now - before) / before * 100

    @property
    def compared_what(self) -> str:
        """What `change` compares, in words for a help text or report line."""
        if not self.running:
            return f"all of {self.period} with all of {self.previous_period}"
        if self.compared_days == 0:
            return "nothing yet: today is the month's first day and only partly in Cost Explorer"
        days = "day" if self.compared_days == 1 else f"{self.compared_days} days"
        return (
            f"the first {days} of {self.period} and of {self.previous_period} (today is left "
            "out: Cost Explorer shows it only partly)"
        )

    @property
    def shared_note(self) -> str | None:
        """How invoicing splits the unattributed/shared pool at these figures, or None."""
        if self.shared is None or not self.shared.pool:
            return None
        when = " (at this month's figures so far)" if self.running else ""
        return describe_shared(self.shared) + when + "."

    @property
    def unattributed_share(self) -> Decimal | None:
        """Unattributed spend as a percentage of the whole account (never filtered)."""
        if self.account_total == 0:
            return None
        return self.unattributed / self.account_total * 100

    @property
    def selected_unattributed_share(self) -> Decimal | None:
        """Unattributed spend of the selection as a percentage of the selection's total."""
        if self.total == 0:
            return None
        return self.selected_unattributed / self.total * 100


def build_costs_view(
    session: Session,
    settings: Settings,
    period: Period,
    filters: CostFilter | None = None,
    *,
    totals_only: bool = False,
) -> CostsView:
    """Page/report figures for a month from the stored snapshots only (no Cost Explorer).

    `totals_only`: only `total`, the previous month's totals and the forecast, each summed in
    SQL (the same figures; the Overview's month to date needs no tables, split or days)."""
    filters = filters or CostFilter()
    source = CostSource.of(settings)
    view = CostsView(period=period, filters=filters, currency=settings.cost_currency)
    who = Attribution.load(session, period, SharedScope.of(settings))
    view.customers = sorted(who.names.items(), key=lambda item: item[1])
    snap = latest_snapshot(session, period, source)
    if snap is None or snap.id is None:
        return view
    info = SnapshotInfo.of(snap)
    view.snapshot, view.currency = info, info.currency
    if totals_only:
        view.total = _sum_lines(session, info, who, filters)
        _fill_previous(session, settings, view, who)
        _fill_forecast(view)
        return view
    charges = _fill_totals(session, view, info, who)
    policy = SharedCosts.of(settings).policy
    view.shared = allocate(
        view.unattributed,
        policy,
        shared_participants(session, period),
        charges,
        currency=view.currency,
    )
    daily = latest_snapshot(session, period, source, granularity="DAILY")
    if daily is not None:
        view.daily_snapshot = SnapshotInfo.of(daily)
        view.daily = _daily(session, view.daily_snapshot, who, filters)
    _fill_previous(session, settings, view, who)
    _fill_forecast(view)
    return view


def _fill_totals(
    session: Session, view: CostsView, info: SnapshotInfo, who: Attribution
) -> dict[int, Decimal]:
    """Fill the month's totals; returns each customer's AWS charges (unfiltered, for the split
    of the shared pool)."""
    rows = []
    services: set[str] = set()
    charges: dict[int, Decimal] = defaultdict(lambda: ZERO)
    for account, tag, service, record_type, amount in _grouped_lines(session, info.id):
        customer = who.customer_for(info.group_by, account, tag, service)
        view.account_total += amount
        if customer is None:
            view.unattributed += amount
        elif record_type == ce.USAGE:
            charges[customer] += amount
        if record_type == ce.USAGE:
            services.add(service)
        rows.append((customer, who.name(customer), service, record_type, amount))
    view.services = sorted(services)
    # One pass over the selected rows into plain dicts (thousands of accounts x services: a
    # pandas frame per step cost more than the sums); frames only for what is shown.
    by_type: dict[str, Decimal] = defaultdict(lambda: ZERO)
    by_service: dict[str, Decimal] = defaultdict(lambda: ZERO)
    customer_sums: dict[tuple[int | None, str], Decimal] = defaultdict(lambda: ZERO)
    detail: dict[tuple[str, str, str], Decimal] = defaultdict(lambda: ZERO)
    for cid, name, service, record_type, amount in rows:
        if not _matches(view.filters, cid, service):
            continue
        view.total += amount
        if cid is None:
            view.selected_unattributed += amount
        by_type[record_type] += amount
        by_service[service] += amount
        customer_sums[(cid, name)] += amount
        detail[(name, service, record_type)] += amount
    view.adjustments = {t: a for t, a in by_type.items() if t != ce.USAGE}
    view.by_service = _frame(dict(by_service), "service")
    view.by_customer = pd.DataFrame(
        [(cid, name, amount) for (cid, name), amount in customer_sums.items()],
        columns=["customer_id", "customer", "amount"],
    )
    view.by_customer["customer_id"] = view.by_customer["customer_id"].astype("Int64")
    view.by_customer = _sort(view.by_customer)
    view.breakdown = _sort(
        pd.DataFrame(
            [(*key, amount) for key, amount in sorted(detail.items())],
            columns=["customer", "service", "record_type", "amount"],
        )
    )
    return dict(charges)


def _matches(filters: CostFilter, customer: int | None, service: str) -> bool:
    if filters.service is not None and service != filters.service:
        return False
    if filters.customer is None:
        return True
    if filters.customer == UNATTRIBUTED:
        return customer is None
    return customer == filters.customer


def _frame(sums: dict[str, Decimal], key: str) -> pd.DataFrame:
    return _sort(pd.DataFrame(list(sums.items()), columns=[key, "amount"]))


def _sort(frame: pd.DataFrame) -> pd.DataFrame:
    """Largest amounts first (Decimal-safe: sorts on the exact values)."""
    if frame.empty:
        return frame.reset_index(drop=True)
    amounts = frame["amount"].tolist()  # one read; per-row .iloc is slow at 1,000s of rows
    order = sorted(range(len(amounts)), key=amounts.__getitem__, reverse=True)
    return frame.iloc[order].reset_index(drop=True)


def _sql_conditions(
    info: SnapshotInfo, who: Attribution, filters: CostFilter, table: ByService
) -> list[ColumnElement[bool]]:
    """The filters as SQL on `table` (a rollup by account, or the lines)."""
    conditions: list[ColumnElement[bool]] = []
    if filters.service is not None:
        conditions.append(col(table.service) == filters.service)
    condition = who.condition(info.group_by, filters.customer, table)
    if condition is not None:
        conditions.append(condition)
    return conditions


def _daily(
    session: Session, info: SnapshotInfo, who: Attribution, filters: CostFilter
) -> pd.DataFrame:
    """Amount per day and service (adjustments under their record type), filtered in SQL.

    The whole account or one service: from the daily rollup (days x services rows). One
    customer or the unattributed spend: attribution is by account, which the daily rollup
    does not keep, so this drill-down reads the snapshot's lines."""
    table: type[CostDailyRollup] | type[CostLine]
    if filters.customer is None:
        table = CostDailyRollup
        conditions = [col(table.service) == filters.service] if filters.service else []
    else:
        table = CostLine
        conditions = _sql_conditions(info, who, filters, CostLine)
    query = (
        select(table.day, table.service, func.sum(table.amount))
        .where(table.snapshot_id == info.id, *conditions)
        .group_by(col(table.day), col(table.service))
        .order_by(col(table.day), col(table.service))
    )
    rows = session.exec(query).all()
    frame = pd.DataFrame(
        [(date.fromisoformat(d), s, Decimal(v or 0)) for d, s, v in rows],
        columns=["day", "service", "amount"],
    )
    return frame


def _sum_lines(
    session: Session,
    info: SnapshotInfo,
    who: Attribution,
    filters: CostFilter,
    *,
    before: date | None = None,
) -> Decimal:
    """The snapshot's net total within the filters (days before `before` only, if given).

    Whole month: from the rollup by account. Days before a date: from the daily rollup for
    the whole account or one service, from the daily rollup by account for one customer or
    the unattributed spend, from the lines for those with one service (or shared services)."""
    table: ByService | type[CostDailyRollup] | type[CostAccountDailyRollup]
    if before is None:
        table = CostRollup
        conditions = _sql_conditions(info, who, filters, CostRollup)
    elif filters.customer is None:
        table = CostDailyRollup
        conditions = [col(table.service) == filters.service] if filters.service else []
    elif filters.service is None and not who.shared.services:
        # No service in the question: the daily rollup by account answers it.
        table = CostAccountDailyRollup
        condition = who.condition(info.group_by, filters.customer, table)
        conditions = [] if condition is None else [condition]
    else:
        table = CostLine
        conditions = _sql_conditions(info, who, filters, CostLine)
    query = select(func.sum(table.amount)).where(table.snapshot_id == info.id, *conditions)
    if before is not None:
        query = query.where(col(table.day) < before.isoformat())  # type: ignore[union-attr]
    return Decimal(session.exec(query).one() or 0)


def _fill_previous(session: Session, settings: Settings, view: CostsView, who: Attribution) -> None:
    previous = view.period.previous()
    view.previous_period = previous
    source = CostSource.of(settings)
    snap = latest_snapshot(session, previous, source)
    if snap is not None:
        view.previous_total = _sum_lines(session, SnapshotInfo.of(snap), who, view.filters)
    if view.snapshot is None or not view.snapshot.running:
        return
    info = view.snapshot
    view.compared_days = min(info.complete_days, previous.days)
    if view.compared_days == 0:
        return
    # A running snapshot is a daily one, so its days before a date are in the daily rollups.
    view.compared_total = _sum_lines(
        session, info, who, view.filters, before=view.period.start + timedelta(view.compared_days)
    )
    daily = latest_snapshot(session, previous, source, granularity="DAILY")
    if daily is not None:
        cutoff = previous.start + timedelta(days=view.compared_days)
        view.previous_same_days = _sum_lines(
            session, SnapshotInfo.of(daily), who, view.filters, before=cutoff
        )


def _fill_forecast(view: CostsView) -> None:
    info = view.snapshot
    if info is None or not info.running:
        return
    if info.forecast is not None and not view.filters.any:
        view.forecast, view.forecast_source = info.forecast, "Cost Explorer"
    elif view.compared_total is not None and view.compared_days > 0:
        # No forecast for a filtered view (or none from AWS): the run rate of the complete
        # days (today's partial figures would pull it down); none before a day is complete.
        view.forecast = view.compared_total / view.compared_days * info.period.days
        days = "day" if view.compared_days == 1 else f"{view.compared_days} days"
        view.forecast_source = f"run rate of the first {days}"


def chart_values(amounts: Iterable[Decimal]) -> list[float]:
    """Floats for plotting only; every figure shown as text comes from the exact Decimals."""
    return [float(a) for a in amounts]


#: Services drawn on their own in the daily chart; the rest are summed as "Other services".
TOP_SERVICES = 8


#: Bars drawn per bar chart (services, customers); the rest are summed in one "Other" bar, so
#: the browser draws a few dozen bars however many customers and services there are.
TOP_BARS = 20


def top_rows(
    frame: pd.DataFrame, key: str, limit: int, other: str, *, keep: str | None = None
) -> pd.DataFrame:
    """The `limit` largest rows of a (key, amount) frame sorted largest first, the rest summed
    exactly into one row named `other` (with "(N)" for how many it sums); the row named
    `keep` is always shown on its own. Amounts of the result add up to the frame's."""
    if len(frame) <= limit:
        return frame[[key, "amount"]]
    names, amounts = list(frame[key]), list(frame["amount"])
    shown = [i for i in range(len(names)) if names[i] == keep][:1]
    shown += [i for i in range(len(names)) if names[i] != keep][: limit - 1 - len(shown)]
    chosen = set(shown)
    rest = [i for i in range(len(names)) if i not in chosen]
    rows = [(names[i], amounts[i]) for i in sorted(shown)]
    rows.append((f"{other} ({len(rest)})", sum((amounts[i] for i in rest), ZERO)))
    return pd.DataFrame(rows, columns=[key, "amount"])


_UNATTRIBUTED_COLOUR = "#d62728"


_ADJUSTMENT_COLOUR = "#2ca02c"


_COLOUR = "#1f77b4"


def _label(amount: Decimal, currency: str) -> str:
    return money.display(money.round_minor(amount, currency), currency)


def _layout(fig: go.Figure, title: str, height: int) -> go.Figure:
    fig.update_layout(
        title=title, height=height, margin={"l": 10, "r": 10, "t": 40, "b": 40}, showlegend=False
    )
    return fig


def _bar_range(amounts: Iterable[Decimal]) -> list[float]:
    """An axis range with room for the amount written past each bar's end, on both sides of
    zero: a credit's negative bar keeps its label inside the chart."""
    values = chart_values(amounts) or [0.0]
    low, high = min(0.0, *values), max(0.0, *values)
    pad = (high - low) * 0.45 or 1.0
    return [low - pad if low < 0 else 0.0, high + pad if high > 0 else pad / 3]


def _horizontal_bars(fig: go.Figure, amounts: Iterable[Decimal], currency: str) -> None:
    fig.update_traces(textposition="outside", cliponaxis=False)
    fig.update_xaxes(
        title_text=f"{currency} (net cost)", range=_bar_range(amounts), tickformat=",.0f"
    )
    fig.update_yaxes(automargin=True)


def by_service_figure(view: CostsView) -> go.Figure:
    """Horizontal bars per service, largest on top, at most TOP_BARS (the rest summed as
    "Other services"); credits and refunds in their own colour."""
    frame = top_rows(view.by_service, "service", TOP_BARS, "Other services").iloc[::-1]
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
    _horizontal_bars(fig, frame["amount"], view.currency)
    return _layout(fig, "By service", max(300, 26 * len(frame) + 100))


def by_customer_figure(view: CostsView) -> go.Figure:
    """Bars per customer, at most TOP_BARS (the rest summed as "Other customers"; unattributed
    spend always has its bar and stands out in red): thousands of customers draw ~20 bars."""
    frame = top_rows(
        view.by_customer, "customer", TOP_BARS, "Other customers", keep=UNATTRIBUTED_LABEL
    ).iloc[::-1]
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
    _horizontal_bars(fig, frame["amount"], view.currency)
    return _layout(fig, "By customer", max(300, 30 * len(frame) + 100))


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
    _layout(fig, "Daily, by service", 460)
    # The legend sits above the bars, so it never covers the dates (month and year included).
    fig.update_layout(
        barmode="relative",
        showlegend=True,
        legend={"orientation": "h", "yanchor": "bottom", "y": 1.02, "x": 0},
        margin={"t": 90, "b": 50},
        title={"y": 0.98},
    )
    fig.update_xaxes(tickformat="%b %d<br>%Y", title_text="Day (UTC)")
    fig.update_yaxes(title_text=f"{view.currency} per day", tickformat=",.0f")
    return fig
