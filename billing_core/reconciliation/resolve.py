"""Resolving reconciliation diffs: accept with a note, schedule a true-up on the next invoice, or
sync the local invoice from Stripe. Each resolution is audited with the acting admin.

Each names the diff and the `version` the admin saw: the diff moves on with a compare-and-set in
the database (billing_core/versions.py), so of two admins resolving the same diff one is refused
with StaleVersion, and a click from a stale page never lands on another diff or version.
"""

from __future__ import annotations

import logging
from datetime import datetime
from typing import Any

from sqlmodel import Session, select

from billing_core import audit
from billing_core.auth import Identity, require
from billing_core.errors import PaymentProviderError, ValidationError
from billing_core.models import (
    Invoice,
    ReconciliationDiff,
    TrueUp,
)
from billing_core.periods import utcnow
from billing_core.reconciliation.diffing import (
    AWS_KINDS,
    STRIPE_KINDS,
    TRUE_UP_KINDS,
)
from billing_core.reconciliation.gather import DEMO_SCOPE
from billing_core.states import DiffResolution, DiffStatus, InvoiceStatus
from billing_core.stripe import invoices as stripe_invoices
from billing_core.stripe.gateway import Gateway
from billing_core.stripe.mapping import parse_invoice
from billing_core.versions import claim

log = logging.getLogger(__name__)


def _section(kind: str) -> str:
    if kind in STRIPE_KINDS:
        return "stripe"
    return "aws" if kind in AWS_KINDS else "usage"


def _diff_or_error(session: Session, diff_id: int) -> ReconciliationDiff:
    diff = session.get(ReconciliationDiff, diff_id)
    if diff is None:
        raise ValidationError(f"Reconciliation diff #{diff_id} does not exist: reload the page.")
    return diff


def _claim_open(
    session: Session, identity: Identity, diff_id: int, seen_version: int, now: datetime
) -> ReconciliationDiff:
    """The diff at `seen_version`, moved to the next version (StaleVersion otherwise), open."""
    diff = claim(
        session,
        ReconciliationDiff,
        diff_id,
        seen_version,
        actor=identity.actor,
        now=now,
        what=f"Difference #{diff_id}",
    )
    if diff.status != DiffStatus.OPEN:
        raise ValidationError(
            f"Difference #{diff_id} is {diff.status} ({diff.resolution or 'no resolution'} by "
            f"{diff.resolved_by or 'reconciliation'}); there is nothing to resolve."
        )
    return diff


def _snapshot(diff: ReconciliationDiff) -> dict[str, Any]:
    return {
        "status": diff.status,
        "resolution": diff.resolution,
        "note": diff.resolution_note,
        "kind": diff.kind,
        "subject": diff.subject,
        "delta_minor": diff.delta_minor,
    }


def _resolve(
    session: Session,
    identity: Identity,
    diff: ReconciliationDiff,
    resolution: DiffResolution,
    note: str | None,
    now: datetime,
    extra: dict[str, Any] | None = None,
) -> ReconciliationDiff:
    before = _snapshot(diff)
    diff.status = DiffStatus.RESOLVED
    diff.resolution = resolution
    diff.resolution_note = note
    diff.resolved_by = identity.actor
    diff.resolved_at = now
    session.add(diff)
    audit.record(
        session,
        actor=identity.actor,
        action=f"reconcile.{resolution}",
        target=f"diff:{diff.id}",
        before=before,
        after={**_snapshot(diff), **(extra or {})},
        at=now,
    )
    session.flush()
    return diff


def accept_diff(
    session: Session,
    identity: Identity,
    diff_id: int,
    note: str,
    *,
    seen_version: int,
    now: datetime | None = None,
) -> ReconciliationDiff:
    """Accept a difference as explained; the note says why (required).

    StaleVersion when the diff is no longer at `seen_version`; nothing is written then.
    """
    require(identity, "admin", "resolve reconciliation diffs")
    if not note or not note.strip():
        raise ValidationError("Accepting a difference needs a note saying why it is fine.")
    now = now or utcnow()
    diff = _claim_open(session, identity, diff_id, seen_version, now)
    return _resolve(session, identity, diff, DiffResolution.ACCEPTED, note.strip(), now)


def true_up_description(diff: ReconciliationDiff) -> str:
    what = diff.subject.rsplit(":", 1)[-1]
    if diff.kind == "aws_restatement":
        return f"AWS adjustment for {diff.period} ({what})"
    return f"Usage adjustment for {diff.period} ({what})"


