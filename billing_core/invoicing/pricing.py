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

Pricing rules (DESIGN.md section 13) live in pure modules of their own, composed here in this
order: base fee; AWS lines grouped by service and the rule that priced them (`aws_rules`); usage
lines by charge model (`charge_models`); the minimum commitment; discounts (`commitments`);
true-ups. Each line carries `cost` (the AWS cost at AWS rates, USD) and `rule` (how it was
priced), which the preview shows; a line of another kind (a shared-cost allocation) composes
by adding its own function to `price`'s list.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from decimal import Decimal
from functools import cached_property, lru_cache
from operator import attrgetter
from typing import NamedTuple

from billing_core.exchange_rates.convert import COST_CURRENCY, Rates
from billing_core.invoicing.aws_rules import (
    AwsRule,
    CostItem,
    KeptItem,
    LineSlot,
    RuleSet,
    Treatment,
    items_from_mapping,
    rule_texts,
    sum_by_line,
)
from billing_core.invoicing.charge_models import (
    ChargeModel,
    MetricTerms,
    Tier,
    billable_quantity,
    usage_charge,
)
from billing_core.invoicing.commitments import Discount, DiscountKind
from billing_core.invoicing.line_text import (
    month_label,
    overage_description,
    service_label,
    shared_cost_description,
)
from billing_core.invoicing.pricing_memo import MEMO_LIMIT, remember, text_key
from billing_core.money import (
    Money,
    display,
    line_rounder,
    minimum_charge_minor,
    normalize_currency,
    rounded_money,
    sum_money,
)
from billing_core.periods import Period
from billing_core.states import LineKind

# Stored unit amounts keep this many decimals (the InvoiceLine column's scale).
_UNIT_PLACES = Decimal("0.0000000001")
_HUNDRED = Decimal(100)
_ONE = Decimal(1)
_new_tuple = tuple.__new__
_line_amount = attrgetter("amount")


__all__ = [
    "AwsRule",
    "ChargeModel",
    "CostItem",
    "Discount",
    "DiscountKind",
    "MetricTerms",
    "Tier",
    "Treatment",
]


@dataclass(frozen=True)
class PlanTerms:
    """What a plan charges: base fee (minor units), markup on all AWS costs and scoped AWS
    rules, what happens to each AWS adjustment record type, usage terms, and a monthly minimum
    spend (minor units of the plan currency; None: no minimum)."""

    name: str
    currency: str
    base_fee_minor: int
    markup_pct: Decimal = Decimal(0)
    metrics: tuple[MetricTerms, ...] = ()
    rules: tuple[AwsRule, ...] = ()
    treatments: Mapping[str, Treatment] = field(default_factory=dict)
    minimum_spend_minor: int | None = None

    @cached_property
    def sorted_metrics(self) -> tuple[MetricTerms, ...]:
        """The metrics in line order (by name), sorted once per plan."""
        return tuple(sorted(self.metrics, key=lambda m: m.metric))

    @cached_property
    def rule_set(self) -> RuleSet:
        """The plan's rules, shared (and memoised) by all its customers without overrides."""
        return RuleSet.of(self.markup_pct, self.rules)

    @cached_property
    def _override_sets(self) -> dict[tuple[AwsRule, ...], RuleSet]:
        return {}

    @cached_property
    def _line_memo(self) -> dict[object, DraftLine | None]:
        # Lines that depend only on the plan and a few values (the base fee per currency and
        # month; a metric's line per quantity): immutable, so customers share the object.
        return {}

    def rules_for(self, overrides: tuple[AwsRule, ...] = ()) -> RuleSet:
        """The plan's rules with a customer's overrides, one rule set per distinct set of
        overrides: customers with the same overrides share its memo of resolved costs."""
        if not overrides:
            return self.rule_set
        found = self._override_sets.get(overrides)
        if found is None:
            if len(self._override_sets) >= MEMO_LIMIT:
                self._override_sets.clear()
            found = self._override_sets.setdefault(
                overrides, RuleSet.of(self.markup_pct, self.rules, overrides)
            )
        return found


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
    # Costs with their account (and usage type): used instead of `aws_costs` when given.
    aws_items: tuple[CostItem, ...] = ()
    rule_overrides: tuple[AwsRule, ...] = ()  # the customer's, in force for the period
    discounts: tuple[Discount, ...] = ()
    usage: Mapping[str, Decimal] = field(default_factory=dict)  # metric -> quantity
    true_ups: tuple[TrueUpItem, ...] = ()
    # The customer's share of the month's shared AWS costs, USD (invoicing/shared_costs.py).
    shared_cost_usd: Decimal = Decimal(0)
    costs_estimated: bool = False
    collection_method: str = "charge_automatically"
    has_payment_method: bool = True


