"""The local Stripe test server answers only fields Stripe's specification has.

Every object the product reads (invoice, invoice line item, invoice payment, customer, payment
intent, charge, refund, credit note, customer balance transaction, setup intent, checkout
session, event, payment method, list objects) is
produced through the real stripe-python client and checked against the typed classes
stripe-python generates from Stripe's OpenAPI specification (tests/support/stripe_schema.py),
so a field the server invents (and the product might read) fails here.

Why the classes rather than the OpenAPI document itself (github.com/stripe/openapi,
openapi/spec3.json): the classes are generated from that document for the pinned API version,
come installed with the SDK the product already uses (stripe-python, MIT licensed), and keep the
multi-megabyte specification (no licence file in its repository) out of this one.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import stripe

from tests.support.stripe_schema import problems
from tests.support.stripe_server import DEFAULT_API_VERSION, StripeTestServer

API_KEY = "sk_test_local"


@pytest.fixture(scope="module")
def server() -> Iterator[StripeTestServer]:
    with StripeTestServer() as srv:
        yield srv


def _get(client: stripe.StripeClient, path: str, **params: Any) -> dict[str, Any]:
    data: dict[str, Any] = client.raw_request("get", path, **params).data
    return data


def _post(client: stripe.StripeClient, path: str, **params: Any) -> dict[str, Any]:
    data: dict[str, Any] = client.raw_request("post", path, **params).data
    return data


def _customer(client: stripe.StripeClient, card: str) -> str:
    cus = _post(client, "/v1/customers", email="ops@example.com", name="Example Ltd")
    pm = _post(client, f"/v1/payment_methods/{card}/attach", customer=cus["id"])
    _post(
        client,
        f"/v1/customers/{cus['id']}",
        invoice_settings={"default_payment_method": pm["id"]},
    )
    return str(cus["id"])


def _invoice(client: stripe.StripeClient, customer: str, lines: int) -> dict[str, Any]:
    inv = _post(
        client,
        "/v1/invoices",
        customer=customer,
        currency="usd",
        auto_advance=False,
        metadata={"local_invoice_id": "1"},
    )
    items = [{"amount": 100 + i, "description": f"line {i}"} for i in range(lines)]
    _post(client, f"/v1/invoices/{inv['id']}/add_lines", lines=items)
    return _post(client, f"/v1/invoices/{inv['id']}/finalize", auto_advance=False)


def _world(server: StripeTestServer) -> list[tuple[str, dict[str, Any]]]:
    """Every kind of answer the product reads, named by how it was obtained."""
    server.reset()
    client = stripe.StripeClient(API_KEY, base_addresses={"api": server.url})
    out: list[tuple[str, dict[str, Any]]] = []
    paying = _customer(client, "pm_card_visa")
    declining = _customer(client, "pm_card_chargeDeclinedInsufficientFunds")
    paid = _invoice(client, paying, lines=12)
    _post(client, f"/v1/invoices/{paid['id']}/pay", off_session=True)
    failed = _invoice(client, declining, lines=1)
    with pytest.raises(stripe.CardError) as declined:
        _post(client, f"/v1/invoices/{failed['id']}/pay", off_session=True)
    error = declined.value.json_body["error"]  # type: ignore[index]
    out += [("decline error payment_intent", error["payment_intent"])]
    out += [("decline error payment_method", error["payment_method"])]
    for inv in (paid, failed):
        out.append(("invoice", _get(client, f"/v1/invoices/{inv['id']}")))
        out.append(
            (
                "invoice, payments and their payment intents expanded",
                _get(
                    client,
                    f"/v1/invoices/{inv['id']}",
                    expand=["payments.data.payment.payment_intent", "customer"],
                ),
            )
        )
        out.append(("invoice lines", _get(client, f"/v1/invoices/{inv['id']}/lines", limit=100)))
        out.append(("invoice payments", _get(client, "/v1/invoice_payments", invoice=inv["id"])))
    out.append(("invoice list", _get(client, "/v1/invoices", limit=100, expand=["data.customer"])))
    out.append(
        (
            "customer",
            _get(
                client,
                f"/v1/customers/{paying}",
                expand=["invoice_settings.default_payment_method"],
            ),
        )
    )
    out.append(("customer list", _get(client, "/v1/customers", email="ops@example.com")))
    charge = server.charges()[0]
    out.append(("charge", _get(client, f"/v1/charges/{charge['id']}")))
    out.append(("payment intent", _get(client, f"/v1/payment_intents/{charge['payment_intent']}")))
    refund = _post(client, "/v1/refunds", charge=charge["id"], amount=50)
    out.append(("refund", _get(client, f"/v1/refunds/{refund['id']}")))
    out.append(("refunded charge", _get(client, f"/v1/charges/{charge['id']}")))
    note_params: dict[str, Any] = {
        "invoice": paid["id"],
        "amount": 30,
        "refund_amount": 10,
        "credit_amount": 10,
        "out_of_band_amount": 10,
        "reason": "order_change",
    }
    out.append(("credit note preview", _get(client, "/v1/credit_notes/preview", **note_params)))
    note = _post(client, "/v1/credit_notes", **note_params)
    out.append(("credit note", _get(client, f"/v1/credit_notes/{note['id']}")))
    out.append(("credit note list", _get(client, "/v1/credit_notes", invoice=paid["id"])))
    out.append(("credited invoice", _get(client, f"/v1/invoices/{paid['id']}")))
    out.append(
        (
            "customer balance transactions",
            _get(client, f"/v1/customers/{paying}/balance_transactions"),
        )
    )
    session = _post(
        client,
        "/v1/checkout/sessions",
        mode="setup",
        customer=paying,
        currency="usd",
        success_url="http://localhost/ok",
        cancel_url="http://localhost/cancel",
    )
    out.append(("checkout session", session))
    server.complete_checkout_session(session["id"])
    out.append(("setup intent", _get(client, f"/v1/setup_intents/{session['setup_intent']}")))
    out.append(("payment method list", _get(client, f"/v1/customers/{paying}/payment_methods")))
    server.set_customer_deleted(declining)
    out.append(("deleted customer", _get(client, f"/v1/customers/{declining}")))
    events = _get(client, "/v1/events", limit=100)
    out.append(("event list", events))
    for event in events["data"]:
        out.append((f"{event['type']} event object", event["data"]["object"]))
    return out


def test_every_answer_the_product_reads_has_only_fields_stripe_has(
    server: StripeTestServer,
) -> None:
    found = [f"{how}: {p}" for how, obj in _world(server) for p in problems(obj)]
    assert not found, "\n".join(sorted(set(found)))


@pytest.mark.parametrize(
    ("obj", "expected"),
    [
        ({"object": "invoice", "last_payment_error": "x"}, "invoice.last_payment_error"),
        (
            {"object": "invoice", "lines": {"object": "list", "data": [], "total_count": 0}},
            "invoice.lines.total_count",
        ),
        ({"object": "invoice", "status": "failed"}, "invoice.status"),
        ({"object": "invoice", "total": "100"}, "invoice.total"),
        (
            {"object": "payment_intent", "last_payment_error": {"reason": "x"}},
            "payment_intent.last_payment_error.reason",
        ),
        (
            {
                "object": "charge",
                "refunds": {"object": "list", "data": [{"object": "refund", "x": 1}]},
            },
            "charge.refunds.data[0].x",
        ),
    ],
)
def test_the_check_names_an_invented_field(obj: dict[str, Any], expected: str) -> None:
    assert any(p.startswith(expected) for p in problems(obj)), problems(obj)


def test_the_check_accepts_what_stripe_sends() -> None:
    obj = {
        "object": "invoice",
        "id": "in_1",
        "customer": {"id": "cus_1", "object": "customer", "deleted": True},
        "lines": {"object": "list", "data": [], "has_more": True, "url": "/v1/x"},
        "status": "open",
        "total": 100,
        "metadata": {"any": "thing"},
        "next_payment_attempt": None,
    }
    assert problems(obj) == []


def test_the_classes_describe_the_api_version_the_server_speaks() -> None:
    """stripe-python's classes are generated for one API version; the check means something
    only while the server answers in that version."""
    assert stripe.api_version == DEFAULT_API_VERSION
