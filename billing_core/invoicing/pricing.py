"""Pricing: one customer's month in, one draft invoice out. Pure: no I/O, no clock.

Every amount is computed as a Decimal at full precision (sum, markup, FX) and rounded exactly
once, where it becomes an invoice line; the invoice total is the sum of its rounded lines.

Currency rules (DESIGN.md section 3): AWS costs are in the cost currency (USD). Anything not in
the customer's currency is converted with the period's recorded USD->X rates; an amount in a
third currency (a EUR plan fee on a GBP customer) goes through USD, i.e. the cross rate
rate(USD->GBP) / rate(USD->EUR). An invoice in any currency other than USD needs the
USD->currency rate of its period even when nothing happens to need converting, because the
design ties every non-USD invoice to a recorded rate; without it the draft is refused with
ExchangeRateMissing and the other customers carry on.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from decimal import Decimal

from billing_core.errors import ExchangeRateMissing
from billing_core.money import cross_rate, minor_to_decimal, round_minor
from billing_core.states import LineKind
from billing_core.usage.overage import overage_minor, overage_quantity

COST_CURRENCY = "USD"
# Stored unit amounts keep this many decimals (the InvoiceLine column's scale).
_UNIT_PLACES = Decimal("0.0000000001")
_HUNDRED = Decimal(100)


@dataclass(frozen=True)
class MetricTerms:
    """A plan's usage metric: included quantity and price per unit above it (plan currency)."""

    metric: str
    included: Decimal
    unit_price: Decimal
    unit: str = ""


@dataclass(frozen=True)
class PlanTerms:
    """What a plan charges: base fee (minor units), markup on AWS costs, usage terms."""

    name: str
    currency: str
    base_fee_minor: int
    markup_pct: Decimal = Decimal(0)
    metrics: tuple[MetricTerms, ...] = ()


@dataclass(frozen=True)
class TrueUpItem:
    """A pending adjustment (signed minor units) that lands on this invoice."""

    id: int
    description: str
    amount_minor: int
    currency: str


@dataclass(frozen=True)
class Rates:
    """Recorded USD->X rates of one period, with their sources."""

    period: str
    usd_to: Mapping[str, Decimal] = field(default_factory=dict)
    sources: Mapping[str, str] = field(default_factory=dict)

    def usd_rate(self, currency: str) -> Decimal:
        if currency == COST_CURRENCY:
            return Decimal(1)
        rate = self.usd_to.get(currency)
        if rate is None or rate <= 0:
            raise ExchangeRateMissing(
                f"No USD->{currency} exchange rate is recorded for {self.period}: record one "
                f"with `python -m billing_core set-rate --period {self.period} --currency "
                f"{currency} --rate <{currency} per 1 USD> --source <where it comes from>`, "
                "then run again."
            )
        return rate

    def factor(self, from_currency: str, to_currency: str) -> Decimal:
        """Multiply an amount in `from_currency` by this to get `to_currency` (via USD)."""
        if from_currency == to_currency:
            return Decimal(1)
        return cross_rate(self.usd_rate(to_currency), self.usd_rate(from_currency))


@dataclass(frozen=True)
class PricingInput:
    """Everything that prices one customer's invoice for one period."""

    customer_id: int
    customer_name: str
    currency: str
    period: str
    plan: PlanTerms
    aws_costs: Mapping[str, Decimal] = field(default_factory=dict)  # service -> USD
    usage: Mapping[str, Decimal] = field(default_factory=dict)  # metric -> quantity
    true_ups: tuple[TrueUpItem, ...] = ()
    costs_estimated: bool = False
    collection_method: str = "charge_automatically"
    has_payment_method: bool = True


@dataclass(frozen=True)
class DraftLine:
    """One invoice line; `amount_minor` is the one rounded figure."""

    kind: LineKind
    description: str
    amount_minor: int
    quantity: Decimal = Decimal(1)
    unit_amount: Decimal = Decimal(0)
    service: str | None = None
    metric: str | None = None
    true_up_id: int | None = None


@dataclass(frozen=True)
class Draft:
    """A priced invoice, not yet saved."""

    customer_id: int
    customer_name: str
    currency: str
    period: str
    lines: tuple[DraftLine, ...]
    fx_rate: Decimal | None
    fx_source: str | None
    costs_estimated: bool
    collection_method: str
    warnings: tuple[str, ...] = ()

    @property
    def total_minor(self) -> int:
        return sum((line.amount_minor for line in self.lines), 0)


