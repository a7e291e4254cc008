"""Pricing's memos (bench/: pricing with rules of every kind) change no figure: what a plan
remembers from one customer (rule sets per overrides, line slots per cost key, texts per month
and currency, shared base-fee and usage lines) prices the next one exactly as a fresh plan
would, and the per-currency line rounder is `Money.rounded` to the digit."""

from __future__ import annotations

from dataclasses import replace
from decimal import Decimal

import pytest

from billing_core.errors import MoneyError
from billing_core.exchange_rates.convert import Rates
from billing_core.invoicing.aws_rules import AwsRule, CostItem, RuleSet, Treatment, group_costs
from billing_core.invoicing.charge_models import ChargeModel, MetricTerms, Tier
from billing_core.invoicing.commitments import Discount, DiscountKind
from billing_core.invoicing.pricing import Draft, PlanTerms, PricingInput, price
from billing_core.money import KNOWN, Money, line_rounder, rounded_amount, sum_money

D = Decimal
RATES = Rates(
    "2026-10",
    {"EUR": D("0.9213"), "GBP": D("0.7911"), "KWD": D("0.3071"), "JPY": D("151.3")},
    {"EUR": "test", "GBP": "test", "KWD": "test", "JPY": "test"},
)
TIERS = (Tier(D(100), D("0.30")), Tier(D(1000), D("0.20")), Tier(None, D("0.10")))


def _plan() -> PlanTerms:
    return PlanTerms(
        "studio",
        "EUR",
        9900,
        D(10),
        (
            MetricTerms("seats", D(5), D("15.00"), "seats"),
            MetricTerms("calls", D(10), D(0), "calls", ChargeModel.GRADUATED, TIERS),
            MetricTerms("gb", D(10), D(0), "GB", ChargeModel.VOLUME, TIERS),
            MetricTerms("jobs", D(0), D(5), "jobs", ChargeModel.PACKAGE, (), D(50)),
        ),
        (
            AwsRule(D(5), service="Lambda"),
            AwsRule(D(-3), service="S3"),
            AwsRule(D(12), account_id="111111111111"),
            AwsRule(D(0), service="S3", account_id="111111111111"),
            AwsRule(D(50), service="EC2", usage_type="Requests"),
        ),
        {"Credit": Treatment.AT_COST, "Tax": Treatment.KEEP},
        50000,
    )


def _inputs(plan: PlanTerms) -> list[PricingInput]:
    """Customers that differ in what each memo is keyed by: overrides, currency, month,
    quantities, accounts, usage types, adjustments."""
    out = []
    for i in range(24):
        items = (
            CostItem("Lambda", D(i) / 7, "111111111111"),
            CostItem("Lambda", D(i) / 3, "222222222222"),
            CostItem("S3", D("12.345") + i, "111111111111"),
            CostItem("S3", D("0.005"), "222222222222"),
            CostItem("EC2", D(40 + i), "222222222222", usage_type="Requests"),
            CostItem("EC2", D(7), "222222222222", usage_type="BoxUsage"),
            CostItem("Credit", D(-5), "111111111111", record_type="Credit"),
            CostItem("Tax", D(3), "222222222222", record_type="Tax"),
        )
        out.append(
            PricingInput(
                customer_id=i,
                customer_name=f"c{i}",
                currency=("EUR", "GBP", "KWD", "JPY", "USD")[i % 5],
                period=("2026-10", "2026-11")[i % 2],
                plan=plan,
                aws_items=items[: 3 + i % 6],
                usage={
                    "seats": D(i % 9) if i % 4 else D(f"{i % 9}.0"),
                    "calls": D(i * 97),
                    "gb": D(i % 4),
                    "jobs": D(i * 11),
                },
                rule_overrides=(
                    (AwsRule(D(15), service="Lambda", source="customer"),)
                    if i % 3 == 0
                    else (AwsRule(D(-20), account_id="222222222222", source="customer"),)
                    if i % 3 == 1
                    else ()
                ),
                discounts=(Discount(DiscountKind.PERCENT, D(10), "2026-10", 1),) if i % 4 else (),
            )
        )
    return out


def _shape(draft: Draft) -> list[tuple[object, ...]]:
    # Every field of every line, and the digits amounts are written with (2.50 vs 2.5).
    lines = [(*line, str(line.amount.amount), str(line.unit_amount)) for line in draft.lines]
    return [*lines, (draft.total, draft.kept, draft.warnings)]


