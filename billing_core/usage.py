"""Usage against plan limits: billable totals, overage, month-end projections, page data.

Quantities are exact decimals. A plan metric is either cumulative (`sum`: API calls add up over
the month) or a level (`max`: seats, storage; the month's peak is billed). Overage money is
computed at full precision in the plan currency, converted when the customer pays in another
currency, and rounded once (`overage_charge_minor`), the same way on the page and the invoice.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from datetime import date, datetime
from decimal import ROUND_HALF_UP, Decimal

from sqlalchemy import select as sa_select
from sqlmodel import Session, col, func, select

from billing_core.errors import ExchangeRateMissing
from billing_core.models import (
    Alert,
    CostLine,
    Customer,
    ExchangeRate,
    Plan,
    PlanMetric,
    UsageRecord,
)
from billing_core.money import cross_rate, minor_to_decimal, round_minor
from billing_core.periods import Period, as_utc
from billing_core.plans import effective_plan_id, metrics_by_plan

# The pseudo-metric under which the plan's monthly AWS spend limit is tracked (and alerted).
AWS_SPEND = "aws_spend"
_QUANTITY_PLACES = Decimal("0.000001")


# --- pure arithmetic ----------------------------------------------------------------------


def overage_quantity(used: Decimal, included: Decimal) -> Decimal:
    """How much of `used` lies above the included quantity (never negative)."""
    return max(Decimal(0), used - included)


def overage_amount(used: Decimal, included: Decimal, unit_price: Decimal) -> Decimal:
    """Full-precision overage charge in the plan currency; rounded only on the invoice line."""
    return overage_quantity(used, included) * unit_price


def convert(
    amount: Decimal, *, from_currency: str, to_currency: str, usd_rates: Mapping[str, Decimal]
) -> Decimal:
    """Convert at full precision through the period's USD rates (units of quote per 1 USD)."""
    if from_currency == to_currency:
        return amount

    def rate(cur: str) -> Decimal:
        if cur == "USD":
            return Decimal(1)
        if cur not in usd_rates:
            raise ExchangeRateMissing(
                f"No USD->{cur} exchange rate is recorded for this period; add one before "
                f"converting {from_currency} to {to_currency}."
            )
        return usd_rates[cur]

    return amount * cross_rate(rate(to_currency), rate(from_currency))


def overage_charge_minor(
    used: Decimal,
    included: Decimal,
    unit_price: Decimal,
    *,
    plan_currency: str,
    currency: str,
    usd_rates: Mapping[str, Decimal],
) -> int:
    """The overage charge in the customer's currency, rounded once (page and invoice line)."""
    factor = convert(
        Decimal(1), from_currency=plan_currency, to_currency=currency, usd_rates=usd_rates
    )
    return overage_minor(used, included, unit_price, factor, currency)


def overage_minor(
    used: Decimal, included: Decimal, unit_price: Decimal, factor: Decimal, currency: str
) -> int:
    """Overage in the invoice currency (plan price times `factor`), rounded once."""
    return round_minor(overage_amount(used, included, unit_price) * factor, currency)


def project_month_end(
    aggregation: str,
    billable: Decimal,
    *,
    period: Period,
    now: datetime,
    last_day: date | None,
) -> Decimal:
    """Projected billable quantity at the end of `period`, from the trend so far.

    Levels (`max`) project their peak so far. Cumulative metrics add the average daily amount
    of the elapsed days for each remaining day; the elapsed days are the whole days before
    `now`, or up to the last day with data if that is later (data for today counts).
    """
    if aggregation == "max" or billable == 0 or period.is_closed(now):
        return billable
    elapsed = period.days_elapsed(now)
    if last_day is not None and period.contains(last_day):
        elapsed = max(elapsed, (last_day - period.start).days + 1)
    elapsed = min(max(elapsed, 1), period.days)
    projected = billable + billable * (period.days - elapsed) / elapsed
    return projected.quantize(_QUANTITY_PLACES, rounding=ROUND_HALF_UP)


