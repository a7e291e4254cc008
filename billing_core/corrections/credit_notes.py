"""Credit notes on finalized invoices: preview and issue; stored locally with their lines
(the request and its checks: credit_plan.py; voiding a note: credit_note_void.py).

A request (`CreditAsk`) names the invoice and what to credit: the whole invoice, one line (an
amount, or a whole quantity of it) or a custom amount, with Stripe's reason and a memo. On an
open invoice the credit lowers what is due; on a paid one the admin says where the paid part
goes (`CreditSettlement`: refund to the payment method, the customer's Stripe balance, or out
of band). Amounts are minor units of the invoice's currency.

Issuing, step by step (each re-run of the same request finishes it, never issues twice):
1. Plan: read the invoice from Stripe, check everything (refused with a sentence, nothing sent:
   draft or void, another currency, more than is left to credit on the invoice or the line,
   a paid invoice without a settlement); split the credit into Stripe's pre- and post-payment
   parts.
2. Claim: insert the local credit note as `issuing` with its lines and split. A partial unique
   index allows one `issuing` note per invoice, so two admins crediting one invoice at once
   cannot both pass step 1 on the same figures: the second is refused ("being credited").
   The request's digest (`request_key`, unique) makes a repeat of the same request this note.
3. Issue in Stripe with the note's idempotency key (keys.py); a resumed note is first looked up
   by metadata (Stripe forgets keys after 24 hours).
4. Save: the note `issued` with Stripe's id and number, the invoice re-read and mirrored, audit.
A refusal by Stripe (400) removes the claim (nothing was created); an outage keeps it `issuing`
with the error, and running the same request again finishes it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal

from sqlalchemy.engine import Engine
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, col, select

from billing_core import audit
from billing_core.auth import Identity, require
from billing_core.corrections.credit_plan import (
    CreditAsk,
    CreditPlan,
    PlannedLine,
    credited_minor,
    find_invoice,
    plan,
    refuse_state,
)
from billing_core.db import session_scope
from billing_core.errors import PaymentProviderError, ValidationError
from billing_core.models import CreditNote, CreditNoteLine, Invoice, InvoiceLine
from billing_core.money import (
    display,
)
from billing_core.periods import utcnow
from billing_core.states import (
    CreditNoteStatus,
)
from billing_core.stripe import credit_notes as stripe_cn
from billing_core.stripe import invoices as stripe_invoices
from billing_core.stripe.errors import StripeFailure
from billing_core.stripe.gateway import Gateway
from billing_core.stripe.keys import keys_for
from billing_core.stripe.mapping import mirror_invoice


@dataclass(frozen=True)
class IssueResult:
    credit_note_id: int
    number: str | None
    changed: bool  # False: the same request was issued before; nothing happened now
    message: str


def _request(
    plan_: CreditPlan, stripe_lines: Sequence[str | None], metadata: dict[str, str]
) -> stripe_cn.CreditNoteRequest:
    refund, balance, out_of_band = plan_.split
    return stripe_cn.CreditNoteRequest(
        invoice=plan_.stripe_invoice_id,
        reason=plan_.reason.value,
        memo=plan_.memo,
        lines=tuple(
            stripe_cn.NoteLine(
                p.description, None if p.quantity else p.amount_minor, p.quantity, sid
            )
            for p, sid in zip(plan_.lines, stripe_lines, strict=True)
        ),
        refund_minor=refund,
        balance_minor=balance,
        out_of_band_minor=out_of_band,
        metadata=metadata,
    )


def _stripe_line_ids(session: Session, gw: Gateway, plan_: CreditPlan) -> list[str | None]:
    """The Stripe line id of each planned line (lines were added in the local order)."""
    wanted = [p.invoice_line_id for p in plan_.lines]
    if not any(wanted):
        return [None] * len(wanted)
    local = list(
        session.exec(
            select(InvoiceLine)
            .where(InvoiceLine.invoice_id == plan_.invoice_id)
            .order_by(col(InvoiceLine.position))
        ).all()
    )
    remote = stripe_cn.invoice_line_ids(gw, plan_.stripe_invoice_id)
    pairs = [(li.description, li.amount_minor) for li in local]
    if pairs != [(d, a) for _id, d, a in remote]:
        raise ValidationError(
            f"The lines of invoice {plan_.invoice_number} in Stripe differ from ours; run "
            "reconcile and resolve the difference first, or credit an amount instead of a line."
        )
    ids = {li.id: sid for li, (sid, _d, _a) in zip(local, remote, strict=True)}
    return [ids.get(w) if w else None for w in wanted]


def preview(engine: Engine, gw: Gateway, ask: CreditAsk) -> tuple[CreditPlan, str]:
    """The checked plan and Stripe's preview of it (nothing is created anywhere)."""
    with session_scope(engine) as s:
        invoice = find_invoice(s, ask.invoice)
        refuse_state(invoice, invoice.number or f"#{invoice.id}")
        remote = stripe_invoices.read_invoice(gw, invoice.stripe_invoice_id or "")
        plan_ = plan(s, ask, remote)
        stripe_lines = _stripe_line_ids(s, gw, plan_)
    try:
        shown = stripe_cn.preview(gw, _request(plan_, stripe_lines, {}))
    except StripeFailure as exc:
        raise ValidationError(f"Stripe refuses this credit note: {exc}") from None
    if shown.total != plan_.amount_minor:
        raise PaymentProviderError(
            f"Stripe's preview totals {display(shown.total, plan_.currency)}, not "
            f"{display(plan_.amount_minor, plan_.currency)}; reload the invoice and try again."
        )
    return plan_, plan_.describe()


