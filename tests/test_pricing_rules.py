"""Pricing rules (issue 17): charge models at tier boundaries, scoped AWS rules, adjustment
treatments, minimum commitments and discounts, each as a table of hand calculations."""

from __future__ import annotations

from decimal import Decimal

import pytest

from billing_core.exchange_rates.convert import Rates
from billing_core.invoicing.aws_rules import AwsRule, CostItem, RuleSet, Treatment
from billing_core.invoicing.charge_models import (
    ChargeModel,
    MetricTerms,
    Tier,
    tier_problems,
    usage_charge,
)
from billing_core.invoicing.commitments import Discount, DiscountKind
from billing_core.invoicing.pricing import PlanTerms, PricingInput, price, usage_amount
from billing_core.states import LineKind

D = Decimal
USD = Rates("2026-10")
EUR_PAR = Rates("2026-10", {"EUR": D(1)}, {"EUR": "test"})
TIERS = (Tier(D(1000), D("0.10")), Tier(D(5000), D("0.08")), Tier(None, D("0.05")))


def _metric(model: ChargeModel, **kw: object) -> MetricTerms:
    return MetricTerms("calls", D(100), D("2.00"), "calls", model, **kw)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("model", "used", "amount"),
    [
        # per unit, 100 included
        (ChargeModel.PER_UNIT, "100", "0"),
        (ChargeModel.PER_UNIT, "101", "2.00"),
        (ChargeModel.PER_UNIT, "150.5", "101.00"),
        # graduated over billable units: 0.10 up to 1,000, 0.08 up to 5,000, 0.05 above
        (ChargeModel.GRADUATED, "100", "0"),
        (ChargeModel.GRADUATED, "1100", "100.00"),  # 1,000 billable: the first tier exactly
        (ChargeModel.GRADUATED, "1101", "100.08"),  # unit 1,001 is in tier 2
        (ChargeModel.GRADUATED, "5100", "420.00"),  # 100 + 4,000 x 0.08
        (ChargeModel.GRADUATED, "5101", "420.05"),
        (ChargeModel.GRADUATED, "10100", "670.00"),  # 420 + 5,000 x 0.05
        # volume: the tier the billable quantity falls in prices every unit
        (ChargeModel.VOLUME, "1100", "100.00"),  # 1,000 x 0.10
        (ChargeModel.VOLUME, "1101", "80.08"),  # 1,001 x 0.08 (cheaper: that is volume)
        (ChargeModel.VOLUME, "5100", "400.00"),
        (ChargeModel.VOLUME, "5101", "250.05"),
        # package: 2.00 per started block of 50 billable units
        (ChargeModel.PACKAGE, "100", "0"),
        (ChargeModel.PACKAGE, "101", "2.00"),
        (ChargeModel.PACKAGE, "150", "2.00"),
        (ChargeModel.PACKAGE, "151", "4.00"),
        (ChargeModel.PACKAGE, "200", "4.00"),
    ],
)
def test_charge_models_at_tier_boundaries(model: ChargeModel, used: str, amount: str) -> None:
    extra: dict[str, object] = {}
    if model in (ChargeModel.GRADUATED, ChargeModel.VOLUME):
        extra["tiers"] = TIERS
    if model is ChargeModel.PACKAGE:
        extra["package_size"] = D(50)
    charge = usage_charge(_metric(model, **extra), D(used))
    assert charge.amount == D(amount)
    got = usage_amount(_metric(model, **extra), D(used), "USD", currency="USD", rates=USD)
    assert got.rounded().amount == D(amount)


def test_flat_fees_of_tiers() -> None:
    tiers = (Tier(D(10), D(0), D(5)), Tier(None, D(1), D(20)))
    graduated = _metric(ChargeModel.GRADUATED, tiers=tiers)
    volume = _metric(ChargeModel.VOLUME, tiers=tiers)
    assert usage_charge(graduated, D(105)).amount == D(5)  # 5 units in tier 1: its flat fee
    assert usage_charge(graduated, D(112)).amount == D(5 + 2 + 20)
    assert usage_charge(volume, D(110)).amount == D(5)
    assert usage_charge(volume, D(111)).amount == D(11 + 20)