def percent(used: Decimal, limit: Decimal) -> Decimal | None:
    """Share of the limit used, in percent; None when there is no limit to compare with."""
    if limit <= 0:
        return None
    return used * 100 / limit


# --- reading usage ------------------------------------------------------------------------


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


def usd_rates(session: Session, period: Period, *, latest: bool = False) -> dict[str, Decimal]:
    """USD->currency rates recorded for `period`; with `latest`, the newest at or before it.

    Invoices use the period's own rate; `latest` is for estimates during a month whose rate
    is not recorded yet.
    """
    query = select(ExchangeRate).where(ExchangeRate.base == "USD")
    if latest:
        query = query.where(col(ExchangeRate.period) <= str(period)).order_by(
            col(ExchangeRate.period)
        )
    else:
        query = query.where(ExchangeRate.period == str(period))
    return {r.quote: r.rate for r in session.exec(query).all()}  # later periods win


# Lead: swap for billing_core.costs at merge (latest snapshot, attribution by account or tag).
def aws_costs_by_day(session: Session, period: Period) -> dict[int, dict[date, Decimal]]:
    """Month-to-date AWS cost (USD, full precision) per customer and day, latest snapshot."""
    from billing_core.costs import Attribution, latest_snapshot

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


# --- page data ----------------------------------------------------------------------------


@dataclass(frozen=True)
class MetricUsage:
    """One customer's use of one plan metric (or of its AWS spend limit) in a period."""

    customer_id: int
    customer: str
    currency: str  # the customer's (invoice) currency
    plan: str
    plan_currency: str
    metric: str
    unit: str
    aggregation: str
    used: Decimal
    included: Decimal
    unit_price: Decimal
    projected: Decimal
    last_at: datetime | None = None
    overage_minor: int | None = None  # None: no exchange rate, or the spend limit (no price)
    projected_overage_minor: int | None = None
    alerts: tuple[int, ...] = ()

    @property
    def is_spend(self) -> bool:
        return self.metric == AWS_SPEND

    @property
    def used_pct(self) -> Decimal | None:
        return percent(self.used, self.included)

    @property
    def projected_pct(self) -> Decimal | None:
        return percent(self.projected, self.included)

    @property
    def overage(self) -> Decimal:
        return overage_quantity(self.used, self.included)

    @property
    def projected_overage(self) -> Decimal:
        return overage_quantity(self.projected, self.included)

    @property
    def status(self) -> str:
        """over, near (80 % or more), projected over, ok, or no limit."""
        pct = self.used_pct
        if pct is None:
            return "no limit"
        if pct > 100:
            return "over"
        if pct >= 80:
            return "near"
        if (self.projected_pct or 0) > 100:
            return "projected over"
        return "ok"


@dataclass
class UsageReport:
    period: Period
    now: datetime
    rows: list[MetricUsage] = field(default_factory=list)
    missing_rates: set[str] = field(default_factory=set)
    has_cost_data: bool = False

    def for_customer(self, customer_id: int) -> list[MetricUsage]:
        return [r for r in self.rows if r.customer_id == customer_id]


def raised_alerts(session: Session, period: Period) -> dict[tuple[int, str], tuple[int, ...]]:
    """Thresholds already alerted per (customer, metric) in a period."""
    out: dict[tuple[int, str], list[int]] = defaultdict(list)
    for alert in session.exec(
        select(Alert).where(Alert.period == str(period)).order_by(col(Alert.threshold_pct))
    ).all():
        out[(alert.customer_id, alert.metric)].append(alert.threshold_pct)
    return {k: tuple(v) for k, v in out.items()}


def _charge(
    used: Decimal, pm: PlanMetric, plan: Plan, currency: str, rates: Mapping[str, Decimal]
) -> int | None:
    try:
        return overage_charge_minor(
            used,
            pm.included_quantity,
            pm.overage_unit_price,
            plan_currency=plan.currency,
            currency=currency,
            usd_rates=rates,
        )
    except ExchangeRateMissing:
        return None


