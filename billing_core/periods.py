"""Billing periods: UTC calendar months, half-open [start, end)."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta

from billing_core.errors import ConfigError

_PERIOD_RE = re.compile(r"^(\d{4})-(\d{2})$")


@dataclass(frozen=True, order=True, slots=True)
class Period:
    """One UTC calendar month."""

    year: int
    month: int

    def __post_init__(self) -> None:
        if not 1 <= self.month <= 12:
            raise ConfigError(f"Month must be 1 to 12, got {self.month}.")
        if not 2000 <= self.year <= 2100:
            raise ConfigError(f"Year {self.year} is out of range (2000 to 2100).")

    @classmethod
    def parse(cls, text: str) -> Period:
        """Parse 'YYYY-MM', with a sentence that says what is expected on failure."""
        match = _PERIOD_RE.match(text.strip()) if isinstance(text, str) else None
        if not match:
            raise ConfigError(f"Period {text!r} is not of the form YYYY-MM (for example 2026-10).")
        return cls(int(match.group(1)), int(match.group(2)))

    @classmethod
    def containing(cls, moment: date | datetime) -> Period:
        if isinstance(moment, datetime):
            moment = as_utc(moment).date()
        return cls(moment.year, moment.month)

    @property
    def start(self) -> date:
        return date(self.year, self.month, 1)

    @property
    def end(self) -> date:
        """First day of the next month (exclusive), as Cost Explorer expects."""
        return self.next().start

    @property
    def start_at(self) -> datetime:
        return datetime(self.year, self.month, 1, tzinfo=UTC)

    @property
    def end_at(self) -> datetime:
        return self.next().start_at

    @property
    def days(self) -> int:
        return (self.end - self.start).days

    def next(self) -> Period:
        return Period(self.year + self.month // 12, self.month % 12 + 1)

    def previous(self) -> Period:
        return Period(self.year - (self.month == 1), (self.month - 2) % 12 + 1)

    def shift(self, months: int) -> Period:
        index = self.year * 12 + (self.month - 1) + months
        return Period(index // 12, index % 12 + 1)

    def contains(self, moment: date | datetime) -> bool:
        return Period.containing(moment) == self

    def dates(self) -> list[date]:
        return [self.start + timedelta(days=i) for i in range(self.days)]

    def days_elapsed(self, now: datetime) -> int:
        """Whole days of this period before `now`'s day (0 before the start, all days after)."""
        today = as_utc(now).date()
        if today < self.start:
            return 0
        if today >= self.end:
            return self.days
        return (today - self.start).days

    def days_remaining(self, now: datetime) -> int:
        return self.days - self.days_elapsed(now)

    def is_closed(self, now: datetime) -> bool:
        """True once the whole month lies in the past."""
        return as_utc(now) >= self.end_at

    def __str__(self) -> str:
        return f"{self.year:04d}-{self.month:02d}"


def as_utc(moment: datetime) -> datetime:
    """Aware UTC datetime; naive values are taken to be UTC already (as SQLite returns them)."""
    if moment.tzinfo is None:
        return moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC)


def utcnow() -> datetime:
    return datetime.now(UTC)


def when_text(moment: datetime | None) -> str:
    """A moment as every page shows one: '2026-11-30 14:05 UTC' (naive datetimes are UTC, as
    the database stores them); '' for None, so an empty table cell stays blank."""
    if moment is None:
        return ""
    if moment.tzinfo is not None:
        moment = moment.astimezone(UTC)
    return f"{moment:%Y-%m-%d %H:%M} UTC"


def previous_period(now: datetime) -> Period:
    """The default period of an invoice run: the last closed month."""
    return Period.containing(now).previous()
