"""The one way to Stripe: every call goes through a `Gateway`.

A gateway holds one StripeClient (made without SDK retries), one rate limiter (TokenBucket) and
one retry policy, and counts and times every request. The invoice push, reconciliation, the
events sync and the payment-method actions all use it; what they call is in the modules next
to this one (invoices, customers, payments, events), as small functions taking the gateway.

Retry policy (DESIGN.md section 6): network errors, 409 and 5xx are retried as stripe-python
would retry them (`Stripe-Should-Retry` wins), and so is a rate-limit 429, which Stripe does not
mark retryable; each retry sends the same request with the same idempotency key, after an
exponential backoff with jitter (so parallel workers do not retry in step). Every POST must
carry an idempotency key: without one a retry could do the work twice. Answers come back as
Stripe's JSON (plain dicts), read through mapping.py; failures leave as StripeFailure.
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any, Literal

import stripe

from billing_core.config import Settings
from billing_core.stripe.client import DEFAULT_RPS_TEST, make_client, requests_per_second
from billing_core.stripe.errors import StripeFailure, describe, should_retry
from billing_core.stripe.rate_limit import TokenBucket

JSON = dict[str, Any]
Method = Literal["get", "post", "delete"]

# The first backoff; it doubles on every retry (tests make it short).
BACKOFF_SECONDS = 0.5


@dataclass(frozen=True)
class RetryPolicy:
    """How often a call is retried: 429s and other transient failures have their own budgets."""

    rate_limit_retries: int = 6
    network_retries: int = 2  # network errors, 409, 5xx: as many as stripe-python's default
    backoff_seconds: float | None = None  # None: BACKOFF_SECONDS
    max_backoff_seconds: float = 20.0

    def delay(self, attempt: int) -> float:
        base = BACKOFF_SECONDS if self.backoff_seconds is None else self.backoff_seconds
        return min(base * (2.0**attempt) * (0.5 + random.random()), self.max_backoff_seconds)


class Gateway:
    """Runs Stripe calls under one rate limiter and one retry policy; thread-safe."""

    def __init__(
        self,
        client: stripe.StripeClient,
        *,
        requests_per_second: float = DEFAULT_RPS_TEST,
        policy: RetryPolicy | None = None,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.client = client
        self.bucket = TokenBucket(requests_per_second)
        self.policy = policy or RetryPolicy()
        self._sleep = sleep
        self._lock = threading.Lock()
        self.calls = 0  # requests sent, retries included
        self.rate_limited = 0  # of which answered 429
        self.seconds = 0.0  # time spent waiting on Stripe
        # CPU time the calling threads spent inside requests (HTTP, JSON decoding): what a
        # caller subtracts from its own CPU time to know its compute apart from Stripe's.
        self.cpu_seconds = 0.0

    @classmethod
    def from_settings(cls, settings: Settings, *, policy: RetryPolicy | None = None) -> Gateway:
        """A gateway for the configured Stripe at the configured rate (ConfigError if none)."""
        return cls(
            make_client(settings),
            requests_per_second=requests_per_second(settings),
            policy=policy,
        )

    def _count(
        self, *, calls: int = 0, rate_limited: int = 0, seconds: float = 0.0, cpu: float = 0.0
    ) -> None:
        with self._lock:
            self.calls += calls
            self.rate_limited += rate_limited
            self.seconds += seconds
            self.cpu_seconds += cpu

    def _send(self, method: Method, path: str, params: Mapping[str, Any], key: str | None) -> JSON:
        self.bucket.acquire()
        self._count(calls=1)
        started, cpu_started = time.perf_counter(), time.thread_time()
        options = {"idempotency_key": key} if key else {}
        try:
            data: JSON = self.client.raw_request(method, path, **params, **options).data
            return data
        finally:
            self._count(seconds=time.perf_counter() - started, cpu=time.thread_time() - cpu_started)

    def request(
        self,
        method: Method,
        path: str,
        params: Mapping[str, Any] | None = None,
        *,
        doing: str,
        key: str | None = None,
    ) -> JSON:
        """One Stripe request, retried under the policy with the same key; or StripeFailure."""
        if method != "get" and not key:
            raise ValueError(f"{method.upper()} {path} needs an idempotency key")
        rate_limited = failures = 0
        while True:
            try:
                return self._send(method, path, params or {}, key)
            except stripe.StripeError as exc:
                if isinstance(exc, stripe.RateLimitError):
                    self._count(rate_limited=1)
                    rate_limited += 1
                    budget = rate_limited <= self.policy.rate_limit_retries
                else:
                    failures += 1
                    budget = failures <= self.policy.network_retries
                attempts = rate_limited + failures
                if not (budget and should_retry(exc)):
                    raise describe(exc, doing, attempts=attempts) from exc
                self._sleep(self.policy.delay(attempts - 1))

    def request_or_none(
        self,
        path: str,
        params: Mapping[str, Any] | None = None,
        *,
        doing: str,
        harmless: tuple[str, ...] = ("resource_missing",),
    ) -> JSON | None:
        """A read that may find nothing: None for the named errors of errors.HARMLESS."""
        try:
            return self.request("get", path, params, doing=doing)
        except StripeFailure as failure:
            if failure.is_harmless(harmless):
                return None
            raise

    def read(self, path: str, expand: list[str], *, doing: str) -> JSON:
        """One object, with optional expansions if Stripe gives them, else as it is.

        The expansions only add detail: when Stripe refuses the expanded read as a request
        (400, other than the object being missing), the plain object is read and the caller
        applies what it says. Outages are not read twice: the retry policy already ran.
        """
        try:
            return self.request("get", path, {"expand": expand}, doing=doing)
        except StripeFailure as failure:
            if failure.transient or failure.is_harmless(("resource_missing",)):
                raise
            return self.request("get", path, doing=f"{doing} (without {', '.join(expand)})")

    def pages(self, path: str, params: Mapping[str, Any], *, doing: str) -> Iterator[JSON]:
        """Every object of a list endpoint, page after page (a retry resumes at its page)."""
        params = dict(params)
        while True:
            page = self.request("get", path, params, doing=doing)
            items: list[JSON] = page.get("data") or []
            yield from items
            if not page.get("has_more") or not items:
                return
            params["starting_after"] = items[-1]["id"]
