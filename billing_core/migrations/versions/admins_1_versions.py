"""row versions for admin actions: plans, customers and reconciliation diffs

Revision ID: admins_1
Revises: demo_1

Two admins (or a stale page) acting on the same plan, customer or diff: each admin action
names the version it saw and is refused when the row changed since (billing_core/versions.py).
Existing rows start at version 1; `updated_by` (who made the last change) is unknown for them.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "admins_1"
down_revision: str | Sequence[str] | None = "demo_1"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_TABLES = ("plan", "customer", "reconciliationdiff")


# Plain ADD/DROP COLUMN, no batch copy: recreating `customer` on SQLite would drop a table
# other tables' foreign keys point at (SQLite has DROP COLUMN since 3.35).


def upgrade() -> None:
    for table in _TABLES:
        op.add_column(
            table, sa.Column("version", sa.Integer(), nullable=False, server_default="1")
        )
        op.add_column(table, sa.Column("updated_by", sa.String(), nullable=True))
    op.add_column("reconciliationdiff", sa.Column("updated_at", sa.DateTime(), nullable=True))


def downgrade() -> None:
    op.drop_column("reconciliationdiff", "updated_at")
    for table in _TABLES:
        op.drop_column(table, "updated_by")
        op.drop_column(table, "version")