def build_usage_report(
    session: Session, period: Period, now: datetime, *, customer_id: int | None = None
) -> UsageReport:
    """Every active customer's plan metrics (used, projected, overage) and spend limit."""
    report = UsageReport(period=period, now=now)
    plans = {p.id: p for p in session.exec(select(Plan)).all()}
    by_plan = metrics_by_plan(session)
    stats = _usage_stats(session, period, customer_id)
    rates = usd_rates(session, period, latest=not period.is_closed(now))
    alerts = raised_alerts(session, period)
    costs = aws_costs_by_day(session, period)
    report.has_cost_data = bool(costs)
    query = select(Customer).where(col(Customer.active).is_(True)).order_by(col(Customer.name))
    if customer_id is not None:
        query = query.where(Customer.id == customer_id)
    for customer in session.exec(query).all():
        cid = customer.id or 0
        plan = plans.get(effective_plan_id(customer, period) or -1)
        if plan is None:
            continue
        for metric, pm in by_plan.get(plan.id or -1, {}).items():
            s = stats.get((cid, metric))
            used = Decimal(0) if s is None else (s.peak if pm.aggregation == "max" else s.total)
            last_at = s.last_at if s else None
            projected = project_month_end(
                pm.aggregation,
                used,
                period=period,
                now=now,
                last_day=as_utc(last_at).date() if last_at else None,
            )
            charge = _charge(used, pm, plan, customer.currency, rates)
            if charge is None:
                report.missing_rates.add(f"{plan.currency}->{customer.currency}")
            report.rows.append(
                MetricUsage(
                    customer_id=cid,
                    customer=customer.name,
                    currency=customer.currency,
                    plan=plan.name,
                    plan_currency=plan.currency,
                    metric=metric,
                    unit=pm.unit,
                    aggregation=pm.aggregation,
                    used=used,
                    included=pm.included_quantity,
                    unit_price=pm.overage_unit_price,
                    projected=projected,
                    last_at=last_at,
                    overage_minor=charge,
                    projected_overage_minor=_charge(projected, pm, plan, customer.currency, rates),
                    alerts=alerts.get((cid, metric), ()),
                )
            )
        spend = _spend_row(customer, plan, costs.get(cid), period, now, rates) if costs else None
        if spend is not None:
            report.rows.append(replace(spend, alerts=alerts.get((cid, AWS_SPEND), ())))
    return report


def _spend_row(
    customer: Customer,
    plan: Plan,
    days: Mapping[date, Decimal] | None,
    period: Period,
    now: datetime,
    rates: Mapping[str, Decimal],
) -> MetricUsage | None:
    """The AWS spend limit as a metric: AWS cost with the plan's markup, in plan currency."""
    if plan.aws_spend_limit_minor is None:
        return None
    usd = sum((days or {}).values(), Decimal(0)) * (1 + plan.markup_pct / 100)
    try:
        used = convert(usd, from_currency="USD", to_currency=plan.currency, usd_rates=rates)
    except ExchangeRateMissing:
        return None
    used = used.quantize(_QUANTITY_PLACES, rounding=ROUND_HALF_UP)
    last_day = max(days) if days else None
    return MetricUsage(
        customer_id=customer.id or 0,
        customer=customer.name,
        currency=customer.currency,
        plan=plan.name,
        plan_currency=plan.currency,
        metric=AWS_SPEND,
        unit=plan.currency,
        aggregation="sum",
        used=used,
        included=minor_to_decimal(plan.aws_spend_limit_minor, plan.currency),
        unit_price=Decimal(0),
        projected=project_month_end("sum", used, period=period, now=now, last_day=last_day),
        last_at=None,
    )


# --- drill-down ---------------------------------------------------------------------------


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


def spend_by_day(session: Session, customer_id: int, period: Period) -> list[DailyPoint]:
    """The customer's AWS cost per day (USD, without markup) and running total."""
    days = aws_costs_by_day(session, period).get(customer_id, {})
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
