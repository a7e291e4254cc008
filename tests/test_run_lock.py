"""The database run lock: exclusive, heartbeat, stale takeover by compare-and-swap."""

from __future__ import annotations

import logging
import sqlite3
import subprocess
import sys
import textwrap
import time
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy.engine import Engine
from sqlalchemy.exc import OperationalError
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


def test_heartbeat_on_a_busy_database_logs_one_line_and_keeps_beating(
    engine: Engine, caplog: pytest.LogCaptureFixture
) -> None:
    # Another writer holding the database makes a beat fail; the run's output must say so in
    # a sentence (the drills refuse a traceback in it) and the next beat must try again.
    calls: list[int] = []

    def busy_once() -> None:
        calls.append(1)
        if len(calls) == 1:
            raise OperationalError(
                "UPDATE runlock", {}, sqlite3.OperationalError("database is locked")
            )

    lock = DatabaseLock(engine, "busy", owner="me", stale_seconds=10)
    lock.on_beat = busy_once
    lock.acquire()
    with caplog.at_level(logging.WARNING, logger="billing_core.invoicing.run_lock"):
        lock.start_heartbeat(interval=0.05)
        deadline = time.monotonic() + 10
        while len(calls) < 3 and time.monotonic() < deadline:
            time.sleep(0.02)
        lock.stop_heartbeat()
    lock.release()
    assert len(calls) >= 3  # kept beating after the failure
    failed = [r for r in caplog.records if "heartbeat for busy failed" in r.getMessage()]
    assert len(failed) == 1, [r.getMessage() for r in caplog.records]
    assert "database is locked" in failed[0].getMessage()
    assert failed[0].exc_info is None  # no traceback in the run's output
