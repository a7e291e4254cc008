"""A local, stateful Stripe test server for tests and benchmarks.

Pure standard library. It speaks enough of Stripe's v1 HTTP API for the real
stripe-python client to create customers, attach test cards, create, fill,
finalize, pay, send, void and search invoices, open checkout sessions in setup
mode, refund charges and read events, with Stripe's idempotency rules and
injectable faults (429, 5xx, latency, hangs, dropped responses, rate limits).

Usage::

    with StripeTestServer() as server:
        client = stripe.StripeClient(
            "sk_test_local", base_addresses={"api": server.url}, max_network_retries=2
        )
        ...

Standalone (for the dashboard or a browser test, via ``STRIPE_API_BASE``)::

    python -m tests.support.stripe_server --port 12111

Object shapes follow Stripe's published example objects (stripe-fixtures3.json,
MIT) for API version 2026-10-28.endive; only the fields listed in this module are
produced.
"""

from __future__ import annotations

import argparse
import base64
import copy
import hashlib
import hmac
import html
import json
import re
import secrets
import socket
import string
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from decimal import ROUND_HALF_UP, Decimal, InvalidOperation
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any
from urllib.parse import parse_qsl, urlsplit

__all__ = ["DEFAULT_API_VERSION", "TEST_CARDS", "StripeTestServer"]

DEFAULT_API_VERSION = "2026-10-28.endive"
MAX_LINES_PER_INVOICE = 250
EMBEDDED_LINES = 10  # Stripe embeds the first 10 lines in an invoice object

JSON = dict[str, Any]


@dataclass(frozen=True)
class _TestCard:
    brand: str
    last4: str
    decline_code: str | None  # None: charges succeed
    funding: str = "credit"


# Stripe's test payment-method tokens (https://docs.stripe.com/testing).
TEST_CARDS: dict[str, _TestCard] = {
    "pm_card_visa": _TestCard("visa", "4242", None),
    "pm_card_visa_debit": _TestCard("visa", "5556", None, "debit"),
    "pm_card_mastercard": _TestCard("mastercard", "4444", None),
    "pm_card_amex": _TestCard("amex", "8431", None),
    "pm_card_chargeDeclined": _TestCard("visa", "0002", "generic_decline"),
    "pm_card_chargeDeclinedInsufficientFunds": _TestCard("visa", "9995", "insufficient_funds"),
    "pm_card_chargeDeclinedExpiredCard": _TestCard("visa", "0069", "expired_card"),
}

_ALNUM = string.ascii_letters + string.digits


def _rand(n: int = 24) -> str:
    return "".join(secrets.choice(_ALNUM) for _ in range(n))


class StripeAPIError(Exception):
    """An error answered in Stripe's ``{"error": {...}}`` shape."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        type_: str = "invalid_request_error",
        code: str | None = None,
        param: str | None = None,
        store: bool = True,
        extra: JSON | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.type_ = type_
        self.code = code
        self.param = param
        # Stripe saves an idempotent result only once the endpoint started
        # executing: parameter validation errors are not stored.
        self.store = store
        self.extra = extra or {}
        self.headers = headers or {}

    def body(self, request_id: str) -> JSON:
        err: JSON = {"message": self.message, "type": self.type_}
        if self.code:
            err["code"] = self.code
            err["doc_url"] = f"https://stripe.com/docs/error-codes/{self.code.replace('_', '-')}"
        if self.param:
            err["param"] = self.param
        err["request_log_url"] = f"https://dashboard.stripe.com/test/logs/{request_id}"
        err.update(self.extra)
        return {"error": err}


def _invalid(message: str, param: str | None = None, code: str | None = None) -> StripeAPIError:
    """A parameter validation error (400, never stored for idempotency)."""
    return StripeAPIError(400, message, param=param, code=code or "parameter_invalid", store=False)


def _missing(param: str) -> StripeAPIError:
    return StripeAPIError(
        400, f"Missing required param: {param}.", param=param, code="parameter_missing", store=False
    )


def _state_error(message: str, code: str, param: str | None = None) -> StripeAPIError:
    """A 400 raised while executing (stored for idempotency, like Stripe)."""
    return StripeAPIError(400, message, code=code, param=param, store=True)


def _no_such(kind: str, obj_id: str, param: str | None = None) -> StripeAPIError:
    # Stripe answers 404 for a missing object in the path, 400 for one named in a parameter.
    return StripeAPIError(
        400 if param else 404,
        f"No such {kind}: '{obj_id}'",
        code="resource_missing",
        param=param or "id",
        store=False,
    )


# --------------------------------------------------------------------------- form encoding


def parse_form(pairs: Iterable[tuple[str, str]]) -> JSON:
    """Turn ``a[b][0][c]=v`` pairs into nested dicts and lists (``x[]`` appends)."""
    root: JSON = {}
    for key, value in pairs:
        m = re.match(r"^([^\[\]]+)((?:\[[^\[\]]*\])*)$", key)
        if not m:
            raise _invalid(f"Invalid parameter name: {key}", key)
        parts = [m.group(1), *re.findall(r"\[([^\[\]]*)\]", m.group(2))]
        node: Any = root
        for i, part in enumerate(parts):
            last = i == len(parts) - 1
            if part == "":  # a[]=x
                part = str(len(node))
            if last:
                node[part] = value
            else:
                nxt = node.get(part)
                if not isinstance(nxt, dict):
                    nxt = {}
                    node[part] = nxt
                node = nxt
    result: JSON = _listify(root)
    return result


def _listify(node: Any) -> Any:
    if isinstance(node, dict):
        conv = {k: _listify(v) for k, v in node.items()}
        if conv and all(k.isdigit() for k in conv):
            return [conv[k] for k in sorted(conv, key=int)]
        return conv
    return node


def _as_int(value: Any, param: str) -> int:
    try:
        if isinstance(value, bool):
            raise ValueError
        return int(str(value))
    except (TypeError, ValueError):
        raise _invalid(f"Invalid integer: {value}", param) from None


def _as_decimal(value: Any, param: str) -> Decimal:
    try:
        d = Decimal(str(value))
    except InvalidOperation:
        raise _invalid(f"Invalid decimal: {value}", param) from None
    if not d.is_finite():
        raise _invalid(f"Invalid decimal: {value}", param)
    return d


def _as_bool(value: Any, param: str) -> bool:
    if value in ("true", True):
        return True
    if value in ("false", False):
        return False
    raise _invalid(f"Invalid boolean: {value}", param)


def _as_str(value: Any, param: str) -> str:
    if not isinstance(value, str):
        raise _invalid(f"Invalid string: {value!r}", param)
    return value


def _as_list(value: Any, param: str) -> list[Any]:
    if isinstance(value, list):
        return value
    if value == "":
        return []
    raise _invalid(f"Invalid array: {param}", param)


def _check_unknown(params: JSON, allowed: Iterable[str], prefix: str = "") -> None:
    allowed_set = set(allowed) | {"expand"}
    for key in params:
        if key not in allowed_set:
            name = f"{prefix}[{key}]" if prefix else key
            raise _invalid(f"Received unknown parameter: {name}", name)


def _merge_metadata(current: JSON, value: Any, param: str = "metadata") -> JSON:
    """Stripe's metadata update: keys merge, '' unsets a key, metadata='' clears all."""
    if value == "":
        return {}
    if not isinstance(value, dict):
        raise _invalid("Invalid hash", param)
    out = dict(current)
    for k, v in value.items():
        if not isinstance(v, str):
            raise _invalid("Invalid metadata value", f"{param}[{k}]")
        if v == "":
            out.pop(k, None)
        else:
            if len(k) > 40 or len(v) > 500:
                raise _invalid(
                    "Metadata keys are limited to 40 and values to 500 characters", param
                )
            out[k] = v
    if len(out) > 50:
        raise _invalid("Metadata is limited to 50 keys", param)
    return out


def _created_filter(value: Any, param: str) -> Callable[[int], bool]:
    if isinstance(value, dict):
        _check_unknown(value, ("gt", "gte", "lt", "lte"), param)
        bounds = {k: _as_int(v, f"{param}[{k}]") for k, v in value.items()}

        def check(ts: int) -> bool:
            return (
                ("gt" not in bounds or ts > bounds["gt"])
                and ("gte" not in bounds or ts >= bounds["gte"])
                and ("lt" not in bounds or ts < bounds["lt"])
                and ("lte" not in bounds or ts <= bounds["lte"])
            )

        return check
    exact = _as_int(value, param)
    return lambda ts: ts == exact


# --------------------------------------------------------------------------- search queries

_CLAUSE = re.compile(
    r"""^(?P<neg>-)?\s*(?P<field>metadata\[(?P<q>['"])(?P<mkey>.+?)(?P=q)\]|[a-z_]+)\s*
        (?P<op>:|~|>=|<=|>|<)\s*
        (?:'(?P<sq>(?:[^'\\]|\\.)*)'|"(?P<dq>(?:[^"\\]|\\.)*)"|(?P<bare>[^\s'"]+))$""",
    re.X,
)


def _parse_query(query: str, fields: set[str]) -> Callable[[JSON], bool]:
    query = query.strip()
    if not query:
        raise _invalid("Missing required param: query.", "query", "parameter_missing")
    has_and = re.search(r"\s+AND\s+", query) is not None
    has_or = re.search(r"\s+OR\s+", query) is not None
    if has_and and has_or:
        raise _invalid("Search queries cannot mix AND and OR", "query")
    clauses = re.split(r"\s+(?:AND|OR)\s+", query)
    tests: list[Callable[[JSON], bool]] = []
    for clause in clauses:
        m = _CLAUSE.match(clause.strip())
        if not m:
            raise _invalid(f"Invalid search query: {clause!r}", "query")
        raw = m.group("sq") if m.group("sq") is not None else m.group("dq")
        if raw is None:
            raw = m.group("bare")
        value = re.sub(r"\\(.)", r"\1", raw)
        mkey = m.group("mkey")
        fname = m.group("field")
        if mkey is None and fname not in fields:
            raise _invalid(f"Field '{fname}' is not supported in search queries", "query")
        tests.append(_make_clause(mkey, fname, m.group("op"), value, bool(m.group("neg"))))
    if has_or:
        return lambda obj: any(t(obj) for t in tests)
    return lambda obj: all(t(obj) for t in tests)


def _make_clause(
    mkey: str | None, fname: str, op: str, value: str, neg: bool
) -> Callable[[JSON], bool]:
    def get(obj: JSON) -> Any:
        if mkey is not None:
            return (obj.get("metadata") or {}).get(mkey)
        return obj.get(fname)

    def test(obj: JSON) -> bool:
        actual = get(obj)
        if actual is None:
            result = False
        elif op == ":":
            result = str(actual).lower() == value.lower() if mkey is None else str(actual) == value
        elif op == "~":
            result = value.lower() in str(actual).lower()
        else:
            try:
                a, b = Decimal(str(actual)), Decimal(value)
            except InvalidOperation:
                return False
            result = {">": a > b, "<": a < b, ">=": a >= b, "<=": a <= b}[op]
        return not result if neg else result

    return test


# --------------------------------------------------------------------------- request plumbing


@dataclass
class _Request:
    method: str
    path: str
    params: JSON
    api_key: str
    idempotency_key: str | None
    version: str
    request_id: str


@dataclass
class _FaultRule:
    remaining: int
    status: int
    path_contains: str | None
    method: str | None
    should_retry: bool | None = None
    seconds: float = 0.0

    def matches(self, method: str, path: str) -> bool:
        return (
            self.remaining > 0
            and (self.path_contains is None or self.path_contains in path)
            and (self.method is None or self.method.upper() == method)
        )


@dataclass
class _Stored:
    fingerprint: str
    status: int
    body: bytes
    headers: dict[str, str]
    request_id: str


@dataclass
class _Response:
    status: int
    body: bytes
    headers: dict[str, str] = field(default_factory=dict)
    content_type: str = "application/json"
    drop: bool = False


Handler = Callable[[_Request, list[str]], tuple[int, JSON]]


