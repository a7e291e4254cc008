"""Overage arithmetic (pure): quantity above the included amount, its price, rounded once.

The same functions price the invoice's overage line and the usage page's estimate."""

from __future__ import annotations

from collections.abc import Mapping
from decimal import Decimal

from billing_core.errors import ExchangeRateMissing
from billing_core.money import cross_rate, round_minor

# The pseudo-metric under which the plan's monthly AWS spend limit is tracked (and alerted).
AWS_SPEND = "aws_spend"


_QUANTITY_PLACES = Decimal("0.000001")


def overage_quantity(used: Decimal, included: Decimal) -> Decimal:
    """How much of `used` lies above the included quantity (never negative)."""
    return max(Decimal(0), used - included)


def overage_amount(used: Decimal, included: Decimal, unit_price: Decimal) -> Decimal:
    """Full-precision overage charge in the plan currency; rounded only on the invoice line."""
    return overage_quantity(used, included) * unit_price


def convert(
    amount: Decimal, *, from_currency: str, to_currency: str, usd_rates: Mapping[str, Decimal]
) -> Decimal:
    """Convert at full precision through the period's USD rates (units of quote per 1 USD)."""
    if from_currency == to_currency:
        return amount

    def rate(cur: str) -> Decimal:
        if cur == "USD":
            return Decimal(1)
        if cur not in usd_rates:
            raise ExchangeRateMissing(
                f"No USD->{cur} exchange rate is recorded for this period; add one before "
                f"converting {from_currency} to {to_currency}."
            )
        return usd_rates[cur]

    return amount * cross_rate(rate(to_currency), rate(from_currency))


def overage_charge_minor(
    used: Decimal,
    included: Decimal,
    unit_price: Decimal,
    *,
    plan_currency: str,
    currency: str,
    usd_rates: Mapping[str, Decimal],
) -> int:
    """The overage charge in the customer's currency, rounded once (page and invoice line)."""
    factor = convert(
        Decimal(1), from_currency=plan_currency, to_currency=currency, usd_rates=usd_rates
    )
    return overage_minor(used, included, unit_price, factor, currency)


def overage_minor(
    used: Decimal, included: Decimal, unit_price: Decimal, factor: Decimal, currency: str
) -> int:
    """Overage in the invoice currency (plan price times `factor`), rounded once."""
    return round_minor(overage_amount(used, included, unit_price) * factor, currency)