def _claim(engine: Engine, plan_: CreditPlan, actor: str, now: datetime) -> tuple[CreditNote, bool]:
    """The issuing (or already issued) note of this request; (note, created now)."""
    with session_scope(engine) as s:
        existing = s.exec(
            select(CreditNote).where(CreditNote.request_key == plan_.request_key)
        ).first()
        if existing is not None:
            return existing, False
    refund, balance, out_of_band = plan_.split
    try:
        with session_scope(engine) as s:
            note = CreditNote(
                invoice_id=plan_.invoice_id,
                customer_id=plan_.customer_id,
                currency=plan_.currency,
                status=CreditNoteStatus.ISSUING,
                reason=plan_.reason,
                memo=plan_.memo,
                settlement=plan_.settlement,
                amount_minor=plan_.amount_minor,
                pre_payment_minor=plan_.pre_payment_minor,
                post_payment_minor=plan_.post_payment_minor,
                refund_minor=refund,
                customer_balance_minor=balance,
                out_of_band_minor=out_of_band,
                request_key=plan_.request_key,
                created_by=actor,
                created_at=now,
            )
            s.add(note)
            s.flush()
            for pos, line in enumerate(plan_.lines):
                s.add(
                    CreditNoteLine(
                        credit_note_id=note.id or 0,
                        position=pos,
                        invoice_line_id=line.invoice_line_id,
                        description=line.description,
                        quantity=Decimal(line.quantity) if line.quantity else None,
                        amount_minor=line.amount_minor,
                    )
                )
            # Checked again inside the claim: notes issued since the plan was read count too.
            invoice = s.get(Invoice, plan_.invoice_id)
            if invoice is None or credited_minor(s, plan_.invoice_id) > invoice.total_minor:
                raise ValidationError(
                    f"Invoice {plan_.invoice_number} was credited by someone else meanwhile; "
                    "nothing was sent. Reload it and try again."
                )
        return note, True
    except IntegrityError:
        with session_scope(engine) as s:
            same = s.exec(
                select(CreditNote).where(CreditNote.request_key == plan_.request_key)
            ).first()
            if same is not None:
                return same, False  # a concurrent click of the same request won
            busy = s.exec(
                select(CreditNote).where(
                    CreditNote.invoice_id == plan_.invoice_id,
                    CreditNote.status == CreditNoteStatus.ISSUING,
                )
            ).first()
        who = f" by {busy.created_by} (since {busy.created_at:%H:%M} UTC)" if busy else ""
        raise ValidationError(
            f"Invoice {plan_.invoice_number} is being credited{who}; nothing was sent. Wait "
            "for it to finish (or run that request again to finish it), then reload."
        ) from None


