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


def upgrade() -> None:
    for table in _TABLES:
        with op.batch_alter_table(table, schema=None) as batch_op:
            batch_op.add_column(
                sa.Column("version", sa.Integer(), nullable=False, server_default="1")
            )
            batch_op.add_column(sa.Column("updated_by", sa.String(), nullable=True))
            if table == "reconciliationdiff":
                batch_op.add_column(sa.Column("updated_at", sa.DateTime(), nullable=True))


def downgrade() -> None:
    for table in _TABLES:
        with op.batch_alter_table(table, schema=None) as batch_op:
            if table == "reconciliationdiff":
                batch_op.drop_column("updated_at")
            batch_op.drop_column("updated_by")
            batch_op.drop_column("version")
