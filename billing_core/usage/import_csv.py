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
                   different quantity for the same moment is refused instead of double counted."""

from __future__ import annotations

import csv
import io
import stat
from collections.abc import Callable, Iterable, Iterator, Mapping
from datetime import datetime
from decimal import Decimal
from pathlib import Path
from typing import Any, TextIO

from sqlalchemy import func, literal, or_, select, true
from sqlalchemy.dialects.postgresql import insert as postgresql_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlmodel import Session, SQLModel

from billing_core import audit
from billing_core.errors import ValidationError
from billing_core.periods import as_utc
from billing_core.sqltypes import UTCDateTime
from billing_core.usage.import_checks import (
    _ALIASES,
    _AUTO_PREFIX,
    _QUANTITY_SCALE,
    MAX_LISTED_ERRORS,
    REQUIRED,
    RawRow,
    UsageImportResult,
    UsageInput,
    _Errors,
    _staging,
    _StagingWriter,
    _Validator,
)


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
            staging.add(line, row)
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
    """Copy staged rows whose key is new into usagerecord (one row per key); returns how many.

    Every row of one key is identical here (checked above), so the unique key skipping the
    ones already present (ON CONFLICT DO NOTHING) leaves exactly one row per key. Rows go in
    key order, so the key's index grows at its end instead of at random pages.
    """
    s = _staging.c
    usage = SQLModel.metadata.tables["usagerecord"]
    rows = (
        select(
            s.customer_id,
            s.metric,
            s.quantity,
            s.occurred_at,
            s.period,
            literal(source),
            s.idempotency_key,
            literal(as_utc(now), UTCDateTime()),
        )
        # SQLite reads `FROM t ON CONFLICT` as a join's ON without a WHERE clause before it.
        .where(true())
        .order_by(s.idempotency_key)
    )
    dialect_insert = postgresql_insert if conn.dialect.name == "postgresql" else sqlite_insert
    statement = (
        dialect_insert(usage)
        .from_select(
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
        .on_conflict_do_nothing(index_elements=["idempotency_key"])
    )
    if conn.dialect.name == "postgresql":
        # psycopg's count of an INSERT ... SELECT does not come through SQLAlchemy (-1): the
        # statement counts its own rows (WITH ins AS (INSERT ... RETURNING 1) SELECT count).
        inserted = statement.returning(literal(1)).cte("inserted")
        return int(conn.execute(select(func.count()).select_from(inserted)).scalar_one())
    # SQLite's count of the rows written (skipped conflicts not included).
    return int(conn.execute(statement).rowcount)


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
            info = data.stat()
            if not stat.S_ISREG(info.st_mode):
                raise ValidationError(
                    f"{data} is not a regular file (a device, a pipe or a folder); save the "
                    "usage CSV to a file and import that. Nothing was imported."
                )
            if info.st_size == 0:
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
