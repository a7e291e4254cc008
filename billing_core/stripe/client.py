"""The StripeClient: the configured key (or a local emulator), the pinned API version, the rate.

Made with `max_network_retries=0`: every retry is the gateway's (billing_core.stripe.gateway),
so one policy covers network errors, 5xx, 409 and 429, and every request is counted.
"""

from __future__ import annotations

import math

import stripe

from billing_core.config import Settings
from billing_core.errors import ConfigError

# Pinned: every call goes out with this version, whatever the account's default is.
STRIPE_API_VERSION = "2026-10-28.endive"
# Used only when STRIPE_API_BASE points at a local emulator and no key is configured.
EMULATOR_KEY = "sk_test_local_emulator"
# Rate limits when STRIPE_REQUESTS_PER_SECOND is not set: Stripe allows ~25/s in test mode and
# ~100/s live; stay under both so other tools sharing the account keep some headroom.
DEFAULT_RPS_TEST = 20.0
DEFAULT_RPS_LIVE = 80.0

StripeClient = stripe.StripeClient


def is_live(settings: Settings) -> bool:
    """True for a live-mode key (sk_live_, rk_live_): real money."""
    key = settings.stripe_api_key.get_secret_value() if settings.stripe_api_key else ""
    return key.startswith(("sk_live_", "rk_live_"))


def requests_per_second(settings: Settings) -> float:
    """The client-side Stripe rate limit: the setting if given, else safe for the key's mode."""
    if "stripe_requests_per_second" in settings.model_fields_set:
        return settings.stripe_requests_per_second
    return DEFAULT_RPS_LIVE if is_live(settings) else DEFAULT_RPS_TEST


# Stripe answers an invoice write in a few hundred milliseconds: to use the rate limit a run
# needs about rate x latency calls in flight (80/s live x 0.3 s: 24).
TYPICAL_LATENCY_SECONDS = 0.3
MIN_CONCURRENCY, MAX_CONCURRENCY = 4, 32


def concurrency(settings: Settings) -> int:
    """Stripe calls in flight during a run: STRIPE_CONCURRENCY if set, else enough to keep the
    rate limit busy at Stripe's typical latency (between 4 and 32)."""
    if "stripe_concurrency" in settings.model_fields_set:
        return settings.stripe_concurrency
    wanted = math.ceil(requests_per_second(settings) * TYPICAL_LATENCY_SECONDS)
    return max(MIN_CONCURRENCY, min(MAX_CONCURRENCY, wanted))


def make_client(settings: Settings) -> stripe.StripeClient:
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
        max_network_retries=0,
        **kwargs,  # type: ignore[arg-type]
    )
