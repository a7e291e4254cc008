"""invoice key generation: fresh idempotency keys after a Stripe customer is re-linked

Revision ID: alerts_1
Revises: demo_1

An invoice stuck on a customer deleted in Stripe is pushed again to the re-created (or
re-linked) Stripe customer as a new Stripe invoice; its create, lines, finalize, send and pay
steps then need keys Stripe has not seen (the old ones replay the old invoice, or are refused
with other parameters). Generation 0 keeps the keys every existing invoice already used.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "alerts_1"
down_revision: str | Sequence[str] | None = "demo_1"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("invoice", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("key_generation", sa.Integer(), nullable=False, server_default="0")
        )


def downgrade() -> None:
    with op.batch_alter_table("invoice", schema=None) as batch_op:
        batch_op.drop_column("key_generation")
