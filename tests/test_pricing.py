"""Pricing: worked examples as tables, currency rules, and properties of the rounding."""

from __future__ import annotations

from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from billing_core.errors import ExchangeRateMissing
from billing_core.exchange_rates.convert import Rates
from billing_core.invoicing.pricing import (
    MetricTerms,
    PlanTerms,
    PricingInput,
    TrueUpItem,
    aws_amount,
    overage_amount,
    overage_quantity,
    price,
)
from billing_core.money import Money, exponent, round_minor, step_minor

D = Decimal
EUR_PAR = Rates("2026-10", {"EUR": D(1)}, {"EUR": "test"})


def _input(plan: PlanTerms, currency: str = "EUR", **kw: object) -> PricingInput:
    return PricingInput(
        customer_id=1, customer_name="Acme", currency=currency, period="2026-10", plan=plan, **kw
    )  # type: ignore[arg-type]


def test_worked_example_aws_costs() -> None:
    plan = PlanTerms("indie", "EUR", 2000)
    costs = {
        "AWS Lambda": D("5.23"),
        "Amazon S3": D("2.15"),
        "Amazon CloudFront": D("8.47"),
        "Amazon DynamoDB": D("1.89"),
    }
    draft = price(_input(plan, aws_costs=costs), EUR_PAR)
    assert [(line.kind, line.amount_minor) for line in draft.lines] == [
        ("base_fee", 2000),
        ("aws", 523),
        ("aws", 847),
        ("aws", 189),
        ("aws", 215),
    ]
    assert draft.total_minor == 3774
    assert draft.total == Money.of("37.74", "EUR")  # the sum of the rounded lines, as money
    assert {line.amount.currency for line in draft.lines} == {"EUR"}
    assert draft.fx_rate == D(1) and draft.fx_source == "test"


def test_worked_example_usage_plan() -> None:
    plan = PlanTerms(
        "enterprise",
        "USD",
        1000,
        metrics=(
            MetricTerms("licences", D(10), D("15.00")),
            MetricTerms("clusters", D(3), D("80.00")),
            MetricTerms("seats", D(50), D("3.00"), "users"),
            MetricTerms("storage_gb", D(100), D("0.10"), "GB"),
            MetricTerms("api_calls", D(1000), D("0.01")),
        ),
    )
    usage = {
        "licences": D(15),
        "clusters": D(5),
        "seats": D(53),
        "storage_gb": D(105),
        "api_calls": D(900),
    }
    draft = price(_input(plan, currency="USD", usage=usage), Rates("2026-10"))
    amounts = {(line.metric or line.kind): line.amount_minor for line in draft.lines}
    assert amounts == {
        "base_fee": 1000,
        "licences": 7500,
        "clusters": 16000,
        "seats": 900,
        "storage_gb": 50,
    }
    assert draft.total_minor == 25450
    assert draft.fx_rate is None  # USD invoice, USD plan: no conversion, no rate needed
    seats = next(line for line in draft.lines if line.metric == "seats")
    assert seats.quantity == 3 and seats.unit_amount == D("3.00")
    assert "3 users over the 50 included" in seats.description


@pytest.mark.parametrize(
    ("usd", "markup", "rate", "currency", "expected_minor"),
    [
        (D("10.005"), D(0), D(1), "EUR", 1001),  # half up
        (D("10.004999"), D(0), D(1), "EUR", 1000),
        (D("100"), D(10), D("0.92"), "EUR", 10120),  # markup then FX, one rounding
        (D("0.0000000001"), D(0), D(1), "EUR", 0),
        (D("1234.5678901234"), D("7.5"), D("0.9213"), "EUR", 122271),
        (D("99.99"), D(0), D("151.37"), "JPY", 15135),  # zero-decimal currency
        (D("10"), D(0), D("0.3077"), "KWD", 3080),  # three decimals, last digit 0 for Stripe
        (D("10"), D(0), D("137.945"), "ISK", 137900),  # ISK: two-decimal form, whole krónur
        (D("10"), D(0), D("31.27"), "TWD", 31300),  # TWD: whole dollars
        (D("1.234"), D(0), D("360.6"), "HUF", 44500),  # HUF 444.98 -> 445
        (D("-4.20"), D(10), D(1), "EUR", -462),  # an AWS credit stays negative
    ],
)
def test_aws_line_is_rounded_once(
    usd: Decimal, markup: Decimal, rate: Decimal, currency: str, expected_minor: int
) -> None:
    plan = PlanTerms("p", currency, 0, markup)
    rates = Rates("2026-10", {currency: rate}, {currency: "test"})
    draft = price(_input(plan, currency=currency, aws_costs={"EC2": usd}), rates)
    aws = [line for line in draft.lines if line.kind == "aws"]
    assert [line.amount_minor for line in aws] == [expected_minor]


