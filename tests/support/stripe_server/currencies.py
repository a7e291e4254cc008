"""Stripe's currency rules, as the server enforces them (docs.stripe.com/currencies).

Kept apart from billing_core.money on purpose: the server is the other side of the wire, so
an amount the product gets wrong fails against Stripe's published rules, not its own.

- Amounts are integers in the currency's minor unit; zero-decimal currencies in whole units.
- Three-decimal currencies (bhd, jod, kwd, omr, tnd): the last digit must be 0.
- isk, huf, twd: two-decimal form, whole units only (divisible by 100).
- A charge below the currency's minimum is refused (`amount_too_small`).
"""

from __future__ import annotations

# Zero-decimal currencies take any integer: nothing to check; shown without decimals.
ZERO_DECIMAL = frozenset(
    ["bif", "clp", "djf", "gnf", "jpy", "kmf", "krw", "mga", "pyg", "rwf", "ugx", "vnd", "vuv",
     "xaf", "xof", "xpf"]
)  # fmt: skip
THREE_DECIMAL = frozenset(["bhd", "jod", "kwd", "omr", "tnd"])
WHOLE_UNITS = frozenset(["isk", "huf", "twd"])

# Minimum charge in minor units; other currencies are not checked here (Stripe compares
# them with USD 0.50 at its own rate).
MINIMUM_CHARGE = {
    "usd": 50, "aed": 200, "aud": 50, "bgn": 100, "brl": 50, "cad": 50, "chf": 50, "czk": 1500,
    "dkk": 250, "eur": 50, "gbp": 30, "hkd": 400, "huf": 17500, "inr": 50, "jpy": 50,
    "mxn": 1000, "myr": 200, "nok": 300, "nzd": 50, "pln": 200, "ron": 200, "sek": 300,
    "sgd": 50, "thb": 1000,
}  # fmt: skip


def money_text(amount: int, currency: str) -> str:
    """An amount in minor units as the hosted pages show it: 'EUR 1,234.50', 'JPY 500',
    'KWD 1.250' (integer arithmetic only: no float ever touches the amount)."""
    places = 0 if currency in ZERO_DECIMAL else 3 if currency in THREE_DECIMAL else 2
    sign, whole = ("-" if amount < 0 else ""), abs(amount)
    units, cents = divmod(whole, 10**places)
    fraction = f".{cents:0{places}d}" if places else ""
    return f"{currency.upper()} {sign}{units:,}{fraction}"


def step(currency: str) -> int:
    """The multiple every amount in `currency` must be (minor units)."""
    if currency in THREE_DECIMAL:
        return 10
    if currency in WHOLE_UNITS:
        return 100
    return 1


def amount_problem(amount: int, currency: str) -> str | None:
    """Stripe's sentence for an amount in the wrong form, or None."""
    multiple = step(currency)
    if amount % multiple == 0:
        return None
    if currency in THREE_DECIMAL:
        return (
            f"Invalid amount: {amount}. Amounts in {currency} are in thousandths and must "
            "end in 0 (for example 5120 for 5.120)."
        )
    return (
        f"Invalid amount: {amount}. Amounts in {currency} are in two-decimal form and must be "
        "whole units, divisible by 100."
    )


def minimum_problem(amount: int, currency: str) -> str | None:
    """Stripe's sentence for a charge below the currency's minimum, or None."""
    minimum = MINIMUM_CHARGE.get(currency)
    if minimum is None or amount >= minimum:
        return None
    return f"Amount must be at least {minimum} {currency} (in minor units); it is {amount}."
