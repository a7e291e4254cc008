"""refunded amount, paying PaymentIntent, event -> invoice link

Revision ID: invoices_1
Revises: 0001
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "invoices_1"
down_revision: str | Sequence[str] | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("invoice", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("amount_refunded_minor", sa.Integer(), nullable=False, server_default="0")
        )
        batch_op.add_column(sa.Column("stripe_payment_intent_id", sa.String(), nullable=True))
        batch_op.create_index(
            "ix_invoice_stripe_payment_intent_id", ["stripe_payment_intent_id"], unique=False
        )
    with op.batch_alter_table("stripeevent", schema=None) as batch_op:
        batch_op.add_column(sa.Column("invoice_id", sa.Integer(), nullable=True))
        batch_op.create_index("ix_stripeevent_invoice_id", ["invoice_id"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("stripeevent", schema=None) as batch_op:
        batch_op.drop_index("ix_stripeevent_invoice_id")
        batch_op.drop_column("invoice_id")
    with op.batch_alter_table("invoice", schema=None) as batch_op:
        batch_op.drop_index("ix_invoice_stripe_payment_intent_id")
        batch_op.drop_column("stripe_payment_intent_id")
        batch_op.drop_column("amount_refunded_minor")
