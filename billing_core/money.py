"""Exact money: Decimal amounts with a currency, integer minor units, one rounding rule.

Amounts are computed as Decimal at full precision and rounded once, where they become an
invoice line (ROUND_HALF_UP to the step the currency allows). Floats are refused everywhere.

Minor units are Stripe's, which are not ISO 4217's everywhere (docs.stripe.com/currencies, API
version 2026-10-28; sections "Zero-decimal currencies", "Three-decimal currencies", "Special
cases", "Minimum and maximum charge amounts"):

- zero-decimal currencies (ZERO_DECIMAL: JPY, KRW, ...) are sent in whole units: JPY 500 is 500;
- three-decimal currencies (THREE_DECIMAL: BHD, JOD, KWD, OMR, TND) are sent in thousandths,
  but the last digit must be 0: KWD 5.124 is not accepted, KWD 5.120 is 5120;
- ISK, HUF and TWD are sent in two-decimal form but charged in whole units (WHOLE_UNITS): ISK is
  zero-decimal but kept in two-decimal form for backward compatibility, so ISK 5 is 500 and
  must end in 00; HUF and TWD pay out in whole units only, so we bill them in whole units too;
- an amount is charged only from a minimum per currency (MINIMUM_CHARGE; other currencies: the
  equivalent of USD 0.50).

`step_minor(currency)` is the smallest amount Stripe takes (1, 10 or 100 minor units) and the one
rounding per line rounds to it, so every stored line and every total is a valid Stripe amount
and totals stay the exact sum of their lines.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from decimal import ROUND_CEILING, ROUND_HALF_UP, Decimal, InvalidOperation
from functools import cache
from operator import attrgetter

from billing_core.errors import MoneyError

# Stripe's zero-decimal currencies: amounts are sent in whole units.
ZERO_DECIMAL = frozenset(
    [
        "BIF",
        "CLP",
        "DJF",
        "GNF",
        "JPY",
        "KMF",
        "KRW",
        "MGA",
        "PYG",
        "RWF",
        "UGX",
        "VND",
        "VUV",
        "XAF",
        "XOF",
        "XPF",
    ]
)
# Three-decimal currencies (ISO 4217 and Stripe); Stripe takes only multiples of 10 in them.
THREE_DECIMAL = frozenset(["BHD", "JOD", "KWD", "OMR", "TND"])
# Taken in two-decimal form, in whole units only (amounts divisible by 100). UGX, which Stripe
# also pays out in multiples of 100 only, is on the zero-decimal list: its charges are whole
# shillings already, and payouts are not amounts this tool sends.
WHOLE_UNITS = frozenset(["ISK", "HUF", "TWD"])
# Stripe's minimum charge per currency in major units (docs.stripe.com/currencies, "Minimum and
# maximum charge amounts"); any other currency: the equivalent of USD 0.50.
MINIMUM_CHARGE = {
    "USD": Decimal("0.50"),
    "AED": Decimal("2.00"),
    "AUD": Decimal("0.50"),
    "BGN": Decimal("1.00"),
    "BRL": Decimal("0.50"),
    "CAD": Decimal("0.50"),
    "CHF": Decimal("0.50"),
    "CZK": Decimal("15.00"),
    "DKK": Decimal("2.50"),
    "EUR": Decimal("0.50"),
    "GBP": Decimal("0.30"),
    "HKD": Decimal("4.00"),
    "HUF": Decimal("175.00"),
    "INR": Decimal("0.50"),
    "JPY": Decimal("50"),
    "MXN": Decimal("10"),
    "MYR": Decimal("2"),
    "NOK": Decimal("3.00"),
    "NZD": Decimal("0.50"),
    "PLN": Decimal("2.00"),
    "RON": Decimal("2.00"),
    "SEK": Decimal("3.00"),
    "SGD": Decimal("0.50"),
    "THB": Decimal("10"),
}
# Currencies we accept at all: ISO codes Stripe settles in and that finance is likely to use.
KNOWN = (
    frozenset(
        [
            "USD",
            "EUR",
            "GBP",
            "CHF",
            "CAD",
            "AUD",
            "NZD",
            "SEK",
            "NOK",
            "DKK",
            "PLN",
            "CZK",
            "HUF",
            "RON",
            "BGN",
            "ISK",
            "JPY",
            "KRW",
            "SGD",
            "HKD",
            "INR",
            "BRL",
            "MXN",
            "ZAR",
            "AED",
            "ILS",
            "TRY",
            "CNY",
            "TWD",
            "THB",
            "MYR",
            "IDR",
            "PHP",
            "VND",
            "CLP",
            "COP",
            "PEN",
            "ARS",
            "NGN",
            "KES",
            "EGP",
            "SAR",
            "QAR",
        ]
    )
    | ZERO_DECIMAL
    | THREE_DECIMAL
)


# Digits of the minor unit where they are not 2.
_EXPONENTS = {**dict.fromkeys(ZERO_DECIMAL, 0), **dict.fromkeys(THREE_DECIMAL, 3)}
# The smallest amount Stripe takes, in minor units, where it is not 1.
_STEPS = {**dict.fromkeys(THREE_DECIMAL, 10), **dict.fromkeys(WHOLE_UNITS, 100)}
# The same step in major units: what the one rounding per line quantizes to (USD 0.01, JPY 1,
# KWD 0.01, ISK 1).
_QUANTUM = {
    cur: Decimal(_STEPS.get(cur, 1)).scaleb(-_EXPONENTS.get(cur, 2)).normalize() for cur in KNOWN
}


# Per currency: the step a line is rounded to, and the digits it is then written with (None
# when they are the same quantum, so `Money.rounded` quantizes once).
_ROUNDING: dict[str, tuple[Decimal, Decimal | None]] = {
    cur: (
        _QUANTUM[cur],
        None
        if _QUANTUM[cur].as_tuple().exponent == -_EXPONENTS.get(cur, 2)
        else Decimal(1).scaleb(-_EXPONENTS.get(cur, 2)),
    )
    for cur in KNOWN
}


def normalize_currency(code: str) -> str:
    """Return the upper-case ISO code, or raise a MoneyError naming the bad value."""
    if isinstance(code, str) and code in KNOWN:
        return code  # already normal (the common case: every Money checks its currency)
    if not isinstance(code, str) or not code.strip():
        raise MoneyError("A currency code is required (for example EUR or USD).")
    norm = code.strip().upper()
    if norm not in KNOWN:
        raise MoneyError(
            f"Unknown currency {code!r}: use a three-letter ISO 4217 code such as EUR or USD."
        )
    return norm


def exponent(currency: str) -> int:
    """Digits after the decimal point in the currency's minor unit (JPY 0, USD 2, KWD 3)."""
    return _EXPONENTS.get(normalize_currency(currency), 2)


