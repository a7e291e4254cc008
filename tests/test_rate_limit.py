"""The token bucket keeps a steady rate across threads."""

from __future__ import annotations

import threading
import time

from billing_core.stripe.rate_limit import TokenBucket


class FakeTime:
    def __init__(self) -> None:
        self.now = 0.0
        self.slept = 0.0

    def clock(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.slept += seconds
        self.now += seconds


def test_steady_rate_after_the_burst() -> None:
    t = FakeTime()
    bucket = TokenBucket(10, burst=2, clock=t.clock, sleep=t.sleep)
    for _ in range(22):
        bucket.acquire()
    # 2 free tokens, then 20 at 10 per second.
    assert abs(t.now - 2.0) < 1e-9


def test_threads_share_one_budget() -> None:
    bucket = TokenBucket(200, burst=1)
    started = time.perf_counter()
    threads = [
        threading.Thread(target=lambda: [bucket.acquire() for _ in range(25)]) for _ in range(4)
    ]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    elapsed = time.perf_counter() - started
    assert bucket.acquired == 100
    assert elapsed >= 99 / 200 * 0.9  # never faster than the rate allows
