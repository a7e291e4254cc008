"""The one place that talks to Stripe: client construction, pinned API version, error wording.

Feature code adds its calls here as small functions taking the client; pages never import
stripe. Idempotency keys are derived from local ids and the step, never random.
"""

from __future__ import annotations

import stripe

from billing_core.config import Settings
from billing_core.errors import ConfigError, PaymentProviderError

# Pinned: every call goes out with this version, whatever the account's default is.
STRIPE_API_VERSION = "2026-10-28.endive"
# stripe-python retries network errors, 409 and 5xx this many times (not 429s: see invoicing).
NETWORK_RETRIES = 2
# Used only when STRIPE_API_BASE points at a local emulator and no key is configured.
EMULATOR_KEY = "sk_test_local_emulator"


def make_client(
    settings: Settings, *, max_network_retries: int = NETWORK_RETRIES
) -> stripe.StripeClient:
    """A StripeClient for the configured key or local emulator, or a clear ConfigError."""
    if not settings.stripe_enabled:
        raise ConfigError(
            "Stripe is not configured: set STRIPE_API_KEY (or STRIPE_API_BASE for a local "
            "Stripe emulator) in the environment or .streamlit/secrets.toml."
        )
    key = settings.stripe_api_key.get_secret_value() if settings.stripe_api_key else EMULATOR_KEY
    kwargs: dict[str, object] = {}
    if settings.stripe_api_base:
        kwargs["base_addresses"] = {"api": settings.stripe_api_base.rstrip("/")}
    return stripe.StripeClient(
        key,
        stripe_version=STRIPE_API_VERSION,
        max_network_retries=max_network_retries,
        **kwargs,  # type: ignore[arg-type]
    )


def describe_error(exc: stripe.StripeError, doing: str) -> PaymentProviderError:
    """A project error whose message says what failed and what to do; never the API key."""
    if isinstance(exc, stripe.CardError):
        code = exc.code or "card_error"
        decline = getattr(exc.error, "decline_code", None) if exc.error else None
        reason = f"{code} ({decline})" if decline else code
        return PaymentProviderError(
            f"Stripe declined the payment while {doing}: {reason}. Ask the customer to update "
            "the payment method, then retry the payment."
        )
    if isinstance(exc, stripe.AuthenticationError):
        return PaymentProviderError(
            f"Stripe rejected the API key while {doing}: check STRIPE_API_KEY (test vs live)."
        )
    if isinstance(exc, stripe.PermissionError):
        return PaymentProviderError(
            f"The Stripe key may not do this ({doing}): grant the permission to the key."
        )
    if isinstance(exc, stripe.RateLimitError):
        return PaymentProviderError(f"Stripe rate limit hit while {doing}; retry later.")
    if isinstance(exc, stripe.APIConnectionError):
        return PaymentProviderError(
            f"Stripe could not be reached while {doing}: network problem or Stripe outage. "
            "Nothing was lost; run the command again later."
        )
    if isinstance(exc, stripe.IdempotencyError):
        return PaymentProviderError(
            f"Stripe refused a replayed request while {doing} (idempotency key reused with "
            "different parameters); this is a bug, please report it."
        )
    message = exc.user_message or getattr(exc, "_message", None) or str(exc)
    return PaymentProviderError(f"Stripe error while {doing}: {message}")
