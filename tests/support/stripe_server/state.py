"""Shared state: objects by id, creation order, events, the clock; rendering, expansion,
pagination and search over them.

Lists page in O(page size), not O(objects): every object is also kept in its type's list in
creation order (``_by_type``), so a page is a binary search for the cursor and a walk from
it that stops one match past the page. A benchmark lists 50,000 invoices 100 at a time."""

from __future__ import annotations

import base64
import bisect
import copy
import threading
import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from .common import DEFAULT_API_VERSION, JSON, _copy_json, _invalid, _no_such, _rand
from .params import _as_int, _as_str, _check_unknown, _parse_query

if TYPE_CHECKING:
    from .routing import _Request
    from .transport import _HTTPServer, _Response


class ServerState:
    """The base of every part of ``StripeTestServer``: its state and the helpers all share.

    One lock guards everything; the state is (re)built by ``ServerCore._reset_state``.
    """

    host: str
    verbose: bool
    _lock: threading.RLock
    _httpd: _HTTPServer | None
    _search_lag: float
    _objects: dict[str, JSON]  # every object by id
    _seq: dict[str, int]  # creation order
    _by_type: dict[str, list[JSON]]  # objects of each type, oldest first (ascending _seq)
    _born: dict[str, float]  # monotonic creation time (search lag)
    _counter: int
    _deleted: set[str]
    _invoice_lines: dict[str, list[JSON]]
    _invoice_payments: dict[str, list[JSON]]
    _events: list[JSON]
    _log: list[tuple[str, str, int, str | None]]
    _clock_offset: int
    _current: _Request | None

    if TYPE_CHECKING:
        # What the parts of StripeTestServer call on one another (see __init__.py).

        @property
        def url(self) -> str: ...  # core.py
        def customers(self) -> list[JSON]: ...  # customers.py
        def _new_customer(self, params: JSON) -> JSON: ...
        def _attach(  # payment_methods.py
            self, token_or_id: str, customer_id: str, *, param: str | None = None
        ) -> JSON: ...
        def _complete_checkout(self, cs: JSON, card: str) -> str: ...  # checkout.py
        def invoices(  # invoices.py
            self, customer: str | None = None, status: str | None = None
        ) -> list[JSON]: ...
        def _render_invoice(self, inv: JSON) -> JSON: ...
        def _finalize(self, inv: JSON) -> None: ...
        def _recompute(self, inv: JSON) -> None: ...  # invoice_lines.py
        def _add_line(self, inv: JSON, line: Any, param: str) -> JSON: ...
        def _payments_list(self, invoice_id: str) -> JSON: ...  # payments.py
        def _paid_charge(self, inv: JSON) -> JSON | None: ...
        def _refund_charge(
            self, ch: JSON, amount: int | None, reason: str | None, metadata: JSON
        ) -> JSON: ...
        def _apply_balance(self, inv: JSON) -> None: ...  # credit_notes.py
        def _mark_paid(
            self, inv: JSON, *, out_of_band: bool, charge: JSON | None = None
        ) -> None: ...
        def _handle_web(self, method: str, path: str, body: bytes) -> _Response: ...  # web.py

    # ------------------------------------------------------------------ clock, ids, storage

    def advance_clock(self, seconds: int) -> None:
        """Move the server's clock (``created``, due dates, ...) forward."""
        with self._lock:
            self._clock_offset += int(seconds)

    def now(self) -> int:
        with self._lock:
            return int(time.time()) + self._clock_offset

    def _now(self) -> int:
        return int(time.time()) + self._clock_offset

    def _store(self, obj: JSON) -> JSON:
        self._counter += 1
        self._seq[obj["id"]] = self._counter
        self._born[obj["id"]] = time.monotonic()
        self._objects[obj["id"]] = obj
        self._by_type.setdefault(obj.get("object", ""), []).append(obj)
        return obj

    def _index_types(self) -> None:
        """Rebuild ``_by_type`` from ``_objects`` (after the state was loaded from a file)."""
        self._by_type = {}
        for obj in sorted(self._objects.values(), key=lambda o: self._seq[o["id"]]):
            self._by_type.setdefault(obj.get("object", ""), []).append(obj)

    def _of_type(self, obj_type: str) -> list[JSON]:
        """Every stored object of `obj_type` (deleted ones too), oldest first."""
        return self._by_type.get(obj_type, [])

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

    # ------------------------------------------------------------------ rendering and events

    def _render(self, obj: JSON) -> JSON:
        if obj["id"] in self._deleted and obj.get("object") == "customer":
            return {"id": obj["id"], "object": "customer", "deleted": True}
        if obj.get("object") == "invoice":
            return self._render_invoice(obj)
        return {k: _copy_json(v) for k, v in obj.items() if not k.startswith("_")}

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
        if node.get("object") == "list" and head == "data" and rest:  # payments.data.payment...
            for item in node["data"]:
                self._expand_path(item, rest)
            return
        if head == "payments" and node.get("object") == "invoice":
            node["payments"] = self._payments_list(node["id"])  # only sent when expanded
            if rest:
                self._expand_path(node["payments"], rest)
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

    # ------------------------------------------------------------------ lists and search

    def _paginate(self, items: list[JSON], params: JSON, url: str) -> JSON:
        """Stripe cursor pagination over ``items`` (already filtered, any order)."""
        ascending = sorted(items, key=lambda o: self._seq[o["id"]])
        return self._page(ascending, None, params, url)

    def _page(
        self,
        ascending: Sequence[JSON],
        keep: Callable[[JSON], bool] | None,
        params: JSON,
        url: str,
    ) -> JSON:
        """Stripe cursor pagination, newest first, over the objects of ``ascending`` (oldest
        first, as ``_of_type`` and ``_events`` hold them) that ``keep`` keeps (all if None).

        The cursor (any object's id, as in Stripe) is found by binary search and the walk from
        it stops one match past the page (that match only says ``has_more``): a page costs its
        size plus the objects ``keep`` skips, whatever the number of objects before it.
        """
        limit = _as_int(params.get("limit", 10), "limit")
        if not 1 <= limit <= 100:
            raise _invalid("Invalid limit: must be between 1 and 100", "limit")
        after, before = params.get("starting_after"), params.get("ending_before")
        if after is not None and before is not None:
            raise _invalid(
                "You may only specify one of these parameters: ending_before, starting_after."
            )
        seq = self._seq

        def position(o: JSON) -> int:
            return seq[o["id"]]

        found: list[JSON] = []
        if before is not None:
            # The `limit` objects just newer than the cursor: walk forward (oldest first).
            start = bisect.bisect_right(
                ascending, self._cursor(before, "ending_before"), key=position
            )
            for i in range(start, len(ascending)):
                if keep is None or keep(ascending[i]):
                    found.append(ascending[i])
                    if len(found) > limit:
                        break
            page = found[:limit][::-1]
        else:
            end = len(ascending)
            if after is not None:
                end = bisect.bisect_left(
                    ascending, self._cursor(after, "starting_after"), key=position
                )
            for i in range(end - 1, -1, -1):
                if keep is None or keep(ascending[i]):
                    found.append(ascending[i])
                    if len(found) > limit:
                        break
            page = found[:limit]
        return {
            "object": "list",
            "data": [self._render(o) for o in page],
            "has_more": len(found) > limit,
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
            for o in reversed(self._of_type(obj_type))  # newest first
            if o["id"] not in self._deleted
            and self._born[o["id"]] <= visible_before
            and match(self._render(o))
        ]
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

    # ------------------------------------------------------------------ inspection

    def _list_of(self, obj_type: str, pred: Callable[[JSON], bool] | None = None) -> list[JSON]:
        with self._lock:
            return [
                self._render(o)
                for o in self._of_type(obj_type)  # oldest first
                if o["id"] not in self._deleted and (pred is None or pred(o))
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