class DraftLine(NamedTuple):
    """One invoice line; `amount` is the one rounded figure, in the invoice currency.

    A named tuple rather than a frozen dataclass: a run builds tens of lines per customer and
    a tuple is built several times faster (bench/: pricing with rules)."""

    kind: LineKind
    description: str
    amount: Money
    quantity: Decimal = Decimal(1)
    unit_amount: Decimal = Decimal(0)
    service: str | None = None
    metric: str | None = None
    true_up_id: int | None = None
    # How the line was priced, for the preview: the AWS cost at AWS rates (USD) and the rule.
    cost: Decimal | None = None
    rule: str = ""

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
    # Adjustments the plan keeps (not billed, in the margin), USD at AWS rates.
    kept: tuple[KeptItem, ...] = ()

    @property
    def below_minimum(self) -> bool:
        """Positive but below Stripe's minimum charge: not charged, carried to next month."""
        minimum = self.minimum_charge_minor
        return minimum is not None and 0 < self.total_minor < minimum

    @cached_property
    def total(self) -> Money:
        """The exact sum of the rounded lines."""
        return sum_money(list(map(_line_amount, self.lines)), self.currency)

    @cached_property
    def total_minor(self) -> int:
        return self.total.to_minor()


def price(inp: PricingInput, rates: Rates) -> Draft:
    """Price one customer's month; raises ExchangeRateMissing when a needed rate is absent."""
    cur = normalize_currency(inp.currency)  # checked once: the lines build money unchecked
    if cur != inp.currency:
        inp = replace(inp, currency=cur)
    plan = inp.plan
    fx_rate: Decimal | None = None
    fx_source: str | None = None
    if cur != COST_CURRENCY:
        fx_rate = rates.usd_rate(cur)
        fx_source = rates.sources.get(cur, "recorded rate")
    if plan.currency != cur and plan.currency != COST_CURRENCY and cur != COST_CURRENCY:
        fx_source = f"{fx_source}; {plan.currency} via USD cross rate"
    lines = [_base_fee_line(inp, rates)]
    aws, kept = _aws_lines(inp, rates)
    lines += aws
    lines += _shared_cost_lines(inp, rates)
    lines += _overage_lines(inp, rates)
    lines += _minimum_lines(inp, rates, lines)
    lines += _discount_lines(inp, rates, lines)
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
        minimum_charge_minor=_minimum_charge(cur, fx_rate),
        kept=tuple(kept),
    )
    return _with_warnings(draft, inp)


def overage_quantity(used: Decimal, included: Decimal) -> Decimal:
    """How much of `used` lies above the included quantity (never negative)."""
    return billable_quantity(used, included)


def usage_amount(
    terms: MetricTerms, used: Decimal, plan_currency: str, *, currency: str, rates: Rates
) -> Money:
    """A metric's charge under its charge model in the invoice currency, full precision (the
    usage page and reconciliation call this too). Round once (`.rounded()`)."""
    charge = usage_charge(terms, used)
    return rates.convert(Money(charge.amount, plan_currency), currency)


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


# A plan version billing its last months is renamed "studio (until 2026-12)" (customers/
# plans.py); the customer reads the plan's name.
_RETIRED = re.compile(r"\s*\(until \d{4}-\d{2}\)(\s*#\d+)?$")


@lru_cache(maxsize=1024)
def _plan_label(name: str) -> str:
    return _RETIRED.sub("", name).title()


@lru_cache(maxsize=1024)
def _fee_money(minor: int, currency: str) -> Money:
    return Money.from_minor(minor, currency)


