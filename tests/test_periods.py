from datetime import UTC, date, datetime

import pytest

from billing_core.errors import ConfigError
from billing_core.periods import Period, previous_period


@pytest.mark.parametrize(
    ("text", "start", "end", "days"),
    [
        ("2026-01", date(2026, 1, 1), date(2026, 2, 1), 31),
        ("2026-02", date(2026, 2, 1), date(2026, 3, 1), 28),
        ("2028-02", date(2028, 2, 1), date(2028, 3, 1), 29),
        ("2026-12", date(2026, 12, 1), date(2027, 1, 1), 31),
    ],
)
def test_half_open_months(text: str, start: date, end: date, days: int) -> None:
    p = Period.parse(text)
    assert (p.start, p.end, p.days, str(p)) == (start, end, days, text)


@pytest.mark.parametrize("bad", ["2026-13", "2026-00", "26-01", "2026/01", "", "2026-1", "abcd-ef"])
def test_bad_periods_explain_the_format(bad: str) -> None:
    with pytest.raises(ConfigError):
        Period.parse(bad)


def test_navigation() -> None:
    p = Period(2026, 1)
    assert str(p.previous()) == "2025-12"
    assert str(p.next()) == "2026-02"
    assert str(p.shift(-13)) == "2024-12"
    assert str(Period(2026, 12).next()) == "2027-01"


def test_previous_period_is_last_closed_month() -> None:
    assert str(previous_period(datetime(2026, 1, 3, tzinfo=UTC))) == "2025-12"


def test_days_elapsed_and_remaining() -> None:
    p = Period(2026, 11)
    now = datetime(2026, 11, 21, 9, tzinfo=UTC)
    assert p.days_elapsed(now) == 20
    assert p.days_remaining(now) == 10
    assert Period(2026, 10).days_elapsed(now) == 31
    assert Period(2026, 12).days_elapsed(now) == 0
    assert Period(2026, 10).is_closed(now) and not p.is_closed(now)


def test_boundary_belongs_to_next_month() -> None:
    assert Period.containing(datetime(2026, 12, 1, 0, 0, tzinfo=UTC)) == Period(2026, 12)
    assert not Period(2026, 11).contains(datetime(2026, 12, 1, tzinfo=UTC))
