"""Webhook receiver: signatures (valid, forged, stale, replayed), storage, apply over HTTP."""

from __future__ import annotations

import json
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator

import pytest
from sqlmodel import Session, select

from billing_core.errors import ConfigError
from billing_core.models import StripeEvent
from billing_core.payments import webhook_server as webhooks
from tests.support.stripe_server import StripeTestServer
from tests.support.stripe_world import StripeWorld, make_world, settings_for

SECRET = "whsec_test_invoices_helper"
NOW = 1_795_000_000


def _event(event_id: str = "evt_1", type_: str = "invoice.paid") -> bytes:
    return json.dumps(
        {
            "id": event_id,
            "object": "event",
            "type": type_,
            "created": NOW - 5,
            "data": {"object": {"id": "in_123", "object": "invoice"}},
        }
    ).encode()


def _stored(engine) -> list[StripeEvent]:
    with Session(engine) as s:
        return list(s.exec(select(StripeEvent)).all())


def test_valid_signature_is_accepted() -> None:
    body = _event()
    header = StripeTestServer.sign_payload(body, SECRET, NOW)
    webhooks.verify_signature(body, header, SECRET, now=NOW + 299)


@pytest.mark.parametrize(
    ("header", "why"),
    [
        (None, "no Stripe-Signature"),
        ("garbage", "no timestamp"),
        (f"t={NOW}", "no timestamp or no v1"),
        (StripeTestServer.sign_payload(b"other body", SECRET, NOW), "does not match"),
        (StripeTestServer.sign_payload(_event(), "whsec_wrong", NOW), "does not match"),
        (StripeTestServer.sign_payload(_event(), SECRET, NOW - 301), "tolerance 300 s"),
        (StripeTestServer.sign_payload(_event(), SECRET, NOW + 400), "tolerance 300 s"),
    ],
)
def test_bad_signatures_are_refused_and_nothing_stored(engine, header, why) -> None:
    receipt = webhooks.receive(engine, _event(), header, SECRET, now=NOW)
    assert receipt.status == 400 and why in receipt.body["error"]
    assert _stored(engine) == []


def test_one_of_several_v1_signatures_may_match() -> None:
    body = _event()
    good = StripeTestServer.sign_payload(body, SECRET, NOW)
    webhooks.verify_signature(body, f"t={NOW},v1=deadbeef,{good.split(',')[1]}", SECRET, now=NOW)


def test_replayed_delivery_is_stored_once(engine) -> None:
    body = _event()
    header = StripeTestServer.sign_payload(body, SECRET, NOW)
    first = webhooks.receive(engine, body, header, SECRET, now=NOW)
    again = webhooks.receive(engine, body, header, SECRET, now=NOW + 10)
    assert (first.status, first.created) == (200, True)
    assert (again.status, again.created, again.body["duplicate"]) == (200, False, True)
    # Replayed after the tolerance: refused outright.
    late = webhooks.receive(engine, body, header, SECRET, now=NOW + 600)
    assert late.status == 400
    assert len(_stored(engine)) == 1


@pytest.mark.parametrize("body", [b"{not json", b"\xff\xfe", b'{"id": "evt_1"}', b"[]"])
def test_malformed_body_is_refused(engine, body: bytes) -> None:
    header = StripeTestServer.sign_payload(body, SECRET, NOW)
    receipt = webhooks.receive(engine, body, header, SECRET, now=NOW)
    assert receipt.status == 400
    assert _stored(engine) == []


def test_server_needs_the_signing_secret(engine) -> None:
    with StripeTestServer() as stripe_server, pytest.raises(ConfigError, match="WEBHOOK_SECRET"):
        webhooks.make_server(engine, settings_for(stripe_server), "127.0.0.1", 0)


# ------------------------------------------------------------------------------ over HTTP


@pytest.fixture(scope="module")
def stripe_server() -> Iterator[StripeTestServer]:
    with StripeTestServer() as srv:
        yield srv


