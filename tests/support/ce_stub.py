"""A tiny Cost Explorer peer on 127.0.0.1 for what moto cannot do: errors, forecasts, counting.

It speaks the real wire protocol (AWS JSON 1.1, `X-Amz-Target: AWSInsightsIndexService.<Op>`),
so boto3 talks to it exactly as to AWS. Queue answers per operation with `add()` / `fail()`;
with nothing queued, `responder` decides (default: an empty result).
"""

from __future__ import annotations

import json
import threading
from collections import defaultdict, deque
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

Responder = Callable[[str, dict[str, Any]], tuple[int, dict[str, Any]]]


def _empty(operation: str, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
    if operation == "GetCostForecast":
        return 400, {"__type": "DataUnavailableException", "message": "Not enough data"}
    return 200, {"ResultsByTime": [], "DimensionValueAttributes": []}


class CostExplorerStub:
    def __init__(self, responder: Responder = _empty) -> None:
        self.responder = responder
        self.queues: dict[str, deque[tuple[int, dict[str, Any]]]] = defaultdict(deque)
        self.requests: list[tuple[str, dict[str, Any]]] = []
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None

    # -- scripting ---------------------------------------------------------------------------
    def add(self, operation: str, body: dict[str, Any], status: int = 200) -> None:
        self.queues[operation].append((status, body))

    def fail(self, operation: str, code: str, message: str = "", times: int = 1) -> None:
        for _ in range(times):
            self.add(operation, {"__type": code, "message": message or code}, status=400)

    @property
    def request_count(self) -> int:
        return len(self.requests)

    def operations(self) -> list[str]:
        return [op for op, _ in self.requests]

    # -- server ------------------------------------------------------------------------------
    def _answer(self, operation: str, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        with self._lock:
            self.requests.append((operation, body))
            queue = self.queues[operation]
            if queue:
                return queue.popleft()
        return self.responder(operation, body)

    def start(self) -> CostExplorerStub:
        stub = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = json.loads(self.rfile.read(length) or b"{}")
                target = self.headers.get("X-Amz-Target", "")
                status, payload = stub._answer(target.rsplit(".", 1)[-1], body)
                data = json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/x-amz-json-1.1")
                self.send_header("Content-Length", str(len(data)))
                self.send_header("x-amzn-RequestId", f"stub-{len(stub.requests)}")
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args: object) -> None:  # quiet test output
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    @property
    def url(self) -> str:
        assert self._server is not None
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
