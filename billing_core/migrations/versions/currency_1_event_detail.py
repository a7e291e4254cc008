"""stripe events keep what they meant when applied (a failed payment's reason)

Revision ID: currency_1
Revises: demo_1

Stripe keeps why a payment failed on the PaymentIntent (`last_payment_error`), not on the
invoice in the `invoice.payment_failed` event, and only the last failure. When such an event is
applied the reason is read from the PaymentIntent and kept on the event row, so the invoice's
attempts each show their own reason.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "currency_1"
down_revision: str | Sequence[str] | None = "demo_1"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("stripeevent", schema=None) as batch_op:
        batch_op.add_column(sa.Column("detail", sa.Text(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("stripeevent", schema=None) as batch_op:
        batch_op.drop_column("detail")
