"""Cost snapshots: store each Cost Explorer fetch as one snapshot, find the one that counts.

Which snapshot counts ("latest complete snapshot"): for a period, the complete snapshot with
the newest `fetched_at` (ties: highest id) for the configured metric and grouping
(`CostSource`, from COST_METRIC and COST_GROUP_BY). Every reader (invoicing, reconciliation,
usage limits and alerts, pages, the costs report) goes through `latest_snapshot`, which
requires the source: figures of another metric or grouping never stand in for the configured
ones, however new they are. A closed
month is usually fetched DAILY while it runs and MONTHLY after it closes; both hold the same
kind of figures (daily rows add up to the month), so the newest one wins whatever its
granularity. Daily charts need daily rows, so they use the latest complete DAILY snapshot,
which may be older than the one the totals come from (the page says so). Older snapshots keep
only their summary (`KEEP_SNAPSHOTS` keep their lines)."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from decimal import Decimal
from typing import Any, Literal

from sqlalchemy import delete, insert, text
from sqlmodel import Session, col, select

from billing_core.config import Settings
from billing_core.costs import cost_explorer as ce
from billing_core.costs.rollups import drop_rollups, write_rollups
from billing_core.models import CostLine, CostRollup, CostSnapshot, Invoice, InvoiceRun
from billing_core.periods import Period, as_utc

log = logging.getLogger(__name__)


UNATTRIBUTED = "unattributed"


UNATTRIBUTED_LABEL = "Unattributed"


#: Complete snapshots kept with their lines per period and kind; older ones keep only a summary.
KEEP_SNAPSHOTS = 3


_ERROR_STATE = "costs.last_error"


ZERO = Decimal(0)


CustomerFilter = int | Literal["unattributed"] | None


ReportBy = Literal["customer", "service", "day"]


@dataclass(frozen=True)
class SnapshotInfo:
    """What a page says about the figures it shows."""

    id: int
    period: Period
    granularity: str
    group_by: str
    metric: str
    currency: str
    estimated: bool
    source: str
    fetched_at: datetime
    request_count: int
    forecast: Decimal | None

    @classmethod
    def of(cls, snap: CostSnapshot) -> SnapshotInfo:
        return cls(
            id=snap.id or 0,
            period=Period.parse(snap.period),
            granularity=snap.granularity,
            group_by=snap.group_by,
            metric=snap.metric,
            currency=snap.currency,
            estimated=snap.estimated,
            source=snap.source,
            fetched_at=as_utc(snap.fetched_at),
            request_count=snap.request_count,
            forecast=snap.forecast_amount,
        )

    def age(self, now: datetime) -> timedelta:
        return as_utc(now) - self.fetched_at

    @property
    def running(self) -> bool:
        """Fetched while its month was still running (figures are month to date)."""
        return self.granularity == "DAILY" and self.fetched_at < self.period.end_at

    @property
    def final(self) -> bool:
        """Fetched after the month closed and no longer estimated: AWS will not change it."""
        return not self.estimated and self.fetched_at >= self.period.end_at

    def stale(self, now: datetime, ttl_seconds: int) -> bool:
        """Older than the TTL and not final: due for a refresh."""
        return not self.final and self.age(now) > timedelta(seconds=ttl_seconds)

    @property
    def covers_month(self) -> bool:
        """Taken after its month ended, so it holds every day of it: fit to invoice from."""
        return self.fetched_at >= self.period.end_at

    @property
    def covered_days(self) -> int:
        """Days of the month the figures cover (today counts: Cost Explorer shows it partly)."""
        if self.covers_month:
            return self.period.days
        days = (self.fetched_at.date() - self.period.start).days + 1
        return max(0, min(self.period.days, days))

    @property
    def complete_days(self) -> int:
        """Days of the month whose figures are whole: all of them once the month is over, else
        the days before the fetch's UTC day (Cost Explorer shows that day only partly, so a
        comparison or a run rate that counted it would read low, most of all on the 1st)."""
        if self.covers_month:
            return self.period.days
        return max(0, self.covered_days - 1)

    def coverage(self) -> str:
        """'as of 2026-10-20 14:00 UTC, 20 of 31 days' (what the run preview shows)."""
        return (
            f"as of {self.fetched_at:%Y-%m-%d %H:%M} UTC, "
            f"{self.covered_days} of {self.period.days} days"
        )

    def incomplete_reason(self) -> str | None:
        """Why a closed month must not be invoiced from this snapshot; None when it may be."""
        if self.covers_month:
            return None
        return (
            f"the {self.metric} snapshot of {self.period} was taken "
            f"{self.fetched_at:%Y-%m-%d %H:%M} UTC, before the month ended, and covers "
            f"{self.covered_days} of its {self.period.days} days"
        )


@dataclass(frozen=True)
class CostSource:
    """Which cost figures count: a Cost Explorer metric and a grouping as snapshots store it
    (`LINKED_ACCOUNT` or `TAG:<key>`). `CostSource.of(settings)` is the configured one."""

    metric: str
    group_by: str

    @classmethod
    def of(cls, settings: Settings) -> CostSource:
        return cls(settings.cost_metric, group_label(settings))

    def __str__(self) -> str:
        return f"{self.metric} by {self.group_by}"

    def missing(self, period: Period) -> str:
        """The sentence for a period without a snapshot of this source."""
        return (
            f"no {self.metric} snapshot by {self.group_by} for {period}: run "
            f"`python -m billing_core fetch-costs --period {period}`"
        )


def group_label(settings: Settings) -> str:
    """The grouping snapshots are stored under for these settings."""
    return (
        "LINKED_ACCOUNT"
        if settings.cost_group_by == "LINKED_ACCOUNT"
        else (f"TAG:{settings.cost_tag_key}")
    )


def latest_snapshot(
    session: Session,
    period: Period,
    source: CostSource,
    *,
    granularity: str | None = None,
) -> CostSnapshot | None:
    """The latest complete snapshot of a period for `source` (see the module docstring).

    The one way every reader finds its cost figures; None when there is none (say
    `source.missing(period)`).
    """
    query = select(CostSnapshot).where(
        CostSnapshot.period == str(period),
        CostSnapshot.status == "complete",
        CostSnapshot.metric == source.metric,
        CostSnapshot.group_by == source.group_by,
    )
    if granularity:
        query = query.where(CostSnapshot.granularity == granularity)
    query = query.order_by(col(CostSnapshot.fetched_at).desc(), col(CostSnapshot.id).desc())
    return session.exec(query.limit(1)).first()


def snapshot_periods(session: Session, *, metric: str, group_by: str) -> list[Period]:
    """Periods that have a complete snapshot, newest first (for the month filter)."""
    rows = session.exec(
        select(CostSnapshot.period)
        .where(
            CostSnapshot.status == "complete",
            CostSnapshot.metric == metric,
            CostSnapshot.group_by == group_by,
        )
        .distinct()
    ).all()
    return sorted((Period.parse(p) for p in rows), reverse=True)


def store_snapshot(
    session: Session, result: ce.FetchResult, *, fetched_at: datetime, source: str
) -> CostSnapshot:
    """Store one fetch: the snapshot row and all its lines, in the caller's transaction."""
    query = result.query
    snap = CostSnapshot(
        period=str(query.period),
        granularity=query.granularity,
        group_by=query.group_label,
        metric=query.metric,
        currency=result.currency,
        estimated=result.estimated,
        request_count=result.request_count,
        source=source,
        status="complete",
        fetched_at=fetched_at,
        forecast_amount=result.forecast,
    )
    session.add(snap)
    session.flush()
    if result.rows:
        _insert_lines(session, snap.id or 0, str(query.period), result.rows, fetched_at)
        # The sums every page reads, in the same transaction as the lines they sum.
        write_rollups(session, [snap.id or 0])
    _prune(session, snap)
    refresh_planner_statistics(session)
    return snap


