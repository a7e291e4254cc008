"""Stripe's idempotency keys: a POST's first result is stored under (API key, key) and replayed
for a retry with the same parameters; different parameters are refused."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass

from .common import StripeAPIError
from .state import ServerState
from .transport import _error_response, _Response


@dataclass
class _Stored:
    fingerprint: str
    status: int
    body: bytes
    headers: dict[str, str]
    request_id: str


class IdempotencyMixin(ServerState):
    """The store of POST results by (API key, idempotency key)."""

    _idempotency: dict[tuple[str, str], _Stored]

    def expire_idempotency_keys(self) -> None:
        """Forget every stored idempotency key (Stripe expires them after 24 hours)."""
        with self._lock:
            self._idempotency.clear()

    def _replay(self, key: tuple[str, str], fingerprint: str, request_id: str) -> _Response | None:
        """The stored answer for ``key``; a refusal if it was used with other parameters."""
        stored = self._idempotency.get(key)
        if stored is None:
            return None
        if stored.fingerprint != fingerprint:
            return _error_response(
                StripeAPIError(
                    400,
                    "Keys for idempotent requests can only be used with the same "
                    "parameters they were first used with. Try using a key other than "
                    f"'{key[1]}' if you meant to execute a different request.",
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

    def _remember(
        self, key: tuple[str, str], fingerprint: str, resp: _Response, request_id: str
    ) -> None:
        self._idempotency[key] = _Stored(
            fingerprint, resp.status, resp.body, dict(resp.headers), request_id
        )


def _fingerprint(method: str, path: str, pairs: list[tuple[str, str]]) -> str:
    """What makes two requests the same: method, path and parameters (in any order)."""
    return hashlib.sha256(
        json.dumps([method, path, sorted(pairs)], separators=(",", ":")).encode()
    ).hexdigest()