@lru_cache(maxsize=1024)
def _minimum_charge(currency: str, usd_rate: Decimal | None) -> int | None:
    return minimum_charge_minor(currency, usd_rate)


@lru_cache(maxsize=1024)
def _fee_text(minor: int, currency: str) -> str:
    return f"plan base fee {Money.from_minor(minor, currency)}"


def _unit(value: Decimal) -> Decimal:
    return value.quantize(_UNIT_PLACES)


def _base_fee_line(inp: PricingInput, rates: Rates) -> DraftLine:
    plan = inp.plan
    cur = inp.currency
    factor = _ONE if plan.currency == cur else rates.factor(plan.currency, cur)
    memo = plan._line_memo
    key = ("base fee", cur, factor, inp.period)
    found = memo.get(key)
    if found is not None:
        return found
    fee = rates.convert(_fee_money(plan.base_fee_minor, plan.currency), cur)
    line = DraftLine(
        kind=LineKind.BASE_FEE,
        description=f"{_plan_label(plan.name)} plan, {month_label(inp.period)}",
        amount=fee.rounded(),
        unit_amount=_unit(fee.amount),
        rule=_fee_text(plan.base_fee_minor, plan.currency),
    )
    remember(memo, key, line)
    return line


def aws_lines(
    items: tuple[CostItem, ...],
    rules: RuleSet,
    treatments: Mapping[str, Treatment],
    *,
    currency: str,
    period: str,
    rates: Rates,
) -> tuple[list[DraftLine], list[KeptItem]]:
    """AWS lines: one per service and the rule that priced it (most specific rule wins), each
    rounded once; plus the adjustments the plan keeps. Reconciliation reprices with this."""
    summed, kept = sum_by_line(items, rules, treatments)
    cur = normalize_currency(currency)
    fx = rates.factor(COST_CURRENCY, cur)
    key = text_key(period, cur, fx)
    out = []
    aws, unit_places, new_line, rounded = LineKind.AWS, _UNIT_PLACES, _new_tuple, line_rounder(cur)
    for slot, usd in summed:
        # What the line says and its factor (rule x FX), once per line slot and month:
        # the slot is shared by every customer of the rule set.
        texts = slot.texts.get(key)
        if texts is None:
            texts = slot.texts[key] = _aws_texts(slot, period, fx)
        exact = usd * texts[0]
        # A tuple built directly: DraftLine's generated __new__ with ten arguments was a
        # large part of pricing's time. Same field order as the class.
        out.append(
            new_line(
                DraftLine,
                (
                    aws,
                    texts[1],
                    rounded(exact),
                    _ONE,
                    exact.quantize(unit_places),
                    slot.service,
                    None,
                    None,
                    usd,
                    texts[2],
                ),
            )
        )
    return out, kept


def _aws_texts(slot: LineSlot, period: str, fx: Decimal) -> tuple[Decimal, str, str]:
    """An AWS line's factor (rule x FX), description and rule label."""
    rule = slot.rule
    assert rule is not None  # a kept slot makes no line (sum_by_line)
    t = rule_texts(rule)
    return t.factor * fx, f"{service_label(slot.service)}, {month_label(period)}{t.suffix}", t.label


def _aws_lines(inp: PricingInput, rates: Rates) -> tuple[list[DraftLine], list[KeptItem]]:
    plan = inp.plan
    rules = plan.rules_for(inp.rule_overrides)
    items = inp.aws_items or items_from_mapping(inp.aws_costs)
    return aws_lines(
        items, rules, plan.treatments, currency=inp.currency, period=inp.period, rates=rates
    )


