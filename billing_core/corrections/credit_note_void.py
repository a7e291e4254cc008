"""Voiding an issued credit note in Stripe (`void-credit-note`, the invoice detail's Void).

Stripe reverses what the note did: the part it took off the invoice is due again (an invoice it
paid in full is open again) and a credit to the customer's Stripe balance is taken back. Refused
with a sentence, nothing sent: a note still being issued, a note that refunded money (Stripe
cannot void it: the money went back already) and a note on a void invoice. Stripe also refuses a
note whose lowered amount was paid since; that refusal is said as a sentence and nothing changes.

Safe to run again, and one void and one `credit_note.void` audit entry per note, ever:
- the void carries the note's idempotency key (keys.py): a retry after a lost answer gets
  Stripe's first answer again. After the key expired Stripe answers "already void"; the note is
  then read back and, void in Stripe, recorded as void here. The `credit_note.voided` event does
  the same repair in sync (credit_notes.apply_stripe_credit_note).
- the local write takes the note's row first, so concurrent voids queue, and audits only when
  the note has no void entry yet. A note sync found void but nobody audited (the answer was lost,
  then sync ran) is voided again with the same key, which records it.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import update
from sqlalchemy.engine import Engine
from sqlmodel import Session, col, select

from billing_core import audit
from billing_core.auth import Identity, require
from billing_core.corrections.credit_notes import credit_snapshot
from billing_core.db import session_scope
from billing_core.errors import PaymentProviderError, ValidationError
from billing_core.models import AuditEntry, CreditNote, Invoice
from billing_core.money import display
from billing_core.periods import utcnow
from billing_core.states import CreditNoteStatus, InvoiceStatus
from billing_core.stripe import credit_notes as stripe_cn
from billing_core.stripe import invoices as stripe_invoices
from billing_core.stripe.errors import StripeFailure
from billing_core.stripe.gateway import Gateway
from billing_core.stripe.keys import keys_for
from billing_core.stripe.mapping import StripeInvoice, mirror_invoice

ACTION = "credit_note.void"


@dataclass(frozen=True)
class VoidPlan:
    """What voiding note `credit_note_id` would do, in `text` (a sentence); `done`: it is void
    and audited already, so a void changes nothing and sends nothing."""

    credit_note_id: int
    number: str
    done: bool
    text: str


@dataclass(frozen=True)
class VoidNoteResult:
    credit_note_id: int
    number: str
    changed: bool  # False: the note was void (and its void recorded) before; nothing happened
    message: str


def find_note(session: Session, ref: str) -> CreditNote:
    """The credit note by its Stripe number, its Stripe id (cn_…) or '#<local id>';
    ValidationError naming what to give otherwise."""
    text = (ref or "").strip()
    note = None
    if text.startswith("#") and text[1:].isdigit():
        note = session.get(CreditNote, int(text[1:]))
    elif text:
        note = session.exec(
            select(CreditNote).where(
                (col(CreditNote.number) == text)
                | (col(CreditNote.number) == text.upper())
                | (col(CreditNote.stripe_credit_note_id) == text)
            )
        ).first()
    if note is None:
        hint = f" (for local id {text} give #{text})" if text.isdigit() else ""
        raise ValidationError(
            f"There is no credit note {text!r}{hint}: give its number as Stripe printed it (the "
            "invoice's credit notes list shows it), or #<id> for the local id."
        )
    return note


def _name(note: CreditNote) -> str:
    return note.number or f"#{note.id}"


def _label(invoice: Invoice) -> str:
    return invoice.number or f"#{invoice.id}"


def why_not_voidable(note: CreditNote, invoice: Invoice) -> str | None:
    """Why an issued (not void) note cannot be voided, in a sentence; None when it can."""
    if note.status == CreditNoteStatus.ISSUING or not note.stripe_credit_note_id:
        return (
            f"Credit note {_name(note)} on invoice {_label(invoice)} is still being issued: run "
            "the same credit-note request again to finish it, then void it. Nothing was sent."
        )
    if note.refund_minor:
        return (
            f"Credit note {_name(note)} refunded {display(note.refund_minor, note.currency)} to "
            "the customer's payment method, and Stripe cannot void a credit note with a refund "
            "(the money went back already). Nothing was sent to Stripe."
        )
    if invoice.status == InvoiceStatus.VOID:
        return (
            f"Invoice {_label(invoice)} is void, so its credit note {_name(note)} no longer "
            "counts: there is nothing to void. Nothing was sent to Stripe."
        )
    return None


def effect_text(note: CreditNote, invoice: Invoice) -> str:
    """What voiding the note does, as the end of a sentence ('invoice X asks for USD 4.00
    again; …')."""
    cur = note.currency
    parts = []
    if note.pre_payment_minor:
        parts.append(
            f"invoice {_label(invoice)} asks for {display(note.pre_payment_minor, cur)} again"
        )
    if note.customer_balance_minor:
        parts.append(
            f"{display(note.customer_balance_minor, cur)} is taken back from the customer's "
            "Stripe balance"
        )
    if note.out_of_band_minor:
        parts.append(
            f"the {display(note.out_of_band_minor, cur)} settled outside Stripe no longer "
            "counts as credited"
        )
    return "; ".join(parts) or f"invoice {_label(invoice)} no longer counts it"


def _audited(session: Session, note: CreditNote) -> bool:
    """Whether the note's void is in the audit log already (entries name the Stripe id)."""
    entries = session.exec(
        select(AuditEntry).where(
            AuditEntry.action == ACTION, AuditEntry.target == f"invoice:{note.invoice_id}"
        )
    ).all()
    return any(
        (e.after or {}).get("stripe_credit_note_id") == note.stripe_credit_note_id for e in entries
    )


def _done(session: Session, note: CreditNote, invoice: Invoice) -> bool:
    """True when the note is void and its void audited (nothing left to do); ValidationError
    when it cannot be voided. A note void here but not audited is voided again: that records
    it."""
    if note.status == CreditNoteStatus.VOID:
        return _audited(session, note)
    if why := why_not_voidable(note, invoice):
        raise ValidationError(why)
    return False


def plan_void(engine: Engine, ref: str) -> VoidPlan:
    """The note `ref` names and what voiding it does; ValidationError when it cannot be voided
    (unknown, being issued, refunded, on a void invoice). Reads the database only."""
    with Session(engine) as s:
        note = find_note(s, ref)
        invoice = s.get(Invoice, note.invoice_id)
        assert invoice is not None
        if _done(s, note, invoice):
            return VoidPlan(note.id or 0, _name(note), True, _already(note).message)
        amount = display(note.amount_minor, note.currency)
        text = (
            f"Credit note {_name(note)} ({amount}, {note.reason.value.replace('_', ' ')}) on "
            f"invoice {_label(invoice)}: voiding it means {effect_text(note, invoice)}."
        )
        if note.status == CreditNoteStatus.VOID:  # sync saw it void; nobody recorded a void
            text = (
                f"Credit note {_name(note)} ({amount}) on invoice {_label(invoice)} is void in "
                "Stripe, but no void of it is in the audit log: voiding it records that."
            )
        return VoidPlan(note.id or 0, _name(note), False, text)


def _already(note: CreditNote) -> VoidNoteResult:
    since = f" (since {note.voided_at:%Y-%m-%d %H:%M} UTC)" if note.voided_at else ""
    return VoidNoteResult(
        note.id or 0,
        _name(note),
        False,
        f"Credit note {_name(note)} is void already{since}; nothing changed.",
    )


def _record(
    engine: Engine,
    identity: Identity,
    note_id: int,
    remote_invoice: StripeInvoice,
    now: datetime,
) -> tuple[CreditNote, Invoice, bool]:
    """Save the note void with its invoice as Stripe has it now; (note, invoice, audited now)."""
    with session_scope(engine) as s:
        # Take the note's row before reading anything: a concurrent void of it (a double click,
        # another replica) waits here, then finds this one's audit entry and adds none.
        s.execute(
            update(CreditNote)
            .where(col(CreditNote.id) == note_id)
            .values(status=col(CreditNote.status))
            .execution_options(synchronize_session=False)
        )
        note = s.get(CreditNote, note_id)
        invoice = s.get(Invoice, note.invoice_id) if note is not None else None
        assert note is not None and invoice is not None
        before = {**credit_snapshot(invoice), "credit_note_status": note.status.value}
        note.status = CreditNoteStatus.VOID
        note.voided_at = note.voided_at or now
        note.last_error = None
        mirror_invoice(invoice, remote_invoice, now)
        s.add_all([note, invoice])
        if _audited(s, note):
            return note, invoice, False
        audit.record(
            s,
            actor=identity.actor,
            action=ACTION,
            target=f"invoice:{invoice.id}",
            before=before,
            after={
                **credit_snapshot(invoice),
                "credit_note": note.number,
                "stripe_credit_note_id": note.stripe_credit_note_id,
                "credit_note_status": CreditNoteStatus.VOID.value,
                "amount_minor": note.amount_minor,
            },
            at=now,
        )
        return note, invoice, True


def _void_in_stripe(gw: Gateway, note: CreditNote, key: str) -> bool:
    """Void the note in Stripe; True when Stripe voided it for this key (now, or on a try whose
    answer was lost), False when it was void there already (voided in Stripe's dashboard, or by
    a try whose key expired). ValidationError when Stripe refuses, PaymentProviderError when
    Stripe failed (run it again)."""
    sid = note.stripe_credit_note_id or ""
    try:
        stripe_cn.void_credit_note(gw, sid, key=key)
        return True
    except StripeFailure as exc:
        if exc.kind != "invalid":
            raise PaymentProviderError(
                f"{exc} Credit note {_name(note)} may be void in Stripe already: run the same "
                "void again to finish it (it is never voided twice)."
            ) from None
        if stripe_cn.read_credit_note(gw, sid).status == CreditNoteStatus.VOID:
            return False
        raise ValidationError(
            f"Stripe refused to void credit note {_name(note)}: {exc.detail.rstrip('.')}. "
            "Nothing changed."
        ) from None


def void_credit_note(
    engine: Engine, gw: Gateway, identity: Identity, ref: str, *, now: datetime | None = None
) -> VoidNoteResult:
    """Void credit note `ref` (its number, Stripe id or #<id>) in Stripe and record it here.

    Running it again changes nothing and says so; after an outage or a crash it finishes the
    void. ValidationError (nothing changed) for a note that cannot be voided or that Stripe
    refuses to void; PaymentProviderError when Stripe failed (run it again).
    """
    require(identity, "admin", "void credit notes")
    now = now or utcnow()
    with session_scope(engine) as s:
        note = find_note(s, ref)
        invoice = s.get(Invoice, note.invoice_id)
        assert invoice is not None
        if _done(s, note, invoice):
            return _already(note)
        key = keys_for(s).credit_note_void(note.id or 0)
    voided_now = _void_in_stripe(gw, note, key)
    remote_invoice = stripe_invoices.read_invoice(gw, invoice.stripe_invoice_id or "")
    note, invoice, audited = _record(engine, identity, note.id or 0, remote_invoice, now)
    if not audited:  # a concurrent void of the same note recorded it first
        return _already(note)
    due = display(invoice.due_minor, invoice.currency)
    if not voided_now:
        return VoidNoteResult(
            note.id or 0,
            _name(note),
            True,
            f"Credit note {_name(note)} was void in Stripe already (voided there, or by an "
            f"earlier try); it is recorded as void here now, and {due} is due on invoice "
            f"{_label(invoice)}.",
        )
    amount = display(note.amount_minor, note.currency)
    return VoidNoteResult(
        note.id or 0,
        _name(note),
        True,
        f"Credit note {_name(note)} ({amount}) is void: {effect_text(note, invoice)}; {due} "
        f"is now due on invoice {_label(invoice)}.",
    )
