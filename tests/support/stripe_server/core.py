"""The server's core: lifecycle, state reset, the request pipeline (faults, authentication,
parameters, idempotency, dispatch) and routing. The resources are in the other modules."""

from __future__ import annotations

import base64
import hmac
import threading
import time
from types import TracebackType
from typing import Self
from urllib.parse import parse_qsl

from .common import DEFAULT_API_VERSION, JSON, StripeAPIError, _dumps, _invalid, _rand
from .faults import FaultsMixin
from .idempotency import IdempotencyMixin, _fingerprint
from .params import parse_form
from .routing import Route, _Request, collect_routes
from .state import ServerState
from .transport import _error_response, _HTTPServer, _RequestHandler, _Response


class ServerCore(FaultsMixin, IdempotencyMixin, ServerState):
    """Starts and stops the HTTP server and runs each API request through the pipeline."""

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
        self._httpd = None
        self._thread: threading.Thread | None = None
        self._latency = latency
        self._rate_limit = rate_limit
        self._search_lag = search_lag
        self._routes: list[Route] = collect_routes(self)
        self._reset_state()

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> Self:
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

    def __enter__(self) -> Self:
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

    # ------------------------------------------------------------------ state

    def reset(self) -> None:
        """Forget all objects, events, keys, faults and the request log; knobs back to defaults."""
        with self._lock:
            self._reset_state()
            self._latency = 0.0
            self._rate_limit = None
            self._search_lag = 0.0

    def _reset_state(self) -> None:
        with self._lock:
            self._objects = {}
            self._seq = {}
            self._by_type = {}
            self._born = {}
            self._counter = 0
            self._deleted = set()
            self._invoice_lines = {}
            self._invoice_payments = {}
            self._events = []
            self._idempotency = {}
            self._faults = []
            self._hangs = []
            self._drops = []
            self._log = []
            self._clock_offset = 0
            self._tokens = float(self._rate_limit or 0)
            self._tokens_at = time.monotonic()
            self._current = None

    # ------------------------------------------------------------------ HTTP entry

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
            if method == "POST" and self._take_drop(method, path):
                resp.drop = True
            return resp

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
        # 1. injected faults, 2. rate limit (never stored)
        refused = self._take_fault(method, path)
        if refused is not None:
            return _error_response(refused, request_id)
        # 3. authentication
        try:
            api_key = self._authenticate(headers.get("authorization", ""))
        except StripeAPIError as err:
            return _error_response(err, request_id)
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
            return _error_response(err, request_id)
        except UnicodeDecodeError:
            return _error_response(_invalid("Request body is not valid UTF-8"), request_id)
        # 5. idempotency replay
        store_key: tuple[str, str] | None = None
        fingerprint = ""
        if method == "POST" and idem:
            if len(idem) > 255:
                return _error_response(
                    _invalid("Idempotency-Key is too long", "Idempotency-Key"), request_id
                )
            store_key = (api_key, idem)
            fingerprint = _fingerprint(method, path, pairs)
            replayed = self._replay(store_key, fingerprint, request_id)
            if replayed is not None:
                return replayed
        # 6. dispatch
        req = _Request(method, path, params, api_key, idem, version, request_id)
        self._current = req
        try:
            status, payload = self._dispatch(req)
            resp = _Response(status, _dumps(payload))
            store = True
        except StripeAPIError as err:
            resp = _error_response(err, request_id)
            store = err.store and err.status not in (401, 409, 429) and err.status < 500
        finally:
            self._current = None
        if store_key is not None and store:
            self._remember(store_key, fingerprint, resp, request_id)
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

    # ------------------------------------------------------------------ routing

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


def _redact(key: str) -> str:
    return key[:8] + "*" * max(0, len(key) - 12) + key[-4:] if len(key) > 12 else "****"
