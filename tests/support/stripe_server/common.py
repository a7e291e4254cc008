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


def _dumps(payload: JSON) -> bytes:
    return json.dumps(payload, indent=2, sort_keys=False).encode()


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
