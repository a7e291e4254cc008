"""The HTTP server: a threading server that can drop its open connections, and the request
handler that hands ``/v1/`` requests to the API and everything else to the hosted pages."""

from __future__ import annotations

import socket
import sys
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from .common import StripeAPIError, _dumps

if TYPE_CHECKING:
    from .core import ServerCore


@dataclass
class _Response:
    status: int
    body: bytes
    headers: dict[str, str] = field(default_factory=dict)
    content_type: str = "application/json"
    drop: bool = False


def _error_response(err: StripeAPIError, request_id: str) -> _Response:
    return _Response(err.status, _dumps(err.body(request_id)), dict(err.headers))


class _HTTPServer(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 256  # listen backlog: the default 5 stalls concurrent clients
    app: ServerCore

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
