"""The invoice detail's corrections panel: credit notes, the credit state, revisions, and what
an admin may do to the invoice now (credit it, void it, void and reissue it)."""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd
from sqlmodel import Session, col, select

from billing_core.corrections.credit_note_void import effect_text, why_not_voidable
from billing_core.corrections.credit_notes import notes_of
from billing_core.models import Invoice, InvoiceLine, InvoiceVoid
from billing_core.money import display
from billing_core.states import CreditNoteStatus, CreditState, InvoiceStatus

# Stripe statuses whose invoices take credit notes, and those that may be voided.
CREDITABLE = (InvoiceStatus.OPEN, InvoiceStatus.PAID, InvoiceStatus.UNCOLLECTIBLE)
VOIDABLE = (InvoiceStatus.OPEN, InvoiceStatus.UNCOLLECTIBLE)


@dataclass(frozen=True)
class CorrectionsPanel:
    """What the panel shows: `notes` is one row per credit note (money as text with currency),
    `credit_text` the state in a sentence, `lines` the (number, label) the line picker offers,
    `revision_text` where the invoice sits among the month's revisions (None: only one),
    `voidable` the (credit note id, what voiding it does) of the notes an admin may void."""

    notes: pd.DataFrame
    credit_state: CreditState
    credit_text: str
    can_credit: bool
    can_void: bool
    paid: bool
    lines: list[tuple[int, str]]
    revision_text: str | None
    void_text: str | None
    voidable: list[tuple[int, str]]


def corrections_panel(session: Session, invoice: Invoice) -> CorrectionsPanel:
    cur = invoice.currency
    rows = []
    voidable = []
    for note, lines in notes_of(session, invoice.id or 0):
        if note.status == CreditNoteStatus.ISSUED and why_not_voidable(note, invoice) is None:
            amount = display(note.amount_minor, cur)
            voidable.append(
                (
                    note.id or 0,
                    f"{note.number} ({amount}): voiding it means {effect_text(note, invoice)}.",
                )
            )
        rows.append(
            {
                "number": note.number or "(being issued)",
                "status": note.status.value,
                "amount": display(note.amount_minor, cur),
                "off amount due": display(note.pre_payment_minor, cur),
                "after payment": display(note.post_payment_minor, cur),
                "settled by": (note.settlement.value if note.settlement else "—").replace("_", " "),
                "reason": note.reason.value.replace("_", " "),
                "memo": note.memo or "",
                "lines": "; ".join(
                    f"{li.description}: {display(li.amount_minor, cur)}" for li in lines
                ),
                "by": note.created_by,
                "issued": note.issued_at,
                "pdf": note.pdf,
            }
        )
    state = invoice.credit_state
    issuing = any(r["status"] == CreditNoteStatus.ISSUING for r in rows)
    text = {
        CreditState.NONE: "No credit notes.",
        CreditState.PARTIALLY_CREDITED: "Partially credited",
        CreditState.CREDITED: "Credited in full",
        CreditState.REFUNDED: "Credited and refunded in full",
    }[state]
    if state != CreditState.NONE:
        text += (
            f": {display(invoice.credited_minor, cur)} of {display(invoice.total_minor, cur)} "
            f"({display(invoice.pre_payment_credit_notes_minor, cur)} off the amount due, "
            f"{display(invoice.post_payment_credit_notes_minor, cur)} after payment), as Stripe "
            "totals it."
        )
    if issuing:
        text += " A credit note is being issued: running the same request again finishes it."
    invoice_lines = session.exec(
        select(InvoiceLine)
        .where(InvoiceLine.invoice_id == invoice.id)
        .order_by(col(InvoiceLine.position))
    ).all()
    void = session.exec(select(InvoiceVoid).where(InvoiceVoid.invoice_id == invoice.id)).first()
    void_text = None
    if void is not None:
        void_text = f"Void requested by {void.requested_by}: {void.reason} (step: {void.step})."
        if void.last_error:
            void_text += f" Last error: {void.last_error}"
    revision_text = None
    if invoice.revision > 1 or invoice.replaces_invoice_id or void is not None:
        parts = [f"Revision {invoice.revision}"]
        if invoice.replaces_invoice_id:
            old = session.get(Invoice, invoice.replaces_invoice_id)
            parts.append(
                f"replaces {old.number if old and old.number else invoice.replaces_invoice_id}"
            )
        if void is not None and void.replacement_invoice_id:
            new = session.get(Invoice, void.replacement_invoice_id)
            shown = new.number if new and new.number else f"#{void.replacement_invoice_id}"
            parts.append(f"replaced by {shown}")
        revision_text = ", ".join(parts) + "."
    left = invoice.total_minor - invoice.credited_minor
    issued = bool(invoice.stripe_invoice_id) and not invoice.is_demo
    return CorrectionsPanel(
        notes=pd.DataFrame(rows),
        credit_state=state,
        credit_text=text,
        can_credit=issued and invoice.status in CREDITABLE and left > 0 and not issuing,
        can_void=issued and invoice.status in VOIDABLE and not issuing,
        paid=invoice.status == InvoiceStatus.PAID,
        lines=[
            (pos, f"{pos}. {li.description} ({display(li.amount_minor, cur)})")
            for pos, li in enumerate(invoice_lines, start=1)
        ],
        revision_text=revision_text,
        void_text=void_text,
        voidable=voidable,
    )
