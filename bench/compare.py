"""A figure beside its reference measured in the same run, so the ratio holds on a noisy machine.

The reference is the plainest correct code doing the same job with the same library (the csv
module streaming the same rows, one executemany of the same rows, ...). Ours and the reference
run alternately, best of `rounds`, and both wall and CPU time are kept: other processes share
the cores, and CPU time of this process is the steadier of the two.
"""

from __future__ import annotations

import os
import resource
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from sqlalchemy.engine import Engine


@dataclass(frozen=True)
class Timing:
    """Seconds of one pass (the best of several): wall clock and this process's CPU."""

    wall: float
    cpu: float


def timed(fn: Callable[[], Any]) -> tuple[Any, Timing]:
    """fn's result and its Timing."""
    wall, cpu = time.perf_counter(), time.process_time()
    result = fn()
    return result, Timing(time.perf_counter() - wall, time.process_time() - cpu)


def best(timings: list[Timing]) -> Timing:
    return Timing(min(t.wall for t in timings), min(t.cpu for t in timings))


def against(
    ours: Callable[[], Any], reference: Callable[[], Any], rounds: int = 3
) -> tuple[Timing, Timing]:
    """(ours, reference): each the best of `rounds` passes, taken in turns."""
    mine: list[Timing] = []
    theirs: list[Timing] = []
    for _ in range(rounds):
        mine.append(timed(ours)[1])
        theirs.append(timed(reference)[1])
    return best(mine), best(theirs)


def seconds_vs(ours: Timing, ref: Timing) -> str:
    """'1.21 s vs reference 0.80 s: x1.51 (CPU 1.10 s vs 0.75 s: x1.47)'."""
    return (
        f"{ours.wall:.2f} s vs reference {ref.wall:.2f} s: x{ours.wall / ref.wall:.2f} "
        f"(CPU {ours.cpu:.2f} s vs {ref.cpu:.2f} s: x{ours.cpu / max(ref.cpu, 1e-9):.2f})"
    )


def rate_vs(count: int, unit: str, ours: Timing, ref: Timing) -> str:
    """'120,000 rows/s vs reference 250,000 rows/s: 48 % (CPU: 51 %)'."""
    return (
        f"{count / ours.wall:,.0f} {unit}/s vs reference {count / ref.wall:,.0f} {unit}/s: "
        f"{100 * ref.wall / ours.wall:.0f} % (CPU: {100 * ref.cpu / max(ours.cpu, 1e-9):.0f} %)"
    )


def peak_rss_mib() -> float:
    """This process's peak resident memory so far (MiB; Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


# --- PostgreSQL beside SQLite (`make bench-postgres`) ---------------------------------------

POSTGRES_ENV = "BENCH_POSTGRES_URL"


def backends(tmp: str, name: str) -> list[tuple[str, str]]:
    """(label, database URL) to run a section on: SQLite in `tmp`, and when `make
    bench-postgres` started a throwaway server (BENCH_POSTGRES_URL), a fresh database there.
    The label is '' for SQLite and ' (PostgreSQL)' for the other, to suffix the area."""
    found = [("", f"sqlite:///{tmp}/{name}.db")]
    server = os.environ.get(POSTGRES_ENV)
    if server:
        found.append((" (PostgreSQL)", fresh_postgres_database(server, name)))
    return found


def fresh_postgres_database(server_url: str, name: str) -> str:
    """Drop and create database `bench_<name>` on the server; its URL."""
    from sqlalchemy import create_engine
    from sqlalchemy.engine import make_url

    database = f"bench_{name}"
    admin = create_engine(server_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')
        conn.exec_driver_sql(f'CREATE DATABASE "{database}"')
    admin.dispose()
    return make_url(server_url).set(database=database).render_as_string(hide_password=False)


def analyze(engine: Engine) -> None:
    """On PostgreSQL, ANALYZE the database just loaded: autovacuum would within a minute of a
    bulk load, and a benchmark that reads straight after its load would otherwise time plans
    made without statistics. SQLite keeps its own (the code's sampled ANALYZE): nothing."""
    if engine.dialect.name == "sqlite":
        return
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.exec_driver_sql("ANALYZE")