def step_minor(currency: str) -> int:
    """The smallest amount Stripe takes in the currency, in minor units: every amount sent must
    be a multiple of it (1; 10 for BHD, JOD, KWD, OMR, TND; 100 for ISK, HUF, TWD)."""
    return _STEPS.get(normalize_currency(currency), 1)


def stripe_amount_problem(minor: int, currency: str) -> str | None:
    """Why Stripe would refuse `minor` as an amount in `currency`, or None when it is valid."""
    step = step_minor(currency)
    if minor % step == 0:
        return None
    cur = normalize_currency(currency)
    return (
        f"{cur} amounts must be a multiple of {step} minor units ({display(step, cur)}); "
        f"{minor} is not."
    )


def minimum_charge_minor(currency: str, usd_rate: Decimal | None = None) -> int | None:
    """Stripe's minimum charge in minor units: the table's figure, else USD 0.50 converted with
    `usd_rate` (units of `currency` per USD), rounded up to a step; None when neither is known."""
    cur = normalize_currency(currency)
    if cur in MINIMUM_CHARGE:
        return round_minor(MINIMUM_CHARGE[cur], cur)
    if usd_rate is None:
        return None
    step = _QUANTUM[cur]
    # Rounded up: a minimum rounded down would let an amount below Stripe's through.
    amount = (MINIMUM_CHARGE["USD"] * to_decimal(usd_rate)).quantize(step, rounding=ROUND_CEILING)
    return int(amount.scaleb(exponent(cur)))


def to_decimal(value: object) -> Decimal:
    """Convert an exact value (Decimal, int, numeric string) to Decimal; refuse floats."""
    if type(value) is Decimal and value.is_finite():
        return value  # the common case, checked first
    if isinstance(value, bool):
        raise MoneyError("A boolean is not an amount.")
    if isinstance(value, float):
        raise MoneyError(
            f"Float {value!r} refused: money must be exact; pass a Decimal or a string."
        )
    if isinstance(value, Decimal):
        result = value
    elif isinstance(value, int):
        result = Decimal(value)
    elif isinstance(value, str):
        try:
            result = Decimal(value.strip())
        except InvalidOperation:
            raise MoneyError(f"{value!r} is not a number.") from None
    else:
        raise MoneyError(f"{value!r} ({type(value).__name__}) is not an amount.")
    if not result.is_finite():
        raise MoneyError(f"{value!r} is not a finite amount.")
    return result