@pytest.fixture
def receiver(stripe_server: StripeTestServer, engine) -> Iterator[str]:
    settings = settings_for(stripe_server, {"STRIPE_WEBHOOK_SECRET": SECRET})
    server = webhooks.make_server(engine, settings, "127.0.0.1", 0)
    thread = threading.Thread(
        target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
    )
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/stripe/webhook"
    server.shutdown()
    server.server_close()


def test_a_burst_of_connections_is_queued_not_reset(
    stripe_server: StripeTestServer, engine
) -> None:
    """Stripe delivers concurrently: connections waiting to be accepted must not overflow."""
    import socket

    settings = settings_for(stripe_server, {"STRIPE_WEBHOOK_SECRET": SECRET})
    server = webhooks.make_server(engine, settings, "127.0.0.1", 0)  # not accepting yet
    try:
        conns = [
            socket.create_connection(server.server_address[:2], timeout=0.5) for _ in range(40)
        ]
        for conn in conns:
            conn.close()
    finally:
        server.server_close()


def _wait_processed(engine, event_ids: set[str], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        done = {e.id for e in _stored(engine) if e.processed_at is not None}
        if event_ids <= done:
            return
        time.sleep(0.05)
    raise AssertionError(f"events not processed in time: {event_ids}")


def test_paying_in_stripe_and_delivering_the_webhook_turns_invoice_paid(
    stripe_server: StripeTestServer, engine, receiver: str
) -> None:
    world: StripeWorld = make_world(stripe_server, engine)
    cus = world.customer()
    local, remote = world.invoice(cus, status="open")
    world.client.v1.invoices.pay(remote["id"])
    statuses = stripe_server.deliver_events(receiver, SECRET)
    assert set(statuses) == {200}
    ids = {e["id"] for e in stripe_server.events()}
    _wait_processed(engine, ids)
    assert world.local(local.id).status == "paid"
    # Stripe redelivers everything: acknowledged, nothing applied twice.
    gets = stripe_server.request_count(f"/v1/invoices/{remote['id']}", "GET")
    assert set(stripe_server.deliver_events(receiver, SECRET)) == {200}
    assert stripe_server.request_count(f"/v1/invoices/{remote['id']}", "GET") == gets
    assert len(_stored(engine)) == len(ids)


def test_forged_and_stale_deliveries_get_400_over_http(
    stripe_server: StripeTestServer, engine, receiver: str
) -> None:
    stripe_server.reset()
    stripe_server.create_customer_directly(email="x@example.com")
    assert stripe_server.deliver_events(receiver, "whsec_forged") == [400]
    stale = int(time.time()) - 3600
    assert stripe_server.deliver_events(receiver, SECRET, timestamp=stale) == [400]
    assert _stored(engine) == []


def test_unknown_type_is_stored_ignored_and_acknowledged(engine, receiver: str) -> None:
    body = json.dumps(
        {
            "id": "evt_odd",
            "type": "issuing_card.created",
            "created": int(time.time()),
            "data": {"object": {"id": "ic_1"}},
        }
    ).encode()
    req = urllib.request.Request(
        receiver,
        data=body,
        method="POST",
        headers={"Stripe-Signature": StripeTestServer.sign_payload(body, SECRET)},
    )
    with urllib.request.urlopen(req, timeout=5) as resp:
        assert resp.status == 200
    _wait_processed(engine, {"evt_odd"})
    assert _stored(engine)[0].outcome == "ignored"


def test_malformed_and_oversized_requests_over_http(receiver: str) -> None:
    body = b"{broken"
    req = urllib.request.Request(
        receiver,
        data=body,
        method="POST",
        headers={"Stripe-Signature": StripeTestServer.sign_payload(body, SECRET)},
    )
    with pytest.raises(urllib.error.HTTPError) as err:
        urllib.request.urlopen(req, timeout=5)
    assert err.value.code == 400
    big = urllib.request.Request(receiver, data=b"x" * (webhooks.MAX_BODY_BYTES + 1), method="POST")
    # Refused before the body is read: the client sees a 413 or a closed connection.
    with pytest.raises(urllib.error.URLError) as err:
        urllib.request.urlopen(big, timeout=5)
    assert getattr(err.value, "code", 413) == 413
