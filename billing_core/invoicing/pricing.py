"""Pricing: one customer's month in, one draft invoice out. Pure: no I/O, no clock.

Every amount is computed as a Decimal at full precision (sum, markup, FX) and rounded exactly
once, where it becomes an invoice line; the invoice total is the sum of its rounded lines.
Amounts travel as `Money` (an amount with its currency): line amounts and totals in the
invoice currency, plan fees, prices and true-ups in their own.

Stripe's currency rules (billing_core/money.py): each line is rounded once, to the step Stripe
allows in the invoice currency (KWD to 0.010, ISK to whole krónur), so lines and totals are
amounts Stripe takes. A positive total below Stripe's minimum charge is flagged (`below_minimum`)
and is not charged: saving the draft carries it to the next month.

Currency rules (DESIGN.md section 3): AWS costs are in the cost currency (USD). Anything not in
the customer's currency is converted with the period's recorded USD->X rates (`Rates`); an
amount in a third currency (a EUR plan fee on a GBP customer) goes through USD, i.e. the cross
rate rate(USD->GBP) / rate(USD->EUR). An invoice in any currency other than USD needs the
USD->currency rate of its period even when nothing happens to need converting, because the
design ties every non-USD invoice to a recorded rate; without it the draft is refused with
ExchangeRateMissing and the other customers carry on.

`aws_amount` and `overage_amount` are the line arithmetic; the usage page's estimate and
reconciliation call the same functions, so all three agree to the minor unit.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from decimal import Decimal
from functools import cached_property

from billing_core.exchange_rates.convert import COST_CURRENCY, Rates
from billing_core.invoicing.line_text import (
    month_label,
    overage_description,
    service_label,
    shared_cost_description,
)
from billing_core.money import Money, display, minimum_charge_minor, sum_money
from billing_core.periods import Period
from billing_core.states import LineKind

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
    """A pending adjustment (signed, in its own currency) that lands on this invoice."""

    id: int
    description: str
    amount: Money


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
    # The customer's share of the month's shared AWS costs, USD (invoicing/shared_costs.py).
    shared_cost_usd: Decimal = Decimal(0)
    costs_estimated: bool = False
    collection_method: str = "charge_automatically"
    has_payment_method: bool = True


@dataclass(frozen=True)
class DraftLine:
    """One invoice line; `amount` is the one rounded figure, in the invoice currency."""

    kind: LineKind
    description: str
    amount: Money
    quantity: Decimal = Decimal(1)
    unit_amount: Decimal = Decimal(0)
    service: str | None = None
    metric: str | None = None
    true_up_id: int | None = None

    @property
    def amount_minor(self) -> int:
        """The amount in integer minor units, as stored and sent to Stripe."""
        return self.amount.to_minor()


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
    # Stripe's minimum charge in the invoice currency (minor units); None when unknown (a
    # currency outside Stripe's table without a USD rate: USD invoices always know theirs).
    minimum_charge_minor: int | None = None

    @property
    def below_minimum(self) -> bool:
        """Positive but below Stripe's minimum charge: not charged, carried to next month."""
        minimum = self.minimum_charge_minor
        return minimum is not None and 0 < self.total_minor < minimum

    @cached_property
    def total(self) -> Money:
        """The exact sum of the rounded lines."""
        return sum_money((line.amount for line in self.lines), self.currency)

    @property
    def total_minor(self) -> int:
        return self.total.to_minor()


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
    lines = [_base_fee_line(inp, rates)]
    lines += _aws_lines(inp, rates)
    lines += _shared_cost_lines(inp, rates)
    lines += _overage_lines(inp, rates)
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
        minimum_charge_minor=minimum_charge_minor(cur, fx_rate),
    )
    return _with_warnings(draft, inp)


def overage_quantity(used: Decimal, included: Decimal) -> Decimal:
    """How much of `used` lies above the included quantity (never negative)."""
    return max(Decimal(0), used - included)


def overage_amount(
    used: Decimal, included: Decimal, unit_price: Money, *, currency: str, rates: Rates
) -> Money:
    """A metric's overage in the invoice currency at full precision: the quantity above the
    included one times the plan's unit price, converted. Round once (`.rounded()`)."""
    return rates.convert(unit_price * overage_quantity(used, included), currency)