@pytest.mark.parametrize(
    ("model", "tiers", "size", "problem"),
    [
        (ChargeModel.GRADUATED, (), None, "needs at least one tier"),
        (ChargeModel.VOLUME, (Tier(D(10), D(1)),), None, "the last tier must have no up_to"),
        (ChargeModel.GRADUATED, (Tier(D(10), D(1)), Tier(D(5), D(1)), Tier(None, D(1))), None,
         "tier 2: up_to must be above"),
        (ChargeModel.PACKAGE, (), None, "needs a package_size"),
        (ChargeModel.PER_UNIT, TIERS, None, "tiers are only used"),
        (ChargeModel.PER_UNIT, (), D(5), "package_size is only used"),
    ],
)  # fmt: skip
def test_tier_problems(
    model: ChargeModel, tiers: tuple[Tier, ...], size: Decimal | None, problem: str
) -> None:
    assert any(problem in p for p in tier_problems(model, tiers, size))


LAMBDA, S3 = "AWS Lambda", "Amazon S3"
PLAN_RULES = (
    AwsRule(D(20), service=LAMBDA),
    AwsRule(D(-5), account_id="111111111111"),
    AwsRule(D(0), service=LAMBDA, account_id="222222222222"),
    AwsRule(D(50), service=S3, usage_type="Requests-Tier1"),
)


@pytest.mark.parametrize(
    ("account", "service", "usage_type", "pct", "scope"),
    [
        ("999999999999", S3, None, "10", "all AWS costs"),  # the plan's markup
        ("999999999999", LAMBDA, None, "20", LAMBDA),  # service over all
        ("111111111111", S3, None, "-5", "account 111111111111"),  # account over all
        ("111111111111", LAMBDA, None, "20", LAMBDA),  # service over account
        ("222222222222", LAMBDA, None, "0", f"{LAMBDA}, account 222222222222"),  # both
        ("111111111111", S3, "Requests-Tier1", "50", f"{S3}, usage type Requests-Tier1"),
        (None, S3, "TimedStorage", "10", "all AWS costs"),
    ],
)
def test_most_specific_rule_wins(
    account: str | None, service: str, usage_type: str | None, pct: str, scope: str
) -> None:
    rule = RuleSet.of(D(10), PLAN_RULES).match(account, service, usage_type)
    assert (rule.pct, rule.scope) == (D(pct), scope)


def test_customer_override_replaces_the_plan_rule_of_the_same_scope() -> None:
    rules = RuleSet.of(D(10), PLAN_RULES, [AwsRule(D(15), service=LAMBDA, source="customer")])
    rule = rules.match("999999999999", LAMBDA, None)
    assert rule.pct == D(15) and rule.label == "customer override for AWS Lambda: +15% markup"
    assert rules.match("222222222222", LAMBDA, None).pct == 0  # a more specific plan rule


def _plan(**kw: object) -> PlanTerms:
    return PlanTerms("reseller", "USD", 0, D(10), **kw)  # type: ignore[arg-type]


def _priced(plan: PlanTerms, items: tuple[CostItem, ...], **kw: object) -> dict[str, int]:
    inp = PricingInput(1, "Acme", "USD", "2026-10", plan, aws_items=items, **kw)  # type: ignore[arg-type]
    draft = price(inp, USD)
    assert draft.total_minor == sum(line.amount_minor for line in draft.lines)
    return {line.description: line.amount_minor for line in draft.lines if line.amount_minor}


