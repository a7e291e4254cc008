"""Currency conversion with a period's recorded rates. Pure: no I/O, no clock.

Rates are recorded per month as units of a currency per 1 USD, the cost currency (DESIGN.md
section 3). An amount in X becomes Y through USD: the cross rate rate(USD->Y) / rate(USD->X),
computed with far more digits than any amount is rounded to. Conversion keeps full precision;
the one rounding happens where the amount becomes an invoice line (`Money.rounded`).

This is the only converter: invoicing drafts, the usage page's estimate, usage alerts and
reconciliation all convert through `Rates`."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from decimal import Decimal, localcontext

from billing_core.errors import ExchangeRateMissing
from billing_core.money import Money, normalize_currency

COST_CURRENCY = "USD"


def cross_rate(usd_to_target: Decimal, usd_to_source: Decimal) -> Decimal:
    """Units of the target currency per unit of the source, from two USD rates.

    A quotient: computed with 40 digits, so converting through it and rounding once gives the
    same minor units wherever it is used.
    """
    with localcontext() as ctx:
        ctx.prec = 40
        return usd_to_target / usd_to_source


@dataclass(frozen=True)
class Rates:
    """Recorded USD->X rates of one period, with their sources."""

    period: str
    usd_to: Mapping[str, Decimal] = field(default_factory=dict)
    sources: Mapping[str, str] = field(default_factory=dict)
    _factors: dict[tuple[str, str], Decimal] = field(
        default_factory=dict, init=False, repr=False, compare=False
    )

    def usd_rate(self, currency: str) -> Decimal:
        """Units of `currency` per 1 USD; raises ExchangeRateMissing saying how to record it."""
        if currency == COST_CURRENCY:
            return Decimal(1)
        rate = self.usd_to.get(currency)
        if rate is None or rate <= 0:
            raise ExchangeRateMissing(
                f"No USD->{currency} exchange rate is recorded for {self.period}: record one "
                f"with `python -m billing_core set-rate --period {self.period} --currency "
                f"{currency} --rate <{currency} per 1 USD> --source <where it comes from>`, "
                "then run again."
            )
        return rate

    def factor(self, from_currency: str, to_currency: str) -> Decimal:
        """Multiply an amount in `from_currency` by this to get `to_currency` (via USD)."""
        if from_currency == to_currency:
            return Decimal(1)
        key = (from_currency, to_currency)
        if key not in self._factors:  # a draft converts many lines with the same factor
            self._factors[key] = cross_rate(
                self.usd_rate(to_currency), self.usd_rate(from_currency)
            )
        return self._factors[key]

    def convert(self, money: Money, to_currency: str) -> Money:
        """`money` in `to_currency` at full precision (not rounded)."""
        to = normalize_currency(to_currency)
        if money.currency == to:
            return money
        return money.convert(self.factor(money.currency, to), to)

    def with_rate(self, currency: str, rate: Decimal) -> Rates:
        """These rates with `currency`'s replaced, e.g. by the rate an invoice was issued at."""
        return Rates(self.period, {**self.usd_to, currency: rate}, self.sources)
