"""credit notes, void and reissue: invoice revisions and one live invoice per customer and month

Revision ID: corrections_1
Revises: due_1

An issued invoice is corrected, never edited: a credit note (table `creditnote` with its
`creditnoteline`s; at most one being issued per invoice at a time, by a partial unique index),
or a void and a reissue as a new revision of the month's invoice (`invoicevoid` records how far
it got). The unique key (customer, period) becomes (customer, period, revision) plus a partial
unique index over live (not void) invoices, so a month has at most one live invoice while its
void revisions stay as history. Existing invoices are revision 1 and have no credit notes. The
downgrade refuses a database holding a second revision of a month (it could not be kept).
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "corrections_1"
down_revision: str | Sequence[str] | None = "due_1"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

LIVE = "status <> 'void'"
ISSUING = "status = 'issuing'"


def upgrade() -> None:
    with op.batch_alter_table("invoice", schema=None) as batch_op:
        batch_op.add_column(sa.Column("revision", sa.Integer(), server_default="1", nullable=False))
        batch_op.add_column(sa.Column("replaces_invoice_id", sa.Integer(), nullable=True))
        batch_op.add_column(
            sa.Column(
                "pre_payment_credit_notes_minor", sa.Integer(), server_default="0", nullable=False
            )
        )
        batch_op.add_column(
            sa.Column(
                "post_payment_credit_notes_minor", sa.Integer(), server_default="0", nullable=False
            )
        )
        batch_op.create_foreign_key(
            "fk_invoice_replaces_invoice_id", "invoice", ["replaces_invoice_id"], ["id"]
        )
        batch_op.drop_constraint("uq_invoice_customer_period", type_="unique")
        batch_op.create_unique_constraint(
            "uq_invoice_revision", ["customer_id", "period", "revision"]
        )
        batch_op.create_index(
            "uq_invoice_live_customer_period",
            ["customer_id", "period"],
            unique=True,
            sqlite_where=sa.text(LIVE),
            postgresql_where=sa.text(LIVE),
        )
    op.create_table(
        "creditnote",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("invoice_id", sa.Integer(), nullable=False),
        sa.Column("customer_id", sa.Integer(), nullable=False),
        sa.Column("currency", sa.String(length=3), nullable=False),
        sa.Column("status", sa.String(), nullable=False),
        sa.Column("reason", sa.String(), nullable=False),
        sa.Column("memo", sa.Text(), nullable=True),
        sa.Column("settlement", sa.String(), nullable=True),
        sa.Column("amount_minor", sa.Integer(), nullable=False),
        sa.Column("pre_payment_minor", sa.Integer(), nullable=False),
        sa.Column("post_payment_minor", sa.Integer(), nullable=False),
        sa.Column("refund_minor", sa.Integer(), nullable=False),
        sa.Column("customer_balance_minor", sa.Integer(), nullable=False),
        sa.Column("out_of_band_minor", sa.Integer(), nullable=False),
        sa.Column("request_key", sa.String(length=64), nullable=False),
        sa.Column("stripe_credit_note_id", sa.String(), nullable=True),
        sa.Column("number", sa.String(), nullable=True),
        sa.Column("pdf", sa.String(), nullable=True),
        sa.Column("created_by", sa.String(), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("issued_at", sa.DateTime(), nullable=True),
        sa.Column("voided_at", sa.DateTime(), nullable=True),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.ForeignKeyConstraint(["customer_id"], ["customer.id"]),
        sa.ForeignKeyConstraint(["invoice_id"], ["invoice.id"]),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("request_key"),
    )
    op.create_index("ix_creditnote_invoice_id", "creditnote", ["invoice_id"])
    op.create_index("ix_creditnote_customer_id", "creditnote", ["customer_id"])
    op.create_index(
        "ix_creditnote_stripe_credit_note_id", "creditnote", ["stripe_credit_note_id"], unique=True
    )
    op.create_index(
        "uq_creditnote_issuing_invoice",
        "creditnote",
        ["invoice_id"],
        unique=True,
        sqlite_where=sa.text(ISSUING),
        postgresql_where=sa.text(ISSUING),
    )
    op.create_table(
        "creditnoteline",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("credit_note_id", sa.Integer(), nullable=False),
        sa.Column("position", sa.Integer(), nullable=False),
        sa.Column("invoice_line_id", sa.Integer(), nullable=True),
        sa.Column("description", sa.String(), nullable=False),
        sa.Column("quantity", sa.Numeric(), nullable=True),
        sa.Column("amount_minor", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(["credit_note_id"], ["creditnote.id"]),
        sa.ForeignKeyConstraint(["invoice_line_id"], ["invoiceline.id"]),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_creditnoteline_credit_note_id", "creditnoteline", ["credit_note_id"])
    op.create_table(
        "invoicevoid",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("invoice_id", sa.Integer(), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("reissue", sa.Boolean(), nullable=False),
        sa.Column("step", sa.String(), nullable=False),
        sa.Column("replacement_invoice_id", sa.Integer(), nullable=True),
        sa.Column("requested_by", sa.String(), nullable=False),
        sa.Column("requested_at", sa.DateTime(), nullable=False),
        sa.Column("finished_at", sa.DateTime(), nullable=True),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.ForeignKeyConstraint(["invoice_id"], ["invoice.id"]),
        sa.ForeignKeyConstraint(["replacement_invoice_id"], ["invoice.id"]),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("invoice_id"),
    )


def downgrade() -> None:
    bind = op.get_bind()
    revised = bind.execute(sa.text("SELECT count(*) FROM invoice WHERE revision > 1")).scalar()
    if revised:
        raise RuntimeError(
            f"{revised} invoices are reissued revisions; one invoice per customer and month "
            "cannot hold them. Keep this revision."
        )
    op.drop_table("invoicevoid")
    op.drop_index("ix_creditnoteline_credit_note_id", table_name="creditnoteline")
    op.drop_table("creditnoteline")
    op.drop_index("uq_creditnote_issuing_invoice", table_name="creditnote")
    op.drop_index("ix_creditnote_stripe_credit_note_id", table_name="creditnote")
    op.drop_index("ix_creditnote_customer_id", table_name="creditnote")
    op.drop_index("ix_creditnote_invoice_id", table_name="creditnote")
    op.drop_table("creditnote")
    with op.batch_alter_table("invoice", schema=None) as batch_op:
        batch_op.drop_index("uq_invoice_live_customer_period")
        batch_op.drop_constraint("uq_invoice_revision", type_="unique")
        batch_op.create_unique_constraint("uq_invoice_customer_period", ["customer_id", "period"])
        batch_op.drop_constraint("fk_invoice_replaces_invoice_id", type_="foreignkey")
        batch_op.drop_column("post_payment_credit_notes_minor")
        batch_op.drop_column("pre_payment_credit_notes_minor")
        batch_op.drop_column("replaces_invoice_id")
        batch_op.drop_column("revision")
