"""The one place that talks to Stripe: client construction, pinned API version, error wording.

Feature code adds its calls here as small functions taking the client; pages never import
stripe. Idempotency keys are derived from local ids and the step, never random.
"""

from __future__ import annotations

import functools
import random
import threading
import time
from collections.abc import Callable, Iterator
from decimal import Decimal
from typing import TYPE_CHECKING, Any, TypeVar

import stripe

from billing_core.config import Settings
from billing_core.errors import ConfigError, PaymentProviderError
from billing_core.stripe.rate_limit import TokenBucket

if TYPE_CHECKING:
    from stripe import RequestOptions
    from stripe.params import CustomerCreateParams, InvoiceCreateParams

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


# --------------------------------------------------------------------------------------------
# Invoices (the invoice run's calls). Each call takes an idempotency key derived from the local
# id and the step, goes through one rate limiter, and retries 429s itself: stripe-python retries
# network errors, 409 and 5xx, but not rate limiting (Stripe does not mark a 429 retryable).
# --------------------------------------------------------------------------------------------

# Codes Stripe answers when paying cannot proceed for a reason the customer must fix.
PAYMENT_NEEDS_CUSTOMER = frozenset(
    [
        "invoice_no_payment_method",  # no default card: ask the customer for one
        "invoice_no_customer_line_items",  # nothing to charge (an empty invoice)
        "payment_method_unactivated",  # the payment method cannot be used yet
    ]
)
RATE_LIMIT_RETRIES = 6
RATE_LIMIT_BACKOFF_SECONDS = 0.5

T = TypeVar("T")