def _request_of(
    session: Session, gw: Gateway, note: CreditNote, invoice: Invoice, install_id: str
) -> stripe_cn.CreditNoteRequest:
    """The Stripe request of a claimed note, rebuilt from what was stored: a retry sends the
    very same parameters (Stripe refuses a reused key with others)."""
    stored = list(
        session.exec(
            select(CreditNoteLine)
            .where(CreditNoteLine.credit_note_id == note.id)
            .order_by(col(CreditNoteLine.position))
        ).all()
    )
    plan_ = CreditPlan(
        invoice_id=invoice.id or 0,
        invoice_number=invoice.number or f"#{invoice.id}",
        stripe_invoice_id=invoice.stripe_invoice_id or "",
        customer_id=invoice.customer_id,
        currency=invoice.currency,
        reason=note.reason,
        memo=note.memo,
        lines=[
            PlannedLine(
                li.description,
                li.amount_minor,
                li.invoice_line_id,
                int(li.quantity) if li.quantity is not None else None,
            )
            for li in stored
        ],
        amount_minor=note.amount_minor,
        pre_payment_minor=note.pre_payment_minor,
        post_payment_minor=note.post_payment_minor,
        settlement=note.settlement,
        left_before_minor=0,
        request_key=note.request_key,
    )
    metadata = stripe_cn.credit_note_metadata(
        credit_note_id=note.id or 0, invoice_id=invoice.id or 0, install_id=install_id
    )
    return _request(plan_, _stripe_line_ids(session, gw, plan_), metadata)


def credit_snapshot(invoice: Invoice) -> dict[str, object]:
    """The invoice's credit figures for an audit entry's before and after (minor units)."""
    return {
        "status": invoice.display_status,
        "credited_minor": invoice.credited_minor,
        "amount_paid_minor": invoice.amount_paid_minor,
        "amount_refunded_minor": invoice.amount_refunded_minor,
        "currency": invoice.currency,
    }


def _send(
    engine: Engine, gw: Gateway, identity: Identity, note_id: int, *, resume: bool, now: datetime
) -> IssueResult:
    with session_scope(engine) as s:
        note = s.get(CreditNote, note_id)
        invoice = s.get(Invoice, note.invoice_id) if note is not None else None
        assert note is not None and invoice is not None
        keys = keys_for(s)
        request = _request_of(s, gw, note, invoice, keys.namespace)
    label = invoice.number or f"#{invoice.id}"
    try:
        found = None
        if resume:  # an earlier try may have reached Stripe after its key expired
            found = stripe_cn.find(
                gw, invoice=request.invoice, local_credit_note_id=note_id, install_id=keys.namespace
            )
        remote_note = found or stripe_cn.create(gw, request, key=keys.credit_note(note_id))
    except StripeFailure as exc:
        if exc.kind in ("invalid", "idempotency"):
            with session_scope(engine) as s:  # Stripe created nothing: the claim goes
                for line in s.exec(
                    select(CreditNoteLine).where(CreditNoteLine.credit_note_id == note_id)
                ).all():
                    s.delete(line)
                s.flush()
                gone = s.get(CreditNote, note_id)
                if gone is not None:
                    s.delete(gone)
            raise ValidationError(
                f"Stripe refused the credit note; nothing was issued: {exc}"
            ) from None
        with session_scope(engine) as s:
            row = s.get(CreditNote, note_id)
            if row is not None:
                row.last_error = str(exc)
                s.add(row)
        raise PaymentProviderError(
            f"{exc} The credit note on invoice {label} is recorded as being issued; run the "
            "same request again to finish it (it is never issued twice)."
        ) from None
    remote_invoice = stripe_invoices.read_invoice(gw, request.invoice)
    with session_scope(engine) as s:
        note = s.get(CreditNote, note_id)
        invoice = s.get(Invoice, note.invoice_id) if note is not None else None
        assert note is not None and invoice is not None
        before = credit_snapshot(invoice)
        note.status = CreditNoteStatus(remote_note.status)
        note.stripe_credit_note_id = remote_note.id
        note.number = remote_note.number
        note.pdf = remote_note.pdf
        note.issued_at = now
        note.last_error = None
        mirror_invoice(invoice, remote_invoice, now)
        if note.refund_minor:
            # The charge.refunded event says the same later (an absolute figure, so no double).
            invoice.amount_refunded_minor = min(
                invoice.amount_paid_minor, invoice.amount_refunded_minor + note.refund_minor
            )
        s.add_all([note, invoice])
        audit.record(
            s,
            actor=identity.actor,
            action="credit_note.issue",
            target=f"invoice:{invoice.id}",
            before=before,
            after={
                **credit_snapshot(invoice),
                "credit_note": remote_note.number,
                "stripe_credit_note_id": remote_note.id,
                "amount_minor": note.amount_minor,
                "reason": note.reason,
                "settlement": note.settlement,
                "memo": note.memo,
            },
            at=now,
        )
        number = note.number
        amount = display(note.amount_minor, note.currency)
    return IssueResult(note_id, number, True, f"Credit note {number} issued: {amount} on {label}.")


