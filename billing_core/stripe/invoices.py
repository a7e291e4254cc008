"""Stripe invoices: the push's create, add lines, finalize, pay, send; lookups and bulk reads.

Each write takes its idempotency key from keys.py; everything answers a StripeInvoice
(mapping.py) or Stripe's JSON, and fails with a StripeFailure.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from billing_core.states import InvoiceStatus
from billing_core.stripe.gateway import JSON, Gateway
from billing_core.stripe.mapping import StripeInvoice, parse_invoice, retired_invoice_metadata

# Stripe's maximum page size for list endpoints.
PAGE_SIZE = 100


def _path(invoice_id: str, action: str = "") -> str:
    return f"/v1/invoices/{invoice_id}" + (f"/{action}" if action else "")


def find_invoice(
    gw: Gateway, *, customer: str, local_invoice_id: int, install_id: str
) -> StripeInvoice | None:
    """The Stripe invoice created for a local invoice of this database, found by metadata.

    Listed per customer rather than searched: the list endpoint is consistent at once, while
    search can lag a minute behind a create, which is exactly the window a crash leaves.
    """
    doing = f"looking up the Stripe invoice of local invoice {local_invoice_id}"
    params = {"customer": customer, "limit": PAGE_SIZE}
    for obj in gw.pages("/v1/invoices", params, doing=doing):
        found = parse_invoice(obj)
        meta = found.metadata
        if meta.local_invoice_id == local_invoice_id and meta.mine(install_id):
            return found
    return None


# An invoice's payments with their PaymentIntents: which one paid it, and why the open one
# failed (`last_payment_error` lives on the PaymentIntent, not the invoice). One request:
# Stripe expands up to four levels deep (docs.stripe.com/expand).
PAYMENTS_WITH_INTENTS = "payments.data.payment.payment_intent"


def read_invoice(gw: Gateway, invoice_id: str) -> StripeInvoice:
    """The invoice as Stripe holds it now, with its payments and their PaymentIntents."""
    doing = f"reading Stripe invoice {invoice_id}"
    # Payments down to their PaymentIntents (the failure reason); the plain invoice if refused.
    return parse_invoice(gw.read(_path(invoice_id), [PAYMENTS_WITH_INTENTS], doing=doing))


def create_invoice(
    gw: Gateway,
    *,
    key: str,
    customer: str,
    currency: str,
    collection_method: str,
    days_until_due: int,
    metadata: dict[str, str],
    description: str,
) -> StripeInvoice:
    params: dict[str, Any] = {
        "customer": customer,
        "currency": currency.lower(),
        "auto_advance": False,  # we finalize and collect explicitly, step by step
        "collection_method": collection_method,
        "metadata": metadata,
        "description": description,
        "pending_invoice_items_behavior": "exclude",
    }
    if collection_method == "send_invoice":
        params["days_until_due"] = days_until_due
    doing = f"creating the Stripe invoice for {customer}"
    return parse_invoice(gw.request("post", "/v1/invoices", params, key=key, doing=doing))


def add_lines(
    gw: Gateway, *, key: str, invoice_id: str, lines: list[dict[str, Any]]
) -> StripeInvoice:
    doing = f"adding lines to Stripe invoice {invoice_id}"
    obj = gw.request("post", _path(invoice_id, "add_lines"), {"lines": lines}, key=key, doing=doing)
    return parse_invoice(obj)


def finalize(gw: Gateway, *, key: str, invoice_id: str) -> StripeInvoice:
    doing = f"finalizing Stripe invoice {invoice_id}"
    params = {"auto_advance": False}
    return parse_invoice(
        gw.request("post", _path(invoice_id, "finalize"), params, key=key, doing=doing)
    )


def pay(
    gw: Gateway,
    *,
    key: str,
    invoice_id: str,
    off_session: bool = True,
    payment_method: str | None = None,
) -> StripeInvoice:
    """Charge an open invoice; after a decline the key must be new (Stripe replays a decline).

    `payment_method`: a payment method saved on the customer to charge instead of its default.
    """
    doing = f"charging Stripe invoice {invoice_id}"
    params: dict[str, Any] = {"off_session": True} if off_session else {}
    if payment_method:
        params["payment_method"] = payment_method
    return parse_invoice(gw.request("post", _path(invoice_id, "pay"), params, key=key, doing=doing))


def send(gw: Gateway, *, key: str, invoice_id: str) -> StripeInvoice:
    doing = f"sending Stripe invoice {invoice_id}"
    return parse_invoice(gw.request("post", _path(invoice_id, "send"), key=key, doing=doing))


def mark_uncollectible(gw: Gateway, *, key: str, invoice_id: str) -> StripeInvoice:
    """Write an open invoice off: Stripe stops collecting it (it can still be paid or voided)."""
    doing = f"marking Stripe invoice {invoice_id} uncollectible"
    path = _path(invoice_id, "mark_uncollectible")
    return parse_invoice(gw.request("post", path, key=key, doing=doing))


def customer_payment_methods(gw: Gateway, customer_id: str) -> list[JSON]:
    """The payment methods saved on a Stripe customer (cards and others), newest first."""
    doing = f"listing the payment methods of {customer_id}"
    path = f"/v1/customers/{customer_id}/payment_methods"
    return list(gw.pages(path, {"limit": PAGE_SIZE}, doing=doing))


# -- bulk reads for reconciliation: plain JSON, customer expanded (a deleted one shows up
#    without one request per customer), one request per 100 invoices.


def invoices_created(gw: Gateway, created_gte: int, created_lt: int) -> Iterator[JSON]:
    """Every invoice created in [gte, lt), newest first, customer expanded."""
    params: dict[str, Any] = {
        "created": {"gte": created_gte, "lt": created_lt},
        "limit": PAGE_SIZE,
        "expand": ["data.customer"],
    }
    return gw.pages("/v1/invoices", params, doing="listing Stripe invoices for reconciliation")


def invoice_lines(gw: Gateway, invoice_id: str, embedded: list[JSON] | None = None) -> list[JSON]:
    """All lines of one invoice. Stripe embeds only the first ten in the invoice and no count;
    given those (`embedded`), the listing starts after them (one request per 100 more)."""
    doing = f"reading the lines of Stripe invoice {invoice_id}"
    params: dict[str, Any] = {"limit": PAGE_SIZE}
    first = list(embedded or [])
    if first:
        params["starting_after"] = first[-1]["id"]
    return first + list(gw.pages(_path(invoice_id, "lines"), params, doing=doing))


def invoice_or_none(gw: Gateway, invoice_id: str) -> JSON | None:
    """One invoice with its customer expanded, or None when Stripe has no such invoice."""
    doing = f"reading Stripe invoice {invoice_id}"
    return gw.request_or_none(_path(invoice_id), {"expand": ["customer"]}, doing=doing)


def unlink(gw: Gateway, *, key: str, invoice_id: str, replaced_by: int) -> None:
    """Drop our local invoice id from a Stripe invoice we stop using (it may be final).

    Without it, an event about the retired invoice would find the local invoice by metadata
    (mapping.find_local_invoice) while it waits for its new Stripe invoice, and mirror it.
    """
    params = {"metadata": retired_invoice_metadata(invoice_id=replaced_by)}
    gw.request("post", _path(invoice_id), params, key=key, doing=f"unlinking {invoice_id}")


def retire(gw: Gateway, *, key: str, invoice_id: str, status: str) -> None:
    """Void an open Stripe invoice, delete a draft; a final one (paid, void) is left as is."""
    if status == InvoiceStatus.DRAFT:
        gw.request("delete", _path(invoice_id), key=key, doing=f"deleting draft {invoice_id}")
    elif status in (InvoiceStatus.OPEN, InvoiceStatus.UNCOLLECTIBLE):
        gw.request("post", _path(invoice_id, "void"), key=key, doing=f"voiding {invoice_id}")
