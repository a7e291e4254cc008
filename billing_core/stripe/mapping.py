"""The one mapping between Stripe objects (JSON as Stripe sends it) and local rows.

`parse_invoice` reads a Stripe invoice, metadata included, into a `StripeInvoice`; nothing
outside this module knows Stripe's field or metadata names. `mirror_invoice` copies Stripe's
state onto the local Invoice row (the invoice push, events and the payment retry all use it);
reconciliation builds its records from `invoice_figures`, the part of an invoice it compares
(read alone: a run lists tens of thousands). The metadata we write on Stripe objects
is spelled here too, install id included, so lookups never match another database's objects.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, NamedTuple

from sqlmodel import Session, select

from billing_core.errors import ConfigError, MoneyError
from billing_core.models import Customer, Invoice, ReconciliationDiff
from billing_core.money import format_minor
from billing_core.periods import Period
from billing_core.states import DisplayStatus, InvoiceOutcome, InvoiceStatus, display_status

SOURCE = "billing_core"
# Older invoices carried the local id as "invoice_id"; the first key is the one written now.
LOCAL_INVOICE_KEYS = ("local_invoice_id", "invoice_id")
RETIRED_KEY = "replaced_local_invoice_id"


@dataclass(frozen=True)
class Metadata:
    """What our metadata on a Stripe object says (None where it says nothing)."""

    local_invoice_id: int | None
    local_customer_id: int | None
    period: str | None
    install_id: str | None
    # Retired by a customer relink (retired_invoice_metadata): stands for no local invoice.
    retired: bool = False

    def mine(self, install_id: str) -> bool:
        """Written by this database (objects made before install ids count as ours)."""
        return self.install_id in (None, install_id)


def _int(value: Any) -> int | None:
    text = str(value or "").strip()
    return int(text) if text.isdigit() else None


def read_metadata(obj: Mapping[str, Any]) -> Metadata:
    meta: Mapping[str, Any] = obj.get("metadata") or {}
    local_id = None
    for key in LOCAL_INVOICE_KEYS:  # the first key holding an id other than 0
        found = _int(meta.get(key))
        if found:
            local_id = found
            break
    return Metadata(
        local_invoice_id=local_id,
        local_customer_id=_int(meta.get("local_customer_id")),
        period=str(meta["period"]) if meta.get("period") else None,
        install_id=str(meta["install_id"]) if meta.get("install_id") else None,
        retired=bool(meta.get(RETIRED_KEY)),
    )


def customer_metadata(*, customer_id: int, install_id: str) -> dict[str, str]:
    return {"local_customer_id": str(customer_id), "install_id": install_id, "source": SOURCE}


def invoice_metadata(
    *, invoice_id: int, customer_id: int, period: str, install_id: str
) -> dict[str, str]:
    return {
        "local_invoice_id": str(invoice_id),
        "local_customer_id": str(customer_id),
        "period": period,
        "install_id": install_id,
        "source": SOURCE,
    }


def retired_invoice_metadata(*, invoice_id: int) -> dict[str, str]:
    """Unhooks a Stripe invoice we stopped using from local invoice `invoice_id` ("" unsets)."""
    return {key: "" for key in LOCAL_INVOICE_KEYS} | {RETIRED_KEY: str(invoice_id)}


def _ts(value: Any) -> datetime | None:
    return datetime.fromtimestamp(int(value), UTC) if isinstance(value, int) and value else None


def _payments(obj: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    """The invoice's payments (`invoice_payment` objects), when they were expanded."""
    payments = obj.get("payments")
    return list(payments.get("data") or []) if isinstance(payments, Mapping) else []


def _intent(payment: Mapping[str, Any]) -> Any:
    """A payment's PaymentIntent: its id, or the object when expanded."""
    return (payment.get("payment") or {}).get("payment_intent")


def _paying_intent(obj: Mapping[str, Any]) -> str | None:
    for payment in _payments(obj):
        intent = _intent(payment)
        if isinstance(intent, Mapping):
            intent = intent.get("id")
        if payment.get("status") == "paid" and intent:
            return str(intent)
    return None


@dataclass(frozen=True)
class PaymentError:
    """Why the last payment attempt failed, as the PaymentIntent's `last_payment_error` says.

    Stripe keeps it on the PaymentIntent, not the invoice: `invoice.payments.data[].payment.
    payment_intent.last_payment_error` (code: card_declined, expired_card, ...; decline_code:
    insufficient_funds, generic_decline, ...; message: Stripe's sentence for the payer).
    """

    code: str | None
    decline_code: str | None
    message: str | None

    def describe(self) -> str:
        """'Your card has insufficient funds. (card_declined: insufficient_funds)'."""
        codes = ": ".join(c for c in (self.code, self.decline_code) if c)
        text = self.message or "The payment failed."
        return f"{text} ({codes})" if codes else text