def test_missing_rate_is_refused_with_what_to_do() -> None:
    with pytest.raises(ExchangeRateMissing, match=r"USD->EUR .* 2026-10: record one .*set-rate"):
        price(_input(PlanTerms("p", "EUR", 100)), Rates("2026-10"))


def test_plan_in_third_currency_uses_the_cross_rate_via_usd() -> None:
    plan = PlanTerms("p", "EUR", 10000)  # EUR 100.00 base fee
    rates = Rates("2026-10", {"EUR": D("0.80"), "GBP": D("0.70")}, {"EUR": "ecb", "GBP": "ecb"})
    draft = price(_input(plan, currency="GBP"), rates)
    assert draft.lines[0].amount_minor == 8750  # 100 / 0.80 * 0.70
    assert draft.fx_rate == D("0.70") and "cross rate" in (draft.fx_source or "")


def test_eur_plan_on_usd_customer_converts_the_fee() -> None:
    rates = Rates("2026-10", {"EUR": D("0.9")}, {"EUR": "ecb"})
    draft = price(_input(PlanTerms("p", "EUR", 900), currency="USD"), rates)
    assert draft.lines[0].amount_minor == 1000
    with pytest.raises(ExchangeRateMissing):
        price(_input(PlanTerms("p", "EUR", 900), currency="USD"), Rates("2026-10"))


def test_true_up_in_another_currency_is_converted_and_rounded_once() -> None:
    rates = Rates("2026-10", {"EUR": D("0.9")}, {"EUR": "ecb"})
    ups = (TrueUpItem(7, "AWS restated", Money.from_minor(1001, "EUR")),)
    draft = price(_input(PlanTerms("p", "USD", 0), currency="USD", true_ups=ups), rates)
    [line] = [line for line in draft.lines if line.true_up_id == 7]
    assert line.amount == Money.of("11.12", "USD")  # 10.01 / 0.9 = 11.1222...
    assert line.unit_amount == D("11.1222222222")


def test_true_ups_and_credits_become_lines_and_warnings() -> None:
    ups = (
        TrueUpItem(7, "AWS restated 2026-09", Money.from_minor(250, "EUR")),
        TrueUpItem(8, "Goodwill credit", Money.from_minor(-5000, "EUR")),
    )
    draft = price(_input(PlanTerms("p", "EUR", 2000), true_ups=ups), EUR_PAR)
    kinds = [(line.kind, line.amount_minor, line.true_up_id) for line in draft.lines]
    assert kinds[1:] == [("true_up", 250, 7), ("credit", -5000, 8)]
    assert draft.total_minor == -2750
    assert any("credits exceed charges" in w for w in draft.warnings)


def test_warnings_estimated_zero_and_payment_method() -> None:
    inp = _input(PlanTerms("free", "EUR", 0), costs_estimated=True, has_payment_method=False)
    draft = price(inp, EUR_PAR)
    assert set(draft.warnings) == {
        "AWS costs for this month are still estimated",
        "zero amount",
        "no payment method on file",
    }


def test_usage_within_limits_adds_no_line() -> None:
    plan = PlanTerms("p", "EUR", 100, metrics=(MetricTerms("seats", D(3), D(3)),))
    draft = price(_input(plan, usage={"seats": D(3), "unknown": D(9)}), EUR_PAR)
    assert [line.kind for line in draft.lines] == ["base_fee"]


@pytest.mark.parametrize(
    ("used", "included", "price_", "quantity", "amount"),
    [
        ("0", "1000", "0.01", "0", "0"),
        ("999", "1000", "0.01", "0", "0"),
        ("1000", "1000", "0.01", "0", "0"),
        ("1001", "1000", "0.01", "1", "0.01"),
        ("1500.5", "1000", "0.01", "500.5", "5.005"),
        ("12", "10", "3.00", "2", "6.00"),
        ("11200000", "10000000", "0.0003", "1200000", "360.0000"),
        ("5", "0", "2.5", "5", "12.5"),
    ],
)
def test_overage_table(used: str, included: str, price_: str, quantity: str, amount: str) -> None:
    assert overage_quantity(D(used), D(included)) == D(quantity)
    got = overage_amount(
        D(used), D(included), Money.of(price_, "EUR"), currency="EUR", rates=EUR_PAR
    )
    assert got == Money.of(amount, "EUR")  # full precision: not rounded yet


