"""one active invoice run per period, enforced by a partial unique index

Revision ID: runs_1
Revises: demo_1

Concurrent Run clicks used to record several requests for one period (a check, then an
insert). The index `uq_invoicerun_active_period` lets the database keep one requested or
running (non-dry-run) row per period. Databases that already hold several active rows for a
period keep the one that beat last (or the newest) active; the others are marked failed with
a sentence saying why, as a run stopped without finishing is. The downgrade drops the index.
"""

from collections.abc import Sequence
from datetime import UTC, datetime

import sqlalchemy as sa
from alembic import op

revision: str = "runs_1"
down_revision: str | Sequence[str] | None = "demo_1"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

WHERE = "status IN ('requested', 'running') AND dry_run = false"
_run = sa.table(
    "invoicerun",
    sa.column("id", sa.Integer()),
    sa.column("period", sa.String()),
    sa.column("status", sa.String()),
    sa.column("dry_run", sa.Boolean()),
    sa.column("errors", sa.JSON()),
    sa.column("heartbeat_at", sa.DateTime()),
    sa.column("finished_at", sa.DateTime()),
)


def _retire_duplicates() -> None:
    conn = op.get_bind()
    rows = conn.execute(
        sa.select(_run.c.id, _run.c.period, _run.c.status, _run.c.heartbeat_at, _run.c.errors)
        .where(sa.text(WHERE))
        .order_by(_run.c.period, _run.c.id)
    ).all()
    by_period: dict[str, list[sa.Row]] = {}
    for row in rows:
        by_period.setdefault(row.period, []).append(row)
    # Stored naive UTC, as the models' UTCDateTime columns store it.
    now = datetime.now(UTC).replace(tzinfo=None)
    for runs in by_period.values():
        if len(runs) < 2:
            continue
        keep = max(runs, key=lambda r: (r.status == "running", r.heartbeat_at or now, r.id))
        for run in runs:
            if run.id == keep.id:
                continue
            message = f"a second active run of {run.period}; run {keep.id} is the one kept"
            errors = [*(run.errors or []), {"step": "run", "message": message}]
            conn.execute(
                _run.update()
                .where(_run.c.id == run.id)
                .values(status="failed", finished_at=now, errors=errors)
            )


def upgrade() -> None:
    _retire_duplicates()
    with op.batch_alter_table("invoicerun", schema=None) as batch_op:
        batch_op.create_index(
            "uq_invoicerun_active_period",
            ["period"],
            unique=True,
            sqlite_where=sa.text(WHERE),
            postgresql_where=sa.text(WHERE),
        )


def downgrade() -> None:
    with op.batch_alter_table("invoicerun", schema=None) as batch_op:
        batch_op.drop_index("uq_invoicerun_active_period")
