"""collection steps: reminders, final notices and uncollectible marks, claimed once per invoice

Revision ID: dunning_1
Revises: due_1
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op


revision: str = "dunning_1"
down_revision: str | Sequence[str] | None = "due_1"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "collectionstep",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("invoice_id", sa.Integer(), nullable=False),
        sa.Column("step", sa.String(), nullable=False),
        sa.Column("status", sa.String(), nullable=False),
        sa.Column("day", sa.Integer(), nullable=False),
        sa.Column("days_past_due", sa.Integer(), nullable=False),
        sa.Column("idempotency_key", sa.String(), nullable=False),
        sa.Column("claimed_by", sa.String(), nullable=False),
        sa.Column("claimed_at", sa.DateTime(), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("done_at", sa.DateTime(), nullable=True),
        sa.Column("actor", sa.String(), nullable=False),
        sa.Column("error", sa.Text(), nullable=True),
        sa.ForeignKeyConstraint(["invoice_id"], ["invoice.id"]),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("invoice_id", "step", name="uq_collectionstep_invoice_step"),
    )
    op.create_index("ix_collectionstep_invoice_id", "collectionstep", ["invoice_id"])
    op.create_index("ix_collectionstep_done_at", "collectionstep", ["done_at"])


def downgrade() -> None:
    op.drop_index("ix_collectionstep_done_at", table_name="collectionstep")
    op.drop_index("ix_collectionstep_invoice_id", table_name="collectionstep")
    op.drop_table("collectionstep")