@pytest.mark.parametrize(
    ("used", "plan_cur", "cur", "usd_to", "minor"),
    [
        ("1500.5", "EUR", "EUR", {"EUR": D("0.9")}, 501),  # 5.005 half up -> 5.01, once
        ("1500.4", "EUR", "EUR", {"EUR": D("0.9")}, 500),
        ("1001", "USD", "USD", {}, 1),
        ("1500.5", "EUR", "USD", {"EUR": D("0.9")}, 556),  # 5.005 / 0.9 = 5.5611
        ("1500.5", "USD", "EUR", {"EUR": D("0.9")}, 450),  # 5.005 * 0.9 = 4.5045
        ("1500.5", "EUR", "JPY", {"EUR": D("0.9"), "JPY": D("150")}, 834),
    ],
)
def test_overage_amount_is_converted_then_rounded_once(
    used: str, plan_cur: str, cur: str, usd_to: dict[str, Decimal], minor: int
) -> None:
    unit_price = Money.of("0.01", plan_cur)
    got = overage_amount(D(used), D(1000), unit_price, currency=cur, rates=Rates("2026-10", usd_to))
    assert got.currency == cur and got.to_minor() == minor
    # The invoice line is the same figure.
    plan = PlanTerms("p", plan_cur, 0, metrics=(MetricTerms("calls", D(1000), D("0.01")),))
    draft = price(_input(plan, currency=cur, usage={"calls": D(used)}), Rates("2026-10", usd_to))
    assert [line.amount_minor for line in draft.lines if line.kind == "overage"] == [minor]


def test_overage_without_rate_is_a_clear_error() -> None:
    with pytest.raises(ExchangeRateMissing, match="USD->GBP"):
        overage_amount(
            D(2000),
            D(1000),
            Money.of(1, "EUR"),
            currency="GBP",
            rates=Rates("2026-10", {"EUR": D(1)}),
        )


@pytest.mark.parametrize(
    ("usd", "markup", "currency", "rate", "minor"),
    [
        # 100.004 USD * 1.10 markup * 0.92 = 101.204048 EUR -> 10120 cents
        ("100.004", 10, "EUR", "0.92", 10120),
        ("100.5", 0, "JPY", "150", 15075),
        ("100.005", 0, "USD", None, 10001),
    ],
)
def test_aws_amount_rounds_once(
    usd: str, markup: int, currency: str, rate: str | None, minor: int
) -> None:
    rates = Rates("2026-10", {currency: D(rate)} if rate else {})
    assert aws_amount(D(usd), D(markup), currency=currency, rates=rates).to_minor() == minor


amounts = st.decimals(
    min_value=D("-1000"), max_value=D("100000"), places=10, allow_nan=False, allow_infinity=False
)
rates_st = st.decimals(min_value=D("0.01"), max_value=D("200"), places=6)


@given(
    costs=st.dictionaries(st.sampled_from(["EC2", "S3", "RDS", "Lambda", "EKS"]), amounts),
    markup=st.decimals(min_value=D(0), max_value=D(50), places=2),
    rate=rates_st,
    currency=st.sampled_from(["EUR", "JPY", "KWD", "ISK", "HUF", "TWD"]),
)
def test_total_is_the_sum_of_lines_each_rounded_once(
    costs: dict[str, Decimal], markup: Decimal, rate: Decimal, currency: str
) -> None:
    plan = PlanTerms("p", currency, 1234, markup)
    rates = Rates("2026-10", {currency: rate}, {currency: "t"})
    draft = price(_input(plan, currency=currency, aws_costs=costs), rates)
    assert draft.total_minor == sum(line.amount_minor for line in draft.lines)
    for line in draft.lines:
        if line.kind == "aws":
            exact = costs[line.service or ""] * (1 + markup / 100) * rate
            assert line.amount_minor == round_minor(exact, currency)
    # Never more than half a step Stripe allows per line away from the exact figure.
    exact_total = sum((v * (1 + markup / 100) * rate for v in costs.values()), D(0))
    scale = D(10) ** exponent(currency)
    aws_minor = sum(line.amount_minor for line in draft.lines if line.kind == "aws")
    half_step = D(step_minor(currency)) / 2
    assert abs(aws_minor - exact_total * scale) <= half_step * max(1, len(costs))
    assert all(line.amount_minor % step_minor(currency) == 0 for line in draft.lines)


@given(costs=st.dictionaries(st.sampled_from(["EC2", "S3"]), amounts), rate=rates_st)
def test_pricing_is_deterministic(costs: dict[str, Decimal], rate: Decimal) -> None:
    rates = Rates("2026-10", {"EUR": rate}, {"EUR": "t"})
    inp = _input(PlanTerms("p", "EUR", 500, D(5)), aws_costs=costs)
    assert price(inp, rates) == price(inp, rates)
