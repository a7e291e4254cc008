"""Payment methods and failed payments: who can be charged, a card setup link, payment retry.

Both admin actions check the role here (not only in the page) and write an audit entry in the
same transaction as their local change.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlmodel import Session

from billing_core import audit
from billing_core.auth import Identity, require
from billing_core.errors import PaymentProviderError, ValidationError
from billing_core.models import Customer, Invoice
from billing_core.states import DisplayStatus
from billing_core.stripe import invoices as stripe_invoices
from billing_core.stripe import payments as stripe_payments
from billing_core.stripe.errors import StripeFailure
from billing_core.stripe.gateway import Gateway
from billing_core.stripe.keys import keys_for
from billing_core.stripe.mapping import customer_metadata, mirror_invoice

RETRYABLE = (DisplayStatus.OPEN, DisplayStatus.FAILED)


@dataclass(frozen=True)
class PaymentMethodInfo:
    kind: str  # card, sepa_debit, ... or "" when none
    brand: str
    last4: str

    @property
    def present(self) -> bool:
        return bool(self.kind)


def parse_payment_method(text: str | None) -> PaymentMethodInfo:
    """Read the mirrored 'card visa 4242' back into its parts."""
    parts = (text or "").split()
    if not parts:
        return PaymentMethodInfo("", "", "")
    last4 = parts[-1] if len(parts) > 1 and parts[-1].isdigit() else ""
    brand = " ".join(parts[1:-1] if last4 else parts[1:])
    return PaymentMethodInfo(parts[0], brand, last4)


def create_setup_link(
    session: Session,
    gateway: Gateway,
    identity: Identity,
    *,
    customer_id: int,
    return_url: str,
    now: datetime,
) -> str:
    """A Stripe Checkout link (setup mode) for the customer to save a card; audited."""
    require(identity, "admin", "create a payment-method setup link")
    customer = session.get(Customer, customer_id)
    if customer is None:
        raise ValidationError(f"Customer #{customer_id} does not exist.")
    if not customer.stripe_customer_id:
        raise ValidationError(
            f"{customer.name} has no Stripe customer yet; it is created with the customer's "
            "first invoice run. Run the invoicing (or create the customer in Stripe) first."
        )
    # A double click within the same second reuses the session instead of opening two.
    keys = keys_for(session)
    try:
        checkout = stripe_payments.create_setup_checkout(
            gateway,
            customer_id=customer.stripe_customer_id,
            currency=customer.currency,
            success_url=return_url,
            cancel_url=return_url,
            metadata=customer_metadata(customer_id=customer_id, install_id=keys.namespace),
            key=keys.setup_link(customer_id, now),
        )
    except StripeFailure as exc:
        raise exc.reworded(f"creating a setup link for {customer.name}") from None
    url = str(checkout.get("url") or "")
    audit.record(
        session,
        actor=identity.actor,
        action="payment_method.setup_link",
        target=f"customer:{customer_id}",
        after={"checkout_session": checkout.get("id"), "expires_at": checkout.get("expires_at")},
        at=now,
    )
    return url


@dataclass(frozen=True)
class SavedPaymentMethod:
    """A payment method saved on the Stripe customer: what an admin may charge instead."""

    id: str  # pm_...
    label: str  # "card visa 4242, expires 12/2034"
    default: bool


def saved_payment_methods(
    session: Session, gateway: Gateway, *, customer_id: int
) -> list[SavedPaymentMethod]:
    """The customer's payment methods in Stripe, its default first; [] with no Stripe customer."""
    customer = session.get(Customer, customer_id)
    if customer is None or not customer.stripe_customer_id:
        return []
    try:
        found = stripe_invoices.customer_payment_methods(gateway, customer.stripe_customer_id)
    except StripeFailure as exc:
        raise exc.reworded(f"listing the payment methods of {customer.name}") from None
    default = parse_payment_method(customer.default_payment_method)
    out = []
    for obj in found:
        kind = str(obj.get("type") or "")
        details = obj.get(kind) or {}
        brand, last4 = str(details.get("brand") or ""), str(details.get("last4") or "")
        expiry = (
            f", expires {details['exp_month']:02d}/{details['exp_year']}"
            if details.get("exp_month") and details.get("exp_year")
            else ""
        )
        label = " ".join(p for p in (kind, brand, last4) if p) + expiry
        is_default = bool(last4) and last4 == default.last4 and brand == default.brand
        out.append(SavedPaymentMethod(str(obj["id"]), label, is_default))
    return sorted(out, key=lambda m: not m.default)


@dataclass
class RetryResult:
    paid: bool
    message: str


def retry_payment(
    session: Session,
    gateway: Gateway,
    identity: Identity,
    *,
    invoice_id: int,
    now: datetime,
    payment_method: str | None = None,
) -> RetryResult:
    """Charge a failed or open invoice again with a new idempotency key; audited either way.

    `payment_method`: a payment method saved on the customer (pm_..., see
    `saved_payment_methods`) to charge instead of the customer's default.
    """
    require(identity, "admin", "retry a payment")
    invoice = session.get(Invoice, invoice_id)
    if invoice is None:
        raise ValidationError(f"Invoice #{invoice_id} does not exist.")
    if invoice.display_status not in RETRYABLE:
        raise ValidationError(
            f"Invoice {invoice.number or invoice_id} is {invoice.display_status}; only open or "
            "failed invoices can be charged again."
        )
    if not invoice.stripe_invoice_id:
        raise ValidationError(
            f"Invoice {invoice.number or invoice_id} is not in Stripe"
            + (" (a demo record)" if invoice.is_demo else "")
            + "; push it with the invoice run first."
        )
    before = {"status": invoice.display_status, "attempt_count": invoice.attempt_count}
    # Stripe replays a stored decline for a reused key: every retry gets its own key, saved
    # before the call so a crash right after it cannot make the next retry reuse it.
    invoice.pay_attempt += 1
    key = keys_for(session).invoice_pay(invoice_id, invoice.pay_attempt, invoice.key_generation)
    session.add(invoice)
    session.commit()
    doing = f"retrying invoice {invoice.number or invoice_id}"
    declined: PaymentProviderError | None = None
    try:
        stripe_invoices.pay(
            gateway,
            key=key,
            invoice_id=invoice.stripe_invoice_id,
            off_session=False,
            payment_method=payment_method,
        )
    except StripeFailure as exc:
        if exc.kind != "declined":
            session.rollback()
            raise exc.reworded(doing) from None
        declined = exc.reworded(doing)
    try:
        remote = stripe_invoices.read_invoice(gateway, invoice.stripe_invoice_id)
        mirror_invoice(invoice, remote, now)
    except StripeFailure as exc:
        if not exc.transient:
            raise
        # Stripe did not answer the read: the next sync mirrors it; the outcome is known already.
    if declined is not None:
        invoice.last_error = str(declined)
    session.add(invoice)
    audit.record(
        session,
        actor=identity.actor,
        action="invoice.retry_payment",
        target=f"invoice:{invoice_id}",
        before=before,
        after={
            "status": invoice.display_status,
            "attempt_count": invoice.attempt_count,
            "idempotency_key": key,
            "payment_method": payment_method or "default",
            "outcome": "declined" if declined else "paid",
        },
        at=now,
    )
    if declined is not None:
        return RetryResult(False, str(declined))
    return RetryResult(True, f"Invoice {invoice.number or invoice_id} is paid.")
