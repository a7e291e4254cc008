"""effective-dated customer terms (plan, currency, AWS accounts, tag value)

Revision ID: dated_1
Revises: demo_1

Adds `customerterms`: what prices a customer's months from `effective_from` on. Every existing
customer gets a row from the start of time (2000-01) holding its current plan, currency, linked
accounts and tag value, so existing customers keep their values for every month; a pending plan
change (`next_plan_id` from `next_plan_from`) becomes a second row from that month.
"""

from collections.abc import Sequence
from datetime import UTC, datetime

import sqlalchemy as sa
from alembic import op

revision: str = "dated_1"
down_revision: str | Sequence[str] | None = "demo_1"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

EARLIEST = "2000-01"

_customer = sa.table(
    "customer",
    sa.column("id", sa.Integer()),
    sa.column("plan_id", sa.Integer()),
    sa.column("next_plan_id", sa.Integer()),
    sa.column("next_plan_from", sa.String()),
    sa.column("currency", sa.String()),
    sa.column("cost_tag_value", sa.String()),
)
_account = sa.table(
    "customeraccount", sa.column("customer_id", sa.Integer()), sa.column("account_id", sa.String())
)


def upgrade() -> None:
    terms = op.create_table(
        "customerterms",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("customer_id", sa.Integer(), nullable=False),
        sa.Column("effective_from", sa.String(), nullable=False),
        sa.Column("plan_id", sa.Integer(), nullable=True),
        sa.Column("currency", sa.String(length=3), nullable=False),
        sa.Column("cost_tag_value", sa.String(), nullable=True),
        sa.Column("account_ids", sa.JSON(), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.ForeignKeyConstraint(["customer_id"], ["customer.id"]),
        sa.ForeignKeyConstraint(["plan_id"], ["plan.id"]),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("customer_id", "effective_from"),
    )
    with op.batch_alter_table("customerterms", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_customerterms_customer_id"), ["customer_id"], unique=False
        )
    conn = op.get_bind()
    accounts: dict[int, list[str]] = {}
    for customer_id, account_id in conn.execute(
        sa.select(_account.c.customer_id, _account.c.account_id)
    ).all():
        accounts.setdefault(customer_id, []).append(account_id)
    # Stored naive UTC, as the models' UTCDateTime columns store it.
    now = datetime.now(UTC).replace(tzinfo=None)
    rows = []
    for cid, plan_id, next_id, next_from, currency, tag in conn.execute(
        sa.select(
            _customer.c.id,
            _customer.c.plan_id,
            _customer.c.next_plan_id,
            _customer.c.next_plan_from,
            _customer.c.currency,
            _customer.c.cost_tag_value,
        )
    ).all():
        row = {
            "customer_id": cid,
            "effective_from": EARLIEST,
            "plan_id": plan_id,
            "currency": currency,
            "cost_tag_value": tag,
            "account_ids": sorted(accounts.get(cid, [])),
            "created_at": now,
        }
        rows.append(row)
        if next_id is not None and next_from and next_from > EARLIEST:
            rows.append(row | {"effective_from": next_from, "plan_id": next_id})
    if rows:
        op.bulk_insert(terms, rows)


def downgrade() -> None:
    with op.batch_alter_table("customerterms", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_customerterms_customer_id"))
    op.drop_table("customerterms")
