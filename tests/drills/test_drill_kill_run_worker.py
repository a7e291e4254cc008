"""Drill: the process executing a Run-button request is SIGKILLed mid-run (a dashboard server
restarted); once its heartbeat is stale, two `invoice-run --pending` started together finish it:
one takes it over, the other finds nothing to do, and every customer is billed once.

The executor here is `invoice-run --pending` in a subprocess (the same service the dashboard's
worker thread calls), so a real SIGKILL leaves what a restart leaves: the run "running", its
lock held, drafts unpushed.
"""

from __future__ import annotations

import pytest
from sqlalchemy.engine import Engine
from sqlmodel import Session, select

from billing_core.auth import Identity
from billing_core.db import session_scope
from billing_core.invoicing import run_worker
from billing_core.models import AuditEntry, InvoiceRun
from tests.conftest import DEMO_NOW
from tests.drills.conftest import (
    PERIOD,
    Cli,
    DrillReport,
    assert_billed_once,
    assert_nothing_doubled,
    cli_env,
    compare_ledgers,
    kill_when,
    let_time_pass,
    requests_seen,
    step_counts,
)
from tests.support.stripe_server import StripeTestServer

pytestmark = pytest.mark.drill

STALE_SECONDS = 30
PENDING = ("invoice-run", "--pending", "--trigger", "cron", "--demo-attach-test-cards")


def test_drill_killed_worker_is_finished_once_by_pending(
    demo_engine: Engine,
    demo_db_url: str,
    stripe_server: StripeTestServer,
    cli: Cli,
    drill_report: DrillReport,
) -> None:
    stripe_server.latency = 0.01
    env = cli_env(
        demo_db_url,
        stripe_server,
        STRIPE_CONCURRENCY="2",
        RUN_LOCK_STALE_SECONDS=str(STALE_SECONDS),
    )
    with session_scope(demo_engine) as s:
        request = run_worker.request_run(
            s,
            identity=Identity("boss@acme.example", "admin", "oidc"),
            period=PERIOD,
            now=DEMO_NOW,
            stale_seconds=STALE_SECONDS,
        )
    worker = cli.start(env, *PENDING)
    assert kill_when(worker, requests_seen(stripe_server, 30)), worker.output()
    killed_at = step_counts(demo_engine)
    assert_nothing_doubled(compare_ledgers(demo_engine, stripe_server, final=False))
    with Session(demo_engine) as s:
        dead = s.get(InvoiceRun, request.id)
    assert dead is not None and dead.status == "running"

    # While its heartbeat is fresh, --pending leaves it alone (it may still be alive).
    early = cli.run(env, *PENDING)
    assert early.code == 0 and "no run requests pending" in early.stdout, early.output()

    let_time_pass(demo_engine, STALE_SECONDS + 1)
    stripe_server.latency = 0.005
    first, second = cli.start(env, *PENDING), cli.start(env, *PENDING)
    codes = sorted([first.wait(120), second.wait(120)])
    said = first.stdout + second.stdout
    assert codes == [0, 0], first.output() + second.output()
    assert said.count("stopped heartbeating: finishing it") == 1, said
    with Session(demo_engine) as s:
        runs = s.exec(select(InvoiceRun)).all()
        takeovers = s.exec(
            select(AuditEntry).where(AuditEntry.action == "invoice_run.takeover")
        ).all()
    assert [(r.id, r.status) for r in runs] == [(request.id, "succeeded")]
    assert [t.actor for t in takeovers] == ["cron"]
    ledger = compare_ledgers(demo_engine, stripe_server)
    drill_report.tried("SIGKILL the --pending worker after 30 Stripe requests; two --pending")
    drill_report.found(f"at kill: [{killed_at}]; after: {ledger.summary()}")
    assert_billed_once(demo_engine, stripe_server, ledger)
