"""Drill: another writer holds the SQLite write lock while CLI commands run.

A plain sqlite3 connection takes `BEGIN EXCLUSIVE` on the database file (as a long migration,
a backup tool or a stuck job would). A command must wait up to DATABASE_LOCK_TIMEOUT_SECONDS,
then either carry on once the lock is released, or fail with the "stayed locked by another
writer" sentence and a non-zero exit code, leaving no half-written data behind.

Scenarios:
- `run-waits`: the lock is released while `invoice-run` waits (timeout 20 s): it succeeds;
- `run-times-out`: the lock outlasts the wait (timeout 1 s): exit 2, nothing written, no
  Stripe request made;
- `run-locked-mid-run`: the lock is taken after a seeded number of Stripe requests and held
  past the wait: the run stops with a clear sentence, nothing is doubled, and a re-run once the
  lock is gone bills every customer once;
- `seed-demo-times-out`, `import-customers-times-out`: exit 2, not one row written; after the
  lock is released the same command succeeds.
"""

from __future__ import annotations

import random
import time
from pathlib import Path

import pytest
from sqlalchemy.engine import Engine
from sqlmodel import Session, select

from billing_core.models import InvoiceRun
from tests.drills.conftest import (
    INVOICE_RUN,
    Cli,
    CliRun,
    DrillReport,
    WriteLock,
    assert_billed_once,
    assert_nothing_doubled,
    changed_tables,
    cli_env,
    compare_ledgers,
    drill_seeds,
    has_file_open,
    let_time_pass,
    requests_seen,
    run_in_process,
    run_lock_held,
    sqlite_path,
    step_counts,
    table_counts,
    wait_until,
)
from tests.support.stripe_server import StripeTestServer

# SQLite file locking (BEGIN EXCLUSIVE); PostgreSQL's lock_timeout is tested in test_db_scale.
pytestmark = [pytest.mark.drill, pytest.mark.sqlite_only]

LOCKED = "stayed locked by another writer"
CSV = (
    "name,email,currency,plan,aws_account_ids,cost_tag_value\n"
    "Lockstep Ltd,billing@lockstep.example,EUR,studio,111122223333,lockstep\n"
    "Waitwell GmbH,ap@waitwell.example,EUR,indie,444455556666,waitwell\n"
)


def _wait_until_blocked(run: CliRun, db: Path, settle: float = 1.0) -> None:
    """Until the process has the database open, plus `settle` s to reach its first write."""
    deadline = time.monotonic() + 30
    while run.alive() and not has_file_open(run.proc.pid, db) and time.monotonic() < deadline:
        time.sleep(0.01)
    time.sleep(settle)


def test_drill_database_locked_run_waits(
    demo_engine: Engine,
    demo_db_url: str,
    stripe_server: StripeTestServer,
    cli: Cli,
    drill_report: DrillReport,
) -> None:
    db = sqlite_path(demo_db_url)
    env = cli_env(demo_db_url, stripe_server, DATABASE_LOCK_TIMEOUT_SECONDS="20")
    holder = WriteLock(db).take()
    run = cli.start(env, *INVOICE_RUN)
    try:
        _wait_until_blocked(run, db)
        waiting = run.alive()
        requests_while_locked = stripe_server.request_count()
    finally:
        held = holder.release()
    run.wait(60)
    ledger = compare_ledgers(demo_engine, stripe_server)
    drill_report.tried(f"invoice-run with the write lock held for {held:.1f} s (wait 20 s)")
    drill_report.found(
        f"waiting at release: {waiting}, Stripe requests while locked: "
        f"{requests_while_locked}; exit {run.code} after {run.seconds:.1f} s; {ledger.summary()}"
    )
    assert waiting, f"the run ended before the lock was released:\n{run.output()}"
    assert requests_while_locked == 0
    assert run.code == 0, run.output()
    assert_billed_once(demo_engine, stripe_server, ledger)


def test_drill_database_locked_run_times_out(
    demo_engine: Engine,
    demo_db_url: str,
    stripe_server: StripeTestServer,
    cli: Cli,
    drill_report: DrillReport,
) -> None:
    db = sqlite_path(demo_db_url)
    env = cli_env(demo_db_url, stripe_server, DATABASE_LOCK_TIMEOUT_SECONDS="1")
    before = table_counts(demo_db_url)
    holder = WriteLock(db).take()
    try:
        run = cli.run(env, *INVOICE_RUN)
    finally:
        held = holder.release()
    after = table_counts(demo_db_url)
    changed = changed_tables(before, after)
    drill_report.tried(f"invoice-run with the write lock held throughout ({held:.1f} s, wait 1 s)")
    drill_report.found(
        f"exit {run.code} after {run.seconds:.1f} s; stderr: {run.stderr.strip()[-160:]!r}; "
        f"tables changed: {changed or 'none'}; Stripe requests: {stripe_server.request_count()}"
    )
    assert run.code == 2, run.output()
    assert LOCKED in run.stderr and "Traceback" not in run.stderr, run.output()
    assert changed == {}
    assert stripe_server.request_count() == 0
    # Once the other writer is gone the same command bills everyone once.
    again = cli.run(env, *INVOICE_RUN)
    assert again.code == 0, again.output()
    assert_billed_once(demo_engine, stripe_server)


