"""Stripe webhook receiver: verify the signature, store the raw event, answer 2xx, then apply.

Served by uvicorn (asyncio: an idle connection costs a socket, not a thread) running a small
Starlette app, meant to sit behind a TLS proxy. Bounded by the WEBHOOK_* settings (`Limits`):
body size (413, by Content-Length and while streaming), body read time (408), idle connections
and slow request headers (closed), concurrent connections (503), graceful shutdown on SIGTERM.
Applying uses the same handler as `sync` (payments.events), after the answer; an event that
fails to apply is retried with backoff by `sync` and by later deliveries.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import logging
import socket
import threading
import time
from dataclasses import dataclass, field
from typing import Any

import uvicorn
from sqlalchemy.engine import Engine
from starlette.applications import Starlette
from starlette.background import BackgroundTask
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route
from uvicorn.protocols.http.h11_impl import H11Protocol

from billing_core.config import Settings
from billing_core.db import session_scope
from billing_core.errors import BillingError, ConfigError, ValidationError
from billing_core.payments import events as payments_events
from billing_core.periods import utcnow
from billing_core.stripe.gateway import Gateway

log = logging.getLogger(__name__)

# Stripe's own libraries reject signatures older than this; so do we.
TOLERANCE_SECONDS = 300
# Stripe events are a few kB; anything far larger is not from Stripe (WEBHOOK_MAX_BODY_BYTES).
MAX_BODY_BYTES = 1_000_000
# Listen backlog. Stripe delivers many events at once; a short queue overflows in a burst and
# deliveries are reset (the webhook flood drill).
BACKLOG = 128
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


@dataclass(frozen=True)
class Limits:
    """What one client may hold (settings WEBHOOK_*); seconds and bytes."""

    max_body_bytes: int = MAX_BODY_BYTES
    read_timeout_seconds: float = 10.0
    idle_timeout_seconds: int = 5
    max_connections: int = 100
    shutdown_grace_seconds: int = 30

    @classmethod
    def from_settings(cls, settings: Settings) -> Limits:
        return cls(
            max_body_bytes=settings.webhook_max_body_bytes,
            read_timeout_seconds=settings.webhook_read_timeout_seconds,
            idle_timeout_seconds=settings.webhook_idle_timeout_seconds,
            max_connections=settings.webhook_max_connections,
            shutdown_grace_seconds=settings.webhook_shutdown_grace_seconds,
        )


class _BodyTooLarge(Exception):
    """The body is over Limits.max_body_bytes (declared or streamed)."""


async def _read_body(request: Request, limit: int) -> bytes:
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise _BodyTooLarge
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:  # chunked, or more than declared: stop reading here
            raise _BodyTooLarge
        chunks.append(chunk)
    return b"".join(chunks)


def _reply(status: int, body: dict[str, Any], *, close: bool = False) -> JSONResponse:
    # Closing after a refused body: the rest of it may still be on its way.
    return JSONResponse(body, status, headers={"Connection": "close"} if close else None)


class _Applier:
    """Applies a stored event after the answer, then retries failed events that are due.

    One retry pass at a time: concurrent deliveries would otherwise retry the same events.
    """

    def __init__(self, engine: Engine, gateway: Gateway | None) -> None:
        self.engine = engine
        self.gateway = gateway
        self._retrying = threading.Lock()

    def __call__(self, event_id: str) -> None:
        if self.gateway is None:
            return  # no API key: stored, applied by the next `sync`
        try:
            outcome = payments_events.process_event_id(
                self.engine, self.gateway, event_id, now_fn=utcnow
            )
            log.info("event %s: %s", event_id, outcome)
            if self._retrying.acquire(blocking=False):
                try:
                    payments_events.process_pending(
                        self.engine, self.gateway, now_fn=utcnow, retries_only=True
                    )
                finally:
                    self._retrying.release()
        except BillingError as exc:  # the database refused: the event stays stored
            log.warning("event %s stored, not applied yet (next sync retries): %s", event_id, exc)


def make_app(engine: Engine, secret: str, gateway: Gateway | None, limits: Limits) -> Starlette:
    """The ASGI app: POST a delivery to any of WEBHOOK_PATHS; GET /healthz."""
    apply = _Applier(engine, gateway)

    async def webhook(request: Request) -> JSONResponse:
        try:
            payload = await asyncio.wait_for(
                _read_body(request, limits.max_body_bytes), limits.read_timeout_seconds
            )
        except TimeoutError:
            log.warning("webhook body not received within %s s", limits.read_timeout_seconds)
            return _reply(408, {"error": "the body did not arrive in time"}, close=True)
        except _BodyTooLarge:
            return _reply(413, {"error": "body too large"}, close=True)
        header = request.headers.get("stripe-signature")
        try:
            receipt = await run_in_threadpool(receive, engine, payload, header, secret)
        except BillingError as exc:  # the database refused: Stripe will redeliver later
            log.error("webhook not stored: %s", exc)
            return _reply(500, {"error": "not stored; retry later"})
        if receipt.status != 200:
            log.warning("webhook refused: %s", receipt.body.get("error"))
        created = receipt.event_id if receipt.created else None
        task = BackgroundTask(apply, created) if created else None
        return JSONResponse(receipt.body, receipt.status, background=task)

    async def healthz(request: Request) -> JSONResponse:
        return JSONResponse({"ok": True})

    routes = [Route(path, webhook, methods=["POST"]) for path in sorted(WEBHOOK_PATHS)]
    return Starlette(routes=[*routes, Route("/healthz", healthz, methods=["GET"])])


class _Protocol(H11Protocol):
    """uvicorn's HTTP/1.1 protocol with a deadline on request headers.

    uvicorn closes an idle keep-alive connection only after a first response, and any byte of a
    next request cancels that: a client that connects and sends nothing, or its headers a byte
    at a time, would hold the connection (and a place under max_connections) for ever. Here the
    same timeout also runs from the connection's start and after each response, and closes the
    connection if no request is in progress when it fires.
    """

    _headers_due: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        self._arm()

    def connection_lost(self, exc: Exception | None) -> None:
        if self._headers_due is not None:
            self._headers_due.cancel()
        super().connection_lost(exc)

    def _arm(self) -> None:
        if self._headers_due is not None:
            self._headers_due.cancel()
        self._headers_due = self.loop.call_later(self.timeout_keep_alive, self._headers_late)

    def _headers_late(self) -> None:
        waiting = self.cycle is None or self.cycle.response_complete
        if waiting and not self.transport.is_closing():
            self.timeout_keep_alive_handler()


def _listen(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen(BACKLOG)
    except OSError:
        sock.close()
        raise
    return sock


class WebhookServer:
    """uvicorn on a socket bound at construction (port 0 picks a free one).

    serve_forever() blocks until SIGTERM/SIGINT (main thread) or shutdown(); either way new
    connections stop, and requests in flight get Limits.shutdown_grace_seconds to finish.
    """

    def __init__(self, app: Starlette, host: str, port: int, limits: Limits) -> None:
        self.socket = _listen(host, port)
        self.server_address: tuple[str, int] = self.socket.getsockname()[:2]
        config = uvicorn.Config(
            app,
            http=_Protocol,
            lifespan="off",
            access_log=False,
            log_config=None,  # the CLI configured logging already
            backlog=BACKLOG,
            timeout_keep_alive=limits.idle_timeout_seconds,
            limit_concurrency=limits.max_connections,
            timeout_graceful_shutdown=limits.shutdown_grace_seconds,
        )
        self._server = uvicorn.Server(config)
        self._stopped = threading.Event()

    def serve_forever(self) -> None:
        try:
            self._server.run(sockets=[self.socket])
        finally:
            self._stopped.set()

    def shutdown(self, timeout: float | None = None) -> None:
        """Stop as SIGTERM does, and wait (at most `timeout` seconds) until it has."""
        self._server.should_exit = True
        self._stopped.wait(timeout)

    def server_close(self) -> None:
        self.socket.close()


def make_server(
    engine: Engine, settings: Settings, host: str, port: int, limits: Limits | None = None
) -> WebhookServer:
    """A webhook server bound to host:port (port 0 picks a free one); call serve_forever().

    Raises ConfigError without STRIPE_WEBHOOK_SECRET, OSError when the address is taken."""
    if settings.stripe_webhook_secret is None:
        raise ConfigError(
            "STRIPE_WEBHOOK_SECRET is not set: copy the endpoint's signing secret (whsec_...) "
            "from the Stripe dashboard into the environment or .streamlit/secrets.toml."
        )
    limits = limits or Limits.from_settings(settings)
    secret = settings.stripe_webhook_secret.get_secret_value()
    gateway = Gateway.from_settings(settings) if settings.stripe_enabled else None
    return WebhookServer(make_app(engine, secret, gateway, limits), host, port, limits)