ITEMS = (
    CostItem(LAMBDA, D("100"), "111111111111"),
    CostItem(LAMBDA, D("50"), "222222222222"),
    CostItem(S3, D("10.005"), "111111111111"),
    CostItem(S3, D("20"), "333333333333"),
    CostItem("Credit", D("-40"), "111111111111", record_type="Credit"),
    CostItem("Tax", D("12.34"), "333333333333", record_type="Tax"),
)


def test_scoped_rules_price_each_line_by_its_rule() -> None:
    lines = _priced(_plan(rules=PLAN_RULES), ITEMS)
    assert lines == {
        # Lambda: 100 at the service rule (+20%), 50 at account 2's Lambda rule (no markup)
        "AWS Lambda, October 2026 (account 222222222222)": 5000,
        "AWS Lambda, October 2026 (incl. 20% service fee)": 12000,
        # S3: 10.005 in account 1 (-5%: 9.50475 -> 9.50), 20 elsewhere at the plan's +10%
        "Amazon S3, October 2026 (account 111111111111, less 5% discount)": 950,
        "Amazon S3, October 2026 (incl. 10% service fee)": 2200,
        # adjustments pass through by default, priced by the account's rule: -40 x 0.95
        "AWS Credit, October 2026 (account 111111111111, less 5% discount)": -3800,
        "AWS Tax, October 2026 (incl. 10% service fee)": 1357,  # 13.574
    }


@pytest.mark.parametrize(
    ("treatments", "credit", "tax", "kept"),
    [
        ({}, -3800, 1357, {}),
        ({"Credit": Treatment.AT_COST, "Tax": Treatment.AT_COST}, -4000, 1234, {}),
        ({"Credit": Treatment.KEEP}, None, 1357, {"Credit": D(-40)}),
        ({"Credit": Treatment.KEEP, "Tax": Treatment.KEEP}, None, None,
         {"Credit": D(-40), "Tax": D("12.34")}),
    ],
)  # fmt: skip
def test_adjustment_treatments(
    treatments: dict[str, Treatment], credit: int | None, tax: int | None, kept: dict[str, D]
) -> None:
    plan = _plan(rules=PLAN_RULES, treatments=treatments)
    inp = PricingInput(1, "Acme", "USD", "2026-10", plan, aws_items=ITEMS)
    draft = price(inp, USD)
    by_service = {line.service: line.amount_minor for line in draft.lines if line.service}
    assert by_service.get("Credit") == credit and by_service.get("Tax") == tax
    assert {k.record_type: k.usd for k in draft.kept} == kept
    at_cost = [line for line in draft.lines if "at cost" in line.description]
    assert len(at_cost) == (2 if treatments.get("Tax") is Treatment.AT_COST else 0)


@pytest.mark.parametrize(
    ("base", "aws", "minimum", "expected"),
    [
        (1000, "5", 5000, [1000, 550, 3450]),  # EUR 15.50 of charges, topped up to 50.00
        (1000, "36.36", 5000, [1000, 4000]),  # 39.996 -> 40.00: exactly the minimum
        (1000, "40", 5000, [1000, 4400]),  # above: no line
        (0, "0", 5000, [0, 5000]),
    ],
)
def test_minimum_commitment(base: int, aws: str, minimum: int, expected: list[int]) -> None:
    plan = PlanTerms("p", "EUR", base, D(10), minimum_spend_minor=minimum)
    inp = PricingInput(1, "Acme", "EUR", "2026-10", plan, aws_costs={LAMBDA: D(aws)})
    draft = price(inp, EUR_PAR)
    assert [line.amount_minor for line in draft.lines] == expected
    assert draft.total_minor == max(minimum, sum(expected))
    if len(expected) == 3 or base == 0:
        assert draft.lines[-1].kind == LineKind.MINIMUM_COMMITMENT