def schedule_true_up(
    session: Session,
    identity: Identity,
    diff_id: int,
    note: str | None = None,
    *,
    seen_version: int,
    now: datetime | None = None,
) -> TrueUp:
    """Turn a restatement or usage diff into a line on the customer's next invoice (once).

    StaleVersion when the diff is no longer at `seen_version`; nothing is written then.
    """
    require(identity, "admin", "schedule true-ups")
    now = now or utcnow()
    diff = _claim_open(session, identity, diff_id, seen_version, now)
    if diff.kind not in TRUE_UP_KINDS:
        raise ValidationError(
            f"A true-up is for AWS restatements and usage differences, not {diff.kind!r}: "
            "sync from Stripe or accept with a note instead."
        )
    if diff.customer_id is None or not diff.currency or diff.delta_minor == 0:
        raise ValidationError("This difference has no customer or amount to true up.")
    existing = session.exec(select(TrueUp).where(TrueUp.diff_id == diff.id)).first()
    true_up = existing or TrueUp(
        customer_id=diff.customer_id,
        source_period=diff.period,
        description=true_up_description(diff),
        amount_minor=diff.delta_minor,
        currency=diff.currency,
        diff_id=diff.id,
        created_by=identity.actor,
    )
    session.add(true_up)
    session.flush()
    _resolve(
        session,
        identity,
        diff,
        DiffResolution.TRUE_UP,
        (note or "").strip() or None,
        now,
        extra={
            "true_up_id": true_up.id,
            "amount_minor": true_up.amount_minor,
            "currency": true_up.currency,
        },
    )
    return true_up


# Stripe statuses a local invoice may take over when syncing.
_SYNCABLE_STATUSES = frozenset(InvoiceStatus)


def sync_from_stripe(
    session: Session,
    identity: Identity,
    diff_id: int,
    *,
    seen_version: int,
    reader: Gateway | None = None,
    now: datetime | None = None,
) -> ReconciliationDiff:
    """Take the payment status (and link) of a status diff from Stripe, re-reading the invoice.

    Stripe is the source of truth for payment status (DESIGN.md section 7). Demo findings have
    no Stripe object behind them, so they take the remote status the demo run recorded.
    StaleVersion when the diff is no longer at `seen_version`; nothing is written then.
    """
    require(identity, "admin", "sync invoices from Stripe")
    diff = _diff_or_error(session, diff_id)
    if diff.kind != "status" or diff.invoice_id is None:
        raise ValidationError(
            f"Sync from Stripe applies to status differences; for {diff.kind!r} accept with a "
            "note or schedule a true-up."
        )
    invoice = session.get(Invoice, diff.invoice_id)
    if invoice is None:
        raise ValidationError(f"Local invoice #{diff.invoice_id} no longer exists.")
    before = {"status": invoice.display_status, "stripe_invoice_id": invoice.stripe_invoice_id}
    now = now or utcnow()
    remote = None
    if diff.subject.startswith(DEMO_SCOPE):
        status = (diff.remote_value or "").split(" ", 1)[0]
    else:
        stripe_id = invoice.stripe_invoice_id or _stripe_id_in(diff.remote_value)
        if reader is None or not stripe_id:
            raise PaymentProviderError(
                "Syncing needs Stripe: set STRIPE_API_KEY (or STRIPE_API_BASE) and try again."
            )
        raw = stripe_invoices.invoice_or_none(reader, stripe_id)
        if raw is None:
            raise PaymentProviderError(
                f"Stripe has no invoice {stripe_id}; accept the diff with a note."
            )
        remote = parse_invoice(raw)
        status = remote.status  # Stripe's, as Stripe has it: the diff compared that
    if status not in _SYNCABLE_STATUSES:
        raise ValidationError(f"Stripe status {status!r} cannot be applied to a local invoice.")
    # Claimed after reading Stripe: the row is held only for the local writes.
    diff = _claim_open(session, identity, diff_id, seen_version, now)
    if remote is not None:
        invoice.stripe_invoice_id = remote.id
        invoice.amount_paid_minor = remote.amount_paid or invoice.amount_paid_minor
        invoice.hosted_invoice_url = remote.hosted_invoice_url or invoice.hosted_invoice_url
        invoice.number = remote.number or invoice.number
    if status == InvoiceStatus.PAID and invoice.paid_at is None:
        invoice.paid_at = now
        invoice.amount_paid_minor = invoice.amount_paid_minor or invoice.total_minor
    invoice.status = InvoiceStatus(status)
    invoice.outcome = None  # Stripe's status replaces a local outcome
    invoice.updated_at = now
    session.add(invoice)
    audit.record(
        session,
        actor=identity.actor,
        action="invoice.sync_from_stripe",
        target=f"invoice:{invoice.id}",
        before=before,
        after={"status": invoice.display_status, "stripe_invoice_id": invoice.stripe_invoice_id},
        at=now,
    )
    return _resolve(
        session, identity, diff, DiffResolution.SYNCED, f"status set to {status} from Stripe", now
    )


def _stripe_id_in(text: str | None) -> str | None:
    for token in (text or "").replace("(", " ").replace(")", " ").split():
        if token.startswith("in_"):
            return token
    return None
