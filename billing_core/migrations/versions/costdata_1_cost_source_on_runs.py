"""the cost figures a run priced from: metric, grouping and snapshot, on runs and invoices

Revision ID: costdata_1
Revises: demo_1

Invoices are priced from the latest snapshot of the configured metric and grouping
(COST_METRIC, COST_GROUP_BY) taken after the month ended; the run and each invoice record
which one. Older rows keep NULL: they were priced before this was recorded.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "costdata_1"
down_revision: str | Sequence[str] | None = "demo_1"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_TABLES = ("invoicerun", "invoice")


def upgrade() -> None:
    for table in _TABLES:
        with op.batch_alter_table(table, schema=None) as batch_op:
            batch_op.add_column(sa.Column("cost_metric", sa.String(), nullable=True))
            batch_op.add_column(sa.Column("cost_group_by", sa.String(), nullable=True))
            batch_op.add_column(sa.Column("cost_snapshot_id", sa.Integer(), nullable=True))


def downgrade() -> None:
    for table in _TABLES:
        with op.batch_alter_table(table, schema=None) as batch_op:
            batch_op.drop_column("cost_snapshot_id")
            batch_op.drop_column("cost_group_by")
            batch_op.drop_column("cost_metric")