@pytest.mark.parametrize(
    ("period", "discounts", "expected"),
    [
        # 20% for 3 months from 2026-09: 2026-10 is month 2; 20% of 100.00
        ("2026-10", [Discount(DiscountKind.PERCENT, D(20), "2026-09", 3)], [-2000]),
        ("2026-12", [Discount(DiscountKind.PERCENT, D(20), "2026-09", 3)], []),  # over
        ("2026-08", [Discount(DiscountKind.PERCENT, D(20), "2026-09", 3)], []),  # not yet
        ("2026-10", [Discount(DiscountKind.FIXED, D(30), "2026-10", 1, "EUR")], [-3000]),
        ("2026-10", [Discount(DiscountKind.FIXED, D(500), "2026-10", 1, "EUR")], [-10000]),
        # one after the other: 33.333% of 100.00 = 33.33, then 10.00 fixed
        ("2026-10", [Discount(DiscountKind.PERCENT, D("33.333"), "2026-10", 1),
                     Discount(DiscountKind.FIXED, D(10), "2026-10", 1, "EUR")], [-3333, -1000]),
    ],
)  # fmt: skip
def test_discounts(period: str, discounts: list[Discount], expected: list[int]) -> None:
    plan = PlanTerms("p", "EUR", 10000)
    draft = price(PricingInput(1, "A", "EUR", period, plan, discounts=tuple(discounts)), EUR_PAR)
    got = [line.amount_minor for line in draft.lines if line.kind == LineKind.DISCOUNT]
    assert got == expected
    assert draft.total_minor == 10000 + sum(expected)


def test_a_mix_of_every_rule_prices_as_by_hand() -> None:
    """EUR customer (rate 0.9), USD plan: base 50.00, +10% on all, Lambda -10% for account 1,
    credits at cost, tax kept, graduated API calls, a minimum of 300.00 and 10% off."""
    rates = Rates("2026-10", {"EUR": D("0.9")}, {"EUR": "ECB"})
    plan = PlanTerms(
        "mix",
        "USD",
        5000,
        D(10),
        metrics=(MetricTerms("api_calls", D(1000), D(0), "calls", ChargeModel.GRADUATED, TIERS),),
        rules=(AwsRule(D(-10), service=LAMBDA, account_id="111111111111"),),
        treatments={"Credit": Treatment.AT_COST, "Tax": Treatment.KEEP},
        minimum_spend_minor=30000,
    )
    inp = PricingInput(
        1,
        "Acme",
        "EUR",
        "2026-10",
        plan,
        aws_items=(
            CostItem(LAMBDA, D("100"), "111111111111"),
            CostItem(S3, D("40"), "111111111111"),
            CostItem("Credit", D("-20"), "111111111111", record_type="Credit"),
            CostItem("Tax", D("9"), "111111111111", record_type="Tax"),
        ),
        usage={"api_calls": D(3500)},  # 2,500 billable: 1,000 x 0.10 + 1,500 x 0.08 = 220.00
        discounts=(Discount(DiscountKind.PERCENT, D(10), "2026-10", 12, description="Launch"),),
    )
    draft = price(inp, rates)
    got = [(line.kind, line.amount_minor) for line in draft.lines]
    assert got == [
        ("base_fee", 4500),  # 50.00 x 0.9
        ("aws", 8100),  # Lambda 100 x 0.9 x 0.9
        ("aws", 3960),  # S3 40 x 1.1 x 0.9
        ("aws", -1800),  # credit at cost: -20 x 0.9
        ("overage", 19800),  # 220.00 x 0.9
        # charges 345.60 >= minimum 270.00 (300 x 0.9): no top-up
        ("discount", -3456),  # 10% of 345.60
    ]
    assert draft.total_minor == 31104
    assert [(k.record_type, k.usd) for k in draft.kept] == [("Tax", D(9))]
    rules = {str(line.kind): line.rule for line in draft.lines}
    assert rules["discount"] == "10% discount, month 1 of 12"
    assert draft.lines[1].rule == (
        "plan rule for AWS Lambda, account 111111111111: -10% discount"
    ) and draft.lines[1].cost == D(100)
