"""Stripe customers: find this database's customer, create one, read one.

A lookup lists by email (consistent at once, unlike search) and matches our metadata,
install id included: another database sharing the account has a customer 1 with the same
email, and adopting it would bill one database's invoices to the other's customer.
"""

from __future__ import annotations

from billing_core.stripe.gateway import JSON, Gateway
from billing_core.stripe.mapping import customer_metadata, read_metadata

PAGE_SIZE = 100


def find_customer(
    gw: Gateway, *, local_customer_id: int, email: str, install_id: str
) -> str | None:
    """The Stripe customer this database made for a local customer earlier, if any."""
    doing = f"looking up the Stripe customer of local customer {local_customer_id}"
    params = {"email": email, "limit": PAGE_SIZE}
    for cus in gw.pages("/v1/customers", params, doing=doing):
        meta = read_metadata(cus)
        if meta.local_customer_id == local_customer_id and meta.install_id == install_id:
            return str(cus["id"])
    return None


def create_customer(
    gw: Gateway, *, key: str, local_customer_id: int, name: str, email: str, install_id: str
) -> str:
    params = {
        "name": name,
        "email": email,
        "metadata": customer_metadata(customer_id=local_customer_id, install_id=install_id),
    }
    cus = gw.request("post", "/v1/customers", params, key=key, doing=f"creating {name} in Stripe")
    return str(cus["id"])


def read_customer(gw: Gateway, customer_id: str) -> JSON:
    """The customer with its default payment method expanded (an id if that failed)."""
    expand = ["invoice_settings.default_payment_method"]
    doing = f"reading Stripe customer {customer_id}"
    return gw.read(f"/v1/customers/{customer_id}", expand, doing=doing)


def customer_or_none(gw: Gateway, customer_id: str) -> JSON | None:
    """The customer as Stripe has it (`deleted: true` once deleted), or None if there is none."""
    doing = f"reading Stripe customer {customer_id}"
    return gw.request_or_none(f"/v1/customers/{customer_id}", doing=doing)
