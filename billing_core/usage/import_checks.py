"""Checks of one usage row (customer, metric, quantity, timestamp, key) and the staging table
the valid rows are written to before the whole file is accepted (see `usage.import_csv`)."""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal, InvalidOperation
from typing import Any

from sqlalchemy import (
    BigInteger,
    Column,
    DateTime,
    Integer,
    MetaData,
    String,
    Table,
    insert,
)
from sqlmodel import Session
from sqlmodel import select as sm_select

from billing_core.customers.plans import metrics_by_plan
from billing_core.customers.terms import terms_in_force
from billing_core.errors import ConfigError, ValidationError
from billing_core.models import Customer, Invoice, display_status_in
from billing_core.periods import Period, as_utc
from billing_core.states import DisplayStatus

MAX_LISTED_ERRORS = 100


CHUNK_ROWS = 10_000


# ExactDecimal(6) stores quantity * 10**6 in a signed 64-bit integer.
_QUANTITY_SCALE = 6


MAX_QUANTITY = Decimal(9_000_000_000_000)


MAX_KEY_LENGTH = 200


# Distinct timestamp texts remembered while importing (a reading time repeats on many rows).
_MOMENT_CACHE = 10_000


_ALIASES = {
    "customer": "customer",
    "customer_email": "customer",
    "customer_id": "customer",
    "email": "customer",
    "metric": "metric",
    "quantity": "quantity",
    "timestamp": "timestamp",
    "occurred_at": "timestamp",
    "date": "timestamp",
    "time": "timestamp",
    "idempotency_key": "idempotency_key",
    "key": "idempotency_key",
}


REQUIRED = ("customer", "metric", "quantity", "timestamp")


_AUTO_PREFIX = "auto:"


_staging_metadata = MetaData()


# Lives only in the importing connection's transaction; dropped before the import returns.
_staging = Table(
    "usage_import_staging",
    _staging_metadata,
    Column("line", Integer, nullable=False),
    Column("customer_id", Integer, nullable=False),
    Column("metric", String, nullable=False),
    Column("quantity", BigInteger, nullable=False),
    Column("occurred_at", DateTime, nullable=False),
    Column("period", String, nullable=False),
    Column("idempotency_key", String, nullable=False),
    prefixes=["TEMPORARY"],
)


@dataclass(frozen=True)
class UsageInput:
    """One usage figure handed over by a program (the same rules as a CSV row)."""

    customer: str | int  # email or id
    metric: str
    quantity: Decimal | int | str
    timestamp: datetime | str
    idempotency_key: str | None = None


@dataclass
class UsageImportResult:
    rows: int = 0
    imported: int = 0
    already_present: int = 0  # imported before, or repeated within the same input
    periods: list[str] = field(default_factory=list)

    def describe(self) -> str:
        return (
            f"usage: {self.rows} rows read, {self.imported} imported, "
            f"{self.already_present} already present"
            + (f" (periods {', '.join(self.periods)})" if self.periods else "")
        )


class _Errors:
    """Bad lines: the first few are kept as sentences (in line order), all are counted."""

    def __init__(self, label: str = "line") -> None:
        self.label = label
        self.count = 0
        self.listed: list[tuple[int, str]] = []

    def add(self, line: int, message: str) -> None:
        self.count += 1
        if len(self.listed) < MAX_LISTED_ERRORS:
            self.listed.append((line, message))

    def raise_if_any(self, what: str) -> None:
        if not self.count:
            return
        problems = [f"{self.label} {line}: {msg}" for line, msg in sorted(self.listed)]
        if self.count > len(self.listed):
            problems.append(f"... and {self.count - len(self.listed)} more problem(s)")
        raise ValidationError(
            f"The {what} has {self.count} problem(s); nothing was imported. "
            f"Fix these {self.label}s and import the whole {what} again:",
            problems,
        )


_MILLION: int = 10**_QUANTITY_SCALE
_MAX_MILLIONTHS: int = int(MAX_QUANTITY) * _MILLION
# Millionths per unit of the last digit of a fraction of n digits.
_FRACTION_FACTOR: list[int] = [10 ** (_QUANTITY_SCALE - n) for n in range(_QUANTITY_SCALE + 1)]


def _parse_quantity(value: object) -> int | str:
    """The quantity in millionths (as stored), or why it is not a usable quantity."""
    if type(value) is str:
        # Fast path for what nearly every file holds, plain ASCII digits with at most six
        # decimals ('12', '0.25'): integer arithmetic, no Decimal. Anything else (signs,
        # spaces, exponents, underscores, more decimals, too large) takes the exact path below,
        # so the accepted values and the messages stay the same.
        whole, _, fraction = value.partition(".")
        if (
            whole.isascii()
            and whole.isdigit()
            and len(fraction) <= _QUANTITY_SCALE
            and (not fraction or (fraction.isascii() and fraction.isdigit()))
        ):
            millionths = int(whole) * _MILLION + (
                int(fraction) * _FRACTION_FACTOR[len(fraction)] if fraction else 0
            )
            if millionths <= _MAX_MILLIONTHS:
                return millionths
    return _parse_quantity_exactly(value)


