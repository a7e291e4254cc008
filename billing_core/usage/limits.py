"""Usage against plan limits: billable totals, overage, month-end projections, page data.

Quantities are exact decimals. A plan metric is either cumulative (`sum`: API calls add up over
the month) or a level (`max`: seats, storage; the month's peak is billed). Overage money is
computed at full precision in the plan currency, converted when the customer pays in another
currency, and rounded once, by the invoice line's own arithmetic (`pricing.usage_amount`, under
the metric's charge model: per unit, graduated, volume or package, read by `PricingBook`)."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import date, datetime
from decimal import ROUND_HALF_UP, Decimal

from sqlalchemy import select as sa_select
from sqlmodel import Session, col, select

from billing_core.costs.snapshots import CostSource, latest_snapshot
from billing_core.customers.plans import metrics_by_plan
from billing_core.customers.terms import terms_in_force
from billing_core.errors import ExchangeRateMissing
from billing_core.exchange_rates.convert import Rates
from billing_core.exchange_rates.rates import load_rates
from billing_core.invoicing.charge_models import MetricTerms
from billing_core.invoicing.pricing import aws_amount, overage_quantity, usage_amount
from billing_core.invoicing.pricing_book import PricingBook, metric_terms
from billing_core.models import (
    Alert,
    Customer,
    Plan,
    PlanMetric,
)
from billing_core.money import minor_to_decimal
from billing_core.periods import Period, as_utc
from billing_core.usage.projections import (
    QUANTITY_PLACES,
    MonthClock,
    percent,
    project_month_end,
)
from billing_core.usage.totals import _usage_stats, aws_costs_by_day

# The pseudo-metric under which the plan's monthly AWS spend limit is tracked (and alerted).
AWS_SPEND = "aws_spend"


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
    # Why AWS spend limits are missing: no snapshot of the configured metric and grouping.
    cost_note: str | None = None

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
    used: Decimal, terms: MetricTerms, plan_currency: str, currency: str, rates: Rates
) -> int | None:
    """The usage charge as the invoice line would bill it; None without the exchange rate."""
    try:
        amount = usage_amount(terms, used, plan_currency, currency=currency, rates=rates)
    except ExchangeRateMissing:
        return None
    return amount.to_minor()


def build_usage_report(
    session: Session,
    period: Period,
    now: datetime,
    *,
    source: CostSource,
    customer_id: int | None = None,
) -> UsageReport:
    """Every active customer's plan metrics (used, projected, overage) and spend limit.

    AWS spend comes from the latest snapshot of `source` (the configured metric and grouping).
    """
    report = UsageReport(period=period, now=now)
    plans = {p.id: p for p in session.exec(select(Plan)).all()}
    by_plan = metrics_by_plan(session)
    book = PricingBook.load(session, period)
    stats = _usage_stats(session, period, customer_id)
    rates = load_rates(session, period, latest=not period.is_closed(now))
    alerts = raised_alerts(session, period)
    costs = aws_costs_by_day(session, period, source, customer_id)
    report.has_cost_data = bool(costs)
    if not costs and latest_snapshot(session, period, source) is None:
        report.cost_note = f"{source.missing(period)}; AWS spend limits are not checked."
    # Plain columns, and each plan metric's figures read once: the loop below runs once per
    # customer and metric (50,000 times for 5,000 customers on 10 metrics).
    query = (
        sa_select(col(Customer.id), col(Customer.name))
        .where(col(Customer.active).is_(True))
        .order_by(col(Customer.name))
    )
    if customer_id is not None:
        query = query.where(col(Customer.id) == customer_id)
    in_force = terms_in_force(session, period)
    clock = MonthClock.of(period, now)
    facts = {
        plan_id: [
            _MetricFacts(pm, book.metric(plan_id, metric) or metric_terms(pm, []))
            for metric, pm in metrics.items()
        ]
        for plan_id, metrics in by_plan.items()
    }
    for cid, name in session.execute(query).all():
        terms = in_force.get(cid)
        plan = plans.get(terms.plan_id or -1) if terms is not None else None
        if plan is None or terms is None:
            continue
        currency = terms.currency  # in force for the month, as on its invoice
        plan_name, plan_currency = plan.name, plan.currency
        for f in facts.get(plan.id or -1, []):
            s = stats.get((cid, f.metric))
            used = Decimal(0) if s is None else (s.peak if f.aggregation == "max" else s.total)
            last_at = s.last_at if s else None
            projected = clock.project(
                f.aggregation, used, as_utc(last_at).date() if last_at else None
            )
            charge = _charge(used, f.terms, plan_currency, currency, rates)
            if charge is None:
                report.missing_rates.add(f"{plan_currency}->{currency}")
            projected_charge = (
                charge
                if projected == used
                else _charge(projected, f.terms, plan_currency, currency, rates)
            )
            report.rows.append(
                MetricUsage(
                    customer_id=cid,
                    customer=name,
                    currency=currency,
                    plan=plan_name,
                    plan_currency=plan_currency,
                    metric=f.metric,
                    unit=f.unit,
                    aggregation=f.aggregation,
                    used=used,
                    included=f.included,
                    unit_price=f.unit_price,
                    projected=projected,
                    last_at=last_at,
                    overage_minor=charge,
                    projected_overage_minor=projected_charge,
                    alerts=alerts.get((cid, f.metric), ()),
                )
            )
        spend = (
            _spend_row(cid, name, currency, plan, costs.get(cid), period, now, rates)
            if costs
            else None
        )
        if spend is not None:
            report.rows.append(replace(spend, alerts=alerts.get((cid, AWS_SPEND), ())))
    return report


class _MetricFacts:
    """A plan metric's figures as plain attributes (ORM attribute reads cost per access)."""

    __slots__ = ("aggregation", "included", "metric", "terms", "unit", "unit_price")

    def __init__(self, pm: PlanMetric, terms: MetricTerms) -> None:
        self.metric, self.unit, self.aggregation = pm.metric, pm.unit, pm.aggregation
        self.included, self.unit_price = pm.included_quantity, pm.overage_unit_price
        self.terms = terms


def _spend_row(
    customer_id: int,
    customer: str,
    currency: str,
    plan: Plan,
    days: Mapping[date, Decimal] | None,
    period: Period,
    now: datetime,
    rates: Rates,
) -> MetricUsage | None:
    """The AWS spend limit as a metric: AWS cost with the plan's markup, in plan currency.

    The daily figures carry no service or account, so scoped rules and adjustment treatments
    do not apply here (the limit is a guard rail, not an invoice line)."""
    if plan.aws_spend_limit_minor is None:
        return None
    usd = sum((days or {}).values(), Decimal(0))
    try:
        spent = aws_amount(usd, plan.markup_pct, currency=plan.currency, rates=rates)
    except ExchangeRateMissing:
        return None
    used = spent.amount.quantize(QUANTITY_PLACES, rounding=ROUND_HALF_UP)
    last_day = max(days) if days else None
    return MetricUsage(
        customer_id=customer_id,
        customer=customer,
        currency=currency,
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
