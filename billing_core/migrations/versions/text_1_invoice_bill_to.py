"""invoice bill-to details as issued: name, email, address and tax ids

Revision ID: text_1
Revises: demo_1

An invoice keeps the bill-to details it was issued with, so renaming a customer no longer
rewrites past invoices on screen and in exports. Existing invoices are backfilled with their
customer's name and email as they are now (the best record there is of what they were issued
to); address and tax ids stay unknown (NULL) until Stripe's invoice is mirrored.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "text_1"
down_revision: str | Sequence[str] | None = "demo_1"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_invoice = sa.table(
    "invoice",
    sa.column("customer_id", sa.Integer()),
    sa.column("customer_name", sa.String()),
    sa.column("customer_email", sa.String()),
)
_customer = sa.table(
    "customer",
    sa.column("id", sa.Integer()),
    sa.column("name", sa.String()),
    sa.column("email", sa.String()),
)


def upgrade() -> None:
    with op.batch_alter_table("invoice", schema=None) as batch_op:
        batch_op.add_column(sa.Column("customer_name", sa.String(), nullable=True))
        batch_op.add_column(sa.Column("customer_email", sa.String(), nullable=True))
        batch_op.add_column(sa.Column("customer_address", sa.JSON(), nullable=True))
        batch_op.add_column(sa.Column("customer_tax_ids", sa.JSON(), nullable=True))
    owner = _customer.c.id == _invoice.c.customer_id
    op.execute(
        _invoice.update().values(
            customer_name=sa.select(_customer.c.name).where(owner).scalar_subquery(),
            customer_email=sa.select(_customer.c.email).where(owner).scalar_subquery(),
        )
    )


def downgrade() -> None:
    with op.batch_alter_table("invoice", schema=None) as batch_op:
        batch_op.drop_column("customer_tax_ids")
        batch_op.drop_column("customer_address")
        batch_op.drop_column("customer_email")
        batch_op.drop_column("customer_name")
