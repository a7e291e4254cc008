"""Usage ingestion for CSV uploads, the CLI and programs: all rows valid, or nothing imported.

Rows are parsed and checked one by one as they stream in, and the valid ones go to a temporary
staging table in the caller's transaction, so a file of a million rows never sits in memory.
Then the staging table is checked as a whole (duplicate keys with different figures, inside the
file and against earlier imports) and copied into `usagerecord` with one INSERT ... SELECT that
skips keys already present. Any problem raises a ValidationError listing the bad lines (the
first `MAX_LISTED_ERRORS`, with a count) and nothing is written.

CSV columns (header required, any order, case-insensitive):
  customer         the customer's email or numeric id (also: customer_email, customer_id, email)
  metric           a metric of the customer's plan for that period, e.g. api_calls
  quantity         a number >= 0 with at most 6 decimals (no thousands separators)
  timestamp        ISO 8601 date or date-time; no offset means UTC (also: occurred_at, date)
  idempotency_key  optional; without it the key is derived from customer, metric and timestamp,
                   so one reading per customer, metric and moment, and a corrected file with a
                   different quantity for the same moment is refused instead of double counted.
"""

from __future__ import annotations

import csv
import hashlib
import io
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any, TextIO

from sqlalchemy import (
    BigInteger,
    Column,
    DateTime,
    Integer,
    MetaData,
    String,
    Table,
    exists,
    func,
    insert,
    literal,
    or_,
    select,
)
from sqlmodel import Session, SQLModel
from sqlmodel import select as sm_select

from billing_core import audit
from billing_core.errors import ConfigError, ValidationError
from billing_core.models import Customer, Invoice
from billing_core.periods import Period, as_utc
from billing_core.plans import effective_plan_id, metrics_by_plan
from billing_core.sqltypes import UTCDateTime

MAX_LISTED_ERRORS = 100
CHUNK_ROWS = 10_000
# ExactDecimal(6) stores quantity * 10**6 in a signed 64-bit integer.
_QUANTITY_SCALE = 6
MAX_QUANTITY = Decimal(9_000_000_000_000)
MAX_KEY_LENGTH = 200
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


