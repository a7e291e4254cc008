"""Stripe webhook receiver: verify the signature, store the raw event, answer 2xx, then apply.

Standard library HTTP server (one thread per request), meant to sit behind a TLS proxy.
Applying uses the same handler as `sync` (billing_core.events); an event that cannot be applied
now (Stripe unreachable, no API key) stays stored and pending, and the next `sync` applies it.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from sqlalchemy.engine import Engine

from billing_core.config import Settings
from billing_core.db import session_scope
from billing_core.errors import BillingError, ConfigError, ValidationError
from billing_core.payments import events as payments_events
from billing_core.periods import utcnow
from billing_core.stripe.gateway import Gateway

log = logging.getLogger(__name__)

# Stripe's own libraries reject signatures older than this; so do we.
TOLERANCE_SECONDS = 300
# Stripe events are a few kB; anything far larger is not from Stripe.
MAX_BODY_BYTES = 1_000_000
WEBHOOK_PATHS = frozenset({"/", "/webhook", "/stripe/webhook"})


class SignatureError(BillingError):
    """The Stripe-Signature header is missing, malformed, forged or too old."""


def _parse_header(header: str) -> tuple[int, list[str]]:
    timestamp: int | None = None
    signatures: list[str] = []
    for item in header.split(","):
        key, _, value = item.strip().partition("=")
        if key == "t" and value.isdigit():
            timestamp = int(value)
        elif key == "v1" and value:
            signatures.append(value)
    if timestamp is None or not signatures:
        raise SignatureError("The Stripe-Signature header has no timestamp or no v1 signature.")
    return timestamp, signatures


def verify_signature(
    payload: bytes,
    header: str | None,
    secret: str,
    *,
    now: float | None = None,
    tolerance: int = TOLERANCE_SECONDS,
) -> None:
    """Check Stripe's HMAC-SHA256 signature (constant time) and its age, or raise."""
    if not header:
        raise SignatureError("The request has no Stripe-Signature header.")
    timestamp, signatures = _parse_header(header)
    current = time.time() if now is None else now
    if abs(current - timestamp) > tolerance:
        raise SignatureError(
            f"The Stripe-Signature timestamp is {int(current - timestamp)} s away from now "
            f"(tolerance {tolerance} s): a replayed or delayed request, or a wrong server clock."
        )
    signed = str(timestamp).encode() + b"." + payload
    expected = hmac.new(secret.encode(), signed, hashlib.sha256).hexdigest()
    if not any(hmac.compare_digest(expected, sig) for sig in signatures):
        raise SignatureError(
            "The Stripe-Signature does not match: forged request, or STRIPE_WEBHOOK_SECRET is "
            "not this endpoint's signing secret."
        )


@dataclass
class Receipt:
    status: int
    body: dict[str, Any] = field(default_factory=dict)
    event_id: str | None = None
    created: bool = False  # a new event, to be applied


def receive(
    engine: Engine, payload: bytes, header: str | None, secret: str, *, now: float | None = None
) -> Receipt:
    """Verify and store one delivery; nothing is stored unless the signature is good."""
    try:
        verify_signature(payload, header, secret, now=now)
    except SignatureError as exc:
        return Receipt(400, {"error": str(exc)})
    try:
        data = json.loads(payload.decode("utf-8"))
        payments_events.parse_event(data)
    except (UnicodeDecodeError, json.JSONDecodeError):
        return Receipt(400, {"error": "The body is not JSON; nothing was stored."})
    except ValidationError as exc:
        return Receipt(400, {"error": str(exc)})
    with session_scope(engine) as session:
        stored = payments_events.store_event(session, data, source="webhook")
        event_id = stored.event.id
    # A redelivery or replay of a stored event is acknowledged and not applied again.
    return Receipt(
        200, {"received": True, "duplicate": not stored.created}, event_id, stored.created
    )


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    # Listen backlog. Stripe delivers many events at once; with the default of 5, a burst of
    # connections overflows the queue and deliveries are reset (the webhook flood drill).
    request_queue_size = 128
    engine: Engine
    secret: str
    gateway: Gateway | None


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("webhook %s", format % args)

    def _reply(self, status: int, body: dict[str, Any]) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)
        self.wfile.flush()

    def do_GET(self) -> None:
        if self.path == "/healthz":
            self._reply(200, {"ok": True})
        else:
            self._reply(404, {"error": "not found"})

    def do_POST(self) -> None:
        if self.path.split("?", 1)[0] not in WEBHOOK_PATHS:
            self._reply(404, {"error": "not found"})
            return
        try:
            length = int(self.headers.get("Content-Length") or 0)
        except ValueError:
            length = -1
        if length < 0 or length > MAX_BODY_BYTES:
            self.close_connection = True
            self._reply(413, {"error": "body missing or too large"})
            return
        payload = self.rfile.read(length)
        try:
            receipt = receive(
                self.server.engine,
                payload,
                self.headers.get("Stripe-Signature"),
                self.server.secret,
            )
        except BillingError as exc:  # the database refused: Stripe will redeliver later
            log.error("webhook not stored: %s", exc)
            self._reply(500, {"error": "not stored; retry later"})
            return
        if receipt.status != 200:
            log.warning("webhook refused: %s", receipt.body.get("error"))
        self._reply(receipt.status, receipt.body)
        if receipt.created and receipt.event_id:
            self._apply(receipt.event_id)

    def _apply(self, event_id: str) -> None:
        gateway = self.server.gateway
        if gateway is None:
            return  # no API key: stored, applied by the next `sync`
        try:
            outcome = payments_events.process_event_id(
                self.server.engine, gateway, event_id, now_fn=utcnow
            )
            log.info("event %s: %s", event_id, outcome)
        except BillingError as exc:
            log.warning("event %s stored, not applied yet (next sync retries): %s", event_id, exc)


def make_server(engine: Engine, settings: Settings, host: str, port: int) -> _Server:
    """A webhook server bound to host:port (port 0 picks a free one); call serve_forever()."""
    if settings.stripe_webhook_secret is None:
        raise ConfigError(
            "STRIPE_WEBHOOK_SECRET is not set: copy the endpoint's signing secret (whsec_...) "
            "from the Stripe dashboard into the environment or .streamlit/secrets.toml."
        )
    server = _Server((host, port), _Handler)
    server.engine = engine
    server.secret = settings.stripe_webhook_secret.get_secret_value()
    server.gateway = Gateway.from_settings(settings) if settings.stripe_enabled else None
    return server