def issue(
    engine: Engine, gw: Gateway, identity: Identity, ask: CreditAsk, *, now: datetime | None = None
) -> IssueResult:
    """Issue the credit note `ask` describes, or finish or report the same request's note.

    ValidationError (nothing sent) for a request Stripe would refuse or that another admin's
    credit note in flight blocks; PaymentProviderError when Stripe failed mid-way (re-run it).
    """
    require(identity, "admin", "issue credit notes")
    now = now or utcnow()
    with session_scope(engine) as s:
        invoice = find_invoice(s, ask.invoice)
        existing = s.exec(
            select(CreditNote).where(CreditNote.request_key == ask.digest(invoice.id or 0))
        ).first()
        label = invoice.number or f"#{invoice.id}"
        refuse_state(invoice, label)
    if existing is not None and existing.status != CreditNoteStatus.ISSUING:
        return _unchanged(existing, label)
    if existing is not None:
        return _send(engine, gw, identity, existing.id or 0, resume=True, now=now)
    remote = stripe_invoices.read_invoice(gw, invoice.stripe_invoice_id or "")
    with session_scope(engine) as s:
        plan_ = plan(s, ask, remote)
        _stripe_line_ids(s, gw, plan_)  # refuses lines that do not match Stripe's, before a claim
    note, created = _claim(engine, plan_, identity.actor, now)
    if not created and note.status != CreditNoteStatus.ISSUING:
        return _unchanged(note, label)
    return _send(engine, gw, identity, note.id or 0, resume=not created, now=now)


def _unchanged(note: CreditNote, label: str) -> IssueResult:
    when = f" on {note.issued_at:%Y-%m-%d %H:%M} UTC" if note.issued_at else ""
    return IssueResult(
        note.id or 0,
        note.number,
        False,
        f"Credit note {note.number} ({display(note.amount_minor, note.currency)}, {note.status}) "
        f"was issued for this same request on invoice {label}{when}; nothing changed. Change "
        "the memo to issue another one.",
    )


def notes_of(session: Session, invoice_id: int) -> list[tuple[CreditNote, list[CreditNoteLine]]]:
    """The invoice's credit notes (oldest first) with their lines, for pages and exports."""
    notes = session.exec(
        select(CreditNote).where(CreditNote.invoice_id == invoice_id).order_by(col(CreditNote.id))
    ).all()
    out = []
    for note in notes:
        lines = session.exec(
            select(CreditNoteLine)
            .where(CreditNoteLine.credit_note_id == note.id)
            .order_by(col(CreditNoteLine.position))
        ).all()
        out.append((note, list(lines)))
    return out


def apply_stripe_credit_note(
    session: Session, gw: Gateway, credit_note_id: str, now: datetime
) -> int | None:
    """A credit note event (credit_note.created, .updated, .voided): take the note's status and
    its invoice's credit totals from Stripe. Returns the local invoice id, None when the
    invoice is not ours (reconciliation reports notes made outside this tool)."""
    remote = stripe_cn.read_credit_note(gw, credit_note_id)
    note = session.exec(
        select(CreditNote).where(CreditNote.stripe_credit_note_id == remote.id)
    ).first()
    if note is not None:
        note.status = CreditNoteStatus(remote.status)
        note.number = remote.number or note.number
        if note.status == CreditNoteStatus.VOID and note.voided_at is None:
            note.voided_at = now
        session.add(note)
    invoice = session.exec(
        select(Invoice).where(Invoice.stripe_invoice_id == (remote.invoice or ""))
    ).first()
    if invoice is None:
        return None
    mirror_invoice(invoice, stripe_invoices.read_invoice(gw, invoice.stripe_invoice_id or ""), now)
    session.add(invoice)
    return invoice.id
