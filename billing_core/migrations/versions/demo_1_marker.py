"""demo databases marked: live mode refuses a database holding the demo world

Revision ID: demo_1
Revises: states_1

`seed_demo` now leaves a `syncstate` row named `demo_world`. A database seeded before that has
demo customers (`customer.is_demo`) but no marker: this revision adds the marker to it, so live
mode refuses it as it refuses a new demo database. The downgrade removes the marker.
"""

from collections.abc import Sequence
from datetime import UTC, datetime

import sqlalchemy as sa
from alembic import op

revision: str = "demo_1"
down_revision: str | Sequence[str] | None = "states_1"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

MARKER = "demo_world"
_customer = sa.table("customer", sa.column("is_demo", sa.Boolean()))
_state = sa.table(
    "syncstate",
    sa.column("name", sa.String()),
    sa.column("value", sa.String()),
    sa.column("updated_at", sa.DateTime()),
)


def upgrade() -> None:
    conn = op.get_bind()
    demo = conn.execute(
        sa.select(sa.literal(1)).select_from(_customer).where(_customer.c.is_demo.is_(True))
    ).first()
    marked = conn.execute(sa.select(_state.c.name).where(_state.c.name == MARKER)).first()
    if demo is not None and marked is None:
        now = datetime.now(UTC)
        # Stored naive UTC, as the models' UTCDateTime columns store it.
        row = {"name": MARKER, "value": now.isoformat(), "updated_at": now.replace(tzinfo=None)}
        op.bulk_insert(_state, [row])


def downgrade() -> None:
    op.execute(_state.delete().where(_state.c.name == MARKER))