def _payment_error(obj: Mapping[str, Any]) -> PaymentError | None:
    """The failure of the invoice's open payment (PaymentIntents expanded), or None."""
    for payment in sorted(_payments(obj), key=lambda p: not p.get("is_default")):
        intent = _intent(payment)
        error = intent.get("last_payment_error") if isinstance(intent, Mapping) else None
        if payment.get("status") == "open" and isinstance(error, Mapping):
            return PaymentError(
                code=error.get("code") or None,
                decline_code=error.get("decline_code") or None,
                message=error.get("message") or None,
            )
    return None


@dataclass(frozen=True)
class StripeInvoice:
    """A Stripe invoice as this project reads it."""

    id: str
    status: str  # Stripe's own: draft, open, paid, void, uncollectible
    customer: str | None
    customer_deleted: bool  # the customer was expanded and is deleted
    currency: str  # upper case, as stored locally
    total: int
    amount_paid: int
    attempt_count: int
    number: str | None
    hosted_invoice_url: str | None
    invoice_pdf: str | None
    created: datetime | None
    finalized_at: datetime | None
    paid_at: datetime | None
    due_date: datetime | None  # send-invoice only; None when charged automatically
    next_payment_attempt: datetime | None
    paying_intent: str | None  # the PaymentIntent that paid it (when payments were expanded)
    payment_error: PaymentError | None  # why the open payment failed (PaymentIntents expanded)
    lines: tuple[tuple[str, int], ...]  # (description, amount) of the lines Stripe embedded
    # Stripe embeds the first lines and says only whether there are more (`lines.has_more`),
    # never how many: the rest are read from /v1/invoices/{id}/lines when needed.
    all_lines_embedded: bool
    metadata: Metadata
    # Bill-to details Stripe froze when it finalized the invoice (None/empty: not given).
    customer_address: Mapping[str, Any] | None = None
    customer_tax_ids: tuple[Mapping[str, Any], ...] = ()
    # Credit notes as Stripe totals them on the invoice (minor units): before and after payment.
    pre_payment_credit_notes: int = 0
    post_payment_credit_notes: int = 0
    amount_remaining: int = 0  # still asked for: due less paid and less pre-payment credit

    @property
    def payment_outcome(self) -> InvoiceOutcome | None:
        """The local outcome Stripe's state implies: a failed payment, or nothing."""
        if self.status == InvoiceStatus.OPEN and self.attempt_count > 0:
            # A successful attempt would have made it paid, so an attempted open invoice failed.
            return InvoiceOutcome.PAYMENT_FAILED
        return None

    @property
    def local_status(self) -> DisplayStatus:
        """The word shown for it: an open invoice with a failed attempt is failed."""
        return display_status(InvoiceStatus(self.status), self.payment_outcome)

    @property
    def period(self) -> str:
        """The period it bills: its metadata, else the month it was created in."""
        return _billing_period(self.metadata.period, self.created)


@functools.lru_cache(maxsize=1024)
def _period_text(text: str) -> str | None:
    """`text` as a period ('2026-01'), None if it is not one (a run parses the same few)."""
    try:
        return str(Period.parse(text))
    except ConfigError:
        return None


def _billing_period(metadata_period: str | None, created: datetime | None) -> str:
    """The period an invoice bills: its metadata, else the month it was created in."""
    return _period_text(metadata_period or "") or str(
        Period.containing(created or datetime.fromtimestamp(0, UTC))
    )


def _customer_of(obj: Mapping[str, Any]) -> tuple[str | None, bool]:
    """The invoice's customer id (expanded or not) and whether it was deleted (if expanded)."""
    customer = obj.get("customer")
    deleted = False
    if isinstance(customer, Mapping):
        deleted = bool(customer.get("deleted"))
        customer = customer.get("id")
    return (str(customer) if customer else None), deleted


class InvoiceFigures(NamedTuple):
    """What reconciliation compares of a Stripe invoice (`invoice_figures`); the fields
    mean what StripeInvoice's of the same name mean. A named tuple: immutable, and quicker
    to build than a frozen dataclass 50,000 times."""

    id: str
    status: str
    customer: str | None
    customer_deleted: bool
    currency: str  # upper case
    total: int
    lines: tuple[tuple[str, int], ...]  # (description, amount) of the embedded lines
    all_lines_embedded: bool
    metadata: Metadata
    period: str  # the period it bills (StripeInvoice.period)
    pre_payment_credit_notes: int
    post_payment_credit_notes: int