def _parse_quantity_exactly(value: object) -> int | str:
    if isinstance(value, (bool, float)):
        return f"quantity {value!r} must be given exactly (a string or Decimal), not a float"
    if isinstance(value, str) and ("e" in value or "E" in value):
        # 1.23457E+11 is what a spreadsheet writes once it has rounded a long number away.
        return (
            f"quantity {value.strip()!r} is in exponent notation, so a spreadsheet has already "
            "dropped digits; format the column as a plain number and export the file again"
        )
    try:
        quantity = Decimal(value.strip()) if isinstance(value, str) else Decimal(value)  # type: ignore[arg-type]
    except (InvalidOperation, TypeError, ValueError):
        return f"quantity {value!r} is not a number"
    if not quantity.is_finite():
        return f"quantity {value!r} is not a number"
    if quantity < 0:
        return f"quantity {value} is negative; usage cannot be negative"
    if quantity > MAX_QUANTITY:
        return f"quantity {value} is too large (at most {MAX_QUANTITY})"
    scaled = quantity.scaleb(_QUANTITY_SCALE)
    millionths = int(scaled)
    if millionths != scaled:
        return f"quantity {value} has more than {_QUANTITY_SCALE} decimals"
    return millionths


class _StagingWriter:
    """Bulk inserts into the staging table, chunk by chunk.

    Rows are plain tuples whose moment is run through the column type's own bind processor
    (once per distinct moment), then handed to the driver's executemany: the same values
    SQLAlchemy would send, without its per-row parameter bookkeeping (the hot spot at a
    million rows).
    """

    def __init__(self, conn: Any) -> None:
        self.conn = conn
        compiled = insert(_staging).compile(dialect=conn.dialect)
        self.sql = str(compiled)
        self.names = [c.name for c in _staging.columns]
        positions = compiled.positiontup if compiled.positional else None
        order = [self.names.index(n) for n in positions] if positions else None
        # None: rows go as they are (positional, in column order); else reordered or named.
        self.order = None if order == list(range(len(self.names))) else order
        self.named = not compiled.positional
        # The generic DateTime has no bind processor, so the driver adapts the value: on
        # SQLite the sqlite3 module's default adapter wrote isoformat(" ") text. That text is
        # made here once per moment (the same text, so new rows compare equal to earlier
        # imports'); other drivers take the datetime itself.
        self.when: Callable[[datetime], Any] = (
            (lambda moment: moment.isoformat(" "))
            if conn.dialect.name == "sqlite"
            else (lambda moment: moment)
        )
        self._bound: dict[datetime, Any] = {}
        self.rows: list[tuple[Any, ...]] = []

    def add(self, line: int, row: tuple[Any, ...]) -> None:
        """Add a line's (customer_id, metric, quantity, aware UTC occurred_at, period, key)."""
        customer_id, metric, quantity, moment, period, key = row
        bound = self._bound.get(moment)
        if bound is None:
            if len(self._bound) >= _MOMENT_CACHE:
                self._bound.clear()
            bound = self._bound[moment] = self.when(moment.replace(tzinfo=None))
        self.rows.append((line, customer_id, metric, quantity, bound, period, key))
        if len(self.rows) >= CHUNK_ROWS:
            self.flush()

    def flush(self) -> None:
        if not self.rows:
            return
        params: list[Any] = self.rows
        if self.named:
            params = [dict(zip(self.names, r, strict=True)) for r in self.rows]
        elif self.order is not None:
            params = [tuple(r[i] for i in self.order) for r in self.rows]
        self.conn.exec_driver_sql(self.sql, params)
        self.rows = []


def _parse_timestamp(value: object) -> datetime | str:
    if isinstance(value, datetime):
        return as_utc(value)
    text = value.strip() if isinstance(value, str) else ""
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        return f"timestamp {value!r} is not an ISO 8601 date or date-time (2026-11-03T10:00:00Z)"
    return as_utc(moment)


@dataclass(frozen=True, slots=True)
class _Target:
    """What a row needs to know about its customer in its period (cached per pair)."""

    customer_id: int
    email: str
    period: str
    metrics: frozenset[str]
    invoiced: bool


