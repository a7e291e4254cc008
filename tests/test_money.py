from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from billing_core.errors import MoneyError
from billing_core.money import (
    Money,
    display,
    display_change,
    exponent,
    format_minor,
    minimum_charge_minor,
    minor_to_decimal,
    round_minor,
    step_minor,
    stripe_amount_problem,
    sum_money,
    to_decimal,
)


@pytest.mark.parametrize(
    ("amount", "currency", "minor"),
    [
        ("0.005", "USD", 1),  # half up, not banker's rounding
        ("0.004999", "USD", 0),
        ("-0.005", "USD", -1),  # half away from zero for credits too
        ("12.345", "EUR", 1235),
        ("12.344999999", "EUR", 1234),
        ("1234.5", "JPY", 1235),  # zero-decimal
        ("1234.4", "JPY", 1234),
        ("1.0005", "KWD", 1000),  # three-decimal: Stripe takes multiples of 10 only
        ("1.005", "KWD", 1010),
        ("1.2345", "KWD", 1230),
        ("-1.005", "BHD", -1010),
        ("0.0049", "OMR", 0),
        ("12.345", "JOD", 12350),
        ("7.77749", "TND", 7780),
        ("12.5", "ISK", 1300),  # two-decimal form, whole units only
        ("12.49", "ISK", 1200),
        ("199.50", "HUF", 20000),
        ("30.2", "TWD", 3000),
        ("1234.5", "UGX", 1235),  # zero-decimal
        ("0.5", "XOF", 1),
        ("0.0000000001", "USD", 0),
        ("99999999.995", "USD", 10000000000),
    ],
)
def test_round_minor_table(amount: str, currency: str, minor: int) -> None:
    assert round_minor(Decimal(amount), currency) == minor


@pytest.mark.parametrize(
    ("minor", "currency", "text"),
    [
        (1230, "USD", "12.30"),
        (5, "EUR", "0.05"),
        (-250, "EUR", "-2.50"),
        (500, "JPY", "500"),
        (1001, "KWD", "1.001"),
    ],
)
def test_format_minor(minor: int, currency: str, text: str) -> None:
    assert format_minor(minor, currency) == text


def test_display_groups_thousands() -> None:
    assert display(123456789, "EUR") == "EUR 1,234,567.89"
    assert display(1500000, "JPY") == "JPY 1,500,000"


def test_exponents() -> None:
    assert (exponent("usd"), exponent("JPY"), exponent("BHD")) == (2, 0, 3)


@pytest.mark.parametrize("bad", [1.5, float("nan"), True, None, "abc", "NaN", "Infinity"])
def test_inexact_values_refused(bad: object) -> None:
    with pytest.raises(MoneyError):
        to_decimal(bad)


def test_float_multiplication_refused() -> None:
    with pytest.raises(MoneyError, match="Float"):
        Money.of("10", "EUR") * 1.1


def test_mixing_currencies_refused() -> None:
    with pytest.raises(MoneyError, match="Cannot combine EUR and USD"):
        Money.of("1", "EUR") + Money.of("1", "USD")


def test_unknown_currency_refused() -> None:
    with pytest.raises(MoneyError, match="Unknown currency"):
        Money.of("1", "XYZ")


def test_worked_example_lines_sum_to_total() -> None:
    lines = [Money.of(v, "EUR") for v in ("20.00", "5.23", "2.15", "8.47", "1.89")]
    assert sum_money(lines, "EUR").to_minor() == 3774
    assert sum(lines).to_minor() == 3774


def test_convert_keeps_full_precision_until_rounding() -> None:
    usd = Money.of("10.0000000005", "USD")
    eur = usd.convert("0.9213", "EUR")
    assert eur.amount == Decimal("9.21300000046065")
    assert eur.to_minor() == 921
    with pytest.raises(MoneyError):
        usd.convert("0", "EUR")


amounts = st.decimals(
    min_value=Decimal("-1000000"),
    max_value=Decimal("1000000"),
    places=10,
    allow_nan=False,
    allow_infinity=False,
)
currencies = st.sampled_from(["USD", "EUR", "JPY", "KWD", "GBP", "ISK", "HUF", "TWD", "BHD"])


