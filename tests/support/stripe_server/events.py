"""Events: list and retrieve (``/v1/events``), and webhook delivery with Stripe's signature.

Events are recorded by ``ServerState._emit`` (state.py) as objects change.
"""

from __future__ import annotations

import copy
import hashlib
import hmac
import json
import time
import urllib.error
import urllib.request
from collections.abc import Iterable

from .common import JSON, _invalid, _no_such
from .params import _as_list, _as_str, _check_unknown, _created_filter
from .routing import _Request, route
from .state import ServerState


class EventsMixin(ServerState):
    """``/v1/events``, the event snapshots, and POSTing events to a webhook endpoint."""

    @route("GET", "/v1/events")
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

        def keep(e: JSON) -> bool:
            return (
                ("type" not in p or _type_matches(str(p["type"]), e["type"]))
                and (types is None or any(_type_matches(t, e["type"]) for t in types))
                and (created is None or created(e["created"]))
            )

        page = self._page(self._events, keep, p, "/v1/events")  # _events: oldest first
        page["data"] = [copy.deepcopy(e) for e in page["data"]]
        return 200, page

    @route("GET", "/v1/events/{id}")
    def _h_event_retrieve(self, req: _Request, args: list[str]) -> tuple[int, JSON]:
        for e in self._events:
            if e["id"] == args[0]:
                return 200, copy.deepcopy(e)
        raise _no_such("event", args[0])

    def events(self, type: str | None = None) -> list[JSON]:
        """Events oldest first (the Events API lists newest first)."""
        with self._lock:
            return [
                copy.deepcopy(e)
                for e in self._events
                if type is None or _type_matches(type, e["type"])
            ]

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


def _type_matches(pattern: str, event_type: str) -> bool:
    if pattern.endswith(".*"):
        return event_type.startswith(pattern[:-1])
    return pattern == event_type
