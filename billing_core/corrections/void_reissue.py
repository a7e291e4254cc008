"""Void an open invoice in Stripe and, if asked, reissue the month as a new revision.

Steps, each saved before the next (`InvoiceVoid.step`), so a run killed anywhere is finished by
running the same request again, and concurrent clicks share one row (unique per invoice):
1. requested: the row is recorded (audited). Credit notes on the invoice are refused from now.
2. voided: Stripe voids the invoice (idempotency key per invoice; a repeat after Stripe voided
   it finds it void); the local invoice mirrors it, so it stops being live.
3. drafted: the customer's month is priced again with today's costs, usage and pricing
   (invoicing/drafts.py) and saved as the next revision, naming the one it replaces; the true-ups
   the void invoice carried go to it. The move from voided to drafted is a compare-and-set in
   the same transaction as the insert, and a partial unique index keeps one live invoice per
   customer and month, so two processes never both draft.
4. done: the new revision is pushed to Stripe (invoicing/push.py, itself resumable; a run
   killed during the push is finished by the next `invoice-run` as well).
Paid invoices are not voided (credit them instead); drafts never issued have nothing to void.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import update
from sqlalchemy.engine import Engine
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, col, select

from billing_core import audit
from billing_core.auth import Identity, require
from billing_core.corrections.credit_plan import find_invoice
from billing_core.costs.snapshots import CostSource
from billing_core.db import session_scope
from billing_core.errors import PaymentProviderError, ValidationError
from billing_core.invoicing.drafts import SharedCosts, build_drafts, save_drafts
from billing_core.invoicing.push import Pusher
from billing_core.models import CreditNote, Invoice, InvoiceVoid, TrueUp
from billing_core.money import display
from billing_core.periods import Period, utcnow
from billing_core.states import CreditNoteStatus, InvoiceStatus, VoidStep
from billing_core.stripe import credit_notes as stripe_cn
from billing_core.stripe import invoices as stripe_invoices
from billing_core.stripe.errors import StripeFailure
from billing_core.stripe.gateway import Gateway
from billing_core.stripe.keys import keys_for
from billing_core.stripe.mapping import mirror_invoice

# Called with the step just saved ("requested", "voided", "drafted", "done"), and with
# "void_sent" after Stripe voided and before that is saved. Tests crash here.
StepHook = Callable[[str], None]
_VOIDABLE = (InvoiceStatus.OPEN, InvoiceStatus.UNCOLLECTIBLE)


@dataclass(frozen=True)
class VoidResult:
    invoice_id: int
    replacement_id: int | None
    changed: bool  # False: the same request was finished before; nothing happened now
    message: str


def _mark(hook: StepHook | None, step: str) -> None:
    if hook is not None:
        hook(step)


def _label(invoice: Invoice) -> str:
    return invoice.number or f"#{invoice.id}"


def _refuse(session: Session, invoice: Invoice) -> None:
    label = _label(invoice)
    if invoice.is_demo:
        raise ValidationError(
            f"Invoice {label} is a demo record, not a Stripe invoice: it cannot be voided."
        )
    if invoice.status == InvoiceStatus.DRAFT or not invoice.stripe_invoice_id:
        raise ValidationError(
            f"Invoice {label} was never issued: there is nothing to void; the next invoice run "
            "bills the draft as it is."
        )
    if invoice.status == InvoiceStatus.PAID:
        raise ValidationError(
            f"Invoice {label} is paid: Stripe voids only open invoices. Issue a credit note "
            "instead (credit-note --full with --refund, --credit-balance or --out-of-band)."
        )
    busy = session.exec(
        select(CreditNote).where(
            CreditNote.invoice_id == invoice.id, CreditNote.status == CreditNoteStatus.ISSUING
        )
    ).first()
    if busy is not None:
        raise ValidationError(
            f"Invoice {label} has a credit note being issued by {busy.created_by}; let it "
            "finish, then void."
        )


def _start(
    engine: Engine, identity: Identity, ref: str, reason: str, reissue: bool, now: datetime
) -> tuple[int, bool]:
    """The void row of the invoice (created now, or the earlier one); (row id, created now)."""
    with session_scope(engine) as s:
        invoice = find_invoice(s, ref)
        row = s.exec(select(InvoiceVoid).where(InvoiceVoid.invoice_id == invoice.id)).first()
        if row is not None:
            if reissue and not row.reissue:  # the same void, now with a reissue: carry on
                row.reissue = True
                if row.step == VoidStep.DONE:
                    row.step, row.finished_at = VoidStep.VOIDED, None
                s.add(row)
            return row.id or 0, False
        if invoice.status != InvoiceStatus.VOID:
            _refuse(s, invoice)
    try:
        with session_scope(engine) as s:
            invoice = find_invoice(s, ref)
            # Voided elsewhere (Stripe's dashboard): there is only the reissue left to do.
            step = VoidStep.VOIDED if invoice.status == InvoiceStatus.VOID else VoidStep.REQUESTED
            row = InvoiceVoid(
                invoice_id=invoice.id or 0,
                reason=reason,
                reissue=reissue,
                step=step,
                requested_by=identity.actor,
                requested_at=now,
            )
            s.add(row)
            s.flush()
            audit.record(
                s,
                actor=identity.actor,
                action="invoice.void_request",
                target=f"invoice:{invoice.id}",
                before={"status": invoice.display_status},
                after={"reason": reason, "reissue": reissue},
                at=now,
            )
            return row.id or 0, True
    except IntegrityError:  # a concurrent click recorded it first: continue that one
        with session_scope(engine) as s:
            invoice = find_invoice(s, ref)
            found = s.exec(select(InvoiceVoid).where(InvoiceVoid.invoice_id == invoice.id)).one()
            return found.id or 0, False


def _void_in_stripe(
    engine: Engine, gw: Gateway, identity: Identity, row_id: int, hook: StepHook | None
) -> None:
    with session_scope(engine) as s:
        row = s.get(InvoiceVoid, row_id)
        assert row is not None
        invoice = s.get(Invoice, row.invoice_id)
        assert invoice is not None
        key = keys_for(s).invoice_void(invoice.id or 0)
    stripe_id = invoice.stripe_invoice_id or ""
    try:
        stripe_cn.void_invoice(gw, stripe_id, key=key)
    except StripeFailure as exc:
        if exc.kind != "invalid":
            _note_error(engine, row_id, str(exc))
            raise PaymentProviderError(
                f"{exc} The void is recorded: run the same void again to finish it."
            ) from None
        # Refused: already void (a retry after its key expired), or paid meanwhile.
        if stripe_invoices.read_invoice(gw, stripe_id).status != InvoiceStatus.VOID:
            with session_scope(engine) as s:
                gone = s.get(InvoiceVoid, row_id)
                if gone is not None:
                    s.delete(gone)
            raise ValidationError(
                f"Stripe refused to void invoice {_label(invoice)}: {exc} Nothing changed."
            ) from None
    _mark(hook, "void_sent")
    remote = stripe_invoices.read_invoice(gw, stripe_id)
    now = utcnow()
    with session_scope(engine) as s:
        row = s.get(InvoiceVoid, row_id)
        local = s.get(Invoice, invoice.id)
        assert row is not None and local is not None
        before = {"status": local.display_status}
        mirror_invoice(local, remote, now)
        row.step = VoidStep.VOIDED if row.reissue else VoidStep.DONE
        row.finished_at = None if row.reissue else now
        row.last_error = None
        s.add_all([row, local])
        audit.record(
            s,
            actor=identity.actor,
            action="invoice.void",
            target=f"invoice:{local.id}",
            before=before,
            after={"status": local.display_status, "reason": row.reason},
            at=now,
        )


def _note_error(engine: Engine, row_id: int, message: str) -> None:
    with session_scope(engine) as s:
        row = s.get(InvoiceVoid, row_id)
        if row is not None:
            row.last_error = message
            s.add(row)


def _draft(
    engine: Engine,
    identity: Identity,
    row_id: int,
    source: CostSource,
    shared: SharedCosts | None,
    now: datetime,
) -> None:
    """Price the month again and save it as the next revision (compare-and-set on the step)."""
    try:
        with session_scope(engine) as s:
            row = s.get(InvoiceVoid, row_id)
            old = s.get(Invoice, row.invoice_id) if row is not None else None
            assert row is not None and old is not None
            moved: Any = s.execute(
                update(InvoiceVoid)
                .where(col(InvoiceVoid.id) == row_id, col(InvoiceVoid.step) == VoidStep.VOIDED)
                .values(step=VoidStep.DRAFTED)
                .execution_options(synchronize_session=False)
            )
            if moved.rowcount != 1:
                return  # another process drafted it meanwhile
            # The true-ups the void invoice billed go to its replacement.
            for true_up in s.exec(select(TrueUp).where(TrueUp.applied_invoice_id == old.id)).all():
                true_up.applied_invoice_id = None
                s.add(true_up)
            s.flush()
            drafts = build_drafts(
                s,
                Period.parse(old.period),
                source=source,
                customer_id=old.customer_id,
                shared=shared,
                reissue=True,
            )
            if not drafts.drafts:
                why = "; ".join(p.message for p in drafts.problems) or "nothing to bill"
                raise ValidationError(
                    f"Invoice {_label(old)} is void, but the month cannot be drafted again: {why}. "
                    "Fix that, then run the same void with --reissue again."
                )
            (new_id,) = save_drafts(
                s, drafts, run_id=None, revision=old.revision + 1, replaces_invoice_id=old.id
            )
            new = s.get(Invoice, new_id)
            assert new is not None
            s.execute(
                update(InvoiceVoid)
                .where(col(InvoiceVoid.id) == row_id)
                .values(replacement_invoice_id=new_id, last_error=None)
                .execution_options(synchronize_session=False)
            )
            audit.record(
                s,
                actor=identity.actor,
                action="invoice.reissue_draft",
                target=f"invoice:{old.id}",
                before={"total": display(old.total_minor, old.currency)},
                after={
                    "replacement_invoice_id": new_id,
                    "revision": new.revision,
                    "total": display(new.total_minor, new.currency),
                },
                at=now,
            )
    except ValidationError as exc:
        _note_error(engine, row_id, str(exc))
        raise
    except IntegrityError:
        # A concurrent reissue saved the live revision first: its row says so. Anything else
        # holding the month (a live invoice drafted another way) is said plainly.
        with Session(engine) as s:
            row = s.get(InvoiceVoid, row_id)
            if row is not None and row.replacement_invoice_id is not None:
                return
        raise ValidationError(
            "Another live invoice already bills this customer's month; void it first, or "
            "reload to see it."
        ) from None


def _push(
    engine: Engine, gw: Gateway, identity: Identity, row_id: int, hook: StepHook | None
) -> None:
    with session_scope(engine) as s:
        row = s.get(InvoiceVoid, row_id)
        assert row is not None and row.replacement_invoice_id is not None
        namespace = keys_for(s).namespace
        new_id = row.replacement_invoice_id
    pusher = Pusher(engine, gw, namespace=namespace, hook=(lambda _i, step: _mark(hook, step)))
    outcome = pusher.push(new_id)
    with Session(engine) as s:
        pushed = s.get(Invoice, new_id)
        issued = pushed is not None and pushed.status != InvoiceStatus.DRAFT
    if outcome.problem is not None and not issued:
        _note_error(engine, row_id, outcome.problem.message)
        raise PaymentProviderError(
            f"The new revision (invoice {new_id}) is drafted but not yet issued in Stripe: "
            f"{outcome.problem.message} Run the same void again (or the next invoice run) to "
            "push it."
        )
    now = utcnow()
    with session_scope(engine) as s:
        row = s.get(InvoiceVoid, row_id)
        new = s.get(Invoice, new_id)
        assert row is not None and new is not None
        # Issued is done: a declined charge is collected like any failed invoice (retry,
        # another payment method), not by reissuing again.
        problem = outcome.problem.message if outcome.problem is not None else None
        row.step, row.finished_at, row.last_error = VoidStep.DONE, now, problem
        s.add(row)
        audit.record(
            s,
            actor=identity.actor,
            action="invoice.reissue",
            target=f"invoice:{row.invoice_id}",
            before=None,
            after={
                "replacement_invoice_id": new_id,
                "number": new.number,
                "status": new.display_status,
                "total": display(new.total_minor, new.currency),
            },
            at=now,
        )


def void_invoice(
    engine: Engine,
    gw: Gateway,
    identity: Identity,
    ref: str,
    reason: str,
    *,
    reissue: bool,
    source: CostSource,
    shared: SharedCosts | None = None,
    now: datetime | None = None,
    hook: StepHook | None = None,
) -> VoidResult:
    """Void invoice `ref` (number or #id) in Stripe, and reissue the month if asked.

    Running the same request again finishes what a crash or an outage left, and changes nothing
    once it is done. `shared`: the shared-cost rule the reissue is priced with, as a run would
    (SharedCosts.of(settings)). ValidationError (nothing changed) for a draft, a paid invoice
    or one with a credit note in flight; PaymentProviderError when Stripe failed mid-way (run
    it again).
    """
    require(identity, "admin", "void invoices")
    reason = (reason or "").strip()
    if not reason:
        raise ValidationError("Voiding an invoice needs a reason (the audit log keeps it).")
    now = now or utcnow()
    row_id, created = _start(engine, identity, ref, reason, reissue, now)
    with session_scope(engine) as s:
        row = s.get(InvoiceVoid, row_id)
        assert row is not None
        step = row.step
    if step == VoidStep.DONE and not created:
        return _result(engine, row_id, changed=False)
    _mark(hook, "requested")
    if step == VoidStep.REQUESTED:
        _void_in_stripe(engine, gw, identity, row_id, hook)
        _mark(hook, "voided")
    with session_scope(engine) as s:
        row = s.get(InvoiceVoid, row_id)
        assert row is not None
        step, wants = row.step, row.reissue
    if wants and step == VoidStep.VOIDED:
        _draft(engine, identity, row_id, source, shared, now)
        _mark(hook, "drafted")
    with session_scope(engine) as s:
        row = s.get(InvoiceVoid, row_id)
        assert row is not None
        step = row.step
    if step == VoidStep.DRAFTED:
        _push(engine, gw, identity, row_id, hook)
        _mark(hook, "done")
    return _result(engine, row_id, changed=True)


def _result(engine: Engine, row_id: int, *, changed: bool) -> VoidResult:
    with Session(engine) as s:
        row = s.get(InvoiceVoid, row_id)
        assert row is not None
        old = s.get(Invoice, row.invoice_id)
        new = s.get(Invoice, row.replacement_invoice_id) if row.replacement_invoice_id else None
        assert old is not None
        text = f"Invoice {_label(old)} is void"
        if new is not None:
            total = display(new.total_minor, new.currency)
            text += (
                f"; reissued as revision {new.revision} (invoice {_label(new)}, {total}, "
                f"{new.display_status})"
            )
        if not changed:
            text += "; nothing changed (this void was done before)"
        return VoidResult(old.id or 0, new.id if new else None, changed, text + ".")
