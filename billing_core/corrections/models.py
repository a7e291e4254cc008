"""Tables of the corrections wing: credit notes with their lines, and invoice voids (see
credit_notes.py and void_reissue.py). Money is integer minor units of the invoice's currency.

Re-exported by billing_core.models, so `from billing_core.models import CreditNote` works too.
"""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal

from sqlalchemy import Column, Index, Text, text
from sqlmodel import Field, SQLModel

from billing_core.periods import utcnow
from billing_core.sqltypes import ExactDecimal, StrEnumType, UTCDateTime
from billing_core.states import CreditNoteReason, CreditNoteStatus, CreditSettlement, VoidStep


def _now_field() -> datetime:
    return Field(default_factory=utcnow, sa_type=UTCDateTime)  # type: ignore[no-any-return]


def _time_field() -> datetime | None:
    return Field(default=None, sa_type=UTCDateTime)  # type: ignore[no-any-return]


# The credit notes being issued per invoice: at most one at a time (see corrections/).
ISSUING_CREDIT_NOTE_WHERE = "status = 'issuing'"


# A credit note on a finalized invoice (Stripe's Credit Notes API), recorded before it is sent.
class CreditNote(SQLModel, table=True):
    __table_args__ = (
        Index(
            "uq_creditnote_issuing_invoice",
            "invoice_id",
            unique=True,
            sqlite_where=text(ISSUING_CREDIT_NOTE_WHERE),
            postgresql_where=text(ISSUING_CREDIT_NOTE_WHERE),
        ),
    )
    id: int | None = Field(default=None, primary_key=True)
    invoice_id: int = Field(foreign_key="invoice.id", index=True)
    customer_id: int = Field(foreign_key="customer.id", index=True)
    currency: str = Field(max_length=3)
    status: CreditNoteStatus = Field(
        default=CreditNoteStatus.ISSUING, sa_type=StrEnumType(CreditNoteStatus)
    )
    reason: CreditNoteReason = Field(sa_type=StrEnumType(CreditNoteReason))
    memo: str | None = Field(default=None, sa_column=Column(Text))
    # How the paid part goes back; None when the invoice was unpaid (the credit lowers it).
    settlement: CreditSettlement | None = Field(default=None, sa_type=StrEnumType(CreditSettlement))
    amount_minor: int  # the credit note's total; the sum of its lines
    pre_payment_minor: int = 0  # lowered the amount due
    post_payment_minor: int = 0  # refund + customer balance + out of band
    refund_minor: int = 0
    customer_balance_minor: int = 0
    out_of_band_minor: int = 0
    # What the admin asked for, digested: a repeat of the same request is this note again.
    request_key: str = Field(unique=True, max_length=64)
    stripe_credit_note_id: str | None = Field(default=None, unique=True, index=True)
    number: str | None = None  # Stripe's, e.g. "ABCD1234-0001-CN-01"
    pdf: str | None = None
    created_by: str
    created_at: datetime = _now_field()
    issued_at: datetime | None = _time_field()
    voided_at: datetime | None = _time_field()
    last_error: str | None = Field(default=None, sa_column=Column(Text))


# One line of a credit note: part of an invoice line, or a custom amount (no invoice line).
class CreditNoteLine(SQLModel, table=True):
    id: int | None = Field(default=None, primary_key=True)
    credit_note_id: int = Field(foreign_key="creditnote.id", index=True)
    position: int = 0
    invoice_line_id: int | None = Field(default=None, foreign_key="invoiceline.id")
    description: str
    quantity: Decimal | None = Field(default=None, sa_type=ExactDecimal(6))
    amount_minor: int


# A void (and reissue) of an invoice; one per invoice, so concurrent clicks share it and a
# re-run resumes it from `step`.
class InvoiceVoid(SQLModel, table=True):
    id: int | None = Field(default=None, primary_key=True)
    invoice_id: int = Field(foreign_key="invoice.id", unique=True)
    reason: str = Field(sa_column=Column(Text, nullable=False))
    reissue: bool = False
    step: VoidStep = Field(default=VoidStep.REQUESTED, sa_type=StrEnumType(VoidStep))
    replacement_invoice_id: int | None = Field(default=None, foreign_key="invoice.id")
    requested_by: str
    requested_at: datetime = _now_field()
    finished_at: datetime | None = _time_field()
    last_error: str | None = Field(default=None, sa_column=Column(Text))