def invoice_figures(obj: Mapping[str, Any]) -> InvoiceFigures:
    """A Stripe invoice read as reconciliation compares it: parse_invoice without the
    payment, date and bill-to fields (several times quicker, for a run's 50,000 invoices)."""
    customer, deleted = _customer_of(obj)
    embedded: Mapping[str, Any] = obj.get("lines") or {}
    metadata = read_metadata(obj)
    return InvoiceFigures(
        id=str(obj.get("id") or ""),
        status=str(obj.get("status") or "draft"),
        customer=customer,
        customer_deleted=deleted,
        currency=str(obj.get("currency") or "").upper(),
        total=int(obj.get("total") or 0),
        lines=line_pairs(embedded.get("data") or []),
        all_lines_embedded=not embedded.get("has_more"),
        metadata=metadata,
        # The creation month only when the metadata names no period (a datetime each costs).
        period=_period_text(metadata.period or "")
        or _billing_period(None, _ts(obj.get("created"))),
        pre_payment_credit_notes=int(obj.get("pre_payment_credit_notes_amount") or 0),
        post_payment_credit_notes=int(obj.get("post_payment_credit_notes_amount") or 0),
    )


def line_pairs(lines: Iterable[Mapping[str, Any]]) -> tuple[tuple[str, int], ...]:
    """(description, amount) of Stripe invoice lines."""
    return tuple((str(li.get("description") or ""), int(li.get("amount") or 0)) for li in lines)


def parse_invoice(obj: Mapping[str, Any]) -> StripeInvoice:
    customer, deleted = _customer_of(obj)
    embedded: Mapping[str, Any] = obj.get("lines") or {}
    lines = line_pairs(embedded.get("data") or [])
    transitions: Mapping[str, Any] = obj.get("status_transitions") or {}
    return StripeInvoice(
        id=str(obj.get("id") or ""),
        status=str(obj.get("status") or "draft"),
        customer=customer,
        customer_deleted=deleted,
        currency=str(obj.get("currency") or "").upper(),
        total=int(obj.get("total") or 0),
        amount_paid=int(obj.get("amount_paid") or 0),
        attempt_count=int(obj.get("attempt_count") or 0),
        number=obj.get("number") or None,
        hosted_invoice_url=obj.get("hosted_invoice_url") or None,
        invoice_pdf=obj.get("invoice_pdf") or None,
        created=_ts(obj.get("created")),
        finalized_at=_ts(transitions.get("finalized_at")),
        paid_at=_ts(transitions.get("paid_at")),
        due_date=_ts(obj.get("due_date")),
        next_payment_attempt=_ts(obj.get("next_payment_attempt")),
        paying_intent=_paying_intent(obj),
        payment_error=_payment_error(obj),
        lines=lines,
        all_lines_embedded=not embedded.get("has_more"),
        metadata=read_metadata(obj),
        customer_address=_address(obj.get("customer_address")),
        customer_tax_ids=tuple(
            {"type": t.get("type"), "value": t.get("value")}
            for t in obj.get("customer_tax_ids") or []
            if isinstance(t, Mapping)
        ),
        pre_payment_credit_notes=int(obj.get("pre_payment_credit_notes_amount") or 0),
        post_payment_credit_notes=int(obj.get("post_payment_credit_notes_amount") or 0),
        amount_remaining=int(obj.get("amount_remaining") or 0),
    )


def _address(value: Any) -> Mapping[str, Any] | None:
    if not isinstance(value, Mapping):
        return None
    kept = {k: v for k, v in value.items() if v}
    return kept or None


def local_status(obj: Mapping[str, Any]) -> DisplayStatus:
    """Stripe's invoice status in local terms (see StripeInvoice.local_status)."""
    return parse_invoice(obj).local_status


