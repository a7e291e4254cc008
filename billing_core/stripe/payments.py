"""Payment methods and money movements: default card, test cards, setup links, charges."""

from __future__ import annotations

from typing import Any

from billing_core.stripe.gateway import JSON, Gateway


def set_default_payment_method(
    gw: Gateway, customer_id: str, payment_method_id: str, *, key: str
) -> JSON:
    """Make a payment method the one invoices charge (Checkout setup mode does not do it)."""
    params = {"invoice_settings": {"default_payment_method": payment_method_id}}
    doing = f"setting the default payment method of {customer_id}"
    return gw.request("post", f"/v1/customers/{customer_id}", params, key=key, doing=doing)


def attach_test_card(gw: Gateway, *, customer: str, card: str, keys: tuple[str, str]) -> str:
    """Attach a Stripe test card token as the default (test mode and emulators only).

    `keys` are the attach and the make-default keys (keys.Keys.test_card).
    """
    doing = f"attaching a test card to {customer}"
    path = f"/v1/payment_methods/{card}/attach"
    pm = gw.request("post", path, {"customer": customer}, key=keys[0], doing=doing)
    set_default_payment_method(gw, customer, str(pm["id"]), key=keys[1])
    return str(pm["id"])


def create_setup_checkout(
    gw: Gateway,
    *,
    customer_id: str,
    currency: str,
    success_url: str,
    cancel_url: str,
    metadata: dict[str, str],
    key: str,
) -> JSON:
    """A Checkout session in setup mode: the customer enters a card, nothing is charged."""
    params: dict[str, Any] = {
        "mode": "setup",
        "customer": customer_id,
        # Stripe needs the currency in setup mode to choose the payment methods it offers.
        "currency": currency.lower(),
        "success_url": success_url,
        "cancel_url": cancel_url,
        "metadata": metadata,
    }
    doing = f"creating a card setup link for {customer_id}"
    return gw.request("post", "/v1/checkout/sessions", params, key=key, doing=doing)


def read_charge(gw: Gateway, charge_id: str) -> JSON:
    return gw.request("get", f"/v1/charges/{charge_id}", doing=f"reading Stripe charge {charge_id}")


def read_setup_intent(gw: Gateway, setup_intent_id: str) -> JSON:
    doing = f"reading Stripe setup intent {setup_intent_id}"
    return gw.request("get", f"/v1/setup_intents/{setup_intent_id}", doing=doing)