@given(st.lists(amounts, min_size=0, max_size=30), currencies)
def test_total_is_exact_sum_of_rounded_lines(values: list[Decimal], currency: str) -> None:
    lines = [Money.of(v, currency).to_minor() for v in values]
    total = sum_money((Money.from_minor(m, currency) for m in lines), currency)
    assert total.to_minor() == sum(lines)


@given(st.integers(min_value=-(10**13), max_value=10**13), currencies)
def test_minor_units_round_trip(steps: int, currency: str) -> None:
    minor = steps * step_minor(currency)  # every amount Stripe takes
    assert Money.from_minor(minor, currency).to_minor() == minor
    assert round_minor(minor_to_decimal(minor, currency), currency) == minor


@given(amounts, currencies)
def test_rounding_error_is_at_most_half_a_step(value: Decimal, currency: str) -> None:
    minor = round_minor(value, currency)
    rounded = minor_to_decimal(minor, currency)
    step = step_minor(currency) * Decimal(10) ** -exponent(currency)
    assert abs(rounded - value) <= step / 2
    assert stripe_amount_problem(minor, currency) is None


@given(amounts, currencies)
def test_rounded_is_to_minor_kept_as_money(value: Decimal, currency: str) -> None:
    money = Money.of(value, currency)
    rounded = money.rounded()
    assert rounded == Money.from_minor(money.to_minor(), currency)
    assert rounded.to_minor() == money.to_minor()
    assert rounded.amount.as_tuple().exponent == -exponent(currency)
    assert not rounded.amount.is_signed() or rounded.amount < 0  # no "-0.00"


@pytest.mark.parametrize(
    ("amount", "currency", "text"),
    [("5.005", "EUR", "5.01"), ("-0.004", "EUR", "0.00"), ("1234.5", "JPY", "1235")],
)
def test_rounded_table(amount: str, currency: str, text: str) -> None:
    assert str(Money.of(amount, currency).rounded().amount) == text


# Stripe's currency rules (docs.stripe.com/currencies): the smallest amount it takes per currency.
@pytest.mark.parametrize(
    ("currency", "step", "exp"),
    [
        ("USD", 1, 2),
        ("EUR", 1, 2),
        ("JPY", 1, 0),  # zero-decimal: whole yen
        ("KRW", 1, 0),
        ("UGX", 1, 0),
        ("XOF", 1, 0),
        ("BHD", 10, 3),  # three-decimal: last digit 0
        ("JOD", 10, 3),
        ("KWD", 10, 3),
        ("OMR", 10, 3),
        ("TND", 10, 3),
        ("ISK", 100, 2),  # two-decimal form, whole units only
        ("HUF", 100, 2),
        ("TWD", 100, 2),
    ],
)
def test_stripe_steps(currency: str, step: int, exp: int) -> None:
    assert (step_minor(currency), exponent(currency)) == (step, exp)
    assert stripe_amount_problem(7 * step, currency) is None
    if step > 1:
        problem = stripe_amount_problem(7 * step + 1, currency)
        assert problem is not None and f"multiple of {step}" in problem


@pytest.mark.parametrize(
    ("currency", "usd_rate", "minimum"),
    [
        ("USD", None, 50),
        ("EUR", None, 50),
        ("GBP", None, 30),
        ("JPY", None, 50),
        ("HUF", None, 17500),
        ("CZK", None, 1500),
        ("MXN", None, 1000),
        ("THB", None, 1000),
        ("KWD", Decimal("0.3071"), 160),  # USD 0.50 = KWD 0.15355, up to KWD 0.160
        ("ISK", Decimal("137.9"), 6900),  # ISK 68.95, up to ISK 69
        ("KRW", Decimal("1380.5"), 691),  # KRW 690.25, up to 691
        ("ZAR", None, None),  # not in Stripe's table and no rate: unknown
    ],
)
def test_minimum_charge(currency: str, usd_rate: Decimal | None, minimum: int | None) -> None:
    assert minimum_charge_minor(currency, usd_rate) == minimum


def test_a_change_shows_its_sign_before_the_currency() -> None:
    # The sign leads for rises and falls alike: "USD -6.00" beside "+USD 3.00" read as two styles.
    assert display_change(300, "USD") == "+USD 3.00"
    assert display_change(-123456, "USD") == "-USD 1,234.56"
    assert display_change(0, "EUR") == "EUR 0.00"
    assert display_change(-5, "JPY") == "-JPY 5"
