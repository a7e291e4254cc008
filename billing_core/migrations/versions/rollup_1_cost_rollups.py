"""cost rollups: each snapshot's lines summed by account, by day and by account and day

Revision ID: rollup_1
Revises: 0005

Pages read these sums instead of the lines (billing_core/costs/rollups.py). New snapshots get
them in the transaction that stores their lines; this revision builds them once for every
snapshot already stored that keeps its lines (pruned ones have none), with the same
INSERT ... SELECT ... GROUP BY the application runs, so the figures are the same to the digit.
`billing_core.costs.rollups.rebuild_all_rollups` does it again if ever needed.

Also an index on the lines by (snapshot, account): the one page that still reads lines, the
AWS costs page's daily chart for one customer, reads that customer's lines only.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "rollup_1"
down_revision: str | Sequence[str] | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_MONTH_KEYS = "account_id, tag_value, service, record_type, currency"
_DAY_KEYS = "day, service, record_type, currency"
_ACCOUNT_DAY_KEYS = "day, account_id, tag_value, currency"
_ACCOUNT_KEYS = "account_id, tag_value, record_type, currency"


def upgrade() -> None:
    op.create_table(
        "costrollup",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("snapshot_id", sa.Integer(), nullable=False),
        sa.Column("account_id", sa.String(), nullable=True),
        sa.Column("tag_value", sa.String(), nullable=True),
        sa.Column("service", sa.String(), nullable=False),
        sa.Column("record_type", sa.String(), nullable=False),
        sa.Column("currency", sa.String(), nullable=False),
        sa.Column("amount", sa.BigInteger(), nullable=False),
        sa.Column("lines", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(["snapshot_id"], ["costsnapshot.id"]),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("costrollup", schema=None) as batch_op:
        batch_op.create_index(
            "ix_costrollup_snapshot_account", ["snapshot_id", "account_id"], unique=False
        )
    op.create_table(
        "costdailyrollup",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("snapshot_id", sa.Integer(), nullable=False),
        sa.Column("day", sa.String(), nullable=False),
        sa.Column("service", sa.String(), nullable=False),
        sa.Column("record_type", sa.String(), nullable=False),
        sa.Column("currency", sa.String(), nullable=False),
        sa.Column("amount", sa.BigInteger(), nullable=False),
        sa.Column("lines", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(["snapshot_id"], ["costsnapshot.id"]),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("costdailyrollup", schema=None) as batch_op:
        batch_op.create_index("ix_costdailyrollup_snapshot_day", ["snapshot_id", "day"], unique=False)
    op.create_table(
        "costaccountdailyrollup",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("snapshot_id", sa.Integer(), nullable=False),
        sa.Column("day", sa.String(), nullable=False),
        sa.Column("account_id", sa.String(), nullable=True),
        sa.Column("tag_value", sa.String(), nullable=True),
        sa.Column("currency", sa.String(), nullable=False),
        sa.Column("amount", sa.BigInteger(), nullable=False),
        sa.Column("lines", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(["snapshot_id"], ["costsnapshot.id"]),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("costaccountdailyrollup", schema=None) as batch_op:
        batch_op.create_index(
            "ix_costaccountdailyrollup_snapshot_account",
            ["snapshot_id", "account_id"],
            unique=False,
        )
    with op.batch_alter_table("costline", schema=None) as batch_op:
        batch_op.create_index(
            "ix_costline_snapshot_account", ["snapshot_id", "account_id"], unique=False
        )
    op.create_table(
        "costaccountrollup",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("snapshot_id", sa.Integer(), nullable=False),
        sa.Column("account_id", sa.String(), nullable=True),
        sa.Column("tag_value", sa.String(), nullable=True),
        sa.Column("record_type", sa.String(), nullable=False),
        sa.Column("currency", sa.String(), nullable=False),
        sa.Column("amount", sa.BigInteger(), nullable=False),
        sa.Column("lines", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(["snapshot_id"], ["costsnapshot.id"]),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("costaccountrollup", schema=None) as batch_op:
        batch_op.create_index(
            "ix_costaccountrollup_snapshot_account", ["snapshot_id", "account_id"], unique=False
        )
    # The backfill: amounts are scaled integers, so the database's SUM is exact.
    for table, keys in (
        ("costrollup", _MONTH_KEYS),
        ("costdailyrollup", _DAY_KEYS),
        ("costaccountdailyrollup", _ACCOUNT_DAY_KEYS),
    ):
        op.execute(
            f"INSERT INTO {table} (snapshot_id, {keys}, amount, lines) "
            f"SELECT snapshot_id, {keys}, SUM(amount), COUNT(*) FROM costline "
            f"GROUP BY snapshot_id, {keys}"
        )
    op.execute(
        f"INSERT INTO costaccountrollup (snapshot_id, {_ACCOUNT_KEYS}, amount, lines) "
        f"SELECT snapshot_id, {_ACCOUNT_KEYS}, SUM(amount), SUM(lines) FROM costrollup "
        f"GROUP BY snapshot_id, {_ACCOUNT_KEYS}"
    )


def downgrade() -> None:
    with op.batch_alter_table("costaccountrollup", schema=None) as batch_op:
        batch_op.drop_index("ix_costaccountrollup_snapshot_account")
    op.drop_table("costaccountrollup")
    with op.batch_alter_table("costline", schema=None) as batch_op:
        batch_op.drop_index("ix_costline_snapshot_account")
    with op.batch_alter_table("costaccountdailyrollup", schema=None) as batch_op:
        batch_op.drop_index("ix_costaccountdailyrollup_snapshot_account")
    op.drop_table("costaccountdailyrollup")
    with op.batch_alter_table("costdailyrollup", schema=None) as batch_op:
        batch_op.drop_index("ix_costdailyrollup_snapshot_day")
    op.drop_table("costdailyrollup")
    with op.batch_alter_table("costrollup", schema=None) as batch_op:
        batch_op.drop_index("ix_costrollup_snapshot_account")
    op.drop_table("costrollup")
