"""Month-end projections and percentages of a limit (pure).

Cumulative metrics project the average daily usage of the elapsed days over the days left;
levels (seats, storage) project the peak so far."""

from __future__ import annotations

from datetime import date, datetime
from decimal import ROUND_HALF_UP, Decimal

from billing_core.periods import Period

# Projected (and spend) quantities keep this many decimals.
QUANTITY_PLACES = Decimal("0.000001")


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
    if aggregation == "max" or billable == 0 or period.is_closed(now):
        return billable
    elapsed = period.days_elapsed(now)
    if last_day is not None and period.contains(last_day):
        elapsed = max(elapsed, (last_day - period.start).days + 1)
    elapsed = min(max(elapsed, 1), period.days)
    projected = billable + billable * (period.days - elapsed) / elapsed
    return projected.quantize(QUANTITY_PLACES, rounding=ROUND_HALF_UP)


def percent(used: Decimal, limit: Decimal) -> Decimal | None:
    """Share of the limit used, in percent; None when there is no limit to compare with."""
    if limit <= 0:
        return None
    return used * 100 / limit