class StripeCaller:
    """Runs Stripe calls under a shared rate limiter; backs off and retries 429s (same key)."""

    def __init__(
        self,
        client: stripe.StripeClient,
        bucket: TokenBucket,
        *,
        rate_limit_retries: int = RATE_LIMIT_RETRIES,
        backoff_seconds: float | None = None,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.client = client
        self.bucket = bucket
        self.rate_limit_retries = rate_limit_retries
        self.backoff_seconds = (
            RATE_LIMIT_BACKOFF_SECONDS if backoff_seconds is None else backoff_seconds
        )
        self._sleep = sleep
        self._count_lock = threading.Lock()
        self.calls = 0
        self.rate_limited = 0

    def call(self, fn: Callable[[], T]) -> T:
        attempt = 0
        while True:
            self.bucket.acquire()
            with self._count_lock:
                self.calls += 1
            try:
                return fn()
            except stripe.RateLimitError:
                with self._count_lock:
                    self.rate_limited += 1
                if attempt >= self.rate_limit_retries:
                    raise
                # Exponential backoff with jitter so parallel workers do not retry in step.
                delay = self.backoff_seconds * (2**attempt) * (0.5 + random.random())
                self._sleep(min(delay, 20.0))
                attempt += 1


def _metadata(obj: Any) -> dict[str, str]:
    """Metadata as a plain dict (stripe-python 16 objects are not dicts)."""
    meta = getattr(obj, "metadata", None)
    return dict(meta.to_dict()) if meta is not None else {}


def _opts(key: str) -> RequestOptions:
    return {"idempotency_key": key}


def find_customer(caller: StripeCaller, *, local_customer_id: int, email: str) -> str | None:
    """A Stripe customer made for this local customer earlier (list by email: no search lag)."""
    listing = caller.call(lambda: caller.client.v1.customers.list({"email": email, "limit": 100}))
    for cus in listing.data:
        if _metadata(cus).get("local_customer_id") == str(local_customer_id):
            return str(cus.id)
    return None


def create_customer(
    caller: StripeCaller, *, key: str, local_customer_id: int, name: str, email: str
) -> str:
    params: CustomerCreateParams = {
        "name": name,
        "email": email,
        "metadata": {"local_customer_id": str(local_customer_id), "source": "billing_core"},
    }
    cus = caller.call(lambda: caller.client.v1.customers.create(params, _opts(key)))
    return str(cus.id)


def attach_test_card(caller: StripeCaller, *, customer: str, card: str, key: str) -> str:
    """Attach a Stripe test card token as the default (test mode and emulators only)."""
    pm = caller.call(
        lambda: caller.client.v1.payment_methods.attach(
            card, {"customer": customer}, _opts(f"{key}-attach")
        )
    )
    caller.call(
        lambda: caller.client.v1.customers.update(
            customer,
            {"invoice_settings": {"default_payment_method": str(pm.id)}},
            _opts(f"{key}-default"),
        )
    )
    return str(pm.id)


def find_invoice(
    caller: StripeCaller, *, customer: str, local_invoice_id: int
) -> stripe.Invoice | None:
    """The Stripe invoice created for a local invoice, looked up by metadata.

    Listed per customer rather than searched: the list endpoint is consistent at once, while
    search can lag a minute behind a create, which is exactly the window a crash leaves.
    """
    listing = caller.call(
        lambda: caller.client.v1.invoices.list({"customer": customer, "limit": 100})
    )
    for inv in listing.auto_paging_iter():
        if _metadata(inv).get("local_invoice_id") == str(local_invoice_id):
            return inv
    return None


def retrieve_invoice(caller: StripeCaller, stripe_invoice_id: str) -> stripe.Invoice:
    return caller.call(lambda: caller.client.v1.invoices.retrieve(stripe_invoice_id))


def create_invoice(
    caller: StripeCaller,
    *,
    key: str,
    customer: str,
    currency: str,
    collection_method: str,
    days_until_due: int,
    metadata: dict[str, str],
    description: str,
) -> stripe.Invoice:
    params: InvoiceCreateParams = {
        "customer": customer,
        "currency": currency.lower(),
        "auto_advance": False,  # we finalize and collect explicitly, step by step
        "collection_method": collection_method,  # type: ignore[typeddict-item]
        "metadata": metadata,
        "description": description,
        "pending_invoice_items_behavior": "exclude",
    }
    if collection_method == "send_invoice":
        params["days_until_due"] = days_until_due
    return caller.call(lambda: caller.client.v1.invoices.create(params, _opts(key)))


def add_invoice_lines(
    caller: StripeCaller, *, key: str, stripe_invoice_id: str, lines: list[dict[str, Any]]
) -> stripe.Invoice:
    params: Any = {"lines": lines}
    return caller.call(
        lambda: caller.client.v1.invoices.add_lines(stripe_invoice_id, params, _opts(key))
    )


def finalize_invoice(caller: StripeCaller, *, key: str, stripe_invoice_id: str) -> stripe.Invoice:
    return caller.call(
        lambda: caller.client.v1.invoices.finalize_invoice(
            stripe_invoice_id, {"auto_advance": False}, _opts(key)
        )
    )


def pay_invoice(caller: StripeCaller, *, key: str, stripe_invoice_id: str) -> stripe.Invoice:
    return caller.call(
        lambda: caller.client.v1.invoices.pay(stripe_invoice_id, {"off_session": True}, _opts(key))
    )


def send_invoice(caller: StripeCaller, *, key: str, stripe_invoice_id: str) -> stripe.Invoice:
    return caller.call(
        lambda: caller.client.v1.invoices.send_invoice(stripe_invoice_id, None, _opts(key))
    )


# ---------------------------------------------------------------------------- Reconciliation
# Reads Stripe in bulk for `billing_core.reconcile`: list pages of 100 invoices with the
# customer expanded (so a deleted customer shows up without one request per customer), and
# count every request. The client for this must be made with max_network_retries=0: retries
# happen here, page by page, so a 429 or 5xx mid-listing resumes after the last page read
# instead of starting over, and the request count stays exact.

PAGE_SIZE = 100
_RETRYABLE = (stripe.RateLimitError, stripe.APIConnectionError, stripe.APIError)


class ReconcileReader:
    """Bulk, retrying, counting reads of Stripe invoices for one reconciliation run."""

    def __init__(
        self,
        client: stripe.StripeClient,
        *,
        retries: int = 4,
        backoff_seconds: float = 0.5,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.client = client
        self.retries = retries
        self.backoff_seconds = backoff_seconds
        self.sleep = sleep
        self.requests = 0
        self.seconds = 0.0  # time spent waiting on Stripe, to separate it from compute time

    def _call(self, doing: str, fn: Callable[[], Any]) -> Any:
        for attempt in range(self.retries + 1):
            self.requests += 1
            started = time.perf_counter()
            try:
                return fn()
            except _RETRYABLE as exc:
                if isinstance(exc, stripe.APIError) and (exc.http_status or 500) < 500:
                    raise describe_error(exc, doing) from exc
                if attempt == self.retries:
                    raise PaymentProviderError(
                        f"Stripe kept failing while {doing} ({type(exc).__name__} after "
                        f"{attempt + 1} attempts). The reconciliation run was marked failed and "
                        "earlier findings were kept; run it again later."
                    ) from exc
                self.sleep(self.backoff_seconds * (2**attempt))
            except stripe.StripeError as exc:
                raise describe_error(exc, doing) from exc
            finally:
                self.seconds += time.perf_counter() - started
        raise AssertionError("unreachable")  # pragma: no cover

    def _get(self, doing: str, path: str, params: dict[str, Any]) -> dict[str, Any]:
        # raw_request: the SDK's own transport and error mapping, but plain JSON back. Building
        # StripeObjects costs about 6 ms per invoice, which would dominate a 10,000-invoice run.
        response = self._call(
            doing, functools.partial(self.client.raw_request, "get", path, **params)
        )
        data: dict[str, Any] = response.data
        return data

    def _pages(self, doing: str, path: str, params: dict[str, Any]) -> Iterator[dict[str, Any]]:
        while True:
            page = self._get(doing, path, params)
            items: list[dict[str, Any]] = page.get("data") or []
            yield from items
            if not page.get("has_more") or not items:
                return
            params = {**params, "starting_after": items[-1]["id"]}

    def invoices(self, created_gte: int, created_lt: int) -> Iterator[dict[str, Any]]:
        """Every invoice created in [gte, lt), newest first, customer expanded, as plain dicts."""
        params: dict[str, Any] = {
            "created": {"gte": created_gte, "lt": created_lt},
            "limit": PAGE_SIZE,
            "expand": ["data.customer"],
        }
        return self._pages("listing Stripe invoices for reconciliation", "/v1/invoices", params)

    def invoice_lines(self, invoice_id: str) -> list[dict[str, Any]]:
        """All lines of one invoice (Stripe embeds only the first ten in the invoice)."""
        return list(
            self._pages(
                f"reading the lines of Stripe invoice {invoice_id}",
                f"/v1/invoices/{invoice_id}/lines",
                {"limit": PAGE_SIZE},
            )
        )

    def invoice(self, invoice_id: str) -> dict[str, Any] | None:
        """One invoice with its customer expanded, or None when Stripe has no such invoice."""
        try:
            return self._get(
                f"reading Stripe invoice {invoice_id}",
                f"/v1/invoices/{invoice_id}",
                {"expand": ["customer"]},
            )
        except PaymentProviderError as exc:
            cause = exc.__cause__
            if isinstance(cause, stripe.InvalidRequestError) and cause.http_status == 404:
                return None
            raise


# ---------------------------------------------------------------------------------------------
# Events, payment methods, checkout (used by events, webhooks and payment_methods)
#
# Everything here returns plain dicts (Stripe's JSON), so callers and stored payloads never
# depend on stripe-python object classes. Calls raise stripe.StripeError; callers decide which
# errors are transient (see events.is_transient) and word them with describe_error().
# ---------------------------------------------------------------------------------------------

# Stripe's maximum page size for list endpoints.
EVENTS_PAGE_SIZE = 100


def _jsonable(value: Any) -> Any:
    # stripe-python turns Stripe's *_decimal strings into Decimal; Stripe's JSON has strings.
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_jsonable(v) for v in value]
    if isinstance(value, Decimal):
        return str(value)
    return value


def _plain(obj: Any) -> dict[str, Any]:
    raw = obj.to_dict() if hasattr(obj, "to_dict") else dict(obj)
    result: dict[str, Any] = _jsonable(raw)
    return result


def events_page(
    client: stripe.StripeClient,
    *,
    ending_before: str | None = None,
    starting_after: str | None = None,
    limit: int = EVENTS_PAGE_SIZE,
) -> tuple[list[dict[str, Any]], bool]:
    """One page of events, newest first, and whether more exist in that direction.

    `ending_before=<id>` pages towards newer events (the page holds those just after <id>);
    `starting_after=<id>` pages towards older ones.
    """
    params: dict[str, Any] = {"limit": limit}
    if ending_before:
        params["ending_before"] = ending_before
    if starting_after:
        params["starting_after"] = starting_after
    page = client.v1.events.list(params)  # type: ignore[arg-type]
    return [_plain(e) for e in page.data], bool(page.has_more)


def read_invoice(client: stripe.StripeClient, invoice_id: str) -> dict[str, Any]:
    """The invoice as Stripe holds it now, with its payments (to learn the PaymentIntent)."""
    return _plain(client.v1.invoices.retrieve(invoice_id, {"expand": ["payments"]}))


def read_customer(client: stripe.StripeClient, customer_id: str) -> dict[str, Any]:
    """The customer with its default payment method expanded."""
    return _plain(
        client.v1.customers.retrieve(
            customer_id, {"expand": ["invoice_settings.default_payment_method"]}
        )
    )


def read_charge(client: stripe.StripeClient, charge_id: str) -> dict[str, Any]:
    return _plain(client.v1.charges.retrieve(charge_id))


def read_setup_intent(client: stripe.StripeClient, setup_intent_id: str) -> dict[str, Any]:
    return _plain(client.v1.setup_intents.retrieve(setup_intent_id))


def set_default_payment_method(
    client: stripe.StripeClient, customer_id: str, payment_method_id: str, *, idempotency_key: str
) -> dict[str, Any]:
    """Make a payment method the one invoices charge (Checkout setup mode does not do it)."""
    return _plain(
        client.v1.customers.update(
            customer_id,
            {"invoice_settings": {"default_payment_method": payment_method_id}},
            {"idempotency_key": idempotency_key},
        )
    )


def create_setup_checkout(
    client: stripe.StripeClient,
    *,
    customer_id: str,
    currency: str,
    success_url: str,
    cancel_url: str,
    metadata: dict[str, str],
    idempotency_key: str,
) -> dict[str, Any]:
    """A Checkout session in setup mode: the customer enters a card, nothing is charged."""
    params: dict[str, Any] = {
        "mode": "setup",
        "customer": customer_id,
        # Stripe needs the currency in setup mode to choose the payment methods it offers.
        "currency": currency.lower(),
        "success_url": success_url,
        "cancel_url": cancel_url,
        "metadata": metadata,
    }
    return _plain(
        client.v1.checkout.sessions.create(
            params,  # type: ignore[arg-type]
            {"idempotency_key": idempotency_key},
        )
    )


def retry_invoice_payment(
    client: stripe.StripeClient, invoice_id: str, *, idempotency_key: str
) -> dict[str, Any]:
    """Charge an open invoice again; the key must be new after a decline (Stripe replays it)."""
    return _plain(client.v1.invoices.pay(invoice_id, {}, {"idempotency_key": idempotency_key}))
