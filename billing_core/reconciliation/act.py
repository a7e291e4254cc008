"""Resolutions that act: each kind of diff offers what fixes it, and the fix is done, not noted.

| kind | actions (besides accept with a note) |
| --- | --- |
| status | sync the status from Stripe |
| credit_notes | sync the invoice and its credit notes from Stripe |
| amount, line | a credit note for what Stripe asks beyond our total; void and reissue |
| currency, customer | void and reissue |
| missing_in_stripe | push the invoice to Stripe |
| aws_restatement, usage | a true-up on the next invoice; a credit note when we billed too much |

`act_on_diff` runs one action for an admin (page or CLI): the diff must be open at the version
the admin saw; the Stripe work goes through the corrections and invoicing services, each
idempotent under its own keys (a credit note's request names the diff, so a repeat is the same
note); then the diff is resolved with a compare-and-set and audited. A repeat of an action that
already resolved the diff changes nothing and says so.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy.engine import Engine
from sqlmodel import Session, select

from billing_core import audit
from billing_core.auth import Identity, require
from billing_core.corrections import credit_notes
from billing_core.corrections.credit_plan import CreditAsk
from billing_core.corrections.void_reissue import void_invoice
from billing_core.costs.snapshots import CostSource
from billing_core.db import session_scope
from billing_core.errors import PaymentProviderError, ValidationError
from billing_core.invoicing.drafts import SharedCosts
from billing_core.invoicing.push import Pusher
from billing_core.models import CreditNote, Invoice, ReconciliationDiff
from billing_core.money import display, format_minor
from billing_core.periods import utcnow
from billing_core.reconciliation import resolve
from billing_core.reconciliation.diffing import TRUE_UP_KINDS
from billing_core.states import (
    CreditNoteReason,
    CreditNoteStatus,
    DiffResolution,
    DiffStatus,
)
from billing_core.stripe import credit_notes as stripe_cn
from billing_core.stripe import invoices as stripe_invoices
from billing_core.stripe.gateway import Gateway
from billing_core.stripe.keys import keys_for
from billing_core.stripe.mapping import mirror_invoice

ACTIONS = ("accept", "true_up", "sync", "credit_note", "reissue", "push")
# Actions that change Stripe (and sync of credit notes): run by `act_on_diff` with a gateway.
STRIPE_ACTIONS = ("credit_note", "reissue", "push")
# What each action resolves a diff as.
RESOLUTION = {
    "accept": DiffResolution.ACCEPTED,
    "true_up": DiffResolution.TRUE_UP,
    "sync": DiffResolution.SYNCED,
    "credit_note": DiffResolution.CREDIT_NOTE,
    "reissue": DiffResolution.REISSUED,
    "push": DiffResolution.PUSHED,
}


def credit_amount(kind: str, delta_minor: int) -> int:
    """What a credit note resolving the diff credits (0: a credit note does not fit it).

    delta = remote - local. Stripe asking more than we billed (amount, line: delta > 0) is
    credited by the excess; AWS or usage figures below what we billed (delta < 0) by the gap.
    """
    if kind in ("amount", "line"):
        return max(delta_minor, 0)
    if kind in TRUE_UP_KINDS:
        return max(-delta_minor, 0)
    return 0


def actions_for(kind: str, delta_minor: int = 0) -> list[str]:
    """The actions offered for a diff: accept with a note, then those that fix it."""
    out: list[str] = ["accept"]
    if kind in TRUE_UP_KINDS:
        out.append("true_up")
    if kind in ("status", "credit_notes"):
        out.append("sync")
    if credit_amount(kind, delta_minor):
        out.append("credit_note")
    if kind in ("amount", "line", "currency", "customer"):
        out.append("reissue")
    if kind == "missing_in_stripe":
        out.append("push")
    return out


def _open_diff(session: Session, diff_id: int) -> ReconciliationDiff:
    diff = session.get(ReconciliationDiff, diff_id)
    if diff is None:
        raise ValidationError(f"Reconciliation diff #{diff_id} does not exist: reload the page.")
    return diff


def _finish(
    session: Session,
    identity: Identity,
    diff_id: int,
    seen_version: int,
    action: str,
    note: str | None,
    now: datetime,
    extra: dict[str, object],
) -> str:
    diff = resolve._claim_open(session, identity, diff_id, seen_version, now)
    resolve._resolve(session, identity, diff, RESOLUTION[action], note, now, extra=extra)
    return f"Difference #{diff_id} resolved: {action.replace('_', ' ')}."


def act_on_diff(
    engine: Engine,
    gw: Gateway | None,
    identity: Identity,
    diff_id: int,
    action: str,
    *,
    seen_version: int | None = None,
    note: str | None = None,
    reason: str = CreditNoteReason.ORDER_CHANGE.value,
    settlement: str | None = None,
    source: CostSource | None = None,
    shared: SharedCosts | None = None,
    now: datetime | None = None,
) -> str:
    """Run `action` on diff `diff_id` (seen at `seen_version`; None: as it is now, for the CLI).

    Returns a sentence. ValidationError when the action does not fit the diff or the diff
    moved on (StaleVersion); PaymentProviderError when Stripe failed (run it again).
    """
    require(identity, "admin", "resolve reconciliation diffs")
    if action not in ACTIONS:
        raise ValidationError(f"Action {action!r} is not one of: {', '.join(ACTIONS)}.")
    now = now or utcnow()
    with session_scope(engine) as s:
        diff = _open_diff(s, diff_id)
        version = diff.version if seen_version is None else seen_version
        if diff.status == DiffStatus.RESOLVED and diff.resolution == RESOLUTION[action]:
            return (
                f"Difference #{diff_id} was resolved ({diff.resolution} by {diff.resolved_by}); "
                "nothing changed."
            )
        if action not in actions_for(diff.kind, diff.delta_minor):
            offered = ", ".join(actions_for(diff.kind, diff.delta_minor))
            raise ValidationError(
                f"{action.replace('_', ' ')} does not resolve differences of kind {diff.kind}; "
                f"this one offers: {offered}."
            )
        kind, delta, invoice_id = diff.kind, diff.delta_minor, diff.invoice_id
        if diff.status != DiffStatus.OPEN:
            resolve._claim_open(s, identity, diff_id, version, now)  # raises the sentence
    if action in ("accept", "true_up") or (action == "sync" and kind == "status"):
        with session_scope(engine) as s:
            if action == "accept":
                resolve.accept_diff(s, identity, diff_id, note or "", seen_version=version, now=now)
            elif action == "true_up":
                resolve.schedule_true_up(s, identity, diff_id, note, seen_version=version, now=now)
            else:
                resolve.sync_from_stripe(
                    s, identity, diff_id, seen_version=version, reader=gw, now=now
                )
        return f"Difference #{diff_id} resolved: {action.replace('_', ' ')}."
    if gw is None:
        raise PaymentProviderError(
            "This action needs Stripe: set STRIPE_API_KEY (or STRIPE_API_BASE) and try again."
        )
    if invoice_id is None:
        raise ValidationError(f"Difference #{diff_id} names no local invoice to act on.")
    ref = f"#{invoice_id}"
    extra: dict[str, object]
    if action == "credit_note":
        with Session(engine) as s:
            invoice = s.get(Invoice, invoice_id)
            assert invoice is not None
            currency = invoice.currency
        amount = credit_amount(kind, delta)
        result = credit_notes.issue(
            engine,
            gw,
            identity,
            CreditAsk(
                invoice=ref,
                mode="amount",
                reason=reason,
                amount=format_minor(amount, currency),
                settlement=settlement,
                # The diff in the memo: a repeat of this action is the same credit note.
                memo=f"Reconciliation difference #{diff_id} ({kind})",
            ),
            now=now,
        )
        extra = {"credit_note": result.number, "amount": display(amount, currency)}
    elif action == "reissue":
        if source is None:
            raise ValidationError("Reissuing needs the configured cost source (COST_METRIC).")
        done = void_invoice(
            engine,
            gw,
            identity,
            ref,
            f"Reconciliation difference #{diff_id} ({kind}): {note or 'reissued'}",
            reissue=True,
            source=source,
            shared=shared,
            now=now,
        )
        extra = {"replacement_invoice_id": done.replacement_id}
    elif action == "push":
        with session_scope(engine) as s:
            namespace = keys_for(s).namespace
        outcome = Pusher(engine, gw, namespace=namespace).push(invoice_id)
        if outcome.problem is not None:
            raise PaymentProviderError(
                f"Invoice {invoice_id} was not pushed: {outcome.problem.message}"
            )
        extra = {"status": outcome.status}
    else:
        extra = sync_credit_notes(engine, gw, identity, invoice_id, now)
    with session_scope(engine) as s:
        return _finish(s, identity, diff_id, version, action, note, now, extra)


def sync_credit_notes(
    engine: Engine, gw: Gateway, identity: Identity, invoice_id: int, now: datetime
) -> dict[str, object]:
    """Take the invoice's credit notes as Stripe has them: statuses of ours, and notes made in
    Stripe's dashboard recorded locally (as out of band, since we cannot tell). Audited."""
    with Session(engine) as s:
        invoice = s.get(Invoice, invoice_id)
        assert invoice is not None
        stripe_id = invoice.stripe_invoice_id or ""
    remote_invoice = stripe_invoices.read_invoice(gw, stripe_id)
    notes = stripe_cn.of_invoice(gw, stripe_id)
    added = changed = 0
    with session_scope(engine) as s:
        inv = s.get(Invoice, invoice_id)
        assert inv is not None
        before = {"credited_minor": inv.credited_minor}
        for note in notes:
            local = s.exec(
                select(CreditNote).where(CreditNote.stripe_credit_note_id == note.id)
            ).first()
            if local is None and note.local_id is not None:
                local = s.get(CreditNote, note.local_id)
            if local is None:
                local = CreditNote(
                    invoice_id=invoice_id,
                    customer_id=inv.customer_id,
                    currency=inv.currency,
                    reason=CreditNoteReason.ORDER_CHANGE,
                    memo="Issued in Stripe, recorded by reconciliation",
                    amount_minor=note.total,
                    pre_payment_minor=note.pre_payment,
                    post_payment_minor=note.post_payment,
                    refund_minor=note.refunded,
                    customer_balance_minor=note.balance,
                    out_of_band_minor=note.out_of_band,
                    request_key=f"stripe:{note.id}"[:64],
                    created_by=identity.actor,
                    created_at=now,
                    issued_at=now,
                )
                added += 1
            status = CreditNoteStatus(note.status)
            if local.status != status or local.stripe_credit_note_id != note.id:
                changed += 1
            local.status = status
            local.stripe_credit_note_id = note.id
            local.number = note.number
            local.pdf = note.pdf
            local.last_error = None
            s.add(local)
        mirror_invoice(inv, remote_invoice, now)
        s.add(inv)
        after: dict[str, object] = {
            "credited_minor": inv.credited_minor,
            "added": added,
            "changed": changed,
        }
        audit.record(
            s,
            actor=identity.actor,
            action="credit_note.sync",
            target=f"invoice:{invoice_id}",
            before=before,
            after=after,
            at=now,
        )
    return after
