"""Tests for the local Stripe test server, driven by the real stripe-python client over HTTP."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import stripe

from tests.support.stripe_server import StripeTestServer, parse_form

API_KEY = "sk_test_local"
REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def server() -> Iterator[StripeTestServer]:
    with StripeTestServer() as srv:
        yield srv


@pytest.fixture(autouse=True)
def _fresh(server: StripeTestServer) -> None:
    server.reset()


def make_client(server: StripeTestServer, retries: int = 2, **kwargs: Any) -> stripe.StripeClient:
    return stripe.StripeClient(
        API_KEY, base_addresses={"api": server.url}, max_network_retries=retries, **kwargs
    )


@pytest.fixture
def client(server: StripeTestServer) -> stripe.StripeClient:
    return make_client(server)


def new_customer(client: stripe.StripeClient, card: str | None = "pm_card_visa") -> str:
    cus = client.v1.customers.create(
        {"email": "ops@example.com", "name": "Example Ltd", "metadata": {"local_customer_id": "42"}}
    )
    if card:
        pm = client.v1.payment_methods.attach(card, {"customer": cus.id})
        client.v1.customers.update(cus.id, {"invoice_settings": {"default_payment_method": pm.id}})
    return cus.id


def draft_invoice(client: stripe.StripeClient, customer: str, local_id: str = "123", **extra: Any):
    params: dict[str, Any] = {
        "customer": customer,
        "currency": "usd",
        "auto_advance": False,
        "collection_method": "charge_automatically",
        "metadata": {"local_invoice_id": local_id, "period": "2025-01"},
        "pending_invoice_items_behavior": "exclude",
        **extra,
    }
    return client.v1.invoices.create(params)


LINES: list[dict[str, Any]] = [
    {
        "price_data": {
            "currency": "usd",
            "product_data": {"name": "Base fee"},
            "unit_amount": 10_000,
        },
        "quantity": 1,
    },
    {"amount": 2_345, "description": "AWS EC2 (markup 10%)"},
    {
        "price_data": {
            "currency": "usd",
            "product_data": {"name": "API calls overage"},
            "unit_amount_decimal": "0.125",
        },
        "quantity": 1_003,  # 125.375 -> 125
    },
]
LINES_TOTAL = 10_000 + 2_345 + 125


def test_full_flow_create_add_lines_finalize_pay(
    server: StripeTestServer, client: stripe.StripeClient
) -> None:
    customer = new_customer(client)
    inv = draft_invoice(client, customer)
    assert inv.status == "draft" and inv.id.startswith("in_") and inv.livemode is False
    assert inv.metadata["local_invoice_id"] == "123"

    inv = client.v1.invoices.add_lines(inv.id, {"lines": LINES})
    assert [line.amount for line in inv.lines.data] == [10_000, 2_345, 125]
    assert inv.lines.data[0].description == "Base fee"
    assert inv.subtotal == inv.total == inv.amount_due == inv.amount_remaining == LINES_TOTAL

    inv = client.v1.invoices.finalize_invoice(inv.id)
    assert inv.status == "open"
    assert inv.number and inv.number.endswith("-0001")
    assert inv.hosted_invoice_url.startswith(server.url)
    with urllib.request.urlopen(inv.invoice_pdf) as resp:
        assert resp.read().startswith(b"%PDF")
    # The hosted page shows money as a customer reads it, not minor units.
    with urllib.request.urlopen(inv.hosted_invoice_url) as resp:
        page = resp.read().decode()
    assert "<b id='total'>USD 124.70</b>" in page and "<td>USD 23.45</td>" in page

    inv = client.v1.invoices.pay(inv.id)
    assert inv.status == "paid"
    assert inv.amount_paid == LINES_TOTAL and inv.amount_remaining == 0
    assert inv.attempt_count == 1 and inv.status_transitions.paid_at is not None

    # Four calls for the invoice, exactly one add_lines.
    assert server.request_count("/add_lines", "POST") == 1
    charges = server.charges()
    assert len(charges) == 1 and charges[0]["amount"] == LINES_TOTAL
    assert charges[0]["payment_method_details"]["card"]["last4"] == "4242"
    types = [e["type"] for e in server.events()]
    for expected in (
        "customer.created",
        "payment_method.attached",
        "customer.updated",
        "invoice.created",
        "invoice.finalized",
        "invoice.paid",
        "invoice.payment_succeeded",
    ):
        assert expected in types
    assert types.index("invoice.finalized") < types.index("invoice.paid")
    paid_event = server.events("invoice.paid")[0]
    assert paid_event["data"]["object"]["status"] == "paid"
    # The snapshot of invoice.created is frozen at creation time.
    assert server.events("invoice.created")[0]["data"]["object"]["status"] == "draft"


def test_decline_keeps_invoice_open_and_replays_decline(
    server: StripeTestServer, client: stripe.StripeClient
) -> None:
    customer = new_customer(client, card="pm_card_chargeDeclined")
    inv = draft_invoice(client, customer)
    client.v1.invoices.add_lines(inv.id, {"lines": LINES})
    client.v1.invoices.finalize_invoice(inv.id)

    with pytest.raises(stripe.CardError) as excinfo:
        client.v1.invoices.pay(inv.id, options={"idempotency_key": f"inv-{inv.id}-pay-1"})
    assert excinfo.value.code == "card_declined"
    assert excinfo.value.http_status == 402
    after = client.v1.invoices.retrieve(inv.id)
    assert after.status == "open" and after.attempt_count == 1 and after.attempted is True
    assert after.amount_paid == 0 and after.amount_remaining == LINES_TOTAL
    assert len(server.events("invoice.payment_failed")) == 1

    # Same key: Stripe replays the stored decline without another attempt.
    with pytest.raises(stripe.CardError) as replay:
        client.v1.invoices.pay(inv.id, options={"idempotency_key": f"inv-{inv.id}-pay-1"})
    assert replay.value.headers is not None
    assert replay.value.headers.get("idempotent-replayed") == "true"
    assert client.v1.invoices.retrieve(inv.id).attempt_count == 1

    # After the customer fixes the card, a new key pays.
    server.attach_card(customer, "pm_card_visa", default=True)
    paid = client.v1.invoices.pay(inv.id, options={"idempotency_key": f"inv-{inv.id}-pay-2"})
    assert paid.status == "paid" and paid.attempt_count == 2


def test_pay_without_payment_method_is_an_error(client: stripe.StripeClient) -> None:
    customer = new_customer(client, card=None)
    inv = draft_invoice(client, customer)
    client.v1.invoices.add_lines(inv.id, {"lines": LINES[:1]})
    client.v1.invoices.finalize_invoice(inv.id)
    with pytest.raises(stripe.InvalidRequestError) as excinfo:
        client.v1.invoices.pay(inv.id)
    assert excinfo.value.code == "invoice_no_payment_method"
    assert client.v1.invoices.retrieve(inv.id).status == "open"


def test_idempotent_replay_creates_nothing_and_mismatch_is_rejected(
    server: StripeTestServer, client: stripe.StripeClient
) -> None:
    customer = new_customer(client)
    opts: Any = {"idempotency_key": "inv-123-create"}
    params: Any = {"customer": customer, "metadata": {"local_invoice_id": "123"}}
    first = client.v1.invoices.create(params, opts)
    second = client.v1.invoices.create(params, opts)
    assert first.id == second.id
    assert second.last_response is not None
    assert second.last_response.headers.get("idempotent-replayed") == "true"
    assert len(server.invoices()) == 1
    assert len(server.events("invoice.created")) == 1

    changed: Any = {"customer": customer, "metadata": {"local_invoice_id": "124"}}
    with pytest.raises(stripe.IdempotencyError):
        client.v1.invoices.create(changed, opts)
    assert len(server.invoices()) == 1


def test_validation_errors_are_not_stored_for_idempotency(
    server: StripeTestServer, client: stripe.StripeClient
) -> None:
    customer = new_customer(client)
    inv = draft_invoice(client, customer)
    opts: Any = {"idempotency_key": f"{inv.id}-lines"}
    bad: Any = {
        "lines": [
            {"price_data": {"currency": "eur", "product_data": {"name": "x"}, "unit_amount": 1}}
        ]
    }
    with pytest.raises(stripe.InvalidRequestError) as excinfo:
        client.v1.invoices.add_lines(inv.id, bad, opts)
    assert excinfo.value.param == "lines[0][price_data][currency]"
    # Nothing was stored: the same key with corrected parameters goes through.
    inv = client.v1.invoices.add_lines(inv.id, {"lines": LINES}, opts)
    assert inv.total == LINES_TOTAL

    with pytest.raises(stripe.InvalidRequestError) as unknown:
        client.v1.invoices.create({"customer": customer, "colection_method": "send_invoice"})  # type: ignore[typeddict-unknown-key]
    assert "unknown parameter" in str(unknown.value)


def test_state_rules(server: StripeTestServer, client: stripe.StripeClient) -> None:
    customer = new_customer(client)
    inv = draft_invoice(client, customer)
    client.v1.invoices.add_lines(inv.id, {"lines": LINES[:1]})
    client.v1.invoices.finalize_invoice(inv.id)
    with pytest.raises(stripe.InvalidRequestError) as excinfo:
        client.v1.invoices.add_lines(inv.id, {"lines": LINES[1:2]})
    assert excinfo.value.code == "invoice_not_editable"
    with pytest.raises(stripe.InvalidRequestError):
        client.v1.invoices.finalize_invoice(inv.id)
    with pytest.raises(stripe.InvalidRequestError):
        client.v1.invoices.send_invoice(inv.id)  # charge_automatically
    client.v1.invoices.pay(inv.id)
    with pytest.raises(stripe.InvalidRequestError):
        client.v1.invoices.void_invoice(inv.id)
    assert client.v1.invoices.retrieve(inv.id).total == 10_000

    # send_invoice: needs days_until_due, finalize sets due_date, send emits invoice.sent.
    with pytest.raises(stripe.InvalidRequestError):
        draft_invoice(client, customer, local_id="200", collection_method="send_invoice")
    sent = draft_invoice(
        client, customer, local_id="201", collection_method="send_invoice", days_until_due=30
    )
    client.v1.invoices.add_lines(sent.id, {"lines": LINES[1:2]})
    fin = client.v1.invoices.finalize_invoice(sent.id)
    assert fin.due_date == fin.status_transitions.finalized_at + 30 * 86400
    assert fin.number.endswith("-0002")
    client.v1.invoices.send_invoice(sent.id)
    assert len(server.events("invoice.sent")) == 1
    voided = client.v1.invoices.void_invoice(sent.id)
    assert voided.status == "void"
    other = server.create_invoice_directly(customer, 500, "usd", {"source": "dashboard"})
    assert client.v1.invoices.mark_uncollectible(other["id"]).status == "uncollectible"
    assert [e["type"] for e in server.events("invoice.*")][-2:] == [
        "invoice.finalized",
        "invoice.marked_uncollectible",
    ]


def test_injected_500_is_retried_and_creates_one_invoice(
    server: StripeTestServer, client: stripe.StripeClient
) -> None:
    customer = new_customer(client)
    server.fail_next(1, status=500, path_contains="/v1/invoices")
    inv = draft_invoice(client, customer)
    assert len(server.invoices()) == 1 and server.invoices()[0]["id"] == inv.id
    creates = [entry for entry in server.request_log if entry[:2] == ("POST", "/v1/invoices")]
    assert [entry[2] for entry in creates] == [500, 200]
    assert creates[0][3] is not None and creates[0][3] == creates[1][3]  # same idempotency key


def test_injected_429_raises_rate_limit_error_without_retries(server: StripeTestServer) -> None:
    client = make_client(server, retries=0)
    customer = new_customer(client)
    server.fail_next(1, status=429, path_contains="/v1/invoices")
    opts: Any = {"idempotency_key": "inv-9-create"}
    with pytest.raises(stripe.RateLimitError):
        client.v1.invoices.create({"customer": customer}, opts)
    assert server.invoices() == []
    # The 429 was not stored: the caller's backoff-and-retry with the same key proceeds.
    inv = client.v1.invoices.create({"customer": customer}, opts)
    assert [i["id"] for i in server.invoices()] == [inv.id]


def test_token_bucket_rate_limit(server: StripeTestServer) -> None:
    client = make_client(server, retries=0)
    customer = new_customer(client)
    server.rate_limit = 5
    limited = 0
    for _ in range(15):
        try:
            client.v1.customers.retrieve(customer)
        except stripe.RateLimitError:
            limited += 1
    assert 5 <= limited <= 10
    server.rate_limit = None
    client.v1.customers.retrieve(customer)


def test_search_by_metadata_after_keys_expire(
    server: StripeTestServer, client: stripe.StripeClient
) -> None:
    customer = new_customer(client)
    opts: Any = {"idempotency_key": "inv-123-create"}
    created = client.v1.invoices.create(
        {"customer": customer, "metadata": {"local_invoice_id": "123"}}, opts
    )
    draft_invoice(client, customer, local_id="124")
    server.expire_idempotency_keys()

    found = client.v1.invoices.search({"query": "metadata['local_invoice_id']:'123'"})
    assert [i.id for i in found.data] == [created.id]
    both = client.v1.invoices.search(
        {"query": f"customer:'{customer}' AND status:'draft'", "limit": 1}
    )
    assert len(both.data) == 1 and both.has_more is True
    assert len(list(both.auto_paging_iter())) == 2
    cus = client.v1.customers.search({"query": "metadata['local_customer_id']:'42'"})
    assert [c.id for c in cus.data] == [customer]

    # With the key expired the same create is no longer deduplicated: why the lookup matters.
    client.v1.invoices.create({"customer": customer, "metadata": {"local_invoice_id": "123"}}, opts)
    assert len(server.invoices()) == 3


def test_list_pagination_250_invoices_takes_three_requests(
    server: StripeTestServer, client: stripe.StripeClient
) -> None:
    customer = new_customer(client)
    made = [
        server.create_invoice_directly(customer, 100 + i, "usd", {"n": str(i)}, status="draft")[
            "id"
        ]
        for i in range(250)
    ]
    before = server.request_count("/v1/invoices", "GET")
    page = client.v1.invoices.list({"customer": customer, "limit": 100})
    ids = [inv.id for inv in page.auto_paging_iter()]
    assert ids == list(reversed(made))  # newest first, no gaps, no duplicates
    assert server.request_count("/v1/invoices", "GET") - before == 3
    drafts = client.v1.invoices.list({"status": "open", "limit": 5})
    assert drafts.data == [] and drafts.has_more is False


def test_events_newest_first_and_paging(
    server: StripeTestServer, client: stripe.StripeClient
) -> None:
    customer = new_customer(client)
    inv = draft_invoice(client, customer)
    client.v1.invoices.add_lines(inv.id, {"lines": LINES})
    client.v1.invoices.finalize_invoice(inv.id)
    client.v1.invoices.pay(inv.id)
    all_ids = [e["id"] for e in reversed(server.events())]  # newest first
    assert len(all_ids) >= 8

    first = client.v1.events.list({"limit": 3})
    assert [e.id for e in first.data] == all_ids[:3] and first.has_more
    second = client.v1.events.list({"limit": 3, "starting_after": first.data[-1].id})
    assert [e.id for e in second.data] == all_ids[3:6]
    back = client.v1.events.list({"limit": 2, "ending_before": second.data[0].id})
    assert [e.id for e in back.data] == all_ids[1:3]
    one = client.v1.events.retrieve(all_ids[0])
    assert one.type == "invoice.payment_succeeded" and one.data.object.id == inv.id

    invoice_events = client.v1.events.list({"types": ["invoice.paid", "invoice.finalized"]})
    assert [e.type for e in invoice_events.data] == ["invoice.paid", "invoice.finalized"]
    newest = client.v1.events.list({"created": {"gte": int(time.time()) + 3600}})
    assert newest.data == []


def test_signature_helper_and_webhook_delivery(
    server: StripeTestServer, client: stripe.StripeClient
) -> None:
    secret = "whsec_test_secret"
    new_customer(client)
    payload = json.dumps(server.events()[0]).encode()
    header = server.sign_payload(payload, secret)
    event = stripe.Webhook.construct_event(payload, header, secret)
    assert event.type == "customer.created"
    with pytest.raises(stripe.SignatureVerificationError):
        stripe.Webhook.construct_event(payload, header, "whsec_other")
    stale = server.sign_payload(payload, secret, timestamp=int(time.time()) - 3600)
    with pytest.raises(stripe.SignatureVerificationError):
        stripe.Webhook.construct_event(payload, stale, secret)

    received: list[str] = []

    class Receiver(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers["Content-Length"]))
            try:
                evt = stripe.Webhook.construct_event(body, self.headers["Stripe-Signature"], secret)
                received.append(evt.type)
                self.send_response(200)
            except stripe.SignatureVerificationError:
                self.send_response(400)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, format: str, *args: Any) -> None:
            pass

    hook = ThreadingHTTPServer(("127.0.0.1", 0), Receiver)
    threading.Thread(target=hook.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{hook.server_address[1]}/webhook"
        statuses = server.deliver_events(url, secret)
        assert statuses == [200] * len(server.events())
        assert received == [e["type"] for e in server.events()]
        assert server.deliver_events(url, "whsec_wrong", events=[server.events()[0]["id"]]) == [400]
    finally:
        hook.shutdown()
        hook.server_close()


def test_authentication(server: StripeTestServer) -> None:
    bad = stripe.StripeClient("sk_live_nope", base_addresses={"api": server.url})
    with pytest.raises(stripe.AuthenticationError):
        bad.v1.customers.create({"email": "x@example.com"})
    with StripeTestServer(api_key="sk_test_only_this") as strict:
        with pytest.raises(stripe.AuthenticationError):
            make_client(strict).v1.customers.list()
        good = stripe.StripeClient("sk_test_only_this", base_addresses={"api": strict.url})
        assert good.v1.customers.list().data == []
    assert server.customers() == []


def test_customers_payment_methods_and_deletion(
    server: StripeTestServer, client: stripe.StripeClient
) -> None:
    customer = new_customer(client)
    cus = client.v1.customers.retrieve(customer)
    pm_id = cus.invoice_settings.default_payment_method
    assert pm_id and pm_id.startswith("pm_")
    pms = client.v1.customers.payment_methods.list(customer)
    assert [p.id for p in pms.data] == [pm_id] and pms.data[0].card.last4 == "4242"
    assert [p.id for p in client.v1.payment_methods.list({"customer": customer}).data] == [pm_id]
    with pytest.raises(stripe.InvalidRequestError):
        client.v1.customers.update(
            customer, {"invoice_settings": {"default_payment_method": "pm_missing"}}
        )
    updated = client.v1.customers.update(customer, {"metadata": {"local_customer_id": ""}})
    assert "local_customer_id" not in updated.metadata

    second = client.v1.customers.create({"email": "b@example.com"})
    listed = client.v1.customers.list({"limit": 1})
    assert [c.id for c in listed.data] == [second.id] and listed.has_more
    server.set_customer_deleted(second.id)
    assert client.v1.customers.retrieve(second.id).deleted is True
    with pytest.raises(stripe.InvalidRequestError) as excinfo:
        client.v1.invoices.create({"customer": second.id})
    assert excinfo.value.code == "resource_missing"
    assert [c["id"] for c in server.customers()] == [customer]
    assert server.events("customer.deleted")[0]["data"]["object"]["id"] == second.id


def test_checkout_setup_session_and_refund(
    server: StripeTestServer, client: stripe.StripeClient
) -> None:
    customer = new_customer(client, card=None)
    session = client.v1.checkout.sessions.create(
        {
            "mode": "setup",
            "customer": customer,
            "currency": "usd",
            "success_url": "https://example.com/ok?session={CHECKOUT_SESSION_ID}",
            "cancel_url": "https://example.com/cancel",
        }
    )
    assert session.id.startswith("cs_") and session.url.startswith(server.url)
    with urllib.request.urlopen(session.url) as resp:
        assert b"Save card" in resp.read()
    pm_id = server.complete_checkout_session(session.id, "pm_card_visa")
    assert server.events("setup_intent.succeeded")[0]["data"]["object"]["payment_method"] == pm_id
    assert client.v1.checkout.sessions.retrieve(session.id).status == "complete"
    # Like Stripe, completing Checkout does not set the default payment method.
    assert client.v1.customers.retrieve(customer).invoice_settings.default_payment_method is None

    client.v1.customers.update(customer, {"invoice_settings": {"default_payment_method": pm_id}})
    inv = draft_invoice(client, customer)
    client.v1.invoices.add_lines(inv.id, {"lines": LINES[:1]})
    client.v1.invoices.finalize_invoice(inv.id)
    client.v1.invoices.pay(inv.id)
    paid = client.v1.invoices.retrieve(inv.id, {"expand": ["payments"]})
    pi = paid.payments.data[0].payment.payment_intent
    refund = client.v1.refunds.create({"payment_intent": pi, "amount": 4_000})
    assert refund.id.startswith("re_") and refund.amount == 4_000
    refunded = server.events("charge.refunded")
    assert len(refunded) == 1 and refunded[0]["data"]["object"]["amount_refunded"] == 4_000
    with pytest.raises(stripe.InvalidRequestError):
        client.v1.refunds.create({"payment_intent": pi, "amount": 7_000})


def test_dropped_response_and_hang_are_recovered_by_idempotency(server: StripeTestServer) -> None:
    client = make_client(server, http_client=stripe.RequestsClient(timeout=0.4))
    customer = new_customer(client)
    server.drop_response_next(1, path_contains="/v1/invoices")
    inv = draft_invoice(client, customer, local_id="1")
    server.hang_next(1, seconds=0.8, path_contains="/v1/invoices")
    inv2 = draft_invoice(client, customer, local_id="2")
    time.sleep(0.6)  # let the hung request finish: it replays, it does not create
    assert sorted(i["id"] for i in server.invoices()) == sorted([inv.id, inv2.id])
    assert server.request_count("/v1/invoices", "POST") >= 4


def test_stop_drops_kept_alive_connections_and_restart_keeps_state() -> None:
    """An outage: even a client holding a keep-alive connection is refused until restart."""
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    srv = StripeTestServer(port=port).start()
    try:
        client = make_client(srv, retries=0)
        customer = new_customer(client, card=None)  # the client now holds an open connection
        srv.stop()
        with pytest.raises(stripe.APIConnectionError):
            client.v1.customers.retrieve(customer)
        srv.start()
        assert srv.url.endswith(f":{port}")
        assert client.v1.customers.retrieve(customer).id == customer
    finally:
        srv.stop()


def test_request_cut_off_mid_body_is_not_processed(server: StripeTestServer) -> None:
    """A client killed while sending: nothing is created and its key stays unused."""
    import socket

    body = b"name=Cut+Off&email=cut%40off.example"
    head = (
        f"POST /v1/customers HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {API_KEY}\r\n"
        "Idempotency-Key: cut-1\r\nContent-Type: application/x-www-form-urlencoded\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    ).encode()
    with socket.create_connection((server.host, server.port)) as sock:
        sock.sendall(head + body[:5])  # then the process dies
    deadline = time.monotonic() + 2
    while time.monotonic() < deadline and server.request_count() == 0:
        time.sleep(0.02)
    assert server.customers() == []
    full = make_client(server).v1.customers.create(
        {"name": "Cut Off", "email": "cut@off.example"}, {"idempotency_key": "cut-1"}
    )
    assert full.email == "cut@off.example"


def test_latency_is_added(server: StripeTestServer, client: stripe.StripeClient) -> None:
    customer = new_customer(client)
    server.latency = 0.05
    start = time.perf_counter()
    client.v1.customers.retrieve(customer)
    assert time.perf_counter() - start >= 0.05
    server.latency = 0


def test_parse_form_nested_keys() -> None:
    pairs = [
        ("lines[0][price_data][product_data][name]", "Base"),
        ("lines[0][quantity]", "2"),
        ("lines[1][amount]", "5"),
        ("expand[]", "payments"),
        ("metadata[a]", ""),
    ]
    assert parse_form(pairs) == {
        "lines": [
            {"price_data": {"product_data": {"name": "Base"}}, "quantity": "2"},
            {"amount": "5"},
        ],
        "expand": ["payments"],
        "metadata": {"a": ""},
    }


def test_standalone_module_prints_url_and_serves() -> None:
    proc = subprocess.Popen(
        [sys.executable, "-m", "tests.support.stripe_server", "--port", "0"],
        cwd=REPO,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        url = proc.stdout.readline().strip()
        assert url.startswith("http://127.0.0.1:")
        client = stripe.StripeClient(API_KEY, base_addresses={"api": url})
        assert client.v1.customers.create({"email": "a@example.com"}).id.startswith("cus_")
    finally:
        proc.terminate()
        proc.wait(timeout=5)


def test_concurrent_creates_with_shared_keys_create_one_invoice_per_key(
    server: StripeTestServer,
) -> None:
    client = make_client(server)
    customer = new_customer(client)
    results: list[str] = []
    lock = threading.Lock()

    def worker(n: int) -> None:
        opts: Any = {"idempotency_key": f"inv-{n % 5}-create"}
        inv = client.v1.invoices.create(
            {"customer": customer, "metadata": {"local_invoice_id": str(n % 5)}}, opts
        )
        with lock:
            results.append(inv.id)

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(40)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(results) == 40
    assert len(set(results)) == 5 == len(server.invoices())


def test_created_filters_and_http_delete(
    server: StripeTestServer, client: stripe.StripeClient
) -> None:
    customer = new_customer(client)
    old = draft_invoice(client, customer, local_id="1")
    server.advance_clock(3600)
    new = draft_invoice(client, customer, local_id="2")
    assert new.created >= old.created + 3600
    recent = client.v1.invoices.list({"created": {"gte": new.created}})
    assert [i.id for i in recent.data] == [new.id]
    older = client.v1.invoices.list({"created": {"lt": new.created}})
    assert [i.id for i in older.data] == [old.id]
    assert client.v1.invoices.delete(old.id).deleted is True
    assert [i["id"] for i in server.invoices()] == [new.id]
    assert client.v1.customers.delete(customer).deleted is True
    assert server.customers() == []


@pytest.mark.parametrize(
    ("currency", "amount", "ok"),
    [
        ("usd", 1234, True),
        ("jpy", 1234, True),  # zero-decimal: whole yen
        ("ugx", 1234, True),
        ("kwd", 5120, True),  # three-decimal: last digit 0
        ("kwd", 5124, False),
        ("bhd", 1, False),
        ("jod", -10, True),
        ("omr", 15, False),
        ("tnd", 990, True),
        ("isk", 500, True),  # two-decimal form, whole units
        ("isk", 550, False),
        ("huf", 17501, False),
        ("twd", 3000, True),
    ],
)
def test_amounts_follow_stripes_currency_rules(
    client: stripe.StripeClient, currency: str, amount: int, ok: bool
) -> None:
    customer = new_customer(client)
    inv = draft_invoice(client, customer, currency=currency)
    line = {"amount": amount, "description": "x"}
    if ok:
        assert client.v1.invoices.add_lines(inv.id, {"lines": [line]}).total == amount
        return
    with pytest.raises(stripe.InvalidRequestError) as excinfo:
        client.v1.invoices.add_lines(inv.id, {"lines": [line]})
    err = excinfo.value
    assert err.http_status == 400 and err.code == "invalid_amount"
    assert err.param == "lines[0][amount]" and currency in str(err.user_message)


@pytest.mark.parametrize(("currency", "amount", "ok"), [("usd", 49, False), ("usd", 50, True)])
def test_charge_below_the_minimum_is_refused(
    client: stripe.StripeClient, currency: str, amount: int, ok: bool
) -> None:
    inv = draft_invoice(client, new_customer(client), currency=currency)
    client.v1.invoices.add_lines(inv.id, {"lines": [{"amount": amount, "description": "x"}]})
    if ok:
        assert client.v1.invoices.pay(inv.id).status == "paid"
        return
    with pytest.raises(stripe.InvalidRequestError) as excinfo:
        client.v1.invoices.pay(inv.id)
    assert excinfo.value.code == "amount_too_small"


def test_hosted_pages_show_money_by_each_currencys_digits() -> None:
    from tests.support.stripe_server.currencies import money_text

    assert money_text(123_456, "eur") == "EUR 1,234.56"
    assert money_text(500, "jpy") == "JPY 500"
    assert money_text(1_250, "kwd") == "KWD 1.250"
    assert money_text(-5, "usd") == "USD -0.05"