# Rows SQLite samples per index when it refreshes its statistics: enough to tell an index that
# finds a few hundred lines from one that finds a whole day of every account.
_ANALYSIS_LIMIT = 1000


def refresh_planner_statistics(session: Session) -> None:
    """Let SQLite's planner know the cost lines' shape (a sampled ANALYZE, milliseconds).

    Without statistics SQLite reads one customer's lines through the (snapshot, day) index, i.e.
    the whole snapshot (about 1 s at 600,000 lines), instead of the customer's few hundred
    through (snapshot, account). PostgreSQL's autovacuum keeps its own statistics, so this does
    nothing there. Runs in the caller's transaction (SQLite's ANALYZE is transactional)."""
    if session.get_bind().dialect.name != "sqlite":
        return
    session.execute(text(f"PRAGMA analysis_limit={_ANALYSIS_LIMIT}"))
    session.execute(text("ANALYZE costline"))


# Lines handed to the driver per executemany (bounds the parameter list's memory).
_INSERT_CHUNK = 50_000


def _insert_lines(
    session: Session,
    snapshot_id: int,
    period: str,
    rows: Sequence[ce.CostRow],
    fetched_at: datetime,
) -> None:
    """The driver's executemany of plain tuples, in chunks.

    The values are what the column types would bind, made here without SQLAlchemy's per-row
    parameter processing (most of the store's time at a million lines): amounts as the scaled
    integers ExactDecimal stores (exactness checked), the day's text once per day, the fetch
    time through the column type's own processors once.
    """
    conn = session.connection()
    table = CostLine.__table__  # type: ignore[attr-defined]
    compiled = insert(table).compile(dialect=conn.dialect, column_keys=_LINE_COLUMNS)
    names = compiled.positiontup if compiled.positional else None
    amount_scale = table.c.amount.type.scale
    # A TypeDecorator's processor runs its process_bind_param, then the dialect's own.
    bind = table.c.fetched_at.type.dialect_impl(conn.dialect).bind_processor(conn.dialect)
    when = bind(fetched_at) if bind else fetched_at
    days: dict[date, str] = {}
    chunk: list[tuple[Any, ...]] = []
    for row in rows:
        day = days.get(row.day)
        if day is None:
            day = days[row.day] = row.day.isoformat()
        scaled = row.amount.scaleb(amount_scale)
        amount = int(scaled)
        if amount != scaled:
            raise ValueError(f"{row.amount} has more than {amount_scale} decimal places")
        chunk.append(
            (
                snapshot_id,
                period,
                day,
                row.account_id,
                row.tag_value,
                row.service,
                row.record_type,
                amount,
                row.currency,
                row.estimated,
                when,
            )
        )
        if len(chunk) >= _INSERT_CHUNK:
            _send(conn, str(compiled), names, chunk)
            chunk = []
    _send(conn, str(compiled), names, chunk)