def test_a_shared_plan_prices_every_customer_as_a_fresh_plan_would() -> None:
    shared = _plan()
    inputs = _inputs(shared)
    warm = [_shape(price(inp, RATES)) for inp in inputs] + [
        _shape(price(inp, RATES)) for inp in reversed(inputs)
    ]
    fresh = [_shape(price(_with_plan(inp, _plan()), RATES)) for inp in inputs] + [
        _shape(price(_with_plan(inp, _plan()), RATES)) for inp in reversed(inputs)
    ]
    assert warm == fresh
    # The memos were used (the figure they buy is in bench/).
    assert shared.rules_for(inputs[0].rule_overrides) is shared.rules_for(
        (AwsRule(D(15), service="Lambda", source="customer"),)
    )
    assert shared.rules_for(()) is shared.rule_set
    assert shared.rules_for(inputs[0].rule_overrides) is not shared.rule_set


def _with_plan(inp: PricingInput, plan: PlanTerms) -> PricingInput:
    return replace(inp, plan=plan)


def test_line_text_follows_the_month_and_currency_of_each_customer() -> None:
    plan = _plan()
    item = (CostItem("Lambda", D(10), "222222222222"),)
    october = price(PricingInput(1, "a", "EUR", "2026-10", plan, aws_items=item), RATES)
    november = price(PricingInput(2, "b", "GBP", "2026-11", plan, aws_items=item), RATES)
    assert october.lines[1].description == "AWS Lambda, October 2026 (incl. 5% service fee)"
    assert november.lines[1].description == "AWS Lambda, November 2026 (incl. 5% service fee)"
    # 10 USD x 1.05 in EUR (0.9213 per USD) and GBP (0.7911 per USD), rounded once.
    assert october.lines[1].amount == Money(D("9.67"), "EUR")
    assert november.lines[1].amount == Money(D("8.31"), "GBP")
    assert october.lines[0].description == "Studio plan, October 2026"
    assert november.lines[0].description == "Studio plan, November 2026"


def test_one_rule_set_keeps_treatments_apart() -> None:
    rules = RuleSet.of(D(10))
    items = [CostItem("Tax", D(3), "111111111111", record_type="Tax")]
    kept_groups, kept = group_costs(items, rules, {"Tax": Treatment.KEEP})
    billed_groups, none_kept = group_costs(items, rules, {"Tax": Treatment.AT_COST})
    passed_groups, _ = group_costs(items, rules, None)
    assert (kept_groups, [(k.record_type, k.usd) for k in kept]) == ([], [("Tax", D(3))])
    assert [(g.service, g.rule.source, g.usd) for g in billed_groups] == [("Tax", "at_cost", 3)]
    assert none_kept == []
    assert [(g.service, g.rule.pct) for g in passed_groups] == [("Tax", D(10))]


@pytest.mark.parametrize("currency", sorted(KNOWN))
def test_the_line_rounder_is_money_rounded(currency: str) -> None:
    rounder = line_rounder(currency)
    for text in ("0", "1.005", "-1.005", "2.5", "-0.004", "12.3449", "12.345", "99.995", "0.05"):
        amount = D(text)
        expected = Money(amount, currency).rounded()
        got = rounder(amount)
        assert (got.amount, got.currency) == (expected.amount, expected.currency)
        assert str(got.amount) == str(expected.amount) == str(rounded_amount(amount, currency))
        assert not got.amount.is_signed() or got.amount < 0  # never "-0.00"


def test_sum_money_still_refuses_other_currencies_and_types() -> None:
    eur = [Money(D("1.10"), "EUR"), Money(D("2.20"), "EUR")]
    assert sum_money(iter(eur), "EUR") == Money(D("3.30"), "EUR")
    assert sum_money([], "EUR") == Money(D(0), "EUR")
    with pytest.raises(MoneyError, match="Cannot combine EUR and USD"):
        sum_money([*eur, Money(D(1), "USD")], "EUR")
    with pytest.raises(MoneyError, match="Cannot combine money with Decimal"):
        sum_money([*eur, D(1)], "EUR")  # type: ignore[list-item]


def test_a_shared_usage_line_keeps_the_quantity_as_given() -> None:
    plan = _plan()
    as_given = [D("8"), D("8.0"), D("8")]
    drafts = [
        price(PricingInput(i, "c", "EUR", "2026-10", plan, usage={"seats": q}), RATES)
        for i, q in enumerate(as_given)
    ]
    assert [str(d.lines[1].quantity) for d in drafts] == ["3", "3.0", "3"]
    assert {d.lines[1].amount for d in drafts} == {Money(D("45.00"), "EUR")}
