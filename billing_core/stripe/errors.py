"""Stripe errors as the project's own: what failed, in a sentence; what kind, for code.

Every Stripe exception leaves the gateway as a `StripeFailure` (a PaymentProviderError), so no
code outside this package catches stripe-python classes. `HARMLESS` is the one closed list of
Stripe errors a caller may treat as an answer rather than a failure; anything else propagates.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import stripe

from billing_core.errors import PaymentProviderError

Kind = Literal[
    "declined",  # the card or payment method was refused (402)
    "auth",  # the API key was rejected (401)
    "permission",  # the key may not do this (403)
    "rate_limited",  # 429
    "unreachable",  # network error, timeout, connection refused
    "server",  # 5xx or a 409 conflict: Stripe's side, worth retrying
    "idempotency",  # a key reused with other parameters
    "invalid",  # 400/404: the request or the object itself is wrong; retrying cannot help
    "other",
]

# Codes Stripe answers when paying cannot proceed for a reason the customer must fix.
PAYMENT_NEEDS_CUSTOMER = frozenset(
    [
        "invoice_no_payment_method",  # no default card: ask the customer for one
        "invoice_no_customer_line_items",  # nothing to charge (an empty invoice)
        "payment_method_unactivated",  # the payment method cannot be used yet
    ]
)


@dataclass(frozen=True)
class Harmless:
    """A Stripe error a caller may take as an answer; `reason` says why that is safe."""

    status: int
    code: str
    reason: str


# The closed allowlist: a call names the rows it tolerates (gateway.Gateway.request(harmless=)).
HARMLESS: dict[str, Harmless] = {
    "resource_missing": Harmless(
        404,
        "resource_missing",
        "The object was deleted in Stripe, or never existed there: a reader that asks whether "
        "it exists gets None and records the absence (a reconciliation finding).",
    ),
}


class StripeFailure(PaymentProviderError):
    """A Stripe call failed. The message is for people; the fields are for code."""

    def __init__(
        self,
        kind: Kind,
        doing: str,
        *,
        code: str | None = None,
        decline_code: str | None = None,
        param: str | None = None,
        status: int | None = None,
        detail: str = "",
        attempts: int = 1,
    ) -> None:
        self.kind = kind
        self.code = code
        self.decline_code = decline_code
        self.param = param
        self.status = status
        self.detail = detail
        self.attempts = attempts
        super().__init__(_wording(self, doing))

    @property
    def transient(self) -> bool:
        """Worth trying again later; an invalid request about the object itself is final."""
        return self.kind != "invalid"

    @property
    def payment_refused(self) -> bool:
        """The payment was refused for a reason the customer must fix (a new key is needed)."""
        return self.kind == "declined" or self.code in PAYMENT_NEEDS_CUSTOMER

    def is_harmless(self, allowed: tuple[str, ...]) -> bool:
        """True when this failure is one of the named HARMLESS rows."""
        rows = (HARMLESS[name] for name in allowed)
        return any(row.status == self.status and row.code == self.code for row in rows)

    def reworded(self, doing: str) -> StripeFailure:
        """The same failure, told as part of what the caller was doing."""
        return StripeFailure(
            self.kind,
            doing,
            code=self.code,
            decline_code=self.decline_code,
            param=self.param,
            status=self.status,
            detail=self.detail,
            attempts=self.attempts,
        )


def _wording(f: StripeFailure, doing: str) -> str:
    after = f" (after {f.attempts} attempts)" if f.attempts > 1 else ""
    if f.kind == "declined":
        reason = f"{f.code or 'card_error'} ({f.decline_code})" if f.decline_code else f.code
        return (
            f"Stripe declined the payment while {doing}: {reason or 'card_error'}. Ask the "
            "customer to update the payment method, then retry the payment."
        )
    if f.kind == "auth":
        return f"Stripe rejected the API key while {doing}: check STRIPE_API_KEY (test vs live)."
    if f.kind == "permission":
        return f"The Stripe key may not do this ({doing}): grant the permission to the key."
    if f.kind == "rate_limited":
        return f"Stripe rate limit hit while {doing}{after}; nothing was lost, run it again later."
    if f.kind == "unreachable":
        return (
            f"Stripe could not be reached while {doing}{after}: network problem or Stripe "
            "outage. Nothing was lost; run it again later."
        )
    if f.kind == "idempotency":
        return (
            f"Stripe refused a replayed request while {doing} (idempotency key reused with "
            "different parameters); this is a bug, please report it."
        )
    if f.kind == "server":
        failed = "kept failing" if f.attempts > 1 else "failed"
        return (
            f"Stripe {failed} while {doing}{after}: {f.detail.rstrip('.')}. Nothing was lost; "
            "run it again later."
        )
    return f"Stripe error while {doing}: {f.detail}"


def _kind(exc: stripe.StripeError) -> Kind:
    if isinstance(exc, stripe.CardError):
        return "declined"
    if isinstance(exc, stripe.AuthenticationError):
        return "auth"
    if isinstance(exc, stripe.PermissionError):
        return "permission"
    if isinstance(exc, stripe.RateLimitError):
        return "rate_limited"
    if isinstance(exc, stripe.APIConnectionError):
        return "unreachable"
    if isinstance(exc, stripe.IdempotencyError):
        return "idempotency"
    if isinstance(exc, stripe.InvalidRequestError):
        return "invalid"
    status = exc.http_status
    if isinstance(exc, stripe.APIError) and (status is None or status >= 500 or status == 409):
        return "server"
    return "other"


def describe(exc: stripe.StripeError, doing: str, *, attempts: int = 1) -> StripeFailure:
    """A StripeFailure whose message says what failed and what to do; never the API key."""
    error = exc.error
    return StripeFailure(
        _kind(exc),
        doing,
        code=exc.code or None,
        decline_code=getattr(error, "decline_code", None) if error else None,
        param=getattr(exc, "param", None),
        status=exc.http_status,
        detail=exc.user_message or getattr(exc, "_message", None) or str(exc),
        attempts=attempts,
    )


def should_retry(exc: stripe.StripeError) -> bool:
    """Stripe-python's own rule (network errors, 409, 5xx; Stripe-Should-Retry wins) plus 429."""
    if isinstance(exc, stripe.APIConnectionError):
        return bool(exc.should_retry)
    headers = {str(k).lower(): v for k, v in (exc.headers or {}).items()}
    header = headers.get("stripe-should-retry")
    if header in ("true", "false"):
        return header == "true"
    if isinstance(exc, stripe.RateLimitError):
        return True
    status = exc.http_status or 0
    return status == 409 or status >= 500
