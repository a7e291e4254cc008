"""failed Stripe events are retried: attempt count and next attempt time on each event

Revision ID: events_1
Revises: demo_1

Events stored as `error` before this revision were never retried; they get one attempt counted
and are due now, so the next `sync` tries them again.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op


revision: str = "events_1"
down_revision: str | Sequence[str] | None = "demo_1"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_event = sa.table(
    "stripeevent",
    sa.column("outcome", sa.String()),
    sa.column("attempts", sa.Integer()),
    sa.column("processed_at", sa.DateTime()),
    sa.column("next_attempt_at", sa.DateTime()),
)


def upgrade() -> None:
    with op.batch_alter_table("stripeevent", schema=None) as batch_op:
        batch_op.add_column(sa.Column("attempts", sa.Integer(), nullable=False, server_default="0"))
        batch_op.add_column(sa.Column("next_attempt_at", sa.DateTime(), nullable=True))
        batch_op.create_index("ix_stripeevent_next_attempt_at", ["next_attempt_at"], unique=False)
    op.execute(
        _event.update()
        .where(_event.c.outcome == "error")
        .values(attempts=1, next_attempt_at=_event.c.processed_at)
    )


def downgrade() -> None:
    with op.batch_alter_table("stripeevent", schema=None) as batch_op:
        batch_op.drop_index("ix_stripeevent_next_attempt_at")
        batch_op.drop_column("next_attempt_at")
        batch_op.drop_column("attempts")