_LINE_COLUMNS = [
    "snapshot_id",
    "period",
    "day",
    "account_id",
    "tag_value",
    "service",
    "record_type",
    "amount",
    "currency",
    "estimated",
    "fetched_at",
]


def _send(conn: Any, sql: str, names: Sequence[str] | None, chunk: list[tuple[Any, ...]]) -> None:
    """executemany of rows in _LINE_COLUMNS order: positional as they are (SQLite), named
    (psycopg's pyformat) as dicts, reordered if a dialect numbers them otherwise."""
    if not chunk:
        return
    params: list[Any] = chunk
    if names is None:
        params = [dict(zip(_LINE_COLUMNS, r, strict=True)) for r in chunk]
    elif list(names) != _LINE_COLUMNS:
        order = [_LINE_COLUMNS.index(n) for n in names]
        params = [tuple(r[i] for i in order) for r in chunk]
    conn.exec_driver_sql(sql, params)


def _prune(session: Session, newest: CostSnapshot) -> None:
    """Drop the lines of superseded snapshots beyond KEEP_SNAPSHOTS; keep their summary rows.

    A snapshot an invoice or an invoice run was priced from keeps its lines (they are what was
    billed), so storage grows with the months and what was billed, not with the refreshes.
    """
    superseded = session.exec(
        select(CostSnapshot.id)
        .where(
            CostSnapshot.period == newest.period,
            CostSnapshot.granularity == newest.granularity,
            CostSnapshot.metric == newest.metric,
            CostSnapshot.group_by == newest.group_by,
            CostSnapshot.status == "complete",
        )
        .order_by(col(CostSnapshot.fetched_at).desc(), col(CostSnapshot.id).desc())
        .offset(KEEP_SNAPSHOTS)
    ).all()
    old = [sid for sid in superseded if sid is not None]
    if old:
        billed = set(
            session.exec(
                select(Invoice.cost_snapshot_id).where(col(Invoice.cost_snapshot_id).in_(old))
            ).all()
        ) | set(
            session.exec(
                select(InvoiceRun.cost_snapshot_id).where(col(InvoiceRun.cost_snapshot_id).in_(old))
            ).all()
        )
        old = [sid for sid in old if sid not in billed]
    if not old:
        return
    drop_rollups(session, old)
    session.execute(delete(CostLine).where(col(CostLine.snapshot_id).in_(old)))
    for snap in session.exec(select(CostSnapshot).where(col(CostSnapshot.id).in_(old))).all():
        snap.status = "pruned"


def needs_refresh(snap: CostSnapshot | None, now: datetime, ttl_seconds: int) -> bool:
    """No snapshot, or older than the TTL; a final closed month is never stale."""
    return snap is None or SnapshotInfo.of(snap).stale(now, ttl_seconds)


def available_services(session: Session, settings: Settings, period: Period) -> list[str]:
    """Service names (and adjustment types) in the period's latest snapshot, for the filter."""
    snap = latest_snapshot(session, period, CostSource.of(settings))
    if snap is None:
        return []
    rows = session.exec(
        select(CostRollup.service).where(CostRollup.snapshot_id == snap.id).distinct()
    ).all()
    return sorted(rows)
