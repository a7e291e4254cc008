"""Column types that keep money and time exact on every database SQLAlchemy supports."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from enum import StrEnum
from typing import Any

from sqlalchemy.engine import Dialect
from sqlalchemy.types import BigInteger, DateTime, String, TypeDecorator


class ExactDecimal(TypeDecorator[Decimal]):
    """A Decimal stored as a scaled 64-bit integer.

    SQLite has no exact numeric type (NUMERIC becomes a float), so amounts are stored as
    integers of 10**-scale units: exact everywhere, and SQL SUM() stays exact and fast.
    A value with more digits than the scale is refused rather than silently rounded.
    """

    impl = BigInteger
    cache_ok = True

    def __init__(self, scale: int = 10) -> None:
        super().__init__()
        self.scale = scale
        self._factor = Decimal(10) ** scale

    def process_bind_param(self, value: Any, dialect: Dialect) -> int | None:
        if value is None:
            return None
        if isinstance(value, float):
            raise TypeError("float refused for an exact decimal column; use Decimal")
        scaled = Decimal(value) * self._factor
        if scaled != scaled.to_integral_value():
            raise ValueError(f"{value} has more than {self.scale} decimal places")
        return int(scaled)

    def process_result_value(self, value: Any, dialect: Dialect) -> Decimal | None:
        if value is None:
            return None
        return Decimal(int(value)) / self._factor

    @property
    def python_type(self) -> type[Decimal]:
        return Decimal


class UTCDateTime(TypeDecorator[datetime]):
    """Timezone-aware UTC datetimes; stored naive-UTC because SQLite drops the offset."""

    impl = DateTime
    cache_ok = True

    def process_bind_param(self, value: Any, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if not isinstance(value, datetime):
            raise TypeError("UTCDateTime needs a datetime")
        if value.tzinfo is None:
            raise ValueError("naive datetime refused: pass an aware UTC datetime")
        return value.astimezone(UTC).replace(tzinfo=None)

    def process_result_value(self, value: Any, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        moment: datetime = value
        return moment.replace(tzinfo=UTC)

    @property
    def python_type(self) -> type[datetime]:
        return datetime


class StrEnumType(TypeDecorator[StrEnum]):
    """A named state stored as its plain string (no database enum type); read back as a member.

    A value outside the enum is refused on write and on read, so a typo never reaches a row.
    """

    impl = String
    cache_ok = True

    def __init__(self, enum: type[StrEnum]) -> None:
        super().__init__()
        self.enum = enum

    def process_bind_param(self, value: Any, dialect: Dialect) -> str | None:
        return None if value is None else str(self.enum(value))

    def process_result_value(self, value: Any, dialect: Dialect) -> StrEnum | None:
        return None if value is None else self.enum(value)

    @property
    def python_type(self) -> type[StrEnum]:
        return self.enum
