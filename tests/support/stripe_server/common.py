"""Shared by every part of the server: the JSON type, the API version, random ids, and
Stripe's error shape with the constructors for its usual errors."""

from __future__ import annotations

import json
import secrets
import string
from typing import Any

DEFAULT_API_VERSION = "2026-10-28.endive"

JSON = dict[str, Any]

_ALNUM = string.ascii_letters + string.digits


def _rand(n: int = 24) -> str:
    return "".join(secrets.choice(_ALNUM) for _ in range(n))


def _copy_json(value: Any) -> Any:
    """A deep copy of JSON data (dicts, lists, scalars), several times quicker than
    copy.deepcopy, which rendering every object of a list page spends most of its time in."""
    if isinstance(value, dict):
        return {k: _copy_json(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_copy_json(v) for v in value]
    if isinstance(value, tuple):
        return tuple(_copy_json(v) for v in value)
    return value


def _dumps(payload: JSON) -> bytes:
    """Stripe's JSON: indented like Stripe's for one object (people read it with curl); lists
    compact, since indenting takes Python's slow encoder instead of the C one and a page of
    100 invoices took longer to indent than to find and copy."""
    if payload.get("object") in ("list", "search_result"):
        return json.dumps(payload, separators=(",", ":")).encode()
    return json.dumps(payload, indent=2).encode()


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