def _overage_lines(inp: PricingInput, rates: Rates) -> list[DraftLine]:
    out: list[DraftLine] = []
    plan_cur = inp.plan.currency
    cur = inp.currency
    factor: Decimal | None = None  # plan -> invoice currency, asked for once it is needed
    context = 0
    memo = inp.plan._line_memo
    usage = inp.usage
    for index, terms in enumerate(inp.plan.sorted_metrics):
        used = usage.get(terms.metric)
        if used is None:
            continue
        if factor is None:
            factor = rates.factor(plan_cur, cur)
            context = text_key(inp.period, cur, factor)
        # A metric's line depends only on the quantity (and currency, month): customers
        # with the same quantity share it, and its texts are written once. The quantity as
        # written (str): 15 and 15.0 are equal but a line keeps the quantity as given, and a
        # short string hashes faster than a Decimal.
        key = (index, str(used), context)
        if key in memo:  # None there: no line (nothing above the included quantity)
            line = memo[key]
        else:
            line = _overage_line(terms, used, plan_cur, cur, factor, inp.period)
            remember(memo, key, line)
        if line is not None:
            out.append(line)
    return out


def _overage_line(
    terms: MetricTerms, used: Decimal, plan_cur: str, cur: str, factor: Decimal, period: str
) -> DraftLine | None:
    charge = usage_charge(terms, used)
    if charge.quantity <= 0:
        return None
    model = "" if terms.model is ChargeModel.PER_UNIT else f"{terms.model}, "
    # Built as a tuple in field order, as AWS lines are (DraftLine's __new__ is slow).
    return _new_tuple(
        DraftLine,
        (
            LineKind.OVERAGE,
            overage_description(terms.metric, terms.unit, charge.quantity, terms.included, period),
            rounded_money(charge.amount * factor, cur),
            charge.quantity,
            (charge.unit_amount * factor).quantize(_UNIT_PLACES),
            None,
            terms.metric,
            None,
            None,
            f"{model}{charge.explanation} ({plan_cur} prices)",
        ),
    )


def _minimum_spend(minor: int, plan_cur: str, cur: str, rates: Rates) -> Money:
    """A plan's minimum spend in the invoice currency, rounded (once per currency and rate)."""
    factor = _ONE if plan_cur == cur else rates.factor(plan_cur, cur)
    return _converted_minimum(minor, plan_cur, cur, factor)


@lru_cache(maxsize=1024)
def _converted_minimum(minor: int, plan_cur: str, cur: str, factor: Decimal) -> Money:
    return Money(Money.from_minor(minor, plan_cur).amount * factor, cur).rounded()


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
            cost=inp.shared_cost_usd,
            rule=f"share of shared AWS costs at the plan markup of {markup.normalize():f} %",
        )
    ]


def _minimum_lines(inp: PricingInput, rates: Rates, lines: list[DraftLine]) -> list[DraftLine]:
    """The top-up to the plan's monthly minimum spend, when the charges fall short."""
    plan = inp.plan
    if plan.minimum_spend_minor is None:
        return []
    minimum = _minimum_spend(plan.minimum_spend_minor, plan.currency, inp.currency, rates)
    charges = sum_money(list(map(_line_amount, lines)), inp.currency)
    if charges >= minimum:
        return []
    short = minimum - charges
    return [
        DraftLine(
            kind=LineKind.MINIMUM_COMMITMENT,
            description=f"Minimum commitment of {minimum}, {month_label(inp.period)}",
            amount=short,
            unit_amount=_unit(short.amount),
            rule=f"monthly minimum {minimum} less charges of {charges.rounded()}",
        )
    ]


def _discount_lines(inp: PricingInput, rates: Rates, lines: list[DraftLine]) -> list[DraftLine]:
    """One negative line per discount in force this month, never below zero in total."""
    out: list[DraftLine] = []
    if not inp.discounts:
        return out
    left = sum_money(list(map(_line_amount, lines)), inp.currency)
    for discount in inp.discounts:
        if discount.month_number(inp.period) is None or left.amount <= 0:
            continue
        if discount.kind is DiscountKind.PERCENT:
            off = (left * (discount.value / _HUNDRED)).rounded()
        else:
            fixed = Money(discount.value, discount.currency or inp.currency)
            off = rates.convert(fixed, inp.currency).rounded()
            off = off if off <= left else left
        if off.amount <= 0:
            continue
        label = discount.label(inp.period)
        out.append(
            DraftLine(
                kind=LineKind.DISCOUNT,
                description=f"{discount.description or 'Discount'}, {month_label(inp.period)}",
                amount=-off,
                unit_amount=_unit(-off.amount),
                rule=label,
            )
        )
        left = left - off
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