class _Validator:
    """Checks one row against the database; lookups are loaded once and cached.

    Plain values are cached instead of ORM objects: a million rows make attribute access and
    period formatting the hot spots.
    """

    def __init__(self, session: Session, now: datetime) -> None:
        self.now = as_utc(now)
        self.session = session
        self._plans: dict[Period, dict[int, int | None]] = {}
        customers = session.exec(sm_select(Customer)).all()
        self.by_key: dict[str, Customer] = {c.email.lower(): c for c in customers}
        self.by_key.update({str(c.id): c for c in customers})
        self.plan_metrics = {
            pid: frozenset(metrics) for pid, metrics in metrics_by_plan(session).items()
        }
        self.invoiced = set(
            session.exec(
                sm_select(Invoice.customer_id, Invoice.period).where(
                    ~display_status_in([DisplayStatus.DRAFT])  # a credit is not a draft
                )
            ).all()
        )
        self._targets: dict[tuple[str, int, int], _Target | str] = {}
        self._moments: dict[str, tuple[datetime, str] | str] = {}
        self.periods: set[str] = set()

    def target(self, ref: str, year: int, month: int) -> _Target | str:
        """The customer and period of a row, or why the row cannot have one."""
        key = (ref, year, month)
        cached = self._targets.get(key)
        if cached is None:
            cached = self._targets[key] = self._resolve(ref, year, month)
        return cached

    def _resolve(self, ref: str, year: int, month: int) -> _Target | str:
        customer = self.by_key.get(ref)
        if customer is None:
            return f"customer {ref!r} is not a known customer (email or id)"
        if not customer.active:
            return f"customer {customer.email} is inactive; reactivate it first"
        try:
            period = Period(year, month)
        except ConfigError:
            return f"{year:04d}-{month:02d} is outside any billing period"
        if period not in self._plans:
            in_force = terms_in_force(self.session, period)
            self._plans[period] = {cid: t.plan_id for cid, t in in_force.items()}
        plan_id = self._plans[period].get(customer.id or 0)
        return _Target(
            customer_id=customer.id or 0,
            email=customer.email,
            period=str(period),
            metrics=self.plan_metrics.get(plan_id or -1, frozenset()),
            invoiced=(customer.id, str(period)) in self.invoiced,
        )

    def moment(self, ts_raw: object) -> tuple[datetime, str] | str:
        """(aware UTC moment, its ISO text) of a timestamp cell, or why it is not one.

        Parsed once per distinct text: a usage file repeats each reading time for every
        customer and metric. The cache is emptied when it grows, so memory stays flat.
        """
        if type(ts_raw) is not str:
            parsed = _parse_timestamp(ts_raw)
            return parsed if isinstance(parsed, str) else (parsed, parsed.isoformat())
        cached = self._moments.get(ts_raw)
        if cached is None:
            if len(self._moments) >= _MOMENT_CACHE:
                self._moments.clear()
            parsed = _parse_timestamp(ts_raw)
            cached = self._moments[ts_raw] = (
                parsed if isinstance(parsed, str) else (parsed, parsed.isoformat())
            )
        return cached

    def check(
        self, customer_ref: object, metric: str, quantity_raw: object, ts_raw: object, key: str
    ) -> tuple[tuple[Any, ...], None] | tuple[None, list[str]]:
        errs: list[str] = []
        ref = str(customer_ref).strip().lower()
        metric = metric.strip()
        quantity = _parse_quantity(quantity_raw)
        if isinstance(quantity, str):
            errs.append(quantity)
        parsed = self.moment(ts_raw)
        target: _Target | str | None = None
        if isinstance(parsed, str):
            errs.append(parsed)
            if ref not in self.by_key:
                errs.append(f"customer {customer_ref!r} is not a known customer (email or id)")
        else:
            moment, moment_iso = parsed
            if moment > self.now:
                errs.append(f"timestamp {moment_iso} is in the future")
            target = self.target(ref, moment.year, moment.month)
            if isinstance(target, str):
                errs.append(target)
        if not metric:
            errs.append("metric is empty")
        elif isinstance(target, _Target):
            if metric not in target.metrics:
                known = ", ".join(sorted(target.metrics)) or "none, the customer has no plan"
                errs.append(
                    f"metric {metric!r} is not in {target.email}'s plan for {target.period} "
                    f"(known: {known})"
                )
            if target.invoiced:
                errs.append(
                    f"{target.period} is already invoiced for {target.email}; usage for it can "
                    "no longer be billed (add it to the next period or issue a credit)"
                )
        key = key.strip()
        if len(key) > MAX_KEY_LENGTH:
            errs.append(f"idempotency_key is longer than {MAX_KEY_LENGTH} characters")
        if errs or not isinstance(target, _Target) or not isinstance(quantity, int):
            return None, errs
        if not key:
            digest = hashlib.sha256(
                f"{target.customer_id}|{metric}|{moment_iso}".encode()
            ).hexdigest()
            key = _AUTO_PREFIX + digest[:40]
        self.periods.add(target.period)
        # Staging column order, without the line number (added by the caller). The moment is
        # the aware one: the staging writer stores it as naive UTC.
        return (target.customer_id, metric, quantity, moment, target.period, key), None


RawRow = tuple[object, str, object, object, str]
