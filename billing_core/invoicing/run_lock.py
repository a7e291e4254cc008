"""A named lock in the database: one invoice run per period across processes and machines.

Taking the lock is inserting its row (the primary key makes that atomic on SQLite and
PostgreSQL alike). The holder refreshes `heartbeat_at`; a lock whose heartbeat is older than the
stale limit belongs to a killed run and may be taken over. Every write after acquiring is a
compare-and-swap on the holder's random token, so two processes that both find the lock stale
cannot both win, and a run that lost its lock finds out at its next heartbeat.
"""

from __future__ import annotations

import logging
import os
import secrets
import socket
import threading
from collections.abc import Callable
from datetime import datetime, timedelta
from types import TracebackType

from sqlalchemy import delete, insert, select, update
from sqlalchemy.engine import Engine
from sqlalchemy.exc import IntegrityError, OperationalError

from billing_core.errors import LockHeld
from billing_core.models import RunLock
from billing_core.periods import as_utc, utcnow

log = logging.getLogger(__name__)

Clock = Callable[[], datetime]


def lock_name(period: str) -> str:
    return f"invoice-run:{period}"


def default_owner(run_id: int | None = None) -> str:
    return f"{socket.gethostname()}:{os.getpid()}:run {run_id if run_id is not None else '-'}"


class DatabaseLock:
    """Acquire, heartbeat, release; usable as a context manager that heartbeats in a thread."""

    def __init__(
        self,
        engine: Engine,
        name: str,
        *,
        owner: str,
        stale_seconds: int,
        clock: Clock = utcnow,
    ) -> None:
        self.engine = engine
        self.name = name
        self.owner = owner
        self.stale_seconds = stale_seconds
        self.clock = clock
        self.token = secrets.token_hex(16)
        self.took_over_from: str | None = None
        self.lost = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.on_beat: Callable[[], None] | None = None

    # -- acquiring -------------------------------------------------------------------------

    def acquire(self) -> None:
        """Take the lock or raise LockHeld saying who holds it and what to do."""
        now = self.clock()
        table = RunLock.__table__  # type: ignore[attr-defined]
        try:
            self._insert(now)
            return
        except IntegrityError:
            pass
        with self.engine.connect() as conn:
            row = conn.execute(
                select(table.c.owner, table.c.token, table.c.heartbeat_at).where(
                    table.c.name == self.name
                )
            ).first()
        if row is None:  # released between our insert and our read: try once more
            return self._retry_insert(now)
        owner, token, beat = row
        age = (now - as_utc(beat)).total_seconds()
        if age < self.stale_seconds:
            raise LockHeld(
                f"Another invoice run holds the lock {self.name} ({owner}, last heartbeat "
                f"{int(age)} s ago). Wait for it to finish; a lock without heartbeat for "
                f"{self.stale_seconds} s is taken over automatically."
            )
        with self.engine.begin() as conn:
            taken = conn.execute(
                update(table)
                .where(table.c.name == self.name, table.c.token == token)
                .values(owner=self.owner, token=self.token, acquired_at=now, heartbeat_at=now)
            ).rowcount
        if taken != 1:
            raise LockHeld(
                f"Another process took over the stale lock {self.name} at the same moment; "
                "it is running now. Try again later."
            )
        self.took_over_from = owner
        log.warning("took over the stale lock %s from %s (silent for %d s)", self.name, owner, age)

    def _insert(self, now: datetime) -> None:
        """The atomic step: the primary key lets exactly one process insert the row."""
        table = RunLock.__table__  # type: ignore[attr-defined]
        with self.engine.begin() as conn:
            conn.execute(
                insert(table).values(
                    name=self.name,
                    owner=self.owner,
                    token=self.token,
                    acquired_at=now,
                    heartbeat_at=now,
                )
            )

    def _retry_insert(self, now: datetime) -> None:
        try:
            self._insert(now)
        except IntegrityError:
            raise LockHeld(
                f"Another invoice run took the lock {self.name} just now; try again later."
            ) from None

    # -- holding ---------------------------------------------------------------------------

    def heartbeat(self) -> bool:
        """Refresh the heartbeat; False (and `lost` set) if another process took the lock."""
        table = RunLock.__table__  # type: ignore[attr-defined]
        with self.engine.begin() as conn:
            count = conn.execute(
                update(table)
                .where(table.c.name == self.name, table.c.token == self.token)
                .values(heartbeat_at=self.clock())
            ).rowcount
        if count != 1:
            self.lost.set()
            return False
        return True

    def rename(self, owner: str) -> None:
        """Name the holder anew (a run knows its run id only once it holds the lock)."""
        table = RunLock.__table__  # type: ignore[attr-defined]
        with self.engine.begin() as conn:
            conn.execute(
                update(table)
                .where(table.c.name == self.name, table.c.token == self.token)
                .values(owner=owner)
            )
        self.owner = owner

    def release(self) -> None:
        """Delete the lock if it is still ours (never someone else's)."""
        table = RunLock.__table__  # type: ignore[attr-defined]
        with self.engine.begin() as conn:
            conn.execute(
                delete(table).where(table.c.name == self.name, table.c.token == self.token)
            )

    def _beat_loop(self, interval: float) -> None:
        while not self._stop.wait(interval):
            try:
                if not self.heartbeat():
                    log.error("lost the lock %s to another process", self.name)
                    return
                if self.on_beat is not None:
                    self.on_beat()
            except OperationalError as exc:
                # A database busy with another writer (or briefly unreachable) is expected
                # weather, not a fault: one line for the log, and the next beat tries again.
                log.warning(
                    "heartbeat for %s failed (%s); retrying in %.0f s",
                    self.name,
                    exc.orig if exc.orig is not None else exc,
                    interval,
                )
            except Exception:  # anything else must not kill the heartbeat thread either
                log.warning("heartbeat for %s failed; retrying", self.name, exc_info=True)

    def start_heartbeat(self, interval: float | None = None) -> None:
        every = interval if interval is not None else max(1.0, self.stale_seconds / 5)
        self._thread = threading.Thread(
            target=self._beat_loop, args=(every,), name=f"heartbeat {self.name}", daemon=True
        )
        self._thread.start()

    def stop_heartbeat(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
            self._thread = None

    def __enter__(self) -> DatabaseLock:
        self.acquire()
        self.start_heartbeat()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop_heartbeat()
        self.release()


def lock_status(engine: Engine, name: str, now: datetime, stale_seconds: int) -> str | None:
    """A sentence about who holds `name`, or None when it is free (for the run page)."""
    table = RunLock.__table__  # type: ignore[attr-defined]
    with engine.connect() as conn:
        row = conn.execute(
            select(table.c.owner, table.c.heartbeat_at).where(table.c.name == name)
        ).first()
    if row is None:
        return None
    age = now - as_utc(row[1])
    state = "stale, will be taken over" if age > timedelta(seconds=stale_seconds) else "active"
    return f"held by {row[0]}, last heartbeat {int(age.total_seconds())} s ago ({state})"