def mirror_invoice(local: Invoice, remote: StripeInvoice, now: datetime) -> None:
    """Copy Stripe's current state of an invoice onto the local row (totals stay local)."""
    local.stripe_invoice_id = remote.id
    local.status = InvoiceStatus(remote.status)
    local.outcome = remote.payment_outcome  # Stripe's state now: a re-read clears an old failure
    local.amount_paid_minor = remote.amount_paid
    local.number = remote.number or local.number
    local.hosted_invoice_url = remote.hosted_invoice_url or local.hosted_invoice_url
    local.invoice_pdf = remote.invoice_pdf or local.invoice_pdf
    local.attempt_count = remote.attempt_count
    local.pre_payment_credit_notes_minor = remote.pre_payment_credit_notes
    local.post_payment_credit_notes_minor = remote.post_payment_credit_notes
    local.next_payment_attempt = remote.next_payment_attempt
    local.issued_at = remote.finalized_at or local.issued_at
    # Charged automatically, it is due when Stripe attempts it: at finalization.
    local.due_at = remote.due_date or local.issued_at or local.due_at
    if local.status == InvoiceStatus.PAID:
        local.paid_at = remote.paid_at or local.paid_at or now
        local.last_error = None
    else:  # open again (the voided credit note that paid it): not paid, so no paid date
        local.paid_at = None
    if remote.paying_intent:
        local.stripe_payment_intent_id = remote.paying_intent
    # Only Stripe knows an address or tax ids; once kept they are history, never rewritten.
    if local.customer_address is None and remote.customer_address:
        local.customer_address = dict(remote.customer_address)
    if local.customer_tax_ids is None and remote.customer_tax_ids:
        local.customer_tax_ids = [dict(t) for t in remote.customer_tax_ids]
    failed = local.outcome == InvoiceOutcome.PAYMENT_FAILED
    if failed and (remote.payment_error or not local.last_error):
        # The reason from the PaymentIntent; no retry date here: stored text would still promise
        # it after it passed (pages show next_payment_attempt, and only while it is ahead).
        why = f": {remote.payment_error.describe()}" if remote.payment_error else ""
        local.last_error = f"Payment attempt {local.attempt_count} failed{why}."
    local.updated_at = now


def find_local_invoice(session: Session, remote: StripeInvoice, install_id: str) -> Invoice | None:
    """The local invoice a Stripe invoice mirrors: by its id, else by our metadata."""
    local = session.exec(select(Invoice).where(Invoice.stripe_invoice_id == remote.id)).first()
    if local is not None:
        return local
    # The push may not have saved the Stripe id yet (a webhook can beat it): use the metadata,
    # but only our own (another database sharing the account has an invoice 1 too).
    meta = remote.metadata
    if meta.local_invoice_id is not None and meta.mine(install_id):
        candidate = session.get(Invoice, meta.local_invoice_id)
        if candidate is not None and candidate.stripe_invoice_id is None:
            candidate.stripe_invoice_id = remote.id
            return candidate
    return None


def describe_payment_method(pm: Any) -> str | None:
    """'card visa 4242' from a PaymentMethod object; no other card detail is kept."""
    if not isinstance(pm, Mapping):
        return None
    kind = str(pm.get("type") or "unknown")
    raw = pm.get(kind)
    details: Mapping[str, Any] = raw if isinstance(raw, Mapping) else {}
    brand = details.get("brand") or details.get("bank_name") or ""
    last4 = details.get("last4") or ""
    return " ".join(part for part in (kind, str(brand), str(last4)) if part)


def default_payment_method(customer: Mapping[str, Any]) -> Any:
    """The customer's default payment method: an id, an expanded object, or None."""
    return (customer.get("invoice_settings") or {}).get("default_payment_method")


def mirror_customer(local: Customer, remote: Mapping[str, Any], now: datetime) -> None:
    method = default_payment_method(remote)
    # An id only (the expansion failed): the customer still has a method, whose card we keep.
    if isinstance(method, str):
        local.default_payment_method = local.default_payment_method or method
    else:
        local.default_payment_method = describe_payment_method(method)
    local.updated_at = now


def record_missing_locally(session: Session, remote: StripeInvoice, now: datetime) -> None:
    """An invoice Stripe has and we do not: a reconciliation finding, upserted by subject."""
    period = remote.period
    currency = remote.currency or "USD"
    try:
        shown = f"{format_minor(remote.total, currency)} {currency}"
    except MoneyError:  # an exotic currency is still recorded, in minor units
        shown = f"{remote.total} minor units {currency}"
    customer = session.exec(
        select(Customer).where(Customer.stripe_customer_id == remote.customer)
    ).first()
    diff = session.exec(
        select(ReconciliationDiff).where(
            ReconciliationDiff.period == period,
            ReconciliationDiff.kind == "missing_locally",
            ReconciliationDiff.subject == remote.id,
        )
    ).first()
    if diff is None:
        diff = ReconciliationDiff(period=period, kind="missing_locally", subject=remote.id)
    diff.customer_id = customer.id if customer else None
    diff.currency = currency
    diff.local_value = None
    diff.remote_value = f"{remote.status} {shown}"
    diff.delta_minor = remote.total
    diff.last_seen_at = now
    session.add(diff)