def round_minor(amount: Decimal, currency: str) -> int:
    """Round a full-precision amount half up to the currency's step (the one rounding step),
    in integer minor units: USD 1.005 -> 101, KWD 1.2345 -> 1230, ISK 12.5 -> 1300."""
    cur = normalize_currency(currency)
    rounded = to_decimal(amount).quantize(_QUANTUM[cur], rounding=ROUND_HALF_UP)
    return int(rounded.scaleb(_EXPONENTS.get(cur, 2)))


def minor_to_decimal(minor: int, currency: str) -> Decimal:
    """Integer minor units to an exact Decimal in major units (1234 USD -> 12.34)."""
    if isinstance(minor, bool) or not isinstance(minor, int):
        raise MoneyError(f"Minor units must be an integer, got {minor!r}.")
    exp = exponent(currency)
    return Decimal(minor).scaleb(-exp).quantize(Decimal(1).scaleb(-exp))


def format_minor(minor: int, currency: str) -> str:
    """A plain decimal string with the currency's digits, as accounting CSVs want ('12.30')."""
    return str(minor_to_decimal(minor, currency))


def display(minor: int, currency: str) -> str:
    """Human display with thousands separators: 'EUR 1,234.50'."""
    cur = normalize_currency(currency)
    if isinstance(minor, bool) or not isinstance(minor, int):
        raise MoneyError(f"Minor units must be an integer, got {minor!r}.")
    exp = _EXPONENTS.get(cur, 2)
    # Whole units and the fraction's digits from the integer: the text of the exact Decimal,
    # without building one (tables show thousands of amounts).
    whole, fraction = divmod(-minor if minor < 0 else minor, 10**exp)
    sign = "-" if minor < 0 else ""
    return f"{cur} {sign}{whole:,}.{fraction:0{exp}d}" if exp else f"{cur} {sign}{whole:,}"


def display_change(minor: int, currency: str) -> str:
    """A change with its sign first: '+EUR 1,234.50', '-EUR 12.00', 'EUR 0.00'.

    For deltas (a metric's arrow follows the leading sign) and report lines of change, where
    '+' and '-' must both be read before the currency; amounts themselves use `display`."""
    text = display(abs(minor), currency)
    return ("+" if minor > 0 else "-" if minor < 0 else "") + text


@dataclass(frozen=True, slots=True)
class Money:
    """An exact amount in one currency; arithmetic across currencies or with floats fails."""

    amount: Decimal
    currency: str

    def __init__(self, amount: object, currency: str) -> None:
        object.__setattr__(self, "amount", to_decimal(amount))
        object.__setattr__(self, "currency", normalize_currency(currency))

    @classmethod
    def _checked(cls, amount: Decimal, currency: str) -> Money:
        """Money from parts already checked (the result of arithmetic on Money): no re-check."""
        return _checked_money(amount, currency)

    @classmethod
    def of(cls, amount: object, currency: str) -> Money:
        return cls(to_decimal(amount), currency)

    @classmethod
    def zero(cls, currency: str) -> Money:
        return cls(Decimal(0), currency)

    @classmethod
    def from_minor(cls, minor: int, currency: str) -> Money:
        return cls(minor_to_decimal(minor, currency), currency)

    def to_minor(self) -> int:
        """Round half up to integer minor units (the one rounding step)."""
        return round_minor(self.amount, self.currency)

    def rounded(self) -> Money:
        """This amount rounded half up to the step Stripe allows in its currency, still as
        money (the same rule and figure as `to_minor`, kept with its currency)."""
        return rounded_money(self.amount, self.currency)

    def _check(self, other: object) -> Money:
        if not isinstance(other, Money):
            raise MoneyError(f"Cannot combine money with {type(other).__name__}.")
        if other.currency != self.currency:
            raise MoneyError(
                f"Cannot combine {self.currency} and {other.currency}: convert with a "
                "recorded exchange rate first."
            )
        return other

    def __add__(self, other: object) -> Money:
        return Money._checked(self.amount + self._check(other).amount, self.currency)

    def __radd__(self, other: object) -> Money:
        # sum() starts from 0; allow that one case.
        if isinstance(other, int) and not isinstance(other, bool) and other == 0:
            return self
        return self.__add__(other)

    def __sub__(self, other: object) -> Money:
        return Money._checked(self.amount - self._check(other).amount, self.currency)

    def __neg__(self) -> Money:
        return Money._checked(-self.amount, self.currency)

    def __mul__(self, factor: object) -> Money:
        if isinstance(factor, Money):
            raise MoneyError("Cannot multiply money by money.")
        return Money._checked(self.amount * to_decimal(factor), self.currency)

    __rmul__ = __mul__

    def __lt__(self, other: object) -> bool:
        return self.amount < self._check(other).amount

    def __le__(self, other: object) -> bool:
        return self.amount <= self._check(other).amount

    def __gt__(self, other: object) -> bool:
        return self.amount > self._check(other).amount

    def __ge__(self, other: object) -> bool:
        return self.amount >= self._check(other).amount

    def convert(self, rate: object, to_currency: str) -> Money:
        """Convert at full precision with a rate quoted as units of `to_currency` per 1 unit."""
        dec_rate = to_decimal(rate)
        if dec_rate <= 0:
            raise MoneyError(f"Exchange rate must be positive, got {rate!r}.")
        return Money._checked(self.amount * dec_rate, normalize_currency(to_currency))

    def __str__(self) -> str:
        return display(self.to_minor(), self.currency)


