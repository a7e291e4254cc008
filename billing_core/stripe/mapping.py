"""Stripe state in sync (DESIGN.md section 7): store every event, dedupe by id, apply by re-reading.

Two ways in, one handler. `sync` pulls the Events API onward from a cursor (cron, no public URL
needed); the webhook receiver stores what Stripe pushes. Applying an event never trusts its
payload: the object is read again from Stripe and the local mirror takes Stripe's current state,
so duplicates and out-of-order delivery end in the right place."""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from typing import Any

from sqlmodel import Session, select

from billing_core.errors import ConfigError, MoneyError
from billing_core.models import Customer, Invoice, ReconciliationDiff
from billing_core.money import format_minor
from billing_core.periods import Period, utcnow
from billing_core.states import InvoiceOutcome, InvoiceStatus, display_status

log = logging.getLogger(__name__)


def _ts(value: Any) -> datetime | None:
    return datetime.fromtimestamp(int(value), UTC) if isinstance(value, int) and value else None


def local_status(remote: dict[str, Any]) -> str:
    """The word shown for a Stripe invoice: an open invoice with a failed attempt is failed."""
    return display_status(str(remote.get("status") or InvoiceStatus.DRAFT), payment_outcome(remote))


def payment_outcome(remote: dict[str, Any]) -> InvoiceOutcome | None:
    """The local outcome a Stripe invoice implies: a failed payment, or nothing."""
    status = str(remote.get("status") or InvoiceStatus.DRAFT)
    if status == InvoiceStatus.OPEN and int(remote.get("attempt_count") or 0) > 0:
        # A successful attempt would have made it paid, so an attempted open invoice failed.
        return InvoiceOutcome.PAYMENT_FAILED
    return None


def _paying_intent(remote: dict[str, Any]) -> str | None:
    payments = remote.get("payments")
    for payment in (payments or {}).get("data", []) if isinstance(payments, dict) else []:
        inner = payment.get("payment") or {}
        if payment.get("status") == "paid" and inner.get("payment_intent"):
            return str(inner["payment_intent"])
    return None


def mirror_invoice(local: Invoice, remote: dict[str, Any], now: datetime) -> None:
    """Copy Stripe's current state of an invoice onto the local row (totals stay local)."""
    local.status = InvoiceStatus(str(remote.get("status") or InvoiceStatus.DRAFT))
    local.outcome = payment_outcome(remote)
    local.amount_paid_minor = int(remote.get("amount_paid") or 0)
    local.number = remote.get("number") or local.number
    local.hosted_invoice_url = remote.get("hosted_invoice_url") or local.hosted_invoice_url
    local.invoice_pdf = remote.get("invoice_pdf") or local.invoice_pdf
    local.attempt_count = int(remote.get("attempt_count") or 0)
    local.next_payment_attempt = _ts(remote.get("next_payment_attempt"))
    transitions = remote.get("status_transitions") or {}
    local.issued_at = _ts(transitions.get("finalized_at")) or local.issued_at
    if local.status == InvoiceStatus.PAID:
        local.paid_at = _ts(transitions.get("paid_at")) or local.paid_at or now
        local.last_error = None
    intent = _paying_intent(remote)
    if intent:
        local.stripe_payment_intent_id = intent
    if local.outcome == InvoiceOutcome.PAYMENT_FAILED and not local.last_error:
        retry = _ts(remote.get("next_payment_attempt"))
        when = f"next attempt {retry:%Y-%m-%d %H:%M} UTC" if retry else "no retry scheduled"
        local.last_error = f"Payment attempt {local.attempt_count} failed; {when}."
    local.updated_at = now


def describe_payment_method(pm: Any) -> str | None:
    """'card visa 4242' from a PaymentMethod object; no other card detail is kept."""
    if not isinstance(pm, dict):
        return None
    kind = str(pm.get("type") or "unknown")
    raw = pm.get(kind)
    details: dict[str, Any] = raw if isinstance(raw, dict) else {}
    brand = details.get("brand") or details.get("bank_name") or ""
    last4 = details.get("last4") or ""
    return " ".join(part for part in (kind, str(brand), str(last4)) if part)


def mirror_customer(local: Customer, remote: dict[str, Any], now: datetime) -> None:
    settings = remote.get("invoice_settings") or {}
    local.default_payment_method = describe_payment_method(settings.get("default_payment_method"))
    local.updated_at = now


def _finding_period(remote: dict[str, Any]) -> str:
    meta = remote.get("metadata") or {}
    try:
        return str(Period.parse(str(meta.get("period", ""))))
    except ConfigError:
        created = _ts(remote.get("created")) or utcnow()
        return str(Period.containing(created))


def record_missing_locally(session: Session, remote: dict[str, Any], now: datetime) -> None:
    """An invoice Stripe has and we do not: a reconciliation finding, upserted by subject."""
    period = _finding_period(remote)
    subject = str(remote["id"])
    currency = str(remote.get("currency") or "usd").upper()
    total = int(remote.get("total") or 0)
    try:
        shown = f"{format_minor(total, currency)} {currency}"
    except MoneyError:  # an exotic currency is still recorded, in minor units
        shown = f"{total} minor units {currency}"
    customer = session.exec(
        select(Customer).where(Customer.stripe_customer_id == remote.get("customer"))
    ).first()
    diff = session.exec(
        select(ReconciliationDiff).where(
            ReconciliationDiff.period == period,
            ReconciliationDiff.kind == "missing_locally",
            ReconciliationDiff.subject == subject,
        )
    ).first()
    if diff is None:
        diff = ReconciliationDiff(period=period, kind="missing_locally", subject=subject)
    diff.customer_id = customer.id if customer else None
    diff.currency = currency
    diff.local_value = None
    diff.remote_value = f"{remote.get('status')} {shown}"
    diff.delta_minor = total
    diff.last_seen_at = now
    session.add(diff)
