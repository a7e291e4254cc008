"""pricing rules: charge models and tiers, scoped AWS rules, customer overrides, adjustments,
minimum commitments, discounts, and how each invoice line was priced

Revision ID: rules_1
Revises: due_1

Existing plans keep pricing as before: every metric is `per_unit`, no rule beyond the plan's
markup, every adjustment passed through, no minimum; existing invoice lines have no rule text.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "rules_1"
down_revision: str | Sequence[str] | None = "due_1"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _scope() -> list[sa.Column[object]]:
    return [
        sa.Column("service", sa.String(), nullable=True),
        sa.Column("account_id", sa.String(length=12), nullable=True),
        sa.Column("usage_type", sa.String(), nullable=True),
        sa.Column("pct", sa.BigInteger(), nullable=False),
    ]


def upgrade() -> None:
    # Plain ADD COLUMN (no batch copy): SQLite adds these in place, and a copy of `plan` would
    # be refused by the foreign keys pointing at it.
    op.add_column("plan", sa.Column("minimum_spend_minor", sa.Integer(), nullable=True))
    op.add_column(
        "plan", sa.Column("adjustments", sa.JSON(), nullable=False, server_default=sa.text("'{}'"))
    )
    op.add_column(
        "planmetric",
        sa.Column("charge_model", sa.String(), nullable=False, server_default="per_unit"),
    )
    op.add_column("planmetric", sa.Column("package_size", sa.BigInteger(), nullable=True))
    op.add_column("invoiceline", sa.Column("pricing_rule", sa.Text(), nullable=True))
    op.add_column("invoiceline", sa.Column("aws_cost", sa.BigInteger(), nullable=True))
    op.create_table(
        "plantier",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("plan_id", sa.Integer(), nullable=False),
        sa.Column("metric", sa.String(), nullable=False),
        sa.Column("position", sa.Integer(), nullable=False),
        sa.Column("up_to", sa.BigInteger(), nullable=True),
        sa.Column("unit_price", sa.BigInteger(), nullable=False),
        sa.Column("flat_fee", sa.BigInteger(), nullable=False),
        sa.ForeignKeyConstraint(["plan_id"], ["plan.id"]),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index(op.f("ix_plantier_plan_id"), "plantier", ["plan_id"], unique=False)
    op.create_table(
        "planpricingrule",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("plan_id", sa.Integer(), nullable=False),
        *_scope(),
        sa.ForeignKeyConstraint(["plan_id"], ["plan.id"]),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index(
        op.f("ix_planpricingrule_plan_id"), "planpricingrule", ["plan_id"], unique=False
    )
    op.create_table(
        "customerpricingrule",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("customer_id", sa.Integer(), nullable=False),
        sa.Column("effective_from", sa.String(), nullable=False),
        sa.Column("effective_until", sa.String(), nullable=True),
        *_scope(),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("created_by", sa.String(), nullable=False),
        sa.ForeignKeyConstraint(["customer_id"], ["customer.id"]),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index(
        op.f("ix_customerpricingrule_customer_id"),
        "customerpricingrule",
        ["customer_id"],
        unique=False,
    )
    op.create_table(
        "customerdiscount",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("customer_id", sa.Integer(), nullable=False),
        sa.Column("kind", sa.String(), nullable=False),
        sa.Column("value", sa.BigInteger(), nullable=False),
        sa.Column("currency", sa.String(length=3), nullable=True),
        sa.Column("starts", sa.String(), nullable=False),
        sa.Column("months", sa.Integer(), nullable=False),
        sa.Column("description", sa.String(), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("created_by", sa.String(), nullable=False),
        sa.ForeignKeyConstraint(["customer_id"], ["customer.id"]),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index(
        op.f("ix_customerdiscount_customer_id"), "customerdiscount", ["customer_id"], unique=False
    )


def downgrade() -> None:
    for table in ("customerdiscount", "customerpricingrule", "planpricingrule", "plantier"):
        op.drop_table(table)
    with op.batch_alter_table("invoiceline", schema=None) as batch_op:
        batch_op.drop_column("aws_cost")
        batch_op.drop_column("pricing_rule")
    with op.batch_alter_table("planmetric", schema=None) as batch_op:
        batch_op.drop_column("package_size")
        batch_op.drop_column("charge_model")
    with op.batch_alter_table("plan", schema=None) as batch_op:
        batch_op.drop_column("adjustments")
        batch_op.drop_column("minimum_spend_minor")
