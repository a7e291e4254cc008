"""Cost rollups: each snapshot's lines summed once, when they are stored, so that pages never
sum the lines again (tables in rollup_tables.py).

- `CostRollup`: per snapshot, account or tag value, service, record type and currency, over
  every day. Attribution stays at read time (owners are per account or tag value and may change
  with the customers' terms), so the rollup keeps the account and tag value and readers
  attribute its rows exactly as they attributed the lines (costs/attribution.py).
- `CostDailyRollup`: per snapshot, day, service, record type and currency, over every account.
- `CostAccountDailyRollup`: per snapshot, day, account or tag value and currency, over every
  service and record type (the AWS spend per customer and day of the usage limits).
- `CostAccountRollup`: per snapshot, account or tag value, record type and currency, over
  every day and service (month totals per customer: the Overview's 13 months, margins).

Kept in step: `store_snapshot` calls `write_rollups` in the transaction that inserts the lines,
`_prune` calls `drop_rollups` with the lines it deletes, and the migration rollup_1 built them
for the snapshots stored before it. Code that inserts `CostLine` rows itself (the demo's hand
made snapshots, tests) calls `write_rollups` after them. The sums are done by the database on
the stored scaled integers (ExactDecimal), so a rollup equals the sum of its lines to the last
of the 10 decimals: `check_rollups` says where it does not.
"""

from __future__ import annotations

from collections.abc import Iterable
from decimal import Decimal
from typing import Any

from sqlalchemy import delete, func, insert, select
from sqlmodel import Session, col

from billing_core.costs.rollup_tables import (
    CostAccountDailyRollup,
    CostAccountRollup,
    CostDailyRollup,
    CostRollup,
)
from billing_core.models import CostLine, CostSnapshot

RollupTable = (
    type[CostRollup]
    | type[CostDailyRollup]
    | type[CostAccountDailyRollup]
    | type[CostAccountRollup]
)
_MONTH_KEYS = ("account_id", "tag_value", "service", "record_type", "currency")
_DAY_KEYS = ("day", "service", "record_type", "currency")
_ACCOUNT_DAY_KEYS = ("day", "account_id", "tag_value", "currency")
_ACCOUNT_KEYS = ("account_id", "tag_value", "record_type", "currency")
#: Each rollup table with the line columns it keeps (the lines summed over the others), in the
#: order they are written: the account totals are summed from the first, not from the lines.
ROLLUPS: tuple[tuple[RollupTable, tuple[str, ...]], ...] = (
    (CostRollup, _MONTH_KEYS),
    (CostDailyRollup, _DAY_KEYS),
    (CostAccountDailyRollup, _ACCOUNT_DAY_KEYS),
    (CostAccountRollup, _ACCOUNT_KEYS),
)


def _summed(snapshot_ids: list[int], keys: tuple[str, ...], source: Any) -> Any:
    """SELECT snapshot_id, keys..., amount, lines FROM source (the lines or a finer rollup)
    GROUP BY snapshot_id, keys."""
    c = source.__table__.c
    group = [c[k] for k in keys]
    lines = func.count() if source is CostLine else func.sum(c.lines)
    return (
        select(c.snapshot_id, *group, func.sum(c.amount), lines)
        .where(c.snapshot_id.in_(snapshot_ids))
        .group_by(c.snapshot_id, *group)
    )


def write_rollups(session: Session, snapshot_ids: Iterable[int]) -> None:
    """(Re)build every rollup of these snapshots from their stored lines, in the caller's
    transaction: one INSERT ... SELECT ... GROUP BY per table, summed by the database (the
    account totals from the account x service rollup just written: 10x fewer rows to read)."""
    ids = sorted(set(snapshot_ids))
    if not ids:
        return
    drop_rollups(session, ids)
    for table, keys in ROLLUPS:
        source = CostRollup if table is CostAccountRollup else CostLine
        target = table.__table__  # type: ignore[union-attr]
        columns = ["snapshot_id", *keys, "amount", "lines"]
        session.execute(insert(target).from_select(columns, _summed(ids, keys, source)))


def drop_rollups(session: Session, snapshot_ids: Iterable[int]) -> None:
    """Delete every rollup of these snapshots (their lines are being deleted)."""
    ids = sorted(set(snapshot_ids))
    if ids:
        for table, _keys in ROLLUPS:
            session.execute(delete(table).where(col(table.snapshot_id).in_(ids)))


def rebuild_all_rollups(session: Session) -> int:
    """Rebuild the rollups of every snapshot that keeps its lines; returns how many.

    What the migration rollup_1 did once for an existing database; safe to run again (the
    figures come out the same), e.g. after lines were inserted by hand."""
    ids = [
        int(i)
        for i in session.execute(
            select(col(CostSnapshot.id)).where(col(CostSnapshot.status) == "complete")
        ).scalars()
    ]
    write_rollups(session, ids)
    return len(ids)


def check_rollups(session: Session, snapshot_id: int) -> list[str]:
    """Where the rollups of a snapshot differ from its lines' sums (empty: they agree)."""
    problems: list[str] = []
    for table, keys in ROLLUPS:
        target = table.__table__.c  # type: ignore[union-attr]
        stored = {
            tuple(row[:-2]): (Decimal(row[-2]), int(row[-1]))
            for row in session.execute(
                select(*(target[k] for k in keys), target.amount, target.lines).where(
                    target.snapshot_id == snapshot_id
                )
            )
        }
        line = CostLine.__table__.c  # type: ignore[attr-defined]
        group = [line[k] for k in keys]
        summed = {
            tuple(row[:-2]): (Decimal(row[-2] or 0), int(row[-1]))
            for row in session.execute(
                select(*group, func.sum(line.amount), func.count())
                .where(line.snapshot_id == snapshot_id)
                .group_by(*group)
            )
        }
        if stored != summed:
            name = table.__name__
            for key in sorted(set(stored) | set(summed), key=str):
                if stored.get(key) != summed.get(key):
                    problems.append(f"{name} {key}: {stored.get(key)} != lines {summed.get(key)}")
    return problems
