"""invoice outcome apart from Stripe's status: failed and credit rows migrated

Revision ID: states_1
Revises: 0002

`invoice.status` held Stripe's five statuses plus two local words. They move to the new
`invoice.outcome` column and `status` keeps only what Stripe has:
- failed -> outcome payment_failed; status open, Stripe's status for an invoice whose charge
  was declined (draft if it was never finalized, as reconciliation already read such rows);
- credit -> outcome credit_carried; status draft: the invoice (negative total) was never
  finalized nor sent to Stripe, and draft is the status of an invoice Stripe never issued.
  Not void (nothing was cancelled: the credit is real, carried to the next period) and not
  paid (Stripe's own treatment of a negative invoice, which did not happen here).
The downgrade folds the outcomes back into `status`.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "states_1"
down_revision: str | Sequence[str] | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_invoice = sa.table(
    "invoice",
    sa.column("status", sa.String()),
    sa.column("outcome", sa.String()),
    sa.column("push_step", sa.String()),
)

# Push steps reached only after Stripe finalized the invoice.
_FINALIZED_STEPS = ("finalized", "paid", "sent")


def upgrade() -> None:
    with op.batch_alter_table("invoice", schema=None) as batch_op:
        batch_op.add_column(sa.Column("outcome", sa.String(), nullable=True))
        batch_op.create_index("ix_invoice_outcome", ["outcome"], unique=False)
    failed_status = sa.case(
        (_invoice.c.push_step.in_(_FINALIZED_STEPS), sa.literal("open")), else_=sa.literal("draft")
    )
    op.execute(
        _invoice.update()
        .where(_invoice.c.status == "failed")
        .values(status=failed_status, outcome="payment_failed")
    )
    op.execute(
        _invoice.update()
        .where(_invoice.c.status == "credit")
        .values(status="draft", outcome="credit_carried")
    )


def downgrade() -> None:
    op.execute(
        _invoice.update().where(_invoice.c.outcome == "payment_failed").values(status="failed")
    )
    op.execute(
        _invoice.update().where(_invoice.c.outcome == "credit_carried").values(status="credit")
    )
    with op.batch_alter_table("invoice", schema=None) as batch_op:
        batch_op.drop_index("ix_invoice_outcome")
        batch_op.drop_column("outcome")
