"""Month-end projections and percentages of a limit (pure).

Cumulative metrics project the average daily usage of the elapsed days over the days left;
levels (seats, storage) project the peak so far."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime
from decimal import ROUND_HALF_UP, Decimal

from billing_core.periods import Period

# Projected (and spend) quantities keep this many decimals.
QUANTITY_PLACES = Decimal("0.000001")


@dataclass(frozen=True)
class MonthClock:
    """Where `now` stands in `period`, computed once for the many rows of a report."""

    days: int  # days in the period
    start: date
    elapsed: int  # whole days of the period before `now`'s day
    closed: bool

    @classmethod
    def of(cls, period: Period, now: datetime) -> MonthClock:
        return cls(period.days, period.start, period.days_elapsed(now), period.is_closed(now))

    def project(self, aggregation: str, billable: Decimal, last_day: date | None) -> Decimal:
        """`project_month_end` for this period and moment."""
        if aggregation == "max" or billable == 0 or self.closed:
            return billable
        elapsed = self.elapsed
        if last_day is not None:
            day = (last_day - self.start).days
            if 0 <= day < self.days:  # data in the period (for today counts)
                elapsed = max(elapsed, day + 1)
        elapsed = min(max(elapsed, 1), self.days)
        projected = billable + billable * (self.days - elapsed) / elapsed
        return projected.quantize(QUANTITY_PLACES, rounding=ROUND_HALF_UP)


def project_month_end(
    aggregation: str,
    billable: Decimal,
    *,
    period: Period,
    now: datetime,
    last_day: date | None,
) -> Decimal:
    """Projected billable quantity at the end of `period`, from the trend so far.

    Levels (`max`) project their peak so far. Cumulative metrics add the average daily amount
    of the elapsed days for each remaining day; the elapsed days are the whole days before
    `now`, or up to the last day with data if that is later (data for today counts).
    """
    return MonthClock.of(period, now).project(aggregation, billable, last_day)


def percent(used: Decimal, limit: Decimal) -> Decimal | None:
    """Share of the limit used, in percent; None when there is no limit to compare with."""
    if limit <= 0:
        return None
    return used * 100 / limit
