"""Drill: Stripe goes away in the middle of an invoice run; nothing is lost or billed twice.

Scenarios, each starting at a seeded Stripe request of a real `invoice-run` subprocess:
- `503-window`: every request answers 503 until the run has ended (longer than stripe-python's
  retries): the run must end with exit 1, name the customers left with a clear error, and a
  re-run after the outage (sometimes a day later: idempotency keys expired) bills them once;
- `connection-refused`: the server stops listening (connections refused) and comes back on the
  same address with the same state: same expectations;
- `503-blip`: two 503s, fewer than stripe-python's retries: absorbed, exit 0;
- `lost-responses`: Stripe processes six requests but the answers never arrive: the client
  retries with the same idempotency keys and gets the stored results, exit 0, no duplicates.
"""

from __future__ import annotations

import random
from collections.abc import Callable

import pytest
from sqlalchemy.engine import Engine
from sqlmodel import Session, col, select

from billing_core.models import Customer, Invoice, InvoiceRun
from tests.drills.conftest import (
    DONE_STEPS,
    INVOICE_RUN,
    PERIOD,
    Cli,
    DrillReport,
    assert_billed_once,
    assert_nothing_doubled,
    cli_env,
    compare_ledgers,
    drill_seeds,
    run_in_process,
    step_counts,
    wait_quiet,
    wait_until,
)
from tests.support.stripe_server import StripeTestServer

pytestmark = pytest.mark.drill

SCENARIOS = ("503-window", "connection-refused", "503-blip", "lost-responses")
# Scenarios whose run cannot finish: the outage outlasts every retry.
HARD = ("503-window", "connection-refused")


def _start_outage(server: StripeTestServer, scenario: str) -> Callable[[], None]:
    """Begin the outage; returns how to end it."""
    if scenario == "503-window":
        server.fail_next(1_000_000, 503)
        return server.clear_faults
    if scenario == "connection-refused":
        server.stop()
        return server.start  # same object, same port, same in-memory state
    if scenario == "503-blip":
        server.fail_next(2, 503)
    else:
        server.drop_response_next(6)
    return lambda: None


def _not_done(engine: Engine) -> dict[str, str]:
    with Session(engine) as s:
        rows = s.exec(
            select(Invoice, Customer)
            .join(Customer, col(Customer.id) == Invoice.customer_id)
            .where(Invoice.period == str(PERIOD), col(Invoice.push_step).not_in(DONE_STEPS))
        ).all()
    return {cus.name: inv.last_error or "" for inv, cus in rows}


@pytest.mark.parametrize("seed", drill_seeds(1))
@pytest.mark.parametrize("scenario", SCENARIOS)
def test_drill_stripe_outage(
    scenario: str,
    seed: int,
    demo_engine: Engine,
    demo_db_url: str,
    stripe_server: StripeTestServer,
    cli: Cli,
    drill_report: DrillReport,
) -> None:
    rng = random.Random(f"{scenario}-{seed}")
    stripe_server.latency = 0.01
    env = cli_env(demo_db_url, stripe_server, STRIPE_CONCURRENCY="4")
    start_at = rng.randint(5, 45)
    expire = scenario in HARD and rng.random() < 0.5
    run = cli.start(env, *INVOICE_RUN)
    end_outage: Callable[[], None] = lambda: None  # noqa: E731
    if wait_until(run, lambda: stripe_server.request_count() >= start_at, poll=0):
        end_outage = _start_outage(stripe_server, scenario)
    run.wait(90)
    left = _not_done(demo_engine)
    during = compare_ledgers(demo_engine, stripe_server, final=scenario not in HARD)
    with Session(demo_engine) as s:
        first = s.exec(select(InvoiceRun).order_by(col(InvoiceRun.id))).first()
    assert first is not None
    end_outage()
    if expire:
        wait_quiet(stripe_server)
        stripe_server.expire_idempotency_keys()
    steps_after_outage = step_counts(demo_engine)
    rerun = run_in_process(demo_engine, env) if scenario in HARD else None
    ledger = compare_ledgers(demo_engine, stripe_server)
    drill_report.tried(
        f"{scenario} seed {seed}: outage from Stripe request {start_at}"
        + ("; idempotency keys expired before the re-run" if expire else "")
    )
    drill_report.found(
        f"{scenario} seed {seed}: run exit {run.code} ({first.status}, {first.failed_count} "
        f"failed) after {run.seconds:.1f} s, local steps [{steps_after_outage}]"
        + (f"; re-run exit {rerun.exit_code}" if rerun else "")
        + f"; {ledger.summary()}"
    )
    # During the outage: nothing doubled; every draft kept.
    assert_nothing_doubled(during)
    assert during.local == during.customers, during.problems()
    if scenario in HARD:
        assert run.code == 1, run.output()
        assert first.status in ("partial", "failed")
        assert left, "the outage left nothing undone: it started too late to be a drill"
        # Clear errors: each customer left over is named, with a sentence about Stripe.
        assert first.failed_count == len(left)
        named = {e["customer"] for e in first.errors}
        assert named == set(left), (named, left)
        for name, error in left.items():
            assert "Stripe" in error, (name, error)
            assert name in run.stdout
        if scenario == "connection-refused":
            assert all("could not be reached" in e for e in left.values()), left
        assert rerun is not None and rerun.exit_code == 0, rerun.problems if rerun else ""
    else:
        assert run.code == 0, run.output()
        assert not left
    assert_billed_once(demo_engine, stripe_server, ledger)
