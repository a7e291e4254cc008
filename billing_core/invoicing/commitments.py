"""Commitments and discounts: a monthly minimum spend and time-limited discounts. Pure.

Both work on the invoice's rounded lines, in the invoice currency, and each adds one visible
line (rounded once):

- **Minimum commitment** (plan): when base fee, AWS and usage lines add up to less than the
  plan's monthly minimum spend, a "Minimum commitment" line brings the month up to it. True-ups
  from earlier months do not count towards it, and discounts apply after it.
- **Discount** (customer): a percentage of the month's charges (minimum commitment included),
  or a fixed amount (never more than the charges left), for `months` months from `starts`.
  Several discounts apply one after another, each on what the previous ones left.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from enum import StrEnum

from billing_core.periods import Period


class DiscountKind(StrEnum):
    PERCENT = "percent"
    FIXED = "fixed"


@dataclass(frozen=True)
class Discount:
    """A customer's discount: `value` percent, or `value` in `currency` (fixed), for `months`
    months starting with period `starts` (YYYY-MM)."""

    kind: DiscountKind
    value: Decimal
    starts: str
    months: int
    currency: str | None = None
    description: str = ""

    def month_number(self, period: str) -> int | None:
        """1 for the first month the discount applies, ...; None outside its months."""
        first = Period.parse(self.starts)
        p = Period.parse(period)
        n = (p.year - first.year) * 12 + (p.month - first.month) + 1
        return n if 1 <= n <= self.months else None

    @property
    def ends(self) -> str:
        """The last period it applies to (YYYY-MM)."""
        p = Period.parse(self.starts)
        for _ in range(self.months - 1):
            p = p.next()
        return str(p)

    def label(self, period: str) -> str:
        """'20% discount, month 2 of 3' (the preview's rule column)."""
        what = (
            f"{self.value.normalize():f}% discount"
            if self.kind is DiscountKind.PERCENT
            else f"{self.currency} {self.value} discount"
        )
        return f"{what}, month {self.month_number(period)} of {self.months}"
