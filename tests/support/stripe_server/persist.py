"""Keep the server's objects in a JSON file across restarts (the demo's local Stripe).

Tests keep everything in memory; ``make run`` passes ``--state-file`` so that the invoices the
demo pushed are still there after the dashboard is restarted. Saved: objects, creation order,
deleted ids, invoice lines and payments, events and the clock. Not saved: idempotency keys
(Stripe forgets them after 24 hours anyway), faults and the request log.
"""

from __future__ import annotations

import json
import os
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from . import StripeTestServer

_FORMAT = 1


def _snapshot(server: StripeTestServer) -> dict[str, Any]:
    with server._lock:
        return {
            "format": _FORMAT,
            "objects": server._objects,
            "seq": server._seq,
            "counter": server._counter,
            "deleted": sorted(server._deleted),
            "invoice_lines": server._invoice_lines,
            "invoice_payments": server._invoice_payments,
            "events": server._events,
            "clock_offset": server._clock_offset,
        }


def save_state(server: StripeTestServer, path: Path) -> None:
    """Write the state to `path` atomically (a temporary file, then a rename)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    with server._lock:
        text = json.dumps(_snapshot(server), separators=(",", ":"))
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def load_state(server: StripeTestServer, path: Path) -> bool:
    """Replace the state with the one in `path`; False (state untouched) when there is none.

    Raises ValueError with a sentence when the file is not a state file of this server.
    """
    if not path.exists():
        return False
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValueError(
            f"{path} is not a saved local Stripe state ({exc}); delete it to start empty."
        ) from None
    if not isinstance(data, dict) or data.get("format") != _FORMAT:
        raise ValueError(f"{path} is not a saved local Stripe state; delete it to start empty.")
    with server._lock:
        server._objects = data["objects"]
        server._seq = {k: int(v) for k, v in data["seq"].items()}
        server._born = dict.fromkeys(server._objects, 0.0)  # old enough for any search lag
        server._index_types()
        server._counter = int(data["counter"])
        server._deleted = set(data["deleted"])
        server._invoice_lines = data["invoice_lines"]
        server._invoice_payments = data["invoice_payments"]
        server._events = data["events"]
        server._clock_offset = int(data["clock_offset"])
    return True


def _fingerprint(server: StripeTestServer) -> tuple[int, int, int]:
    with server._lock:
        return (server._counter, len(server._events), len(server._log))


class StateKeeper:
    """Saves the state every `interval` seconds when it changed, and always on `stop` (even
    unchanged: the file then says this emulator ran for that database, which the launcher
    checks on the next start)."""

    def __init__(self, server: StripeTestServer, path: Path, interval: float = 1.0) -> None:
        self.server = server
        self.path = path
        self.interval = interval
        self._stop = threading.Event()
        self._saved = _fingerprint(server)
        self._thread = threading.Thread(target=self._loop, name="stripe-state", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def _save_if_changed(self) -> None:
        now = _fingerprint(self.server)
        if now != self._saved:
            save_state(self.server, self.path)
            self._saved = now

    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            self._save_if_changed()

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=5)
        save_state(self.server, self.path)
        self._saved = _fingerprint(self.server)
