"""invoice due date: when payment is due, for receivables and collections

Revision ID: due_1
Revises: 0003

Existing finalized invoices are backfilled from what is known locally: invoices charged
automatically are due when issued (Stripe attempts the charge then); send-invoice invoices are
due their customer's `days_until_due` after issue. The next sync replaces the estimate with
Stripe's own `due_date`.
"""

from collections.abc import Sequence
from datetime import timedelta

import sqlalchemy as sa
from alembic import op

revision: str = "due_1"
down_revision: str | Sequence[str] | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_invoice = sa.table(
    "invoice",
    sa.column("id", sa.Integer()),
    sa.column("customer_id", sa.Integer()),
    sa.column("collection_method", sa.String()),
    sa.column("issued_at", sa.DateTime()),
    sa.column("due_at", sa.DateTime()),
)
_customer = sa.table(
    "customer",
    sa.column("id", sa.Integer()),
    sa.column("days_until_due", sa.Integer()),
)


def upgrade() -> None:
    with op.batch_alter_table("invoice", schema=None) as batch_op:
        batch_op.add_column(sa.Column("due_at", sa.DateTime(), nullable=True))
    bind = op.get_bind()
    # Row by row in Python: date arithmetic differs between SQLite and PostgreSQL, and the
    # number of issued invoices is small next to what a migration can afford.
    rows = bind.execute(
        sa.select(
            _invoice.c.id,
            _invoice.c.collection_method,
            _invoice.c.issued_at,
            _customer.c.days_until_due,
        )
        .select_from(_invoice.join(_customer, _customer.c.id == _invoice.c.customer_id))
        .where(_invoice.c.issued_at.is_not(None))
    ).all()
    for invoice_id, method, issued, days in rows:
        due = issued + timedelta(days=int(days or 0)) if method == "send_invoice" else issued
        bind.execute(sa.update(_invoice).where(_invoice.c.id == invoice_id).values(due_at=due))


def downgrade() -> None:
    with op.batch_alter_table("invoice", schema=None) as batch_op:
        batch_op.drop_column("due_at")
