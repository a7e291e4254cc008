"""The database run lock: exclusive, heartbeat, stale takeover by compare-and-swap."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy.engine import Engine
from sqlmodel import Session, select

from billing_core.errors import LockHeld
from billing_core.invoicing.run_lock import DatabaseLock, lock_status
from billing_core.models import RunLock
from tests.conftest import ROOT

T0 = datetime(2026, 11, 3, 6, 0, tzinfo=UTC)


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> datetime:
        return self.now


def _lock(engine: Engine, owner: str, clock: Clock, stale: int = 300) -> DatabaseLock:
    return DatabaseLock(
        engine, "invoice-run:2026-10", owner=owner, stale_seconds=stale, clock=clock
    )


def test_second_holder_is_refused_with_a_clear_message(engine: Engine) -> None:
    clock = Clock()
    first = _lock(engine, "host:1:run 1", clock)
    first.acquire()
    clock.now += timedelta(seconds=30)
    with pytest.raises(LockHeld, match=r"host:1:run 1, last heartbeat 30 s ago\). Wait") as err:
        _lock(engine, "host:2:run 2", clock).acquire()
    assert err.value.exit_code == 3
    first.release()
    _lock(engine, "host:2:run 2", clock).acquire()  # free again


def test_stale_lock_is_taken_over_and_the_old_holder_finds_out(engine: Engine) -> None:
    clock = Clock()
    dead = _lock(engine, "host:1:run 1", clock)
    dead.acquire()
    clock.now += timedelta(seconds=301)
    heir = _lock(engine, "host:2:run 2", clock)
    heir.acquire()
    assert heir.took_over_from == "host:1:run 1"
    # The old holder wakes up: its heartbeat fails and its release leaves the new lock alone.
    assert dead.heartbeat() is False and dead.lost.is_set()
    dead.release()
    with Session(engine) as s:
        assert s.exec(select(RunLock)).one().owner == "host:2:run 2"
    assert heir.heartbeat() is True


def test_heartbeat_keeps_a_long_run_alive(engine: Engine) -> None:
    clock = Clock()
    holder = _lock(engine, "host:1:run 1", clock)
    holder.acquire()
    for _ in range(5):
        clock.now += timedelta(seconds=200)
        assert holder.heartbeat()
    with pytest.raises(LockHeld):
        _lock(engine, "host:2:run 2", clock).acquire()
    assert "active" in (lock_status(engine, "invoice-run:2026-10", clock.now, 300) or "")
    clock.now += timedelta(seconds=400)
    assert "stale" in (lock_status(engine, "invoice-run:2026-10", clock.now, 300) or "")


def test_only_one_of_two_simultaneous_takeovers_wins(engine: Engine) -> None:
    clock = Clock()
    _lock(engine, "host:1:run 1", clock).acquire()
    clock.now += timedelta(seconds=1000)
    a, b = _lock(engine, "a", clock), _lock(engine, "b", clock)
    a.acquire()
    with pytest.raises(LockHeld):
        b.acquire()  # a's heartbeat is fresh now


def test_background_heartbeat_thread(engine: Engine) -> None:
    beats: list[int] = []
    lock = DatabaseLock(engine, "x", owner="me", stale_seconds=10)
    lock.on_beat = lambda: beats.append(1)
    lock.acquire()
    lock.start_heartbeat(interval=0.05)
    import time

    time.sleep(0.3)
    lock.stop_heartbeat()
    lock.release()
    assert len(beats) >= 2


def test_lock_is_exclusive_across_processes(engine: Engine, db_url: str) -> None:
    holder = DatabaseLock(engine, "invoice-run:2026-10", owner="parent", stale_seconds=300)
    holder.acquire()
    script = textwrap.dedent(
        f"""
        import sys
        from billing_core.db import make_engine
        from billing_core.errors import LockHeld
        from billing_core.invoicing.run_lock import DatabaseLock
        lock = DatabaseLock(make_engine({db_url!r}), "invoice-run:2026-10", owner="child",
                            stale_seconds=300)
        try:
            lock.acquire()
        except LockHeld as exc:
            print(exc)
            sys.exit(exc.exit_code)
        sys.exit(0)
        """
    )
    proc = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True)
    assert proc.returncode == 3, proc.stderr
    assert "parent" in proc.stdout
    holder.release()
    proc = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
