"""Drill: SIGKILL `invoice-run` at random points, re-run, and find every customer billed once.

Per seed: a real `python -m billing_core invoice-run` subprocess pushes the demo world's last
closed month to the local Stripe server (with latency, so requests are in flight when the
process dies) and is killed with SIGKILL after a seeded number of Stripe requests or a seeded
delay after its first one; sometimes the re-run is killed too, sometimes Stripe forgets the
idempotency keys in between (a re-run a day later), which leaves only the lookup by metadata to
prevent a second invoice. While the dead run's lock is fresh a new run is refused; once it is
stale a re-run takes it over and must finish with exit 0. At every kill point and at the end
the local records are compared with the Stripe server's. The final re-run is in-process (the
service the CLI calls) to save a start-up per seed; killed re-runs are subprocesses.
"""

from __future__ import annotations

import random

import pytest
from sqlalchemy.engine import Engine
from sqlmodel import Session, select

from billing_core.auth import LOCAL_ADMIN
from billing_core.config import load_settings
from billing_core.db import session_scope
from billing_core.errors import LockHeld
from billing_core.invoicing import run_worker, runs
from billing_core.models import InvoiceRun
from tests.conftest import DEMO_NOW
from tests.drills.conftest import (
    INVOICE_RUN,
    PERIOD,
    Cli,
    DrillReport,
    assert_billed_once,
    assert_nothing_doubled,
    cli_env,
    compare_ledgers,
    delay_after_first_request,
    drill_seeds,
    kill_when,
    let_time_pass,
    requests_seen,
    run_in_process,
    run_lock_held,
    step_counts,
    wait_quiet,
)
from tests.support.stripe_server import StripeTestServer

pytestmark = pytest.mark.drill

STALE_SECONDS = 30
# Stripe requests of a complete demo run: 9 customer look-ups and creates, 7 cards (attach and
# default), 4 invoice calls for each of the 9 invoices.
FULL_RUN_REQUESTS = 68


def _runs(engine: Engine) -> list[InvoiceRun]:
    with Session(engine) as s:
        return list(s.exec(select(InvoiceRun)).all())


@pytest.mark.parametrize("seed", drill_seeds(12))
def test_drill_kill_invoice_run(
    seed: int,
    demo_engine: Engine,
    demo_db_url: str,
    stripe_server: StripeTestServer,
    cli: Cli,
    drill_report: DrillReport,
) -> None:
    rng = random.Random(seed)
    concurrency = rng.choice([1, 2, 4])
    stripe_server.latency = rng.choice([0.005, 0.01, 0.02])
    env = cli_env(
        demo_db_url,
        stripe_server,
        STRIPE_CONCURRENCY=str(concurrency),
        RUN_LOCK_STALE_SECONDS=str(STALE_SECONDS),
    )
    kills = 2 if rng.random() < 0.25 else 1
    expire = rng.random() < 0.5
    tried: list[str] = []
    seen: list[str] = []
    took_over = False
    for attempt in range(kills):
        base = stripe_server.request_count()
        run = cli.start(env, *INVOICE_RUN)
        took_over = False  # this run takes over any lock left before it
        if rng.random() < 0.7:
            after = rng.randint(1, FULL_RUN_REQUESTS - 1 if attempt == 0 else 30)
            point = f"after {after} Stripe requests"
            killed = kill_when(run, requests_seen(stripe_server, base + after))
        else:
            delay = rng.uniform(0.0, 0.8)
            point = f"{delay:.2f} s after its first Stripe request"
            killed = kill_when(run, delay_after_first_request(stripe_server, base, delay))
        tried.append(f"kill {attempt + 1} {point}")
        if not killed:
            seen.append(f"run {attempt + 1} finished (exit {run.code}) before its kill point")
            continue
        # Mid-way invariants: whatever the kill point, nothing is doubled or unaccounted for.
        partial = compare_ledgers(demo_engine, stripe_server, final=False)
        seen.append(
            f"at kill {attempt + 1}: {stripe_server.request_count() - base} requests, "
            f"local steps [{step_counts(demo_engine)}], {partial.remote} in Stripe"
        )
        assert_nothing_doubled(partial)
        if expire:
            wait_quiet(stripe_server)
            stripe_server.expire_idempotency_keys()
        if run_lock_held(demo_engine):
            # The dead run's lock is fresh: a run now is refused (exit 3 on the CLI)...
            settings = load_settings(env)
            with pytest.raises(LockHeld):
                runs.run_invoices(demo_engine, settings, runs.RunOptions(PERIOD), now=DEMO_NOW)
            took_over = True
            seen.append("fresh lock refused a run, stale lock taken over")
        # ...until its heartbeat is older than RUN_LOCK_STALE_SECONDS, as time would make it.
        let_time_pass(demo_engine, STALE_SECONDS + 1)
    if expire:
        tried.append("idempotency keys expired after each kill")
    # The re-run to completion, in-process (saves a start-up): the service the CLI calls, or
    # the dashboard's Run button (a request executed by the worker), which must not mistake the
    # dead run for one still in progress.
    said: list[str] = []
    settings = load_settings(env)
    via = rng.choice(["service", "button"])
    if via == "service":
        final = run_in_process(demo_engine, env, said.append)
    else:
        with session_scope(demo_engine) as s:
            run_worker.request_run(
                s, identity=LOCAL_ADMIN, period=PERIOD, now=DEMO_NOW, stale_seconds=STALE_SECONDS
            )
        results = run_worker.execute_pending(
            demo_engine, settings, progress=said.append, attach_test_cards=True
        )
        assert len(results) == 1, f"the Run button started {len(results)} runs"
        final = results[0]
    ledger = compare_ledgers(demo_engine, stripe_server)
    leftover = [r.id for r in _runs(demo_engine) if r.status == "running"]
    drill_report.tried(
        f"seed {seed}: concurrency {concurrency}, latency {stripe_server.latency:.3f} s; "
        + "; ".join(tried)
    )
    drill_report.found(
        f"seed {seed}: {'; '.join(seen)}; re-run ({via}) exit {final.exit_code} "
        f"({final.pushed} pushed, {final.stripe_calls} Stripe calls); {ledger.summary()}"
    )
    refused = [f"{m} {p} {st} key={k}" for m, p, st, k in stripe_server.request_log if st == 400]
    assert final.exit_code == 0, ([p.message for p in final.problems], refused)
    if took_over:
        assert any("took over the stale lock" in line for line in said), said
    assert leftover == [], f"runs still marked running after the re-run: {leftover}"
    assert_billed_once(demo_engine, stripe_server, ledger)
