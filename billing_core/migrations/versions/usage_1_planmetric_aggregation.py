"""plan metric aggregation (sum or max)

Revision ID: usage_1
Revises: 0001
Create Date: 2026-11-21 10:00:00

Cumulative metrics (API calls) are billed on the period's sum; level metrics (seats,
licences, clusters, storage) on the period's peak. Existing rows of the well-known level
metrics are backfilled as "max" so an upgraded database bills them the same way as a new one.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "usage_1"
down_revision: str | Sequence[str] | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_LEVEL_METRICS = ("seats", "users", "licences", "licenses", "clusters", "storage_gb", "nodes")


def upgrade() -> None:
    with op.batch_alter_table("planmetric", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("aggregation", sa.String(), nullable=False, server_default="sum")
        )
    planmetric = sa.table("planmetric", sa.column("metric", sa.String), sa.column("aggregation"))
    op.execute(
        planmetric.update()
        .where(planmetric.c.metric.in_(_LEVEL_METRICS))
        .values(aggregation="max")
    )


def downgrade() -> None:
    with op.batch_alter_table("planmetric", schema=None) as batch_op:
        batch_op.drop_column("aggregation")