class StripeTestServer:
    """In-memory Stripe v1 emulator on 127.0.0.1 (thread safe, one lock)."""

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        api_key: str | None = None,
        latency: float = 0.0,
        rate_limit: float | None = None,
        search_lag: float = 0.0,
        verbose: bool = False,
    ) -> None:
        self.host = host
        self._requested_port = port
        self.api_key = api_key  # None: any sk_test_/rk_test_ key is accepted
        self.verbose = verbose
        self._lock = threading.RLock()
        self._stopping = threading.Event()
        self._httpd: _HTTPServer | None = None
        self._thread: threading.Thread | None = None
        self._latency = latency
        self._rate_limit = rate_limit
        self._search_lag = search_lag
        self._routes: list[tuple[str, re.Pattern[str], Handler]] = []
        self._register_routes()
        self._reset_state()

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> StripeTestServer:
        if self._httpd is not None:
            return self
        self._stopping.clear()
        httpd = _HTTPServer((self.host, self._requested_port), _RequestHandler)
        httpd.app = self
        self._httpd = httpd
        self._thread = threading.Thread(
            target=httpd.serve_forever,
            kwargs={"poll_interval": 0.05},
            name="stripe-test-server",
            daemon=True,
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        httpd, self._httpd = self._httpd, None
        if httpd is None:
            return
        self._stopping.set()  # wakes hanging requests
        httpd.shutdown()
        httpd.close_connections()
        httpd.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    def __enter__(self) -> StripeTestServer:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    @property
    def port(self) -> int:
        if self._httpd is None:
            raise RuntimeError("server not started")
        return int(self._httpd.server_address[1])

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    # ------------------------------------------------------------------ knobs

    @property
    def latency(self) -> float:
        with self._lock:
            return self._latency

    @latency.setter
    def latency(self, seconds: float) -> None:
        with self._lock:
            self._latency = max(0.0, float(seconds))

    @property
    def rate_limit(self) -> float | None:
        with self._lock:
            return self._rate_limit

    @rate_limit.setter
    def rate_limit(self, per_second: float | None) -> None:
        with self._lock:
            self._rate_limit = per_second if per_second and per_second > 0 else None
            self._tokens = float(self._rate_limit or 0)
            self._tokens_at = time.monotonic()

    @property
    def search_lag(self) -> float:
        """Seconds before a new object shows up in search (Stripe: up to a minute)."""
        with self._lock:
            return self._search_lag

    @search_lag.setter
    def search_lag(self, seconds: float) -> None:
        with self._lock:
            self._search_lag = max(0.0, float(seconds))

    def fail_next(
        self,
        n: int = 1,
        status: int = 500,
        path_contains: str | None = None,
        *,
        method: str | None = None,
        should_retry: bool | None = None,
    ) -> None:
        """The next ``n`` matching API requests fail with ``status`` before any state change.

        429 answers a ``rate_limit`` error, 409 a ``lock_timeout``, 5xx an ``api_error``.
        ``should_retry`` adds a ``Stripe-Should-Retry`` header. Faults are never stored
        for idempotency, so a retry with the same key proceeds.
        """
        if status < 400:
            raise ValueError("status must be an error status")
        with self._lock:
            self._faults.append(_FaultRule(n, status, path_contains, method, should_retry))

    def hang_next(self, n: int = 1, seconds: float = 5.0, path_contains: str | None = None) -> None:
        """The next ``n`` matching requests wait ``seconds`` before being processed.

        The request is still processed afterwards (as when a client times out but
        Stripe carries on), so a retry with the same idempotency key replays it.
        """
        with self._lock:
            self._hangs.append(_FaultRule(n, 0, path_contains, None, seconds=seconds))

    def drop_response_next(self, n: int = 1, path_contains: str | None = None) -> None:
        """Process the next ``n`` matching requests, then close the connection unanswered."""
        with self._lock:
            self._drops.append(_FaultRule(n, 0, path_contains, None))

    def clear_faults(self) -> None:
        with self._lock:
            self._faults.clear()
            self._hangs.clear()
            self._drops.clear()

    def expire_idempotency_keys(self) -> None:
        """Forget every stored idempotency key (Stripe expires them after 24 hours)."""
        with self._lock:
            self._idempotency.clear()

    def advance_clock(self, seconds: int) -> None:
        """Move the server's clock (``created``, due dates, ...) forward."""
        with self._lock:
            self._clock_offset += int(seconds)

    def now(self) -> int:
        with self._lock:
            return int(time.time()) + self._clock_offset

    def reset(self) -> None:
        """Forget all objects, events, keys, faults and the request log; knobs back to defaults."""
        with self._lock:
            self._reset_state()
            self._latency = 0.0
            self._rate_limit = None
            self._search_lag = 0.0

    def _reset_state(self) -> None:
        with self._lock:
            self._objects: dict[str, JSON] = {}  # every object by id
            self._seq: dict[str, int] = {}  # creation order
            self._born: dict[str, float] = {}  # monotonic creation time (search lag)
            self._counter = 0
            self._deleted: set[str] = set()
            self._invoice_lines: dict[str, list[JSON]] = {}
            self._invoice_payments: dict[str, list[JSON]] = {}
            self._events: list[JSON] = []
            self._idempotency: dict[tuple[str, str], _Stored] = {}
            self._faults: list[_FaultRule] = []
            self._hangs: list[_FaultRule] = []
            self._drops: list[_FaultRule] = []
            self._log: list[tuple[str, str, int, str | None]] = []
            self._clock_offset = 0
            self._tokens = float(self._rate_limit or 0)
            self._tokens_at = time.monotonic()
            self._current: _Request | None = None

    # ------------------------------------------------------------------ inspection

    def _list_of(self, obj_type: str, pred: Callable[[JSON], bool] | None = None) -> list[JSON]:
        with self._lock:
            out = [
                self._render(o)
                for oid, o in self._objects.items()
                if o.get("object") == obj_type
                and oid not in self._deleted
                and (pred is None or pred(o))
            ]
            return sorted(out, key=lambda o: self._seq[o["id"]])

    def invoices(self, customer: str | None = None, status: str | None = None) -> list[JSON]:
        """Snapshots of all invoices, oldest first."""
        return self._list_of(
            "invoice",
            lambda o: (
                (customer is None or o["customer"] == customer)
                and (status is None or o["status"] == status)
            ),
        )

    def invoice(self, invoice_id: str) -> JSON:
        with self._lock:
            return self._render(self._get(invoice_id, "invoice"))

    def customers(self) -> list[JSON]:
        """Snapshots of all customers that are not deleted, oldest first."""
        return self._list_of("customer")

    def customer(self, customer_id: str) -> JSON:
        with self._lock:
            return self._render(self._get(customer_id, "customer", allow_deleted=True))

    def payment_methods(self, customer: str | None = None) -> list[JSON]:
        return self._list_of(
            "payment_method", lambda o: customer is None or o["customer"] == customer
        )

    def charges(self) -> list[JSON]:
        return self._list_of("charge")

    def refunds(self) -> list[JSON]:
        return self._list_of("refund")

    def checkout_sessions(self) -> list[JSON]:
        return self._list_of("checkout.session")

    def events(self, type: str | None = None) -> list[JSON]:
        """Events oldest first (the Events API lists newest first)."""
        with self._lock:
            return [
                copy.deepcopy(e)
                for e in self._events
                if type is None or _type_matches(type, e["type"])
            ]

    @property
    def request_log(self) -> list[tuple[str, str, int, str | None]]:
        """(method, path, status, idempotency_key) of every API request, in arrival order."""
        with self._lock:
            return list(self._log)

    def request_count(self, path_contains: str | None = None, method: str | None = None) -> int:
        with self._lock:
            return sum(
                1
                for m, p, _s, _k in self._log
                if (path_contains is None or path_contains in p)
                and (method is None or m == method.upper())
            )

    # ------------------------------------------------------------------ out-of-band helpers

    def attach_card(
        self, customer_id: str, card: str = "pm_card_visa", default: bool = True
    ) -> str:
        """Attach a test card to a customer (as Checkout would); returns the pm id."""
        with self._lock:
            cus = self._get(customer_id, "customer")
            pm = self._attach(card, cus["id"], param="payment_method")
            if default:
                prev = copy.deepcopy(cus["invoice_settings"])
                cus["invoice_settings"]["default_payment_method"] = pm["id"]
                self._emit("customer.updated", cus, {"invoice_settings": prev})
            return str(pm["id"])

    def create_customer_directly(
        self,
        email: str | None = None,
        name: str | None = None,
        metadata: dict[str, str] | None = None,
    ) -> JSON:
        with self._lock:
            cus = self._new_customer({"email": email, "name": name, "metadata": metadata or {}})
            return self._render(cus)

    def pay_out_of_band(self, invoice_id: str) -> JSON:
        """Mark an invoice paid outside Stripe (emits invoice.paid)."""
        with self._lock:
            inv = self._get(invoice_id, "invoice")
            if inv["status"] == "draft":
                self._finalize(inv)
            if inv["status"] not in ("open", "uncollectible"):
                raise ValueError(f"cannot pay an invoice in status {inv['status']}")
            self._mark_paid(inv, out_of_band=True)
            return self._render(inv)

    def void(self, invoice_id: str) -> JSON:
        with self._lock:
            inv = self._get(invoice_id, "invoice")
            self._void(inv)
            return self._render(inv)

    def mark_uncollectible(self, invoice_id: str) -> JSON:
        with self._lock:
            inv = self._get(invoice_id, "invoice")
            self._mark_uncollectible(inv)
            return self._render(inv)

    def set_customer_deleted(self, customer_id: str) -> None:
        """Delete a customer as if from the Stripe dashboard (emits customer.deleted)."""
        with self._lock:
            cus = self._get(customer_id, "customer")
            self._delete_customer(cus)

    def create_invoice_directly(
        self,
        customer_id: str,
        amount: int,
        currency: str = "usd",
        metadata: dict[str, str] | None = None,
        *,
        status: str = "open",
        description: str = "Invoice created outside the billing tool",
    ) -> JSON:
        """An invoice made outside our tool: one line of ``amount``; status draft, open or paid."""
        if status not in ("draft", "open", "paid"):
            raise ValueError("status must be draft, open or paid")
        with self._lock:
            cus = self._get(customer_id, "customer")
            inv = self._new_invoice(
                cus, {"currency": currency, "metadata": metadata or {}, "description": description}
            )
            self._add_line(inv, {"amount": str(amount), "description": description}, "lines[0]")
            self._recompute(inv)
            if status in ("open", "paid"):
                self._finalize(inv)
            if status == "paid" and inv["status"] == "open":
                self._mark_paid(inv, out_of_band=True)
            return self._render(inv)

    def complete_checkout_session(self, session_id: str, card: str = "pm_card_visa") -> str:
        """Finish a setup-mode Checkout session as the customer would; returns the pm id.

        Like Stripe, this does NOT set the customer's default payment method: do that
        when handling ``checkout.session.completed`` / ``setup_intent.succeeded``.
        """
        with self._lock:
            return self._complete_checkout(self._get(session_id, "checkout.session"), card)

    # ------------------------------------------------------------------ webhooks

    @staticmethod
    def sign_payload(payload: bytes, secret: str, timestamp: int | None = None) -> str:
        """A ``Stripe-Signature`` header value for ``payload``."""
        t = int(time.time()) if timestamp is None else int(timestamp)
        signed = f"{t}.".encode() + payload
        sig = hmac.new(secret.encode(), signed, hashlib.sha256).hexdigest()
        return f"t={t},v1={sig}"

    def deliver_events(
        self,
        url: str,
        secret: str,
        events: Iterable[JSON | str] | None = None,
        *,
        timeout: float = 10.0,
        timestamp: int | None = None,
    ) -> list[int]:
        """POST events (default: all, oldest first) to ``url`` as Stripe would; returns statuses.

        A connection failure counts as status 0.
        """
        with self._lock:
            if events is None:
                todo = [copy.deepcopy(e) for e in self._events]
            else:
                by_id = {e["id"]: e for e in self._events}
                todo = [
                    copy.deepcopy(by_id[e]) if isinstance(e, str) else copy.deepcopy(e)
                    for e in events
                ]
        statuses: list[int] = []
        for event in todo:
            payload = json.dumps(event, indent=2).encode()
            req = urllib.request.Request(
                url,
                data=payload,
                method="POST",
                headers={
                    "Content-Type": "application/json; charset=utf-8",
                    "User-Agent": "Stripe/1.0 (+https://stripe.com/docs/webhooks)",
                    "Stripe-Signature": self.sign_payload(payload, secret, timestamp),
                },
            )
            try:
                with urllib.request.urlopen(req, timeout=timeout) as resp:
                    statuses.append(int(resp.status))
            except urllib.error.HTTPError as exc:
                statuses.append(int(exc.code))
            except (urllib.error.URLError, OSError):
                statuses.append(0)
        return statuses

    # ------------------------------------------------------------------ HTTP entry

    def _before(self, method: str, path: str) -> None:
        """Latency and hangs, outside the lock."""
        with self._lock:
            delay = self._latency
            for rule in self._hangs:
                if rule.matches(method, path):
                    rule.remaining -= 1
                    delay += rule.seconds
                    break
        if delay > 0:
            self._stopping.wait(delay)

    def _handle_api(
        self, method: str, path: str, query: str, body: bytes, headers: dict[str, str]
    ) -> _Response:
        self._before(method, path)
        with self._lock:
            request_id = "req_" + _rand(14)
            idem = headers.get("idempotency-key") or None
            version = headers.get("stripe-version") or DEFAULT_API_VERSION
            base_headers = {"Request-Id": request_id, "Stripe-Version": version}
            if idem:
                base_headers["Idempotency-Key"] = idem
            resp = self._process(method, path, query, body, headers, request_id, idem, version)
            resp.headers = {**base_headers, **resp.headers}
            self._log.append((method, path, resp.status, idem))
            if method == "POST":
                for rule in self._drops:
                    if rule.matches(method, path):
                        rule.remaining -= 1
                        resp.drop = True
                        break
            return resp

    def _error_response(self, err: StripeAPIError, request_id: str) -> _Response:
        return _Response(err.status, _dumps(err.body(request_id)), dict(err.headers))

    def _process(
        self,
        method: str,
        path: str,
        query: str,
        body: bytes,
        headers: dict[str, str],
        request_id: str,
        idem: str | None,
        version: str,
    ) -> _Response:
        # 1. injected faults (never stored)
        for rule in self._faults:
            if rule.matches(method, path):
                rule.remaining -= 1
                return self._error_response(_fault_error(rule), request_id)
        # 2. rate limit (token bucket)
        if self._rate_limit:
            now = time.monotonic()
            self._tokens = min(
                self._rate_limit, self._tokens + (now - self._tokens_at) * self._rate_limit
            )
            self._tokens_at = now
            if self._tokens < 1.0:
                return self._error_response(
                    StripeAPIError(
                        429,
                        "Request rate limit exceeded. You can learn more about rate limits here "
                        "https://stripe.com/docs/rate-limits.",
                        code="rate_limit",
                        store=False,
                    ),
                    request_id,
                )
            self._tokens -= 1.0
        # 3. authentication
        try:
            api_key = self._authenticate(headers.get("authorization", ""))
        except StripeAPIError as err:
            return self._error_response(err, request_id)
        # 4. parameters
        try:
            pairs = parse_qsl(query, keep_blank_values=True)
            if method == "POST":
                ctype = headers.get("content-type", "")
                if body and "json" in ctype:
                    raise _invalid(
                        "Request bodies must be form encoded (application/x-www-form-urlencoded)"
                    )
                pairs += parse_qsl(body.decode("utf-8"), keep_blank_values=True)
            params = parse_form(pairs)
        except StripeAPIError as err:
            return self._error_response(err, request_id)
        except UnicodeDecodeError:
            return self._error_response(_invalid("Request body is not valid UTF-8"), request_id)
        # 5. idempotency replay
        store_key: tuple[str, str] | None = None
        fingerprint = ""
        if method == "POST" and idem:
            if len(idem) > 255:
                return self._error_response(
                    _invalid("Idempotency-Key is too long", "Idempotency-Key"), request_id
                )
            store_key = (api_key, idem)
            fingerprint = hashlib.sha256(
                json.dumps([method, path, sorted(pairs)], separators=(",", ":")).encode()
            ).hexdigest()
            stored = self._idempotency.get(store_key)
            if stored is not None:
                if stored.fingerprint != fingerprint:
                    return self._error_response(
                        StripeAPIError(
                            400,
                            "Keys for idempotent requests can only be used with the same "
                            "parameters they were first used with. Try using a key other than "
                            f"'{idem}' if you meant to execute a different request.",
                            type_="idempotency_error",
                            store=False,
                        ),
                        request_id,
                    )
                return _Response(
                    stored.status,
                    stored.body,
                    {
                        **stored.headers,
                        "Idempotent-Replayed": "true",
                        "Original-Request": stored.request_id,
                    },
                )
        # 6. dispatch
        req = _Request(method, path, params, api_key, idem, version, request_id)
        self._current = req
        try:
            status, payload = self._dispatch(req)
            resp = _Response(status, _dumps(payload))
            store = True
        except StripeAPIError as err:
            resp = self._error_response(err, request_id)
            store = err.store and err.status not in (401, 409, 429) and err.status < 500
        finally:
            self._current = None
        if store_key is not None and store:
            self._idempotency[store_key] = _Stored(
                fingerprint, resp.status, resp.body, dict(resp.headers), request_id
            )
        return resp

    def _authenticate(self, header: str) -> str:
        key = ""
        if header.startswith("Bearer "):
            key = header[len("Bearer ") :].strip()
        elif header.startswith("Basic "):
            try:
                key = base64.b64decode(header[6:]).decode().split(":", 1)[0]
            except (ValueError, UnicodeDecodeError):
                key = ""
        if not key:
            raise StripeAPIError(
                401,
                "You did not provide an API key. You need to provide your API key in the "
                "Authorization header, using Bearer auth "
                "(e.g. 'Authorization: Bearer YOUR_SECRET_KEY').",
                store=False,
            )
        valid = (key.startswith("sk_test_") or key.startswith("rk_test_")) and len(key) > 8
        if self.api_key is not None:
            valid = valid and hmac.compare_digest(key, self.api_key)
        if not valid:
            raise StripeAPIError(401, f"Invalid API Key provided: {_redact(key)}", store=False)
        return key

    def _dispatch(self, req: _Request) -> tuple[int, JSON]:
        path_known = False
        for method, pattern, handler in self._routes:
            m = pattern.fullmatch(req.path)
            if not m:
                continue
            path_known = True
            if method == req.method:
                status, payload = handler(req, list(m.groups()))
                return status, self._expand(payload, req.params.get("expand"))
        if path_known:
            raise StripeAPIError(
                405, f"Unrecognized request URL ({req.method}: {req.path}).", store=False
            )
        raise StripeAPIError(
            404,
            f"Unrecognized request URL ({req.method}: {req.path}). "
            "Please see https://stripe.com/docs or we can help at https://support.stripe.com/.",
            store=False,
        )

    # ------------------------------------------------------------------ objects: common

    def _now(self) -> int:
        return int(time.time()) + self._clock_offset

    def _store(self, obj: JSON) -> JSON:
        self._counter += 1
        self._seq[obj["id"]] = self._counter
        self._born[obj["id"]] = time.monotonic()
        self._objects[obj["id"]] = obj
        return obj

    def _new_id(self, prefix: str) -> str:
        return f"{prefix}_{_rand(24)}"

    def _get(
        self, obj_id: str, obj_type: str, *, param: str | None = None, allow_deleted: bool = False
    ) -> JSON:
        obj = self._objects.get(obj_id) if isinstance(obj_id, str) else None
        kind = obj_type.split(".")[-1].replace("_", " ")
        if (
            obj is None
            or obj.get("object") != obj_type
            or (obj_id in self._deleted and not allow_deleted)
        ):
            raise _no_such(kind, str(obj_id), param)
        return obj

    def _render(self, obj: JSON) -> JSON:
        if obj["id"] in self._deleted and obj.get("object") == "customer":
            return {"id": obj["id"], "object": "customer", "deleted": True}
        if obj.get("object") == "invoice":
            return self._render_invoice(obj)
        return {k: copy.deepcopy(v) for k, v in obj.items() if not k.startswith("_")}

    def _emit(self, event_type: str, obj: JSON, previous: JSON | None = None) -> JSON:
        data: JSON = {"object": self._render(obj)}
        if previous is not None:
            data["previous_attributes"] = copy.deepcopy(previous)
        req = self._current
        event: JSON = {
            "id": self._new_id("evt"),
            "object": "event",
            "api_version": req.version if req else DEFAULT_API_VERSION,
            "created": self._now(),
            "data": data,
            "livemode": False,
            "pending_webhooks": 0,
            "request": {
                "id": req.request_id if req else None,
                "idempotency_key": req.idempotency_key if req else None,
            },
            "type": event_type,
        }
        self._counter += 1
        self._seq[event["id"]] = self._counter
        self._events.append(event)
        return event

    def _expand(self, payload: JSON, expand: Any) -> JSON:
        if not expand:
            return payload
        paths = expand if isinstance(expand, list) else [expand]
        for p in paths:
            if not isinstance(p, str):
                raise _invalid("Invalid expand", "expand")
            if payload.get("object") in ("list", "search_result") and p.startswith("data."):
                for item in payload.get("data", []):
                    self._expand_path(item, p[5:].split("."))
            else:
                self._expand_path(payload, p.split("."))
        return payload

    def _expand_path(self, node: JSON, parts: list[str]) -> None:
        head, rest = parts[0], parts[1:]
        if head == "payments" and node.get("object") == "invoice" and not rest:
            node["payments"] = self._payments_list(node["id"])
            return
        if head not in node:
            raise _invalid(f"This property cannot be expanded ({head}).", "expand")
        value = node[head]
        if isinstance(value, str) and value in self._objects:
            node[head] = value = self._render(self._objects[value])
        if rest:
            if not isinstance(value, dict):
                raise _invalid(f"This property cannot be expanded ({'.'.join(parts)}).", "expand")
            self._expand_path(value, rest)

    def _paginate(self, items: list[JSON], params: JSON, url: str) -> JSON:
        """Stripe cursor pagination over ``items`` (already filtered, any order)."""
        limit = _as_int(params.get("limit", 10), "limit")
        if not 1 <= limit <= 100:
            raise _invalid("Invalid limit: must be between 1 and 100", "limit")
        ordered = sorted(items, key=lambda o: self._seq[o["id"]], reverse=True)  # newest first
        after, before = params.get("starting_after"), params.get("ending_before")
        if after is not None and before is not None:
            raise _invalid(
                "You may only specify one of these parameters: ending_before, starting_after."
            )
        if after is not None:
            cursor = self._cursor(after, "starting_after")
            rest = [o for o in ordered if self._seq[o["id"]] < cursor]
            page, has_more = rest[:limit], len(rest) > limit
        elif before is not None:
            cursor = self._cursor(before, "ending_before")
            rest = [o for o in ordered if self._seq[o["id"]] > cursor]
            page, has_more = rest[-limit:], len(rest) > limit
        else:
            page, has_more = ordered[:limit], len(ordered) > limit
        return {
            "object": "list",
            "data": [self._render(o) for o in page],
            "has_more": has_more,
            "url": url,
        }

    def _cursor(self, obj_id: Any, param: str) -> int:
        if not isinstance(obj_id, str) or obj_id not in self._seq:
            raise _invalid(f"No such object: '{obj_id}'", param, "resource_missing")
        return self._seq[obj_id]

    def _search(self, obj_type: str, params: JSON, fields: set[str], url: str) -> JSON:
        _check_unknown(params, ("query", "limit", "page"))
        match = _parse_query(_as_str(params.get("query", ""), "query"), fields)
        limit = _as_int(params.get("limit", 10), "limit")
        if not 1 <= limit <= 100:
            raise _invalid("Invalid limit: must be between 1 and 100", "limit")
        page_token = params.get("page")
        offset = 0
        if page_token:
            try:
                offset = int(
                    base64.urlsafe_b64decode(str(page_token).encode()).decode().split(":", 1)[1]
                )
            except (ValueError, IndexError, UnicodeDecodeError):
                raise _invalid("Invalid page token", "page") from None
        visible_before = time.monotonic() - self._search_lag
        hits = [
            o
            for oid, o in self._objects.items()
            if o.get("object") == obj_type
            and oid not in self._deleted
            and self._born[oid] <= visible_before
            and match(self._render(o))
        ]
        hits.sort(key=lambda o: self._seq[o["id"]], reverse=True)
        page = hits[offset : offset + limit]
        has_more = len(hits) > offset + limit
        next_page = (
            base64.urlsafe_b64encode(f"page:{offset + limit}".encode()).decode()
            if has_more
            else None
        )
        return {
            "object": "search_result",
            "data": [self._render(o) for o in page],
            "has_more": has_more,
            "next_page": next_page,
            "url": url,
        }

    # ------------------------------------------------------------------ routes

    def _register_routes(self) -> None:
        def r(method: str, pattern: str, handler: Handler) -> None:
            self._routes.append((method, re.compile(pattern), handler))

        oid = r"([A-Za-z0-9_]+)"
        r("POST", r"/v1/customers", self._h_customer_create)
        r("GET", r"/v1/customers", self._h_customer_list)
        r("GET", r"/v1/customers/search", self._h_customer_search)
        r("GET", rf"/v1/customers/{oid}", self._h_customer_retrieve)
        r("POST", rf"/v1/customers/{oid}", self._h_customer_update)
        r("DELETE", rf"/v1/customers/{oid}", self._h_customer_delete)
        r("GET", rf"/v1/customers/{oid}/payment_methods", self._h_customer_pms)
        r("GET", r"/v1/payment_methods", self._h_pm_list)
        r("GET", rf"/v1/payment_methods/{oid}", self._h_pm_retrieve)
        r("POST", rf"/v1/payment_methods/{oid}/attach", self._h_pm_attach)
        r("POST", rf"/v1/payment_methods/{oid}/detach", self._h_pm_detach)
        r("POST", r"/v1/invoices", self._h_invoice_create)
        r("GET", r"/v1/invoices", self._h_invoice_list)
        r("GET", r"/v1/invoices/search", self._h_invoice_search)
        r("GET", rf"/v1/invoices/{oid}", self._h_invoice_retrieve)
        r("POST", rf"/v1/invoices/{oid}", self._h_invoice_update)
        r("DELETE", rf"/v1/invoices/{oid}", self._h_invoice_delete)
        r("GET", rf"/v1/invoices/{oid}/lines", self._h_invoice_lines)
        r("POST", rf"/v1/invoices/{oid}/add_lines", self._h_invoice_add_lines)
        r("POST", rf"/v1/invoices/{oid}/finalize", self._h_invoice_finalize)
        r("POST", rf"/v1/invoices/{oid}/pay", self._h_invoice_pay)
        r("POST", rf"/v1/invoices/{oid}/send", self._h_invoice_send)
        r("POST", rf"/v1/invoices/{oid}/void", self._h_invoice_void)
        r("POST", rf"/v1/invoices/{oid}/mark_uncollectible", self._h_invoice_uncollectible)
        r("GET", r"/v1/invoice_payments", self._h_invoice_payments)
        r("POST", r"/v1/checkout/sessions", self._h_checkout_create)
        r("GET", rf"/v1/checkout/sessions/{oid}", self._h_generic_retrieve("checkout.session"))
        r("GET", rf"/v1/setup_intents/{oid}", self._h_generic_retrieve("setup_intent"))
        r("GET", rf"/v1/charges/{oid}", self._h_generic_retrieve("charge"))
        r("GET", r"/v1/charges", self._h_charge_list)
        r("GET", rf"/v1/payment_intents/{oid}", self._h_generic_retrieve("payment_intent"))
        r("POST", r"/v1/refunds", self._h_refund_create)
        r("GET", rf"/v1/refunds/{oid}", self._h_generic_retrieve("refund"))
        r("GET", r"/v1/events", self._h_event_list)
        r("GET", rf"/v1/events/{oid}", self._h_event_retrieve)

    def _h_generic_retrieve(self, obj_type: str) -> Handler:
        def handler(req: _Request, args: list[str]) -> tuple[int, JSON]:
            return 200, self._render(self._get(args[0], obj_type))

        return handler

    # ------------------------------------------------------------------ customers

    _CUSTOMER_FIELDS = (
        "name", "email", "description", "metadata", "phone", "address", "payment_method",
        "invoice_settings", "preferred_locales", "shipping", "tax_exempt", "invoice_prefix",
        "balance",
        "test_clock", "tax_id_data", "tax", "source", "next_invoice_sequence", "cash_balance",
    )  # fmt: skip

    def _new_customer(self, params: JSON) -> JSON:
        now = self._now()
        prefix = params.get("invoice_prefix") or "".join(
            secrets.choice(string.ascii_uppercase + string.digits) for _ in range(8)
        )
        cus: JSON = {
            "id": self._new_id("cus")[:18],
            "object": "customer",
            "address": params.get("address") or None,
            "balance": 0,
            "created": now,
            "currency": None,
            "default_source": None,
            "delinquent": False,
            "description": params.get("description"),
            "email": params.get("email"),
            "invoice_prefix": prefix,
            "invoice_settings": {
                "custom_fields": None,
                "default_payment_method": None,
                "footer": None,
                "rendering_options": None,
            },
            "livemode": False,
            "metadata": _merge_metadata({}, params.get("metadata") or {}),
            "name": params.get("name"),
            "next_invoice_sequence": 1,
            "phone": params.get("phone"),
            "preferred_locales": params.get("preferred_locales") or [],
            "shipping": params.get("shipping") or None,
            "tax_exempt": params.get("tax_exempt") or "none",
            "test_clock": None,
        }
        self._store(cus)
        self._emit("customer.created", cus)
        return cus

    def _h_customer_create(self, req: _Request, args: list[str]) -> tuple[int, JSON]:
        p = req.params
        _check_unknown(p, self._CUSTOMER_FIELDS)
        for name in ("name", "email", "description", "phone"):
            if name in p:
                _as_str(p[name], name)
        cus = self._new_customer(p)
        if p.get("payment_method"):
            self._attach(
                _as_str(p["payment_method"], "payment_method"), cus["id"], param="payment_method"
            )
        if "invoice_settings" in p:
            self._update_customer(cus, {"invoice_settings": p["invoice_settings"]}, emit=False)
        return 200, self._render(cus)

    def _h_customer_retrieve(self, req: _Request, args: list[str]) -> tuple[int, JSON]:
        return 200, self._render(self._get(args[0], "customer", allow_deleted=True))

    def _update_customer(self, cus: JSON, p: JSON, emit: bool = True) -> None:
        previous: JSON = {}
        for name in (
            "name",
            "email",
            "description",
            "phone",
            "address",
            "shipping",
            "tax_exempt",
            "preferred_locales",
        ):
            if name in p:
                previous[name] = cus.get(name)
                cus[name] = p[name] if p[name] != "" else None
        if "metadata" in p:
            previous["metadata"] = cus["metadata"]
            cus["metadata"] = _merge_metadata(cus["metadata"], p["metadata"])
        if "invoice_settings" in p:
            settings = p["invoice_settings"]
            if not isinstance(settings, dict):
                raise _invalid("Invalid hash", "invoice_settings")
            _check_unknown(
                settings,
                ("default_payment_method", "custom_fields", "footer", "rendering_options"),
                "invoice_settings",
            )
            previous["invoice_settings"] = copy.deepcopy(cus["invoice_settings"])
            if "default_payment_method" in settings:
                pm_id = settings["default_payment_method"]
                if pm_id:
                    pm = self._get(
                        pm_id, "payment_method", param="invoice_settings[default_payment_method]"
                    )
                    if pm["customer"] != cus["id"]:
                        raise _invalid(
                            f"The customer does not have a payment method with the ID {pm_id}. "
                            "The payment method must be attached to the customer.",
                            "invoice_settings[default_payment_method]",
                            "resource_missing",
                        )
                cus["invoice_settings"]["default_payment_method"] = pm_id or None
            if "footer" in settings:
                cus["invoice_settings"]["footer"] = settings["footer"] or None
        if emit and previous:
            self._emit("customer.updated", cus, previous)

    def _h_customer_update(self, req: _Request, args: list[str]) -> tuple[int, JSON]:
        cus = self._get(args[0], "customer")
        _check_unknown(
            req.params, set(self._CUSTOMER_FIELDS) - {"payment_method"} | {"default_source"}
        )
        self._update_customer(cus, req.params)
        return 200, self._render(cus)

    def _delete_customer(self, cus: JSON) -> None:
        snapshot = self._render(cus)
        self._deleted.add(cus["id"])
        for pm in self._objects.values():
            if pm.get("object") == "payment_method" and pm.get("customer") == cus["id"]:
                pm["customer"] = None
        event = self._emit("customer.deleted", cus)
        event["data"]["object"] = snapshot

    def _h_customer_delete(self, req: _Request, args: list[str]) -> tuple[int, JSON]:
        cus = self._get(args[0], "customer")
        self._delete_customer(cus)
        return 200, {"id": cus["id"], "object": "customer", "deleted": True}

    def _h_customer_list(self, req: _Request, args: list[str]) -> tuple[int, JSON]:
        p = req.params
        _check_unknown(
            p, ("email", "created", "limit", "starting_after", "ending_before", "test_clock")
        )
        created = _created_filter(p["created"], "created") if "created" in p else None
        items = [
            o
            for oid, o in self._objects.items()
            if o.get("object") == "customer"
            and oid not in self._deleted
            and ("email" not in p or o.get("email") == p["email"])
            and (created is None or created(o["created"]))
        ]
        return 200, self._paginate(items, p, "/v1/customers")

    def _h_customer_search(self, req: _Request, args: list[str]) -> tuple[int, JSON]:
        fields = {"email", "name", "phone", "created"}
        return 200, self._search("customer", req.params, fields, "/v1/customers/search")

    # ------------------------------------------------------------------ payment methods

    def _attach(self, token_or_id: str, customer_id: str, *, param: str | None = None) -> JSON:
        """Attach a pm (existing, or created from a test token) and emit payment_method.attached."""
        if token_or_id in TEST_CARDS:
            card = TEST_CARDS[token_or_id]
            pm: JSON = {
                "id": self._new_id("pm"),
                "object": "payment_method",
                "allow_redisplay": "unspecified",
                "billing_details": {
                    "address": {
                        "city": None,
                        "country": None,
                        "line1": None,
                        "line2": None,
                        "postal_code": None,
                        "state": None,
                    },
                    "email": None,
                    "name": None,
                    "phone": None,
                },
                "card": {
                    "brand": card.brand,
                    "checks": {
                        "address_line1_check": None,
                        "address_postal_code_check": None,
                        "cvc_check": "pass",
                    },
                    "country": "US",
                    "display_brand": card.brand,
                    "exp_month": 12,
                    "exp_year": time.gmtime().tm_year + 3,
                    "fingerprint": hashlib.sha256(token_or_id.encode()).hexdigest()[:16],
                    "funding": card.funding,
                    "last4": card.last4,
                    "networks": {"available": [card.brand], "preferred": None},
                    "wallet": None,
                },
                "created": self._now(),
                "customer": None,
                "livemode": False,
                "metadata": {},
                "type": "card",
                "_decline_code": card.decline_code,  # internal, stripped when rendered
            }
            self._store(pm)
        else:
            pm = self._get(token_or_id, "payment_method", param=param)
            if pm["customer"] and pm["customer"] != customer_id:
                raise _state_error(
                    "The payment method you provided has already been attached to a customer.",
                    "payment_method_unexpected_state",
                )
        pm["customer"] = customer_id
        self._emit("payment_method.attached", pm)
        return pm

    def _h_pm_attach(self, req: _Request, args: list[str]) -> tuple[int, JSON]:
        _check_unknown(req.params, ("customer",))
        if "customer" not in req.params:
            raise _missing("customer")
        cus = self._get(_as_str(req.params["customer"], "customer"), "customer", param="customer")
        pm = self._attach(args[0], cus["id"])
        return 200, self._render(pm)

    def _h_pm_detach(self, req: _Request, args: list[str]) -> tuple[int, JSON]:
        pm = self._get(args[0], "payment_method")
        if not pm["customer"]:
            raise _state_error(
                "The payment method you provided is not attached to a customer.",
                "payment_method_unexpected_state",
            )
        cus = self._objects.get(pm["customer"])
        if cus is not None and cus["invoice_settings"]["default_payment_method"] == pm["id"]:
            cus["invoice_settings"]["default_payment_method"] = None
        pm["customer"] = None
        self._emit("payment_method.detached", pm)
        return 200, self._render(pm)

    def _h_pm_retrieve(self, req: _Request, args: list[str]) -> tuple[int, JSON]:
        return 200, self._render(self._get(args[0], "payment_method"))

    def _pm_list(self, customer: str, p: JSON, url: str) -> JSON:
        ptype = p.get("type")
        items = [
            o
            for o in self._objects.values()
            if o.get("object") == "payment_method"
            and o.get("customer") == customer
            and (ptype in (None, "card"))
        ]
        return self._paginate(items, p, url)

    def _h_customer_pms(self, req: _Request, args: list[str]) -> tuple[int, JSON]:
        _check_unknown(
            req.params, ("type", "limit", "starting_after", "ending_before", "allow_redisplay")
        )
        cus = self._get(args[0], "customer")
        return 200, self._pm_list(
            cus["id"], req.params, f"/v1/customers/{cus['id']}/payment_methods"
        )

    def _h_pm_list(self, req: _Request, args: list[str]) -> tuple[int, JSON]:
        _check_unknown(req.params, ("customer", "type", "limit", "starting_after", "ending_before"))
        if "customer" not in req.params:
            return 200, self._paginate([], req.params, "/v1/payment_methods")
        cus = self._get(_as_str(req.params["customer"], "customer"), "customer", param="customer")
        return 200, self._pm_list(cus["id"], req.params, "/v1/payment_methods")

    # ------------------------------------------------------------------ invoices

    _INVOICE_CREATE_FIELDS = (
        "customer", "currency", "auto_advance", "collection_method", "days_until_due", "due_date",
        "description", "metadata", "pending_invoice_items_behavior", "footer",
        "default_payment_method",
        "statement_descriptor", "automatic_tax", "custom_fields", "payment_settings", "rendering",
        "account_tax_ids", "default_tax_rates", "effective_at", "number", "issuer", "on_behalf_of",
        "shipping_cost", "shipping_details", "transfer_data", "application_fee_amount", "discounts",
        "from_invoice", "subscription", "customer_account",
    )  # fmt: skip

    def _new_invoice(self, cus: JSON, p: JSON) -> JSON:
        now = self._now()
        currency = (p.get("currency") or cus.get("currency") or "usd").lower()
        if not re.fullmatch(r"[a-z]{3}", currency):
            raise _invalid(f"Invalid currency: {currency}", "currency")
        method = p.get("collection_method") or "charge_automatically"
        if method not in ("charge_automatically", "send_invoice"):
            raise _invalid(f"Invalid collection_method: {method}", "collection_method")
        days = _as_int(p["days_until_due"], "days_until_due") if "days_until_due" in p else None
        due_date = _as_int(p["due_date"], "due_date") if "due_date" in p else None
        if method == "charge_automatically" and (days is not None or due_date is not None):
            raise _invalid(
                "Invoices with `collection_method=charge_automatically` cannot have "
                "`days_until_due` or `due_date` set.",
                "days_until_due" if days is not None else "due_date",
            )
        if method == "send_invoice" and days is None and due_date is None:
            raise _invalid(
                "Invoices with `collection_method=send_invoice` must have either "
                "`days_until_due` or `due_date` set.",
                "days_until_due",
            )
        behavior = p.get("pending_invoice_items_behavior", "exclude")
        if behavior not in ("exclude", "include"):
            raise _invalid(
                f"Invalid pending_invoice_items_behavior: {behavior}",
                "pending_invoice_items_behavior",
            )
        auto_advance = _as_bool(p["auto_advance"], "auto_advance") if "auto_advance" in p else False
        default_pm = p.get("default_payment_method") or None
        if default_pm:
            pm = self._get(default_pm, "payment_method", param="default_payment_method")
            if pm["customer"] != cus["id"]:
                raise _invalid(
                    "The payment method must be attached to the customer.", "default_payment_method"
                )
        inv: JSON = {
            "id": self._new_id("in"),
            "object": "invoice",
            "account_country": "US",
            "account_name": "Local Stripe Test Account",
            "account_tax_ids": None,
            "amount_due": 0,
            "amount_overpaid": 0,
            "amount_paid": 0,
            "amount_remaining": 0,
            "amount_shipping": 0,
            "application": None,
            "attempt_count": 0,
            "attempted": False,
            "auto_advance": auto_advance,
            "automatic_tax": {
                "disabled_reason": None,
                "enabled": False,
                "liability": None,
                "provider": None,
                "status": None,
            },
            "automatically_finalizes_at": now + 3600 if auto_advance else None,
            "billing_reason": "manual",
            "collection_method": method,
            "created": now,
            "currency": currency,
            "custom_fields": None,
            "customer": cus["id"],
            "customer_address": cus.get("address"),
            "customer_email": cus.get("email"),
            "customer_name": cus.get("name"),
            "customer_phone": cus.get("phone"),
            "customer_shipping": cus.get("shipping"),
            "customer_tax_exempt": cus.get("tax_exempt"),
            "customer_tax_ids": [],
            "default_payment_method": default_pm,
            "default_source": None,
            "default_tax_rates": [],
            "description": p.get("description") or None,
            "discounts": [],
            "due_date": due_date,
            "effective_at": None,
            "ending_balance": None,
            "footer": p.get("footer") or None,
            "from_invoice": None,
            "hosted_invoice_url": None,
            "invoice_pdf": None,
            "issuer": {"type": "self"},
            "last_finalization_error": None,
            "latest_revision": None,
            "livemode": False,
            "metadata": _merge_metadata({}, p.get("metadata") or {}),
            "next_payment_attempt": None,
            "number": None,
            "on_behalf_of": None,
            "parent": None,
            "payment_settings": {
                "default_mandate": None,
                "payment_method_options": None,
                "payment_method_types": None,
            },
            "period_end": now,
            "period_start": now,
            "post_payment_credit_notes_amount": 0,
            "pre_payment_credit_notes_amount": 0,
            "receipt_number": None,
            "rendering": None,
            "shipping_cost": None,
            "shipping_details": None,
            "starting_balance": 0,
            "statement_descriptor": p.get("statement_descriptor") or None,
            "status": "draft",
            "status_transitions": {
                "finalized_at": None,
                "marked_uncollectible_at": None,
                "paid_at": None,
                "voided_at": None,
            },
            "subtotal": 0,
            "subtotal_excluding_tax": 0,
            "test_clock": None,
            "total": 0,
            "total_discount_amounts": [],
            "total_excluding_tax": 0,
            "total_pretax_credit_amounts": [],
            "total_taxes": [],
            "webhooks_delivered_at": None,
            "_days_until_due": days,
        }
        self._store(inv)
        self._invoice_lines[inv["id"]] = []
        self._invoice_payments[inv["id"]] = []
        self._emit("invoice.created", inv)
        return inv

    def _render_invoice(self, inv: JSON) -> JSON:
        out = {k: copy.deepcopy(v) for k, v in inv.items() if not k.startswith("_")}
        lines = self._invoice_lines.get(inv["id"], [])
        out["lines"] = {
            "object": "list",
            "data": copy.deepcopy(lines[:EMBEDDED_LINES]),
            "has_more": len(lines) > EMBEDDED_LINES,
            "total_count": len(lines),
            "url": f"/v1/invoices/{inv['id']}/lines",
        }
        return out

    def _payments_list(self, invoice_id: str) -> JSON:
        payments = self._invoice_payments.get(invoice_id, [])
        return {
            "object": "list",
            "data": copy.deepcopy(payments),
            "has_more": False,
            "total_count": len(payments),
            "url": f"/v1/invoice_payments?invoice={invoice_id}",
        }

    def _recompute(self, inv: JSON) -> None:
        subtotal = sum(int(line["amount"]) for line in self._invoice_lines[inv["id"]])
        inv["subtotal"] = inv["subtotal_excluding_tax"] = subtotal
        inv["total"] = inv["total_excluding_tax"] = subtotal
        inv["amount_due"] = max(0, subtotal + int(inv["starting_balance"]))
        inv["amount_remaining"] = max(0, inv["amount_due"] - int(inv["amount_paid"]))

    def _h_invoice_create(self, req: _Request, args: list[str]) -> tuple[int, JSON]:
        p = req.params
        _check_unknown(p, self._INVOICE_CREATE_FIELDS)
        if "customer" not in p:
            raise _missing("customer")
        cus = self._get(_as_str(p["customer"], "customer"), "customer", param="customer")
        inv = self._new_invoice(cus, p)
        return 200, self._render(inv)

    def _h_invoice_retrieve(self, req: _Request, args: list[str]) -> tuple[int, JSON]:
        return 200, self._render(self._get(args[0], "invoice"))

    def _h_invoice_update(self, req: _Request, args: list[str]) -> tuple[int, JSON]:
        inv = self._get(args[0], "invoice")
        p = req.params
        _check_unknown(
            p,
            (
                "metadata",
                "description",
                "auto_advance",
                "days_until_due",
                "due_date",
                "footer",
                "default_payment_method",
                "collection_method",
                "statement_descriptor",
            ),
        )
        draft_only = {
            "collection_method",
            "days_until_due",
            "due_date",
            "default_payment_method",
        } & set(p)
        if inv["status"] != "draft" and draft_only:
            raise _state_error(
                f"Finalized invoices can't be updated in this way ({sorted(draft_only)[0]}).",
                "invoice_not_editable",
                sorted(draft_only)[0],
            )
        if inv["status"] in ("paid", "void") and set(p) - {"metadata", "expand"}:
            raise _state_error(
                f"This invoice is {inv['status']}; only metadata can be updated.",
                "invoice_not_editable",
            )
        previous: JSON = {}
        if "metadata" in p:
            previous["metadata"] = inv["metadata"]
            inv["metadata"] = _merge_metadata(inv["metadata"], p["metadata"])
        for name in ("description", "footer", "statement_descriptor"):
            if name in p:
                previous[name] = inv[name]
                inv[name] = p[name] or None
        if "auto_advance" in p:
            previous["auto_advance"] = inv["auto_advance"]
            inv["auto_advance"] = _as_bool(p["auto_advance"], "auto_advance")
        if "collection_method" in p:
            if p["collection_method"] not in ("charge_automatically", "send_invoice"):
                raise _invalid("Invalid collection_method", "collection_method")
            previous["collection_method"] = inv["collection_method"]
            inv["collection_method"] = p["collection_method"]
        if "days_until_due" in p:
            inv["_days_until_due"] = _as_int(p["days_until_due"], "days_until_due")
        if "due_date" in p:
            previous["due_date"] = inv["due_date"]
            inv["due_date"] = _as_int(p["due_date"], "due_date")
        if "default_payment_method" in p:
            previous["default_payment_method"] = inv["default_payment_method"]
            inv["default_payment_method"] = p["default_payment_method"] or None
        if previous:
            self._emit("invoice.updated", inv, previous)
        return 200, self._render(inv)

    def _h_invoice_delete(self, req: _Request, args: list[str]) -> tuple[int, JSON]:
        inv = self._get(args[0], "invoice")
        if inv["status"] != "draft":
            raise _state_error("You can only delete draft invoices.", "invoice_not_editable")
        snapshot = self._render(inv)
        self._deleted.add(inv["id"])
        event = self._emit("invoice.deleted", inv)
        event["data"]["object"] = snapshot
        return 200, {"id": inv["id"], "object": "invoice", "deleted": True}

    def _h_invoice_list(self, req: _Request, args: list[str]) -> tuple[int, JSON]:
        p = req.params
        _check_unknown(
            p,
            (
                "customer",
                "status",
                "collection_method",
                "created",
                "due_date",
                "limit",
                "starting_after",
                "ending_before",
                "subscription",
                "customer_account",
            ),
        )
        if "status" in p and p["status"] not in ("draft", "open", "paid", "uncollectible", "void"):
            raise _invalid(f"Invalid status: {p['status']}", "status")
        created = _created_filter(p["created"], "created") if "created" in p else None
        due = _created_filter(p["due_date"], "due_date") if "due_date" in p else None
        items = [
            o
            for oid, o in self._objects.items()
            if o.get("object") == "invoice"
            and oid not in self._deleted
            and ("customer" not in p or o["customer"] == p["customer"])
            and ("status" not in p or o["status"] == p["status"])
            and ("collection_method" not in p or o["collection_method"] == p["collection_method"])
            and (created is None or created(o["created"]))
            and (due is None or (o["due_date"] is not None and due(o["due_date"])))
        ]
        return 200, self._paginate(items, p, "/v1/invoices")

    def _h_invoice_search(self, req: _Request, args: list[str]) -> tuple[int, JSON]:
        fields = {"customer", "status", "number", "total", "currency", "created", "subscription"}
        return 200, self._search("invoice", req.params, fields, "/v1/invoices/search")

    def _h_invoice_lines(self, req: _Request, args: list[str]) -> tuple[int, JSON]:
        inv = self._get(args[0], "invoice")
        p = req.params
        _check_unknown(p, ("limit", "starting_after", "ending_before"))
        limit = _as_int(p.get("limit", 10), "limit")
        if not 1 <= limit <= 100:
            raise _invalid("Invalid limit: must be between 1 and 100", "limit")
        lines = self._invoice_lines[inv["id"]]  # oldest first, like Stripe
        ids = [line["id"] for line in lines]
        if "starting_after" in p:
            if p["starting_after"] not in ids:
                raise _invalid(
                    f"No such line item: '{p['starting_after']}'",
                    "starting_after",
                    "resource_missing",
                )
            rest = lines[ids.index(p["starting_after"]) + 1 :]
            page, has_more = rest[:limit], len(rest) > limit
        elif "ending_before" in p:
            if p["ending_before"] not in ids:
                raise _invalid(
                    f"No such line item: '{p['ending_before']}'",
                    "ending_before",
                    "resource_missing",
                )
            rest = lines[: ids.index(p["ending_before"])]
            page, has_more = rest[-limit:], len(rest) > limit
        else:
            page, has_more = lines[:limit], len(lines) > limit
        return 200, {
            "object": "list",
            "data": copy.deepcopy(page),
            "has_more": has_more,
            "url": f"/v1/invoices/{inv['id']}/lines",
        }

    _LINE_FIELDS = (
        "amount", "description", "quantity", "quantity_decimal", "price_data", "pricing",
        "metadata", "period",
        "discountable", "discounts", "tax_rates", "tax_amounts", "invoice_item",
    )  # fmt: skip

    def _add_line(self, inv: JSON, line: Any, param: str) -> JSON:
        if not isinstance(line, dict):
            raise _invalid("Invalid line", param)
        _check_unknown(line, self._LINE_FIELDS, param)
        for unsupported in ("pricing", "invoice_item", "tax_amounts", "discounts"):
            if line.get(unsupported):
                raise _invalid(
                    f"{param}[{unsupported}] is not supported by the local Stripe test server",
                    f"{param}[{unsupported}]",
                )
        if "quantity" in line and "quantity_decimal" in line:
            raise _invalid(
                "You may only specify one of quantity and quantity_decimal.", f"{param}[quantity]"
            )
        qty = (
            _as_decimal(line["quantity_decimal"], f"{param}[quantity_decimal]")
            if "quantity_decimal" in line
            else Decimal(_as_int(line.get("quantity", 1), f"{param}[quantity]"))
        )
        if qty < 0:
            raise _invalid("Quantity must be non-negative", f"{param}[quantity]")
        now = self._now()
        description = line.get("description")
        product = f"prod_{_rand(14)}"
        if "amount" in line:
            if "price_data" in line:
                raise _invalid(
                    "You may only specify one of amount and price_data.", f"{param}[amount]"
                )
            amount = _as_int(line["amount"], f"{param}[amount]")
            if qty != 1:
                raise _invalid(
                    "`quantity` must be 1 when `amount` is set; use price_data instead.",
                    f"{param}[quantity]",
                )
            unit = Decimal(amount)
        elif "price_data" in line:
            pd = line["price_data"]
            pparam = f"{param}[price_data]"
            if not isinstance(pd, dict):
                raise _invalid("Invalid hash", pparam)
            _check_unknown(
                pd,
                (
                    "currency",
                    "product",
                    "product_data",
                    "tax_behavior",
                    "unit_amount",
                    "unit_amount_decimal",
                ),
                pparam,
            )
            if "currency" not in pd:
                raise _missing(f"{pparam}[currency]")
            if str(pd["currency"]).lower() != inv["currency"]:
                raise _invalid(
                    f"The price_data currency ({pd['currency']}) must match the invoice currency "
                    f"({inv['currency']}).",
                    f"{pparam}[currency]",
                )
            if "product_data" in pd:
                prod = pd["product_data"]
                if not isinstance(prod, dict) or not prod.get("name"):
                    raise _missing(f"{pparam}[product_data][name]")
                description = description or prod["name"]
            elif "product" in pd:
                product = _as_str(pd["product"], f"{pparam}[product]")
            else:
                raise _invalid(
                    "One of product or product_data is required.", f"{pparam}[product_data]"
                )
            if ("unit_amount" in pd) == ("unit_amount_decimal" in pd):
                raise _invalid(
                    "Exactly one of unit_amount and unit_amount_decimal is required.",
                    f"{pparam}[unit_amount]",
                )
            unit = (
                Decimal(_as_int(pd["unit_amount"], f"{pparam}[unit_amount]"))
                if "unit_amount" in pd
                else _as_decimal(pd["unit_amount_decimal"], f"{pparam}[unit_amount_decimal]")
            )
            if unit < 0:
                raise _invalid("unit_amount must be non-negative", f"{pparam}[unit_amount]")
            amount = int((unit * qty).quantize(Decimal(1), rounding=ROUND_HALF_UP))
        else:
            raise _invalid(
                "You must specify either amount or price_data for each line.", f"{param}[amount]"
            )
        period = line.get("period")
        if period is not None:
            if not isinstance(period, dict) or "start" not in period or "end" not in period:
                raise _invalid("period needs start and end", f"{param}[period]")
            period = {
                "end": _as_int(period["end"], f"{param}[period][end]"),
                "start": _as_int(period["start"], f"{param}[period][start]"),
            }
            if period["end"] < period["start"]:
                raise _invalid(
                    "The period end must be greater than or equal to the start.", f"{param}[period]"
                )
        quantity_int = int(qty) if qty == qty.to_integral_value() else None
        item: JSON = {
            "id": self._new_id("il"),
            "object": "line_item",
            "amount": amount,
            "currency": inv["currency"],
            "description": description,
            "discount_amounts": [],
            "discountable": amount >= 0,
            "discounts": [],
            "invoice": inv["id"],
            "livemode": False,
            "metadata": _merge_metadata({}, line.get("metadata") or {}, f"{param}[metadata]"),
            "parent": {
                "type": "invoice_item_details",
                "invoice_item_details": {
                    "invoice_item": self._new_id("ii"),
                    "proration": False,
                    "proration_details": {"credited_items": None},
                    "subscription": None,
                },
                "subscription_item_details": None,
            },
            "period": period or {"end": now, "start": now},
            "pretax_credit_amounts": [],
            "pricing": {
                "type": "price_details",
                "price_details": {"price": f"price_{_rand(14)}", "product": product},
                "unit_amount_decimal": str(unit),
            },
            "quantity": quantity_int,
            "quantity_decimal": str(qty),
            "subscription": None,
            "subtotal": amount,
            "taxes": [],
        }
        self._invoice_lines[inv["id"]].append(item)
        return item

    def _h_invoice_add_lines(self, req: _Request, args: list[str]) -> tuple[int, JSON]:
        inv = self._get(args[0], "invoice")
        p = req.params
        _check_unknown(p, ("lines", "invoice_metadata"))
        if "lines" not in p:
            raise _missing("lines")
        lines = _as_list(p["lines"], "lines")
        if not lines:
            raise _invalid("lines must not be empty", "lines")
        if inv["status"] != "draft":
            raise _state_error(
                f"You can only add lines to a draft invoice; this invoice is {inv['status']}.",
                "invoice_not_editable",
            )
        if len(self._invoice_lines[inv["id"]]) + len(lines) > MAX_LINES_PER_INVOICE:
            raise _invalid(f"An invoice can have at most {MAX_LINES_PER_INVOICE} lines.", "lines")
        previous: JSON = {
            "subtotal": inv["subtotal"],
            "total": inv["total"],
            "amount_due": inv["amount_due"],
        }
        before = list(self._invoice_lines[inv["id"]])
        try:
            for i, line in enumerate(lines):
                self._add_line(inv, line, f"lines[{i}]")
            if "invoice_metadata" in p:
                previous["metadata"] = inv["metadata"]
                inv["metadata"] = _merge_metadata(
                    inv["metadata"], p["invoice_metadata"], "invoice_metadata"
                )
        except StripeAPIError:
            self._invoice_lines[inv["id"]] = before  # all or nothing
            raise
        self._recompute(inv)
        self._emit("invoice.updated", inv, previous)
        return 200, self._render(inv)

    def _finalize(self, inv: JSON) -> None:
        now = self._now()
        cus = self._objects[inv["customer"]]
        inv["status"] = "open"
        inv["number"] = f"{cus['invoice_prefix']}-{cus['next_invoice_sequence']:04d}"
        cus["next_invoice_sequence"] += 1
        if cus.get("currency") is None:
            cus["currency"] = inv["currency"]
        inv["status_transitions"]["finalized_at"] = now
        inv["effective_at"] = now
        inv["automatically_finalizes_at"] = None
        inv["ending_balance"] = 0
        inv["customer_email"] = cus.get("email")
        inv["customer_name"] = cus.get("name")
        base = self.url if self._httpd is not None else "http://127.0.0.1"
        inv["hosted_invoice_url"] = f"{base}/i/{inv['id']}"
        inv["invoice_pdf"] = f"{base}/i/{inv['id']}/pdf"
        if inv["collection_method"] == "send_invoice" and inv["due_date"] is None:
            inv["due_date"] = now + 86400 * int(inv["_days_until_due"] or 0)
        if inv["collection_method"] == "charge_automatically" and inv["auto_advance"]:
            inv["next_payment_attempt"] = now + 3600
        self._recompute(inv)
        self._emit("invoice.finalized", inv)
        if inv["amount_due"] == 0:  # Stripe marks zero-amount invoices paid on finalization
            self._mark_paid(inv, out_of_band=False)

    def _h_invoice_finalize(self, req: _Request, args: list[str]) -> tuple[int, JSON]:
        inv = self._get(args[0], "invoice")
        _check_unknown(req.params, ("auto_advance",))
        if inv["status"] != "draft":
            raise _state_error(
                "This invoice is already finalized, you can't re-finalize a non-draft invoice.",
                "invoice_not_editable",
            )
        if "auto_advance" in req.params:
            inv["auto_advance"] = _as_bool(req.params["auto_advance"], "auto_advance")
        self._finalize(inv)
        return 200, self._render(inv)

    def _mark_paid(self, inv: JSON, *, out_of_band: bool, charge: JSON | None = None) -> None:
        now = self._now()
        amount = int(inv["amount_remaining"])
        inv["status"] = "paid"
        inv["amount_paid"] = int(inv["amount_paid"]) + amount
        if out_of_band:
            inv["amount_paid_off_stripe"] = int(inv.get("amount_paid_off_stripe") or 0) + amount
        inv["amount_remaining"] = 0
        inv["status_transitions"]["paid_at"] = now
        inv["next_payment_attempt"] = None
        inv["auto_advance"] = False
        if charge is not None:
            self._invoice_payments[inv["id"]].append(
                {
                    "id": self._new_id("inpay"),
                    "object": "invoice_payment",
                    "amount_paid": charge["amount"],
                    "amount_requested": charge["amount"],
                    "created": now,
                    "currency": inv["currency"],
                    "invoice": inv["id"],
                    "is_default": True,
                    "livemode": False,
                    "payment": {
                        "type": "payment_intent",
                        "payment_intent": charge["payment_intent"],
                    },
                    "status": "paid",
                    "status_transitions": {"canceled_at": None, "paid_at": now},
                }
            )
        self._emit("invoice.paid", inv)
        if charge is not None:
            self._emit("invoice.payment_succeeded", inv)

    def _new_charge(self, inv: JSON, pm: JSON, decline_code: str | None) -> tuple[JSON, JSON]:
        now = self._now()
        ok = decline_code is None
        pi: JSON = {
            "id": self._new_id("pi"),
            "object": "payment_intent",
            "amount": inv["amount_remaining"],
            "amount_received": inv["amount_remaining"] if ok else 0,
            "capture_method": "automatic",
            "created": now,
            "currency": inv["currency"],
            "customer": inv["customer"],
            "description": f"Payment for Invoice {inv['number']}",
            "last_payment_error": None,
            "latest_charge": None,
            "livemode": False,
            "metadata": {},
            "payment_method": pm["id"],
            "payment_method_types": ["card"],
            "status": "succeeded" if ok else "requires_payment_method",
        }
        ch: JSON = {
            "id": self._new_id("ch"),
            "object": "charge",
            "amount": inv["amount_remaining"],
            "amount_captured": inv["amount_remaining"] if ok else 0,
            "amount_refunded": 0,
            "balance_transaction": self._new_id("txn") if ok else None,
            "billing_details": copy.deepcopy(pm["billing_details"]),
            "captured": ok,
            "created": now,
            "currency": inv["currency"],
            "customer": inv["customer"],
            "description": pi["description"],
            "disputed": False,
            "failure_code": None if ok else "card_declined",
            "failure_message": None if ok else "Your card was declined.",
            "livemode": False,
            "metadata": {},
            "outcome": {
                "network_status": "approved_by_network" if ok else "declined_by_network",
                "reason": None if ok else decline_code,
                "risk_level": "normal",
                "seller_message": "Payment complete."
                if ok
                else "The bank did not return any further details.",
                "type": "authorized" if ok else "issuer_declined",
            },
            "paid": ok,
            "payment_intent": pi["id"],
            "payment_method": pm["id"],
            "payment_method_details": {
                "card": {
                    k: pm["card"][k]
                    for k in (
                        "brand",
                        "country",
                        "exp_month",
                        "exp_year",
                        "fingerprint",
                        "funding",
                        "last4",
                    )
                },
                "type": "card",
            },
            "receipt_url": f"{self.url if self._httpd else 'http://127.0.0.1'}/receipts/{inv['id']}",
            "refunded": False,
            "refunds": {
                "object": "list",
                "data": [],
                "has_more": False,
                "total_count": 0,
                "url": "/v1/refunds",
            },
            "status": "succeeded" if ok else "failed",
        }
        pi["latest_charge"] = ch["id"]
        self._store(pi)
        self._store(ch)
        return pi, ch

    def _h_invoice_pay(self, req: _Request, args: list[str]) -> tuple[int, JSON]:
        inv = self._get(args[0], "invoice")
        p = req.params
        _check_unknown(
            p, ("payment_method", "paid_out_of_band", "off_session", "forgive", "source", "mandate")
        )
        if inv["status"] == "paid":
            raise _state_error("Invoice is already paid", "invoice_already_paid")
        if inv["status"] == "void":
            raise _state_error(
                "This invoice has been voided and can no longer be paid.", "invoice_not_editable"
            )
        if inv["status"] == "draft":  # Stripe finalizes a draft before paying it
            self._finalize(inv)
            if inv["status"] == "paid":
                return 200, self._render(inv)
        if "paid_out_of_band" in p and _as_bool(p["paid_out_of_band"], "paid_out_of_band"):
            self._mark_paid(inv, out_of_band=True)
            return 200, self._render(inv)
        cus = self._objects[inv["customer"]]
        pm_id = (
            p.get("payment_method")
            or inv["default_payment_method"]
            or cus["invoice_settings"]["default_payment_method"]
        )
        if not pm_id:
            raise _state_error(
                "This customer has no attached payment source or default payment method. "
                "Please consider adding a default payment method. For more information, visit "
                "https://docs.stripe.com/billing/invoices/payment-methods.",
                "invoice_no_payment_method",
            )
        pm = self._get(pm_id, "payment_method", param="payment_method")
        if pm["customer"] != inv["customer"]:
            raise _invalid(
                "The payment method must be attached to the invoice's customer.", "payment_method"
            )
        decline = pm.get("_decline_code")
        pi, ch = self._new_charge(inv, pm, decline)
        inv["attempt_count"] += 1
        inv["attempted"] = True
        if decline is None:
            self._emit("charge.succeeded", ch)
            self._mark_paid(inv, out_of_band=False, charge=ch)
            return 200, self._render(inv)
        now = self._now()
        # Stripe schedules retries (Smart Retries) only while auto_advance is on.
        inv["next_payment_attempt"] = now + 3 * 86400 if inv["auto_advance"] else None
        error_fields: JSON = {
            "charge": ch["id"],
            "decline_code": decline,
            "payment_method": self._render(pm),
        }
        pi["last_payment_error"] = {
            "code": "card_declined",
            "decline_code": decline,
            "message": "Your card was declined.",
            "type": "card_error",
        }
        error_fields["payment_intent"] = self._render(pi)
        self._emit("charge.failed", ch)
        self._emit("invoice.payment_failed", inv)
        raise StripeAPIError(
            402,
            "Your card was declined.",
            type_="card_error",
            code="card_declined",
            extra=error_fields,
            store=True,
        )

    def _h_invoice_send(self, req: _Request, args: list[str]) -> tuple[int, JSON]:
        inv = self._get(args[0], "invoice")
        _check_unknown(req.params, ())
        if inv["collection_method"] != "send_invoice":
            raise _state_error(
                "You can only manually send an invoice if its collection method is 'send_invoice'.",
                "invoice_not_editable",
            )
        if inv["status"] == "draft":
            self._finalize(inv)
        if inv["status"] in ("void", "uncollectible"):
            raise _state_error(
                f"You can't send an invoice that is {inv['status']}.", "invoice_not_editable"
            )
        if inv["status"] == "open":
            self._emit("invoice.sent", inv)
        return 200, self._render(inv)

    def _void(self, inv: JSON) -> None:
        if inv["status"] not in ("open", "uncollectible"):
            raise _state_error(
                "You can only void invoices that are open or uncollectible; "
                f"this invoice is {inv['status']}.",
                "invoice_not_editable",
            )
        inv["status"] = "void"
        inv["status_transitions"]["voided_at"] = self._now()
        inv["amount_remaining"] = 0
        inv["next_payment_attempt"] = None
        inv["auto_advance"] = False
        self._emit("invoice.voided", inv)

    def _h_invoice_void(self, req: _Request, args: list[str]) -> tuple[int, JSON]:
        inv = self._get(args[0], "invoice")
        _check_unknown(req.params, ())
        self._void(inv)
        return 200, self._render(inv)

    def _mark_uncollectible(self, inv: JSON) -> None:
        if inv["status"] != "open":
            raise _state_error(
                f"You can only mark open invoices uncollectible; this invoice is {inv['status']}.",
                "invoice_not_editable",
            )
        inv["status"] = "uncollectible"
        inv["status_transitions"]["marked_uncollectible_at"] = self._now()
        inv["next_payment_attempt"] = None
        inv["auto_advance"] = False
        self._emit("invoice.marked_uncollectible", inv)

    def _h_invoice_uncollectible(self, req: _Request, args: list[str]) -> tuple[int, JSON]:
        inv = self._get(args[0], "invoice")
        _check_unknown(req.params, ())
        self._mark_uncollectible(inv)
        return 200, self._render(inv)

    def _h_invoice_payments(self, req: _Request, args: list[str]) -> tuple[int, JSON]:
        _check_unknown(
            req.params, ("invoice", "limit", "starting_after", "ending_before", "payment", "status")
        )
        if "invoice" not in req.params:
            raise _missing("invoice")
        inv = self._get(_as_str(req.params["invoice"], "invoice"), "invoice", param="invoice")
        return 200, self._payments_list(inv["id"])

    # ------------------------------------------------------------------ checkout / setup intents

    def _h_checkout_create(self, req: _Request, args: list[str]) -> tuple[int, JSON]:
        p = req.params
        _check_unknown(
            p,
            (
                "mode",
                "customer",
                "success_url",
                "cancel_url",
                "currency",
                "payment_method_types",
                "metadata",
                "setup_intent_data",
                "client_reference_id",
                "customer_email",
                "ui_mode",
                "return_url",
                "locale",
                "expires_at",
            ),
        )
        if "mode" not in p:
            raise _missing("mode")
        if p["mode"] != "setup":
            raise _invalid("The local Stripe test server only supports mode=setup.", "mode")
        if p.get("ui_mode", "hosted") == "hosted" and "success_url" not in p:
            raise _missing("success_url")
        cus = None
        if p.get("customer"):
            cus = self._get(_as_str(p["customer"], "customer"), "customer", param="customer")
        now = self._now()
        seti: JSON = {
            "id": self._new_id("seti"),
            "object": "setup_intent",
            "cancellation_reason": None,
            "client_secret": f"seti_secret_{_rand(24)}",
            "created": now,
            "customer": cus["id"] if cus else None,
            "description": None,
            "last_setup_error": None,
            "livemode": False,
            "metadata": {},
            "payment_method": None,
            "payment_method_types": ["card"],
            "status": "requires_payment_method",
            "usage": "off_session",
        }
        self._store(seti)
        session_id = f"cs_test_{_rand(58)}"
        base = self.url if self._httpd is not None else "http://127.0.0.1"
        cs: JSON = {
            "id": session_id,
            "object": "checkout.session",
            "cancel_url": p.get("cancel_url"),
            "client_reference_id": p.get("client_reference_id"),
            "created": now,
            "currency": p.get("currency"),
            "customer": cus["id"] if cus else None,
            "customer_email": p.get("customer_email"),
            "expires_at": now + 86400,
            "livemode": False,
            "metadata": _merge_metadata({}, p.get("metadata") or {}),
            "mode": "setup",
            "payment_method_types": p.get("payment_method_types") or ["card"],
            "payment_status": "no_payment_required",
            "setup_intent": seti["id"],
            "status": "open",
            "success_url": p.get("success_url"),
            "ui_mode": p.get("ui_mode", "hosted"),
            "url": f"{base}/c/pay/{session_id}",
        }
        self._store(cs)
        return 200, self._render(cs)

    def _complete_checkout(self, cs: JSON, card: str) -> str:
        if cs["status"] != "open":
            raise ValueError(f"checkout session is {cs['status']}")
        if card not in TEST_CARDS:
            raise ValueError(f"unknown test card {card}")
        if cs["customer"] is None:
            cus = self._new_customer({"email": cs.get("customer_email")})
            cs["customer"] = cus["id"]
        pm = self._attach(card, cs["customer"])
        seti = self._objects[cs["setup_intent"]]
        seti["customer"] = cs["customer"]
        seti["payment_method"] = pm["id"]
        seti["status"] = "succeeded"
        self._emit("setup_intent.succeeded", seti)
        cs["status"] = "complete"
        self._emit("checkout.session.completed", cs)
        return str(pm["id"])

    # ------------------------------------------------------------------ refunds / charges

    def _h_refund_create(self, req: _Request, args: list[str]) -> tuple[int, JSON]:
        p = req.params
        _check_unknown(
            p, ("charge", "payment_intent", "amount", "reason", "metadata", "instructions_email")
        )
        if "charge" in p and "payment_intent" in p:
            raise _invalid("You may only specify one of charge and payment_intent.", "charge")
        if "charge" in p:
            ch = self._get(_as_str(p["charge"], "charge"), "charge", param="charge")
        elif "payment_intent" in p:
            pi = self._get(
                _as_str(p["payment_intent"], "payment_intent"),
                "payment_intent",
                param="payment_intent",
            )
            if not pi.get("latest_charge") or pi["status"] != "succeeded":
                raise _state_error(
                    "This PaymentIntent does not have a successful charge to refund.",
                    "charge_not_refundable",
                    "payment_intent",
                )
            ch = self._objects[pi["latest_charge"]]
        else:
            raise _missing("charge")
        if ch["status"] != "succeeded":
            raise _state_error(
                "This charge cannot be refunded because it has not succeeded.",
                "charge_not_refundable",
            )
        remaining = int(ch["amount"]) - int(ch["amount_refunded"])
        if remaining <= 0:
            raise _state_error(
                f"Charge {ch['id']} has already been refunded.", "charge_already_refunded"
            )
        amount = _as_int(p["amount"], "amount") if "amount" in p else remaining
        if amount <= 0:
            raise _invalid("Refund amount must be positive", "amount")
        if amount > remaining:
            raise _state_error(
                f"Refund amount ({amount}) is greater than unrefunded amount on charge "
                f"({remaining})",
                "amount_too_large",
                "amount",
            )
        reason = p.get("reason")
        if reason not in (None, "duplicate", "fraudulent", "requested_by_customer"):
            raise _invalid(f"Invalid reason: {reason}", "reason")
        refund: JSON = {
            "id": self._new_id("re"),
            "object": "refund",
            "amount": amount,
            "balance_transaction": self._new_id("txn"),
            "charge": ch["id"],
            "created": self._now(),
            "currency": ch["currency"],
            "metadata": _merge_metadata({}, p.get("metadata") or {}),
            "payment_intent": ch["payment_intent"],
            "reason": reason,
            "receipt_number": None,
            "status": "succeeded",
        }
        self._store(refund)
        previous = {"amount_refunded": ch["amount_refunded"], "refunded": ch["refunded"]}
        ch["amount_refunded"] = int(ch["amount_refunded"]) + amount
        ch["refunded"] = ch["amount_refunded"] >= ch["amount"]
        ch["refunds"]["data"].insert(0, copy.deepcopy(refund))
        ch["refunds"]["total_count"] += 1
        self._emit("charge.refunded", ch, previous)
        return 200, self._render(refund)

    def _h_charge_list(self, req: _Request, args: list[str]) -> tuple[int, JSON]:
        p = req.params
        _check_unknown(
            p, ("customer", "payment_intent", "created", "limit", "starting_after", "ending_before")
        )
        created = _created_filter(p["created"], "created") if "created" in p else None
        items = [
            o
            for o in self._objects.values()
            if o.get("object") == "charge"
            and ("customer" not in p or o["customer"] == p["customer"])
            and ("payment_intent" not in p or o["payment_intent"] == p["payment_intent"])
            and (created is None or created(o["created"]))
        ]
        return 200, self._paginate(items, p, "/v1/charges")

    # ------------------------------------------------------------------ events

    def _h_event_list(self, req: _Request, args: list[str]) -> tuple[int, JSON]:
        p = req.params
        _check_unknown(
            p,
            (
                "type",
                "types",
                "created",
                "limit",
                "starting_after",
                "ending_before",
                "delivery_success",
            ),
        )
        if "type" in p and "types" in p:
            raise _invalid("You may only specify one of type and types.", "types")
        types = (
            [_as_str(t, "types") for t in _as_list(p["types"], "types")] if "types" in p else None
        )
        if types is not None and len(types) > 20:
            raise _invalid("types can contain at most 20 values", "types")
        created = _created_filter(p["created"], "created") if "created" in p else None
        items = [
            e
            for e in self._events
            if ("type" not in p or _type_matches(str(p["type"]), e["type"]))
            and (types is None or any(_type_matches(t, e["type"]) for t in types))
            and (created is None or created(e["created"]))
        ]
        page = self._paginate(items, p, "/v1/events")
        page["data"] = [copy.deepcopy(e) for e in page["data"]]
        return 200, page

    def _h_event_retrieve(self, req: _Request, args: list[str]) -> tuple[int, JSON]:
        for e in self._events:
            if e["id"] == args[0]:
                return 200, copy.deepcopy(e)
        raise _no_such("event", args[0])

    # ------------------------------------------------------------------ web pages (hosted URLs)

    def _handle_web(self, method: str, path: str, body: bytes) -> _Response:
        with self._lock:
            if path in ("/", ""):
                text = (
                    f"Local Stripe test server: {len(self.customers())} customers, "
                    f"{len(self.invoices())} invoices, {len(self._events)} events\n"
                )
                return _Response(200, text.encode(), content_type="text/plain; charset=utf-8")
            m = re.fullmatch(r"/i/([A-Za-z0-9_]+)(/pdf)?", path)
            if m and method == "GET":
                inv = self._objects.get(m.group(1))
                if inv is None or inv.get("object") != "invoice":
                    return _Response(404, b"Not found", content_type="text/plain")
                rendered = self._render(inv)
                if m.group(2):
                    return _Response(
                        200,
                        _tiny_pdf(f"Invoice {rendered['number']} total {rendered['total']}"),
                        content_type="application/pdf",
                    )
                return _Response(
                    200,
                    _invoice_html(rendered, self._invoice_lines[inv["id"]]).encode(),
                    content_type="text/html; charset=utf-8",
                )
            m = re.fullmatch(r"/c/pay/([A-Za-z0-9_]+)", path)
            if m:
                cs = self._objects.get(m.group(1))
                if cs is None or cs.get("object") != "checkout.session":
                    return _Response(404, b"Not found", content_type="text/plain")
                if method == "POST":
                    form = dict(parse_qsl(body.decode("utf-8", "replace")))
                    card = form.get("card", "pm_card_visa")
                    if cs["status"] == "open" and card in TEST_CARDS:
                        self._complete_checkout(cs, card)
                    target = str(cs["success_url"] or "/").replace(
                        "{CHECKOUT_SESSION_ID}", cs["id"]
                    )
                    return _Response(
                        303, b"", headers={"Location": target}, content_type="text/plain"
                    )
                return _Response(
                    200, _checkout_html(cs).encode(), content_type="text/html; charset=utf-8"
                )
            return _Response(404, b"Not found", content_type="text/plain")


# --------------------------------------------------------------------------- helpers


def _type_matches(pattern: str, event_type: str) -> bool:
    if pattern.endswith(".*"):
        return event_type.startswith(pattern[:-1])
    return pattern == event_type


def _redact(key: str) -> str:
    return key[:8] + "*" * max(0, len(key) - 12) + key[-4:] if len(key) > 12 else "****"


def _dumps(payload: JSON) -> bytes:
    return json.dumps(payload, indent=2, sort_keys=False).encode()


def _fault_error(rule: _FaultRule) -> StripeAPIError:
    headers: dict[str, str] = {}
    if rule.should_retry is not None:
        headers["Stripe-Should-Retry"] = "true" if rule.should_retry else "false"
    if rule.status == 429:
        return StripeAPIError(
            429,
            "Request rate limit exceeded. You can learn more about rate limits here "
            "https://stripe.com/docs/rate-limits.",
            code="rate_limit",
            store=False,
            headers=headers,
        )
    if rule.status == 409:
        return StripeAPIError(
            409,
            "This object cannot be accessed right now because another API request or "
            "Stripe process is currently accessing it.",
            code="lock_timeout",
            store=False,
            headers=headers,
        )
    if rule.status >= 500:
        return StripeAPIError(
            rule.status,
            "An unknown error occurred (injected by the local test server).",
            type_="api_error",
            store=False,
            headers=headers,
        )
    return StripeAPIError(rule.status, "Injected error", store=False, headers=headers)


def _tiny_pdf(text: str) -> bytes:
    safe = text.replace("\\", "").replace("(", "").replace(")", "")
    stream = f"BT /F1 18 Tf 72 720 Td ({safe}) Tj ET".encode()
    objs = [
        b"<< /Type /Catalog /Pages 2 0 R >>",
        b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
        b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents 4 0 R "
        b"/Resources << /Font << /F1 5 0 R >> >> >>",
        b"<< /Length " + str(len(stream)).encode() + b" >>\nstream\n" + stream + b"\nendstream",
        b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>",
    ]
    out = b"%PDF-1.4\n"
    offsets = []
    for i, obj in enumerate(objs, 1):
        offsets.append(len(out))
        out += f"{i} 0 obj\n".encode() + obj + b"\nendobj\n"
    xref = len(out)
    out += f"xref\n0 {len(objs) + 1}\n0000000000 65535 f \n".encode()
    out += b"".join(f"{o:010d} 00000 n \n".encode() for o in offsets)
    out += f"trailer\n<< /Size {len(objs) + 1} /Root 1 0 R >>\nstartxref\n{xref}\n%%EOF\n".encode()
    return out


def _invoice_html(inv: JSON, lines: list[JSON]) -> str:
    number = html.escape(str(inv["number"]))
    rows = "".join(
        f"<tr><td>{html.escape(str(line['description']))}</td><td>{line['quantity_decimal']}</td>"
        f"<td>{line['amount']}</td></tr>"
        for line in lines
    )
    return (
        f"<!doctype html><html><head><title>Invoice {number}</title></head><body>"
        f"<h1>Invoice {number}</h1><p>Status: <b id='status'>{inv['status']}</b></p>"
        f"<table><tr><th>Description</th><th>Qty</th><th>Amount</th></tr>{rows}</table>"
        f"<p>Total: <b id='total'>{inv['total']}</b> {html.escape(inv['currency'])}"
        " (minor units)</p>"
        "</body></html>"
    )


def _checkout_html(cs: JSON) -> str:
    if cs["status"] != "open":
        return f"<!doctype html><html><body><p>This session is {cs['status']}.</p></body></html>"
    options = "".join(
        f"<label><input type='radio' name='card' value='{token}'"
        f"{' checked' if token == 'pm_card_visa' else ''}>"
        f" {card.brand} •••• {card.last4}{' (declines)' if card.decline_code else ''}</label><br>"
        for token, card in TEST_CARDS.items()
    )
    cancel = html.escape(str(cs.get("cancel_url") or "/"))
    return (
        "<!doctype html><html><head><title>Save card (local Stripe test server)</title>"
        "</head><body>"
        f"<h1>Save a card</h1><form method='post' action='/c/pay/{cs['id']}'>{options}"
        "<button type='submit' id='submit'>Save card</button></form>"
        f"<p><a id='cancel' href='{cancel}'>Cancel</a></p></body></html>"
    )


# --------------------------------------------------------------------------- HTTP server


class _HTTPServer(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 256  # listen backlog: the default 5 stalls concurrent clients
    app: StripeTestServer

    def __init__(self, address: tuple[str, int], handler: type[BaseHTTPRequestHandler]) -> None:
        super().__init__(address, handler)
        # Open client connections: HTTP/1.1 keep-alive handlers outlive serve_forever(), so
        # stop() closes them itself (an outage drops established connections too).
        self._connections: set[socket.socket] = set()
        self._connections_lock = threading.Lock()

    def process_request(self, request: Any, client_address: Any) -> None:
        with self._connections_lock:
            self._connections.add(request)
        super().process_request(request, client_address)

    def shutdown_request(self, request: Any) -> None:
        with self._connections_lock:
            self._connections.discard(request)
        super().shutdown_request(request)

    def handle_error(self, request: Any, client_address: Any) -> None:
        # A client killed mid-request (the failure drills SIGKILL them) is not a server error.
        if isinstance(sys.exc_info()[1], ConnectionError):
            return
        super().handle_error(request, client_address)

    def close_connections(self) -> None:
        with self._connections_lock:
            open_now = list(self._connections)
        for conn in open_now:
            try:
                conn.shutdown(socket.SHUT_RDWR)
            except OSError:  # already closed by the client
                pass


class _RequestHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    # Send headers and body in one segment: avoids the Nagle/delayed-ACK 40 ms stall.
    wbufsize = -1
    disable_nagle_algorithm = True
    server: _HTTPServer
    server_version = "stripe-test-server/1.0"
    sys_version = ""

    def log_message(self, format: str, *args: Any) -> None:
        if self.server.app.verbose:
            sys.stderr.write(f"{self.address_string()} - {format % args}\n")

    def do_GET(self) -> None:
        self._serve("GET")

    def do_POST(self) -> None:
        self._serve("POST")

    def do_DELETE(self) -> None:
        self._serve("DELETE")

    def _serve(self, method: str) -> None:
        app = self.server.app
        parts = urlsplit(self.path)
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length > 0 else b""
        if len(body) < length:
            # The client died mid-request (a drill's SIGKILL): Stripe never sees a truncated
            # request, so it must not be processed (or stored under its idempotency key).
            self.close_connection = True
            return
        headers = {k.lower(): v for k, v in self.headers.items()}
        try:
            if parts.path.startswith("/v1/"):
                resp = app._handle_api(method, parts.path, parts.query, body, headers)
            else:
                resp = app._handle_web(method, parts.path, body)
        except Exception as exc:  # a bug in the emulator: answer like Stripe's 500
            err = StripeAPIError(
                500, f"Local Stripe test server error: {exc!r}", type_="api_error", store=False
            )
            resp = _Response(500, _dumps(err.body("req_internal")))
        if resp.drop:
            self.close_connection = True
            return
        try:
            self.send_response(resp.status)
            self.send_header("Content-Type", resp.content_type)
            self.send_header("Content-Length", str(len(resp.body)))
            self.send_header("Access-Control-Allow-Origin", "*")
            for k, v in resp.headers.items():
                self.send_header(k, v)
            self.end_headers()
            self.wfile.write(resp.body)
            self.wfile.flush()
        except OSError:  # client gave up (timeout), or stop() closed the connection
            self.close_connection = True


# --------------------------------------------------------------------------- CLI


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Run the local Stripe test server until killed.")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=12111)
    parser.add_argument(
        "--api-key", default=None, help="accept only this key (default: any sk_test_ key)"
    )
    parser.add_argument("--latency", type=float, default=0.0, help="seconds added to every request")
    parser.add_argument(
        "--rate-limit", type=float, default=None, help="requests per second (429 beyond)"
    )
    parser.add_argument("--verbose", action="store_true", help="log every request to stderr")
    args = parser.parse_args(argv)
    server = StripeTestServer(
        args.host,
        args.port,
        api_key=args.api_key,
        latency=args.latency,
        rate_limit=args.rate_limit,
        verbose=args.verbose,
    )
    server.start()
    print(server.url, flush=True)
    try:
        threading.Event().wait()
    except KeyboardInterrupt:
        pass
    finally:
        server.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