def price(inp: PricingInput, rates: Rates) -> Draft:
    """Price one customer's month; raises ExchangeRateMissing when a needed rate is absent."""
    cur = inp.currency
    plan = inp.plan
    fx_rate: Decimal | None = None
    fx_source: str | None = None
    if cur != COST_CURRENCY:
        fx_rate = rates.usd_rate(cur)
        fx_source = rates.sources.get(cur, "recorded rate")
    if plan.currency != cur and plan.currency != COST_CURRENCY and cur != COST_CURRENCY:
        fx_source = f"{fx_source}; {plan.currency} via USD cross rate"
    plan_factor = rates.factor(plan.currency, cur)
    lines = [_base_fee_line(inp, plan_factor)]
    lines += _aws_lines(inp, rates.factor(COST_CURRENCY, cur))
    lines += _overage_lines(inp, plan_factor)
    lines += [_true_up_line(item, cur, rates) for item in inp.true_ups]
    draft = Draft(
        customer_id=inp.customer_id,
        customer_name=inp.customer_name,
        currency=cur,
        period=inp.period,
        lines=tuple(lines),
        fx_rate=fx_rate,
        fx_source=fx_source,
        costs_estimated=inp.costs_estimated,
        collection_method=inp.collection_method,
    )
    return _with_warnings(draft, inp)


def _unit(value: Decimal) -> Decimal:
    return value.quantize(_UNIT_PLACES)


def _base_fee_line(inp: PricingInput, factor: Decimal) -> DraftLine:
    plan = inp.plan
    amount = minor_to_decimal(plan.base_fee_minor, plan.currency) * factor
    minor = plan.base_fee_minor if factor == 1 else round_minor(amount, inp.currency)
    return DraftLine(
        kind=LineKind.BASE_FEE,
        description=f"{plan.name.title()} plan, {inp.period}",
        amount_minor=minor,
        unit_amount=_unit(amount),
    )


def _aws_lines(inp: PricingInput, factor: Decimal) -> list[DraftLine]:
    markup = Decimal(1) + inp.plan.markup_pct / _HUNDRED
    note = (
        f" (incl. {inp.plan.markup_pct.normalize():f}% service fee)" if inp.plan.markup_pct else ""
    )
    out = []
    for service in sorted(inp.aws_costs):
        usd = inp.aws_costs[service]
        if usd == 0:
            continue
        amount = usd * markup * factor
        out.append(
            DraftLine(
                kind=LineKind.AWS,
                description=f"AWS {service}, {inp.period}{note}",
                amount_minor=round_minor(amount, inp.currency),
                unit_amount=_unit(amount),
                service=service,
            )
        )
    return out


def _overage_lines(inp: PricingInput, factor: Decimal) -> list[DraftLine]:
    out = []
    for terms in sorted(inp.plan.metrics, key=lambda m: m.metric):
        used = inp.usage.get(terms.metric)
        if used is None:
            continue
        over = overage_quantity(used, terms.included)
        if over <= 0:
            continue
        unit_price = terms.unit_price * factor
        unit = f" {terms.unit}" if terms.unit else ""
        out.append(
            DraftLine(
                kind=LineKind.OVERAGE,
                description=(
                    f"{terms.metric}: {over.normalize():f}{unit} over the "
                    f"{terms.included.normalize():f} included, {inp.period}"
                ),
                # The same function gives the usage page's estimate, so both agree to the cent.
                amount_minor=overage_minor(
                    used, terms.included, terms.unit_price, factor, inp.currency
                ),
                quantity=over,
                unit_amount=_unit(unit_price),
                metric=terms.metric,
            )
        )
    return out


def _true_up_line(item: TrueUpItem, currency: str, rates: Rates) -> DraftLine:
    if item.currency == currency:
        minor = item.amount_minor
        amount = minor_to_decimal(minor, currency)
    else:
        amount = minor_to_decimal(item.amount_minor, item.currency) * rates.factor(
            item.currency, currency
        )
        minor = round_minor(amount, currency)
    return DraftLine(
        kind=LineKind.TRUE_UP if minor >= 0 else LineKind.CREDIT,
        description=item.description,
        amount_minor=minor,
        unit_amount=_unit(amount),
        true_up_id=item.id,
    )


def _with_warnings(draft: Draft, inp: PricingInput) -> Draft:
    warnings = []
    if draft.costs_estimated:
        warnings.append("AWS costs for this month are still estimated")
    if draft.total_minor == 0:
        warnings.append("zero amount")
    elif draft.total_minor < 0:
        warnings.append("credits exceed charges: nothing will be charged, the credit is carried")
    if inp.collection_method == "charge_automatically" and not inp.has_payment_method:
        warnings.append("no payment method on file")
    if not warnings:
        return draft
    return replace(draft, warnings=tuple(warnings))
