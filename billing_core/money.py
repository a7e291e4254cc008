"""Exact money: Decimal amounts with a currency, integer minor units, one rounding rule.

Amounts are computed as Decimal at full precision and rounded once, where they become an
invoice line (ROUND_HALF_UP to the currency's minor unit). Floats are refused everywhere.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from decimal import ROUND_HALF_UP, Decimal, InvalidOperation

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
# Three-decimal currencies (ISO 4217).
THREE_DECIMAL = frozenset(["BHD", "JOD", "KWD", "OMR", "TND"])
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


# The minor unit of a currency with 0, 2 or 3 decimals, as a quantize step.
_MINOR_STEPS = {exp: Decimal(1).scaleb(-exp) for exp in (0, 2, 3)}
# Digits of the minor unit where they are not 2.
_EXPONENTS = {**dict.fromkeys(ZERO_DECIMAL, 0), **dict.fromkeys(THREE_DECIMAL, 3)}


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
    """Round a full-precision amount to integer minor units (the one rounding step)."""
    exp = exponent(currency)
    scaled = (to_decimal(amount) * (Decimal(10) ** exp)).quantize(
        Decimal(1), rounding=ROUND_HALF_UP
    )
    return int(scaled)


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
    exp = exponent(currency)
    value = minor_to_decimal(minor, currency)
    return f"{normalize_currency(currency)} {value:,.{exp}f}"


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
        money = object.__new__(cls)
        object.__setattr__(money, "amount", amount)
        object.__setattr__(money, "currency", currency)
        return money

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
        """This amount rounded half up to whole minor units, still as money (the same rule
        and figure as `to_minor`, kept with its currency)."""
        step = _MINOR_STEPS[_EXPONENTS.get(self.currency, 2)]  # the currency is checked
        value = self.amount.quantize(step, rounding=ROUND_HALF_UP)
        return Money._checked(value.copy_abs() if value.is_zero() else value, self.currency)

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


def sum_money(items: Iterable[Money], currency: str) -> Money:
    """Sum money in one currency, starting from an explicit zero (works for empty input)."""
    zero = Money.zero(currency)
    total = sum((zero._check(item).amount for item in items), zero.amount)
    return Money._checked(total, zero.currency)
