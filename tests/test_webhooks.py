"""Webhook receiver: signatures (valid, forged, stale, replayed), storage, apply over HTTP."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta
from typing import Any

import pytest
from sqlmodel import Session, select

from billing_core.db import session_scope
from billing_core.errors import ConfigError
from billing_core.models import StripeEvent
from billing_core.payments import events as payments_events
from billing_core.payments import webhook_server as webhooks
from billing_core.periods import utcnow
from tests.conftest import ROOT
from tests.support.stripe_server import StripeTestServer
from tests.support.stripe_world import API_KEY, StripeWorld, make_world, settings_for

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
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/stripe/webhook"
    server.shutdown(timeout=10)
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


# ------------------------------------------------------------- limits, over real sockets


@contextmanager
def _serving(engine, stripe_server: StripeTestServer, **limits: Any) -> Iterator[tuple[str, int]]:
    settings = settings_for(stripe_server, {"STRIPE_WEBHOOK_SECRET": SECRET})
    server = webhooks.make_server(engine, settings, "127.0.0.1", 0, webhooks.Limits(**limits))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server.server_address
    finally:
        server.shutdown(timeout=10)
        server.server_close()


def _healthz(address: tuple[str, int]) -> int:
    with urllib.request.urlopen(f"http://{address[0]}:{address[1]}/healthz", timeout=10) as r:
        return int(r.status)


def _answer(sock: socket.socket) -> tuple[int, bytes]:
    """The status of the answer on this socket, and all it sent until it closed."""
    sock.settimeout(10)
    data = b""
    while chunk := sock.recv(65536):
        data += chunk
    assert data, "the connection was closed without an answer"
    return int(data.split(b" ", 2)[1]), data


def _signed_event(event_id: str, padding: int = 0) -> tuple[bytes, str]:
    payload = json.loads(_event(event_id, "issuing_card.created"))
    payload["created"] = int(time.time())
    payload["padding"] = "x" * padding
    body = json.dumps(payload).encode()
    return body, StripeTestServer.sign_payload(body, SECRET)


def _request_head(length: int | None, signature: str = "t=1,v1=0") -> bytes:
    size = f"Content-Length: {length}" if length is not None else "Transfer-Encoding: chunked"
    return (
        f"POST /stripe/webhook HTTP/1.1\r\nHost: x\r\nStripe-Signature: {signature}\r\n"
        f"Content-Type: application/json\r\n{size}\r\n\r\n"
    ).encode()


def test_idle_connections_hold_no_threads_and_are_closed(
    stripe_server: StripeTestServer, engine
) -> None:
    with _serving(engine, stripe_server, idle_timeout_seconds=1, max_connections=500) as addr:
        assert _healthz(addr) == 200
        threads = threading.active_count()
        idle = [socket.create_connection(addr, timeout=10) for _ in range(150)]
        half_headers = socket.create_connection(addr, timeout=10)
        half_headers.sendall(b"POST /stripe/webhook HTTP/1.1\r\nHost: x\r\n")
        # Answered while 151 connections sit idle, with no thread more than before.
        assert _healthz(addr) == 200
        assert threading.active_count() == threads
        # The server closes them all (the idle timeout), half-sent headers included.
        for sock in [*idle, half_headers]:
            sock.settimeout(10)
            assert sock.recv(1) == b""
            sock.close()


def test_half_sent_body_is_answered_408_and_closed(stripe_server: StripeTestServer, engine) -> None:
    body, signature = _signed_event("evt_half")
    with _serving(engine, stripe_server, read_timeout_seconds=0.5) as addr:
        with socket.create_connection(addr, timeout=10) as sock:
            sock.sendall(_request_head(len(body), signature) + body[: len(body) // 2])
            status, data = _answer(sock)  # returns once the server closed the connection
        assert status == 408 and b"did not arrive in time" in data
        assert _healthz(addr) == 200
    assert _stored(engine) == []


@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "streamed"])
def test_oversized_body_gets_413_and_is_not_stored(
    stripe_server: StripeTestServer, engine, chunked: bool
) -> None:
    body, signature = _signed_event("evt_big", padding=5000)  # a good signature: only size fails
    with _serving(engine, stripe_server, max_body_bytes=4096) as addr:
        with socket.create_connection(addr, timeout=10) as sock:
            if chunked:  # no length announced: refused while reading
                sock.sendall(_request_head(None, signature))
                for start in range(0, len(body), 1000):
                    piece = body[start : start + 1000]
                    try:
                        sock.sendall(b"%x\r\n%s\r\n" % (len(piece), piece))
                    except OSError:  # the server answered and closed mid-body
                        break
            else:
                sock.sendall(_request_head(len(body), signature))
            status, _ = _answer(sock)
        assert status == 413
        # The same event under the limit is taken: the size was the only reason.
        small, small_signature = _signed_event("evt_small")
        with socket.create_connection(addr, timeout=10) as sock:
            sock.sendall(
                _request_head(len(small), small_signature).replace(
                    b"HTTP/1.1\r\n", b"HTTP/1.1\r\nConnection: close\r\n", 1
                )
                + small
            )
            assert _answer(sock)[0] == 200
    assert [e.id for e in _stored(engine)] == ["evt_small"]


def test_too_many_connections_get_503(stripe_server: StripeTestServer, engine) -> None:
    with _serving(engine, stripe_server, max_connections=3, idle_timeout_seconds=30) as addr:
        held = [socket.create_connection(addr, timeout=10) for _ in range(3)]
        body, signature = _signed_event("evt_crowded")
        with socket.create_connection(addr, timeout=10) as sock:
            sock.sendall(_request_head(len(body), signature) + body)
            sock.settimeout(10)
            assert sock.recv(65536).startswith(b"HTTP/1.1 503")
        for sock in held:
            sock.close()
    assert _stored(engine) == []  # refused before reading: Stripe delivers it again


def _wait_until_refused(addr: tuple[str, int], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            socket.create_connection(addr, timeout=1).close()
        except ConnectionRefusedError:
            return
        time.sleep(0.05)
    raise AssertionError("the server kept accepting connections after SIGTERM")


def test_sigterm_lets_an_in_flight_request_finish(
    stripe_server: StripeTestServer, db_url: str, engine, tmp_path
) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("STRIPE_", "AWS_"))}
    env.update(
        DATABASE_URL=db_url,
        BILLING_MODE="live",
        STRIPE_API_BASE=stripe_server.url,
        STRIPE_API_KEY=API_KEY,
        STRIPE_WEBHOOK_SECRET=SECRET,
        BILLING_SECRETS_FILE=str(tmp_path / "none.toml"),
        WEBHOOK_READ_TIMEOUT_SECONDS="60",
    )
    proc = subprocess.Popen(
        [sys.executable, "-m", "billing_core", "webhook-server", "--port", "0"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
    )
    try:
        line = proc.stdout.readline().decode() if proc.stdout else ""
        port = int(line.rsplit(":", 1)[1].split("/", 1)[0])
        addr = ("127.0.0.1", port)
        body, signature = _signed_event("evt_in_flight")
        with socket.create_connection(addr, timeout=10) as sock:
            sock.sendall(_request_head(len(body), signature) + body[:10])
            assert _healthz(addr) == 200  # the server has read the first request's head
            proc.send_signal(signal.SIGTERM)
            _wait_until_refused(addr)  # shutting down: the request is now in flight through it
            sock.sendall(body[10:])
            status, data = _answer(sock)
        assert status == 200 and b'"received":true' in data
        assert proc.wait(timeout=30) in (0, -signal.SIGTERM)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert [e.id for e in _stored(engine)] == ["evt_in_flight"]


def test_a_delivery_also_retries_failed_events_that_are_due(
    stripe_server: StripeTestServer, engine, receiver: str
) -> None:
    world: StripeWorld = make_world(stripe_server, engine)
    cus = world.customer()
    local, remote = world.invoice(cus, status="open")
    stripe_server.pay_out_of_band(remote["id"])
    paid = stripe_server.events(type="invoice.paid")[-1]
    stripe_server.fail_next(status=500, n=1000, path_contains=f"/v1/invoices/{remote['id']}")
    with session_scope(engine) as s:
        payments_events.store_event(s, paid, source="sync")
    payments_events.process_event_id(engine, world.gateway, paid["id"], now_fn=utcnow)
    stripe_server.clear_faults()
    with session_scope(engine) as s:  # its backoff has passed
        failed = s.get(StripeEvent, paid["id"])
        assert failed is not None and failed.outcome == "error"
        failed.next_attempt_at = utcnow() - timedelta(seconds=1)
    body, signature = _signed_event("evt_next_delivery")
    req = urllib.request.Request(
        receiver, data=body, method="POST", headers={"Stripe-Signature": signature}
    )
    with urllib.request.urlopen(req, timeout=10) as resp:
        assert resp.status == 200
    deadline = time.monotonic() + 10
    while world.local(local.id).status != "paid" and time.monotonic() < deadline:
        time.sleep(0.05)
    assert world.local(local.id).status == "paid"
    with Session(engine) as s:
        retried = s.get(StripeEvent, paid["id"])
        assert retried is not None and (retried.outcome, retried.error) == ("applied", None)