# Money's slot setters: they fill a new instance without the frozen dataclass's __setattr__
# (three times faster; pricing builds one Money per invoice line, hundreds of thousands a run).
_new_object = object.__new__
_set_amount: Callable[[Money, Decimal], None] = Money.__dict__["amount"].__set__
_set_currency: Callable[[Money, str], None] = Money.__dict__["currency"].__set__


def _checked_money(amount: Decimal, currency: str) -> Money:
    money = _new_object(Money)
    _set_amount(money, amount)
    _set_currency(money, currency)
    return money


def rounded_money(amount: Decimal, currency: str) -> Money:
    """`amount` (full precision) rounded once as an invoice line's money (`rounded_amount`);
    `currency` must be checked already (`normalize_currency`)."""
    money = _new_object(Money)
    _set_amount(money, rounded_amount(amount, currency))
    _set_currency(money, currency)
    return money


@cache
def line_rounder(currency: str) -> Callable[[Decimal], Money]:
    """`rounded_money` for one checked currency, as a function of the amount alone: the
    currency's step is looked up once (pricing rounds hundreds of thousands of lines a run)."""
    step, digits = _ROUNDING[currency]
    if digits is not None:
        return lambda amount: rounded_money(amount, currency)

    def rounder(amount: Decimal) -> Money:
        # rounded_amount's rule where the step is the currency's digits (one quantize).
        value = amount.quantize(step, ROUND_HALF_UP)
        money = _new_object(Money)
        _set_amount(money, value.copy_abs() if value.is_zero() else value)
        _set_currency(money, currency)
        return money

    return rounder


def rounded_amount(amount: Decimal, currency: str) -> Decimal:
    """`amount` rounded half up to the step Stripe allows in `currency` (an ISO code already
    checked by `normalize_currency`), written with the currency's digits: the one rounding per
    line, as a Decimal (`Money.rounded` is this with its currency)."""
    step, digits = _ROUNDING[currency]
    # Rounded to the step, then written with the currency's digits (KWD 5.12 as 5.120);
    # one quantize where the two are the same (most currencies: pricing's hot path).
    value = amount.quantize(step, rounding=ROUND_HALF_UP)
    if digits is not None:
        value = value.quantize(digits)
    return value.copy_abs() if value.is_zero() else value  # never "-0.00"


def sum_money(items: Iterable[Money], currency: str) -> Money:
    """Sum money in one currency, starting from an explicit zero (works for empty input)."""
    zero = Money.zero(currency)
    cur = zero.currency
    items = items if isinstance(items, list | tuple) else list(items)
    # Checked and summed in C (map, set, sum): invoices sum ~40 lines each, thousands a run.
    if set(map(type, items)) - {Money} or set(map(_currency_of, items)) - {cur}:
        for item in items:
            if type(item) is not Money or item.currency != cur:
                zero._check(item)  # raises the sentence for the wrong type or currency
    return _checked_money(sum(map(_amount_of, items), zero.amount), cur)


_amount_of = attrgetter("amount")
_currency_of = attrgetter("currency")