@pytest.mark.parametrize("seed", drill_seeds(1))
@pytest.mark.parametrize("hold", [2.5, 6.0], ids=["short-hold", "long-hold"])
def test_drill_database_locked_mid_run(
    hold: float,
    seed: int,
    demo_engine: Engine,
    demo_db_url: str,
    stripe_server: StripeTestServer,
    cli: Cli,
    drill_report: DrillReport,
) -> None:
    rng = random.Random(seed)
    db = sqlite_path(demo_db_url)
    stripe_server.latency = 0.01
    env = cli_env(
        demo_db_url,
        stripe_server,
        DATABASE_LOCK_TIMEOUT_SECONDS="1",
        RUN_LOCK_STALE_SECONDS="30",
        STRIPE_CONCURRENCY="2",
    )
    at = rng.randint(15, 50)
    run = cli.start(env, *INVOICE_RUN)
    wait_until(run, requests_seen(stripe_server, at))
    holder = WriteLock(db).take()
    try:
        locked_at = stripe_server.request_count()
        time.sleep(hold)
    finally:
        holder.release()
    run.wait(60)
    during = compare_ledgers(demo_engine, stripe_server, final=False)
    steps = step_counts(demo_engine)
    with Session(demo_engine) as s:
        stopped = s.exec(select(InvoiceRun)).one()
    lock_left = run_lock_held(demo_engine)
    let_time_pass(demo_engine, 31)  # if the stopped run could not release its lock
    rerun = run_in_process(demo_engine, env)
    ledger = compare_ledgers(demo_engine, stripe_server)
    output = run.stdout + run.stderr
    drill_report.tried(
        f"seed {seed}: write lock taken at Stripe request {locked_at} (aimed {at}), "
        f"held {hold:.1f} s against a 1 s wait"
    )
    drill_report.found(
        f"seed {seed}: run exit {run.code} after {run.seconds:.1f} s, local steps [{steps}], "
        f"said {LOCKED!r}: {LOCKED in output}; run recorded as {str(stopped.status)!r}, run lock "
        f"{'left behind' if lock_left else 'released'}; re-run exit {rerun.exit_code}; "
        f"{ledger.summary()}"
    )
    assert run.code != 0, run.output()
    assert LOCKED in output, run.output()
    assert "Traceback" not in output and "unexpected" not in output, run.output()
    assert_nothing_doubled(during)
    # The stopped run says so on its record (else the page shows it running until the next
    # run), and releases its lock, unless the database is still locked by then: then it says
    # that it could not.
    if "could not record why run" not in run.stderr:
        assert stopped.status == "failed", (stopped.status, stopped.errors, run.output())
        assert any(LOCKED in e.get("message", "") for e in stopped.errors), stopped.errors
    assert not lock_left or "could not release the run lock" in run.stderr, run.output()
    assert rerun.exit_code == 0, [p.message for p in rerun.problems]
    assert_billed_once(demo_engine, stripe_server, ledger)


@pytest.mark.parametrize("command", ["seed-demo", "import-customers"])
def test_drill_database_locked_command_times_out(
    command: str,
    db_url: str,
    demo_db_url: str,
    stripe_server: StripeTestServer,
    cli: Cli,
    tmp_path: Path,
    drill_report: DrillReport,
) -> None:
    if command == "seed-demo":
        url, args = db_url, ("seed-demo",)
    else:
        csv = tmp_path / "customers.csv"
        csv.write_text(CSV)
        url, args = demo_db_url, ("import-customers", str(csv))
    env = cli_env(url, stripe_server, DATABASE_LOCK_TIMEOUT_SECONDS="1", BILLING_MODE="demo")
    before = table_counts(url)
    holder = WriteLock(sqlite_path(url)).take()
    try:
        run = cli.run(env, *args)
    finally:
        held = holder.release()
    after = table_counts(url)
    changed = changed_tables(before, after)
    again = cli.run(env, *args)
    final = table_counts(url)
    grew = {t: final[t] - before[t] for t in before if final[t] != before[t]}
    drill_report.tried(f"{command} with the write lock held throughout ({held:.1f} s, wait 1 s)")
    drill_report.found(
        f"exit {run.code} after {run.seconds:.1f} s, said {LOCKED!r}: {LOCKED in run.stderr}; "
        f"tables changed: {changed or 'none'}; after release exit {again.code}, rows added "
        f"{sum(grew.values())} in {len(grew)} tables"
    )
    assert run.code == 2, run.output()
    assert LOCKED in run.stderr and "Traceback" not in run.stderr, run.output()
    assert changed == {}
    assert again.code == 0, again.output()
    assert grew.get("customer", 0) >= 2