def aws_amount(usd: Decimal, markup_pct: Decimal, *, currency: str, rates: Rates) -> Money:
    """An AWS cost with the plan's markup in the invoice currency, at full precision."""
    marked_up = usd * (Decimal(1) + markup_pct / _HUNDRED)
    return Money(marked_up * rates.factor(COST_CURRENCY, currency), currency)


def _unit(value: Decimal) -> Decimal:
    return value.quantize(_UNIT_PLACES)


def _base_fee_line(inp: PricingInput, rates: Rates) -> DraftLine:
    plan = inp.plan
    fee = rates.convert(Money.from_minor(plan.base_fee_minor, plan.currency), inp.currency)
    return DraftLine(
        kind=LineKind.BASE_FEE,
        description=f"{plan.name.title()} plan, {month_label(inp.period)}",
        amount=fee.rounded(),
        unit_amount=_unit(fee.amount),
    )


def _aws_lines(inp: PricingInput, rates: Rates) -> list[DraftLine]:
    markup = inp.plan.markup_pct
    note = f" (incl. {markup.normalize():f}% service fee)" if markup else ""
    out = []
    for service in sorted(inp.aws_costs):
        usd = inp.aws_costs[service]
        if usd == 0:
            continue
        amount = aws_amount(usd, markup, currency=inp.currency, rates=rates)
        out.append(
            DraftLine(
                kind=LineKind.AWS,
                description=f"{service_label(service)}, {month_label(inp.period)}{note}",
                amount=amount.rounded(),
                unit_amount=_unit(amount.amount),
                service=service,
            )
        )
    return out


def _shared_cost_lines(inp: PricingInput, rates: Rates) -> list[DraftLine]:
    """The share of shared AWS costs: priced like the other AWS costs (markup, FX)."""
    if inp.shared_cost_usd == 0:
        return []
    markup = inp.plan.markup_pct
    amount = aws_amount(inp.shared_cost_usd, markup, currency=inp.currency, rates=rates)
    return [
        DraftLine(
            kind=LineKind.SHARED_COST,
            description=shared_cost_description(inp.period, markup),
            amount=amount.rounded(),
            unit_amount=_unit(amount.amount),
        )
    ]


def _overage_lines(inp: PricingInput, rates: Rates) -> list[DraftLine]:
    out = []
    for terms in sorted(inp.plan.metrics, key=lambda m: m.metric):
        used = inp.usage.get(terms.metric)
        if used is None:
            continue
        over = overage_quantity(used, terms.included)
        if over <= 0:
            continue
        unit_price = Money(terms.unit_price, inp.plan.currency)
        amount = overage_amount(
            used, terms.included, unit_price, currency=inp.currency, rates=rates
        )
        out.append(
            DraftLine(
                kind=LineKind.OVERAGE,
                description=overage_description(
                    terms.metric, terms.unit, over, terms.included, inp.period
                ),
                amount=amount.rounded(),
                quantity=over,
                unit_amount=_unit(rates.convert(unit_price, inp.currency).amount),
                metric=terms.metric,
            )
        )
    return out


def _true_up_line(item: TrueUpItem, currency: str, rates: Rates) -> DraftLine:
    amount = rates.convert(item.amount, currency)
    rounded = amount.rounded()
    return DraftLine(
        kind=LineKind.TRUE_UP if rounded.amount >= 0 else LineKind.CREDIT,
        description=item.description,
        amount=rounded,
        unit_amount=_unit(amount.amount),
        true_up_id=item.id,
    )


def below_minimum_note(draft: Draft) -> str:
    """What happens to a draft below Stripe's minimum charge, for the preview and the run."""
    minimum = display(draft.minimum_charge_minor or 0, draft.currency)
    return (
        f"below Stripe's minimum charge of {minimum}: nothing will be charged, the amount is "
        f"carried to {Period.parse(draft.period).next()}"
    )


def _with_warnings(draft: Draft, inp: PricingInput) -> Draft:
    warnings = []
    if draft.costs_estimated:
        warnings.append("AWS costs for this month are still estimated")
    if draft.total_minor == 0:
        warnings.append("zero amount")
    elif draft.total_minor < 0:
        warnings.append("credits exceed charges: nothing will be charged, the credit is carried")
    elif draft.below_minimum:
        warnings.append(below_minimum_note(draft))
    if inp.collection_method == "charge_automatically" and not inp.has_payment_method:
        warnings.append("no payment method on file")
    if not warnings:
        return draft
    return replace(draft, warnings=tuple(warnings))