def _parse_quantity(value: object) -> int | str:
    """The quantity in millionths (as stored), or why it is not a usable quantity."""
    if isinstance(value, (bool, float)):
        return f"quantity {value!r} must be given exactly (a string or Decimal), not a float"
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

    Rows are plain tuples run through the column types' own bind processors once, then
    handed to the driver's executemany: the same values SQLAlchemy would send, without its
    per-row parameter bookkeeping (the hot spot at a million rows).
    """

    def __init__(self, conn: Any) -> None:
        self.conn = conn
        compiled = insert(_staging).compile(dialect=conn.dialect)
        self.sql = str(compiled)
        self.names = [c.name for c in _staging.columns]
        positions = compiled.positiontup if compiled.positional else None
        self.order = [self.names.index(n) for n in positions] if positions else None
        self.when = _staging.c.occurred_at.type.bind_processor(conn.dialect)
        self.rows: list[tuple[Any, ...]] = []

    def add(self, row: tuple[Any, ...]) -> None:
        """Add (line, customer_id, metric, quantity, occurred_at, period, key)."""
        if self.when is not None:
            row = (*row[:4], self.when(row[4]), *row[5:])
        self.rows.append(row)
        if len(self.rows) >= CHUNK_ROWS:
            self.flush()

    def flush(self) -> None:
        if not self.rows:
            return
        if self.order is not None:
            params: list[Any] = [tuple(r[i] for i in self.order) for r in self.rows]
        else:
            params = [dict(zip(self.names, r, strict=True)) for r in self.rows]
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
        customers = session.exec(sm_select(Customer)).all()
        self.by_key: dict[str, Customer] = {c.email.lower(): c for c in customers}
        self.by_key.update({str(c.id): c for c in customers})
        self.plan_metrics = {
            pid: frozenset(metrics) for pid, metrics in metrics_by_plan(session).items()
        }
        self.invoiced = set(
            session.exec(
                sm_select(Invoice.customer_id, Invoice.period).where(Invoice.status != "draft")
            ).all()
        )
        self._targets: dict[tuple[str, int, int], _Target | str] = {}
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
        plan_id = effective_plan_id(customer, period)
        return _Target(
            customer_id=customer.id or 0,
            email=customer.email,
            period=str(period),
            metrics=self.plan_metrics.get(plan_id or -1, frozenset()),
            invoiced=(customer.id, str(period)) in self.invoiced,
        )

    def check(
        self, customer_ref: object, metric: str, quantity_raw: object, ts_raw: object, key: str
    ) -> tuple[tuple[Any, ...], None] | tuple[None, list[str]]:
        errs: list[str] = []
        ref = str(customer_ref).strip().lower()
        metric = metric.strip()
        quantity = _parse_quantity(quantity_raw)
        if isinstance(quantity, str):
            errs.append(quantity)
        moment = _parse_timestamp(ts_raw)
        target: _Target | str | None = None
        if isinstance(moment, str):
            errs.append(moment)
            if ref not in self.by_key:
                errs.append(f"customer {customer_ref!r} is not a known customer (email or id)")
        else:
            if moment > self.now:
                errs.append(f"timestamp {moment.isoformat()} is in the future")
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
        assert isinstance(moment, datetime)
        if not key:
            digest = hashlib.sha256(
                f"{target.customer_id}|{metric}|{moment.isoformat()}".encode()
            ).hexdigest()
            key = _AUTO_PREFIX + digest[:40]
        self.periods.add(target.period)
        # Staging column order, without the line number (added by the caller).
        return (
            target.customer_id,
            metric,
            quantity,
            moment.replace(tzinfo=None),
            target.period,
            key,
        ), None


RawRow = tuple[object, str, object, object, str]


def _csv_rows(stream: TextIO, errors: _Errors) -> Iterator[tuple[int, RawRow]]:
    """Rows of a usage CSV as (line number, raw values); structural problems go to `errors`."""
    reader = csv.reader(stream)
    header = next(reader, None)
    while header is not None and not any(h.strip() for h in header):
        header = next(reader, None)
    if header is None:
        raise ValidationError("The usage file is empty; nothing was imported.")
    names = [h.strip().lower() for h in header]
    unknown = [h for h in names if h not in _ALIASES]
    mapped = [_ALIASES.get(h, h) for h in names]
    missing = [r for r in REQUIRED if r not in mapped]
    doubled = sorted({m for m in mapped if mapped.count(m) > 1})
    if unknown or missing or doubled:
        parts = []
        if missing:
            parts.append(f"missing column(s) {', '.join(missing)}")
        if unknown:
            parts.append(f"unknown column(s) {', '.join(unknown)}")
        if doubled:
            parts.append(f"column(s) given twice: {', '.join(doubled)}")
        raise ValidationError(
            "The usage file's header is not usable: " + "; ".join(parts) + ". Expected "
            "customer,metric,quantity,timestamp[,idempotency_key]; nothing was imported."
        )
    pos = {m: mapped.index(m) for m in mapped}
    key_pos = pos.get("idempotency_key")
    width = len(names)
    for values in reader:
        line = reader.line_num
        if not values or (len(values) == 1 and not values[0].strip()):
            continue
        if len(values) != width:
            errors.add(line, f"has {len(values)} fields, the header has {width}")
            continue
        yield (
            line,
            (
                values[pos["customer"]],
                values[pos["metric"]],
                values[pos["quantity"]],
                values[pos["timestamp"]],
                values[key_pos] if key_pos is not None else "",
            ),
        )


def _ingest(
    session: Session,
    rows: Iterable[tuple[int, RawRow]],
    errors: _Errors,
    *,
    now: datetime,
    actor: str,
    source: str,
    what: str,
    audited: bool = True,
) -> UsageImportResult:
    validator = _Validator(session, now)
    conn = session.connection()
    _staging.drop(conn, checkfirst=True)
    _staging.create(conn)
    result = UsageImportResult()
    restore_cache = _bigger_sqlite_cache(conn)
    try:
        staging = _StagingWriter(conn)
        for line, (customer, metric, quantity, ts, key) in rows:
            result.rows += 1
            row, problems = validator.check(customer, metric, quantity, ts, key)
            if problems:
                for problem in problems:
                    errors.add(line, problem)
                continue
            # Valid rows are staged even when others failed, so key clashes are reported too.
            assert row is not None
            staging.add((line, *row))
        staging.flush()
        if not result.rows and not errors.count:
            raise ValidationError(f"The {what} has no usage rows; nothing was imported.")
        _check_keys(conn, errors)
        errors.raise_if_any(what)
        result.imported = _copy_new(conn, source=source, now=now)
    finally:
        _staging.drop(conn, checkfirst=True)
        restore_cache()
    result.already_present = result.rows - result.imported
    result.periods = sorted(validator.periods)
    if not audited:
        return result
    audit.record(
        session,
        actor=actor,
        action="usage.import",
        target=f"usage:{source}",
        after={
            "rows": result.rows,
            "imported": result.imported,
            "already_present": result.already_present,
            "periods": result.periods,
        },
        at=now,
    )
    return result


# SQLite's default page cache (2 MB) thrashes on the unique key index of a large import;
# 64 MB roughly halves the final copy of a million rows. Restored afterwards.
_IMPORT_CACHE_KIB = 65536


def _bigger_sqlite_cache(conn: Any) -> Callable[[], None]:
    if conn.dialect.name != "sqlite":
        return lambda: None
    before = conn.exec_driver_sql("PRAGMA cache_size").scalar()
    conn.exec_driver_sql(f"PRAGMA cache_size=-{_IMPORT_CACHE_KIB}")
    return lambda: conn.exec_driver_sql(f"PRAGMA cache_size={int(before)}")


def _check_keys(conn: Any, errors: _Errors) -> None:
    """Refuse a key that stands for two different figures (in the file or versus the DB)."""
    s = _staging.c
    same_record = [s.customer_id, s.metric, s.quantity, s.occurred_at]
    in_file = conn.execute(
        select(s.idempotency_key, func.min(s.line), func.max(s.line))
        .group_by(s.idempotency_key)
        .having(or_(*[func.min(c) != func.max(c) for c in same_record]))
        .order_by(func.min(s.line))
        .limit(MAX_LISTED_ERRORS + 1)
    ).all()
    for key, first, last in in_file:
        errors.add(last, f"{_what_key(key)} is also on line {first} with a different quantity")
    usage = SQLModel.metadata.tables["usagerecord"]
    u = usage.c
    clashes = conn.execute(
        select(s.line, s.idempotency_key, u.quantity, s.quantity)
        .join(usage, u.idempotency_key == s.idempotency_key)
        .where(
            or_(
                u.customer_id != s.customer_id,
                u.metric != s.metric,
                u.quantity != s.quantity,
                u.occurred_at != s.occurred_at,
            )
        )
        .order_by(s.line)
        .limit(MAX_LISTED_ERRORS + 1)
    ).all()
    for line, key, old, staged in clashes:
        new = Decimal(staged).scaleb(-_QUANTITY_SCALE)  # staging holds the scaled integer
        if old != new:
            errors.add(
                line,
                f"{_what_key(key)} was already imported with quantity {_plain(old)}, "
                f"not {_plain(new)}; correct it in the source instead",
            )
        else:
            errors.add(line, f"{_what_key(key)} was already used for another record")


def _plain(value: Decimal) -> str:
    return format(value.normalize(), "f")


def _what_key(key: str) -> str:
    if key.startswith(_AUTO_PREFIX):
        return "a reading for the same customer, metric and timestamp"
    return f"idempotency key {key!r}"


def _copy_new(conn: Any, *, source: str, now: datetime) -> int:
    """Copy staged rows whose key is new into usagerecord (one row per key)."""
    s = _staging.c
    usage = SQLModel.metadata.tables["usagerecord"]
    already = exists().where(usage.c.idempotency_key == s.idempotency_key)
    # All rows of one key are identical here (checked above), so min() just picks one.
    rows = (
        select(
            func.min(s.customer_id),
            func.min(s.metric),
            func.min(s.quantity),
            func.min(s.occurred_at),
            func.min(s.period),
            literal(source),
            s.idempotency_key,
            literal(as_utc(now), UTCDateTime()),
        )
        .where(~already)
        .group_by(s.idempotency_key)
    )
    # Counted up front: an INSERT ... SELECT's rowcount is -1 on some drivers (psycopg).
    new_rows = int(conn.execute(select(func.count()).select_from(rows.subquery())).scalar_one())
    conn.execute(
        insert(usage).from_select(
            [
                "customer_id",
                "metric",
                "quantity",
                "occurred_at",
                "period",
                "source",
                "idempotency_key",
                "created_at",
            ],
            rows,
        )
    )
    return new_rows


# --- entry points -------------------------------------------------------------------------


def _decoded(stream: TextIO, what: str, errors: _Errors) -> Iterator[tuple[int, RawRow]]:
    try:
        yield from _csv_rows(stream, errors)
    except UnicodeDecodeError as exc:
        raise ValidationError(
            f"The {what} is not UTF-8 text (byte {exc.start} of a block near the last line "
            "read); save it as CSV UTF-8 and import it again. Nothing was imported."
        ) from None
    except csv.Error as exc:
        raise ValidationError(
            f"The {what} is not a readable CSV file ({exc}); nothing was imported."
        ) from None


def import_usage_csv(
    session: Session,
    data: bytes | Path,
    *,
    now: datetime,
    actor: str,
    source: str = "import",
) -> UsageImportResult:
    """Import a usage CSV (upload bytes or a file path): every row valid, or nothing imported."""
    what = f"usage file {data.name}" if isinstance(data, Path) else "usage file"
    errors = _Errors()
    if isinstance(data, Path):
        try:
            if data.stat().st_size == 0:
                raise ValidationError(f"The {what} is empty; nothing was imported.")
            with data.open(encoding="utf-8-sig", newline="") as stream:
                return _ingest(
                    session,
                    _decoded(stream, what, errors),
                    errors,
                    now=now,
                    actor=actor,
                    source=source,
                    what=what,
                )
        except OSError as exc:
            raise ValidationError(f"Cannot read {data}: {exc.strerror}.") from None
    if not data.strip():
        raise ValidationError(f"The {what} is empty; nothing was imported.")
    stream = io.TextIOWrapper(io.BytesIO(data), encoding="utf-8-sig", newline="")
    return _ingest(
        session,
        _decoded(stream, what, errors),
        errors,
        now=now,
        actor=actor,
        source=source,
        what=what,
    )


def record_usage(
    session: Session,
    records: Iterable[UsageInput | Mapping[str, Any]],
    *,
    now: datetime,
    actor: str,
    source: str = "api",
    audited: bool = True,
) -> UsageImportResult:
    """Record usage from a program with the CSV's rules; item numbers stand in for lines.

    `audited=False` is for seeding demo data, which is not anybody's action.
    """

    def rows() -> Iterator[tuple[int, RawRow]]:
        for index, item in enumerate(records, start=1):
            try:
                rec = item if isinstance(item, UsageInput) else UsageInput(**item)
            except TypeError as exc:
                raise ValidationError(f"Usage item {index} is malformed: {exc}.") from None
            yield (
                index,
                (
                    rec.customer,
                    rec.metric,
                    rec.quantity,
                    rec.timestamp,
                    rec.idempotency_key or "",
                ),
            )

    return _ingest(
        session,
        rows(),
        _Errors("item"),
        now=now,
        actor=actor,
        source=source,
        what="usage batch",
        audited=audited,
    )
