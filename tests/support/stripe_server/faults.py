"""Fault injection: latency, hangs, injected errors (429, 409, 5xx), lost responses, and a
token-bucket rate limit. Card declines are test cards (payment_methods.py)."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass

from .common import StripeAPIError
from .state import ServerState


@dataclass
class _FaultRule:
    remaining: int
    status: int
    path_contains: str | None
    method: str | None
    should_retry: bool | None = None
    seconds: float = 0.0

    def matches(self, method: str, path: str) -> bool:
        return (
            self.remaining > 0
            and (self.path_contains is None or self.path_contains in path)
            and (self.method is None or self.method.upper() == method)
        )


class FaultsMixin(ServerState):
    """The knobs (``latency``, ``rate_limit``, ``search_lag``) and ``*_next`` faults."""

    _stopping: threading.Event  # set by stop(): wakes hanging requests
    _latency: float
    _rate_limit: float | None
    _tokens: float
    _tokens_at: float
    _faults: list[_FaultRule]
    _hangs: list[_FaultRule]
    _drops: list[_FaultRule]

    @property
    def latency(self) -> float:
        with self._lock:
            return self._latency

    @latency.setter
    def latency(self, seconds: float) -> None:
        with self._lock:
            self._latency = max(0.0, float(seconds))

    @property
    def rate_limit(self) -> float | None:
        with self._lock:
            return self._rate_limit

    @rate_limit.setter
    def rate_limit(self, per_second: float | None) -> None:
        with self._lock:
            self._rate_limit = per_second if per_second and per_second > 0 else None
            self._tokens = float(self._rate_limit or 0)
            self._tokens_at = time.monotonic()

    @property
    def search_lag(self) -> float:
        """Seconds before a new object shows up in search (Stripe: up to a minute)."""
        with self._lock:
            return self._search_lag

    @search_lag.setter
    def search_lag(self, seconds: float) -> None:
        with self._lock:
            self._search_lag = max(0.0, float(seconds))

    def fail_next(
        self,
        n: int = 1,
        status: int = 500,
        path_contains: str | None = None,
        *,
        method: str | None = None,
        should_retry: bool | None = None,
    ) -> None:
        """The next ``n`` matching API requests fail with ``status`` before any state change.

        429 answers a ``rate_limit`` error, 409 a ``lock_timeout``, 5xx an ``api_error``.
        ``should_retry`` adds a ``Stripe-Should-Retry`` header. Faults are never stored
        for idempotency, so a retry with the same key proceeds.
        """
        if status < 400:
            raise ValueError("status must be an error status")
        with self._lock:
            self._faults.append(_FaultRule(n, status, path_contains, method, should_retry))

    def hang_next(self, n: int = 1, seconds: float = 5.0, path_contains: str | None = None) -> None:
        """The next ``n`` matching requests wait ``seconds`` before being processed.

        The request is still processed afterwards (as when a client times out but
        Stripe carries on), so a retry with the same idempotency key replays it.
        """
        with self._lock:
            self._hangs.append(_FaultRule(n, 0, path_contains, None, seconds=seconds))

    def drop_response_next(self, n: int = 1, path_contains: str | None = None) -> None:
        """Process the next ``n`` matching requests, then close the connection unanswered."""
        with self._lock:
            self._drops.append(_FaultRule(n, 0, path_contains, None))

    def clear_faults(self) -> None:
        with self._lock:
            self._faults.clear()
            self._hangs.clear()
            self._drops.clear()

    def _before(self, method: str, path: str) -> None:
        """Latency and hangs, outside the lock."""
        with self._lock:
            delay = self._latency
            for rule in self._hangs:
                if rule.matches(method, path):
                    rule.remaining -= 1
                    delay += rule.seconds
                    break
        if delay > 0:
            self._stopping.wait(delay)

    def _take_fault(self, method: str, path: str) -> StripeAPIError | None:
        """The error an injected fault or the rate limit answers instead (never stored)."""
        # 1. injected faults
        for rule in self._faults:
            if rule.matches(method, path):
                rule.remaining -= 1
                return _fault_error(rule)
        # 2. rate limit (token bucket)
        if self._rate_limit:
            now = time.monotonic()
            self._tokens = min(
                self._rate_limit, self._tokens + (now - self._tokens_at) * self._rate_limit
            )
            self._tokens_at = now
            if self._tokens < 1.0:
                return StripeAPIError(
                    429,
                    "Request rate limit exceeded. You can learn more about rate limits here "
                    "https://stripe.com/docs/rate-limits.",
                    code="rate_limit",
                    store=False,
                )
            self._tokens -= 1.0
        return None

    def _take_drop(self, method: str, path: str) -> bool:
        """Whether to lose the answer to this (processed) request: ``drop_response_next``."""
        for rule in self._drops:
            if rule.matches(method, path):
                rule.remaining -= 1
                return True
        return False


def _fault_error(rule: _FaultRule) -> StripeAPIError:
    headers: dict[str, str] = {}
    if rule.should_retry is not None:
        headers["Stripe-Should-Retry"] = "true" if rule.should_retry else "false"
    if rule.status == 429:
        return StripeAPIError(
            429,
            "Request rate limit exceeded. You can learn more about rate limits here "
            "https://stripe.com/docs/rate-limits.",
            code="rate_limit",
            store=False,
            headers=headers,
        )
    if rule.status == 409:
        return StripeAPIError(
            409,
            "This object cannot be accessed right now because another API request or "
            "Stripe process is currently accessing it.",
            code="lock_timeout",
            store=False,
            headers=headers,
        )
    if rule.status >= 500:
        return StripeAPIError(
            rule.status,
            "An unknown error occurred (injected by the local test server).",
            type_="api_error",
            store=False,
            headers=headers,
        )
    return StripeAPIError(rule.status, "Injected error", store=False, headers=headers)
