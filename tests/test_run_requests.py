"""Run requests and dead runs: one active run per period (the database says so), and a run
whose process died is finished by `invoice-run --pending`, exactly once (local Stripe server)."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import update
from sqlalchemy.engine import Engine
from sqlmodel import Session, col, select

from billing_core.auth import Identity
from billing_core.cli import main
from billing_core.config import Settings, load_settings
from billing_core.db import session_scope
from billing_core.invoicing import run_worker
from billing_core.invoicing import runs as invoicing_runs
from billing_core.models import AuditEntry, Customer, Invoice, InvoiceRun, RunLock
from billing_core.periods import Period, utcnow
from billing_core.stripe import gateway as gw
from billing_core.views import invoice_run as run_view
from tests.conftest import DEMO_NOW
from tests.support.stripe_server import StripeTestServer

P = Period.parse("2026-10")
KEY = "sk_test_run_requests"
STALE = 300


class SimulatedCrash(BaseException):
    """The process dying: not an Exception, so nothing in the run catches it."""


@pytest.fixture(scope="module")
def server() -> Iterator[StripeTestServer]:
    with StripeTestServer() as srv:
        yield srv


@pytest.fixture(autouse=True)
def _fresh(server: StripeTestServer, monkeypatch: pytest.MonkeyPatch) -> None:
    server.reset()
    monkeypatch.setattr(gw, "BACKOFF_SECONDS", 0.01)


def _env(db_url: str, server: StripeTestServer) -> dict[str, str]:
    return {
        "DATABASE_URL": db_url,
        "STRIPE_API_BASE": server.url,
        "STRIPE_API_KEY": KEY,
        "STRIPE_REQUESTS_PER_SECOND": "1000",
        "RUN_LOCK_STALE_SECONDS": str(STALE),
        "BILLING_SECRETS_FILE": "/nonexistent/secrets.toml",
    }


def _settings(db_url: str, server: StripeTestServer) -> Settings:
    return load_settings(_env(db_url, server), secrets_path=Path("/nonexistent/secrets.toml"))


def _admin(n: int) -> Identity:
    return Identity(f"admin{n}@acme.example", "admin", "oidc")


def _runs(engine: Engine) -> list[InvoiceRun]:
    with Session(engine) as s:
        return list(s.exec(select(InvoiceRun).order_by(col(InvoiceRun.id))).all())


def _together(count: int, work: Any) -> list[Any]:
    """Run `work(i)` in `count` threads released at the same moment; results or exceptions."""
    barrier = threading.Barrier(count)
    out: list[Any] = [None] * count

    def one(i: int) -> None:
        barrier.wait()
        try:
            out[i] = work(i)
        except Exception as exc:  # reported to the test, not lost in a thread
            out[i] = exc

    threads = [threading.Thread(target=one, args=(i,)) for i in range(count)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    return out


def assert_billed_exactly_once(engine: Engine, server: StripeTestServer) -> None:
    """One local and one Stripe invoice per customer for P, same totals, all pushed."""
    with Session(engine) as s:
        local = s.exec(select(Invoice).where(Invoice.period == str(P))).all()
        customers = s.exec(select(Customer)).all()
    remote = [i for i in server.invoices() if i["metadata"].get("period") == str(P)]
    assert len(local) == len(customers) == len(remote)
    by_local = {int(i["metadata"]["local_invoice_id"]): i for i in remote}
    for inv in local:
        assert by_local[inv.id or 0]["id"] == inv.stripe_invoice_id
        assert by_local[inv.id or 0]["total"] == inv.total_minor
        assert inv.push_step in ("paid", "sent")


# ------------------------------------------------------------------ one request per period


def test_admins_clicking_run_together_record_one_request(demo_engine: Engine) -> None:
    """Six admins click Run at the same moment: one request, and every click gets it back."""

    def click(i: int) -> int:
        with session_scope(demo_engine) as s:
            run = run_worker.request_run(s, identity=_admin(i), period=P, now=DEMO_NOW)
            return run.id or 0

    ids = _together(6, click)
    assert all(isinstance(i, int) for i in ids), ids
    runs = _runs(demo_engine)
    assert [r.status for r in runs] == ["requested"], [(r.id, r.status) for r in runs]
    assert set(ids) == {runs[0].id}
    with Session(demo_engine) as s:
        requests = s.exec(select(AuditEntry).where(AuditEntry.action == "invoice_run.request"))
        assert len(requests.all()) == 1


def test_database_refuses_a_second_active_run_of_a_period(demo_engine: Engine) -> None:
    """The unique index itself, whatever the code in front of it checks."""
    from sqlalchemy.exc import IntegrityError

    with session_scope(demo_engine) as s:
        s.add(InvoiceRun(period=str(P), status="requested"))
    with pytest.raises(IntegrityError), session_scope(demo_engine) as s:
        s.add(InvoiceRun(period=str(P), status="running"))
    with session_scope(demo_engine) as s:  # other periods, finished runs and dry runs are free
        s.add(InvoiceRun(period="2026-09", status="running"))
        s.add(InvoiceRun(period=str(P), status="failed"))
        s.add(InvoiceRun(period=str(P), status="running", dry_run=True))
    assert len(_runs(demo_engine)) == 4


def test_cli_run_takes_over_a_pending_request_and_the_page_follows_it(
    demo_engine: Engine, demo_db_url: str, server: StripeTestServer
) -> None:
    """A CLI run that takes the lock while a click's request waits bills the period once; the
    request is retired with a sentence and the page shows the run that billed."""
    settings = _settings(demo_db_url, server)
    with session_scope(demo_engine) as s:
        request = run_worker.request_run(s, identity=_admin(1), period=P, now=DEMO_NOW)
    opts = invoicing_runs.RunOptions(P, attach_test_cards=True, actor="cli")
    result = invoicing_runs.run_invoices(demo_engine, settings, opts, now=DEMO_NOW)
    assert result.exit_code == 0
    assert run_worker.execute_run(demo_engine, settings, request.id or 0) is None
    old, billed = _runs(demo_engine)
    assert (old.id, old.status) == (request.id, "locked")
    assert f"run {billed.id} took the lock" in old.errors[-1]["message"]
    assert billed.status == "succeeded"
    # A later click refused by the lock is history: the page still follows the run that billed.
    with session_scope(demo_engine) as s:
        s.add(InvoiceRun(period=str(P), status="locked", errors=[{"message": "lock held"}]))
    with Session(demo_engine) as s:
        shown = run_view.current_run(s, P)
    assert shown is not None and shown.id == billed.id
    assert_billed_exactly_once(demo_engine, server)


def test_page_follows_the_active_run_not_the_newest_row(demo_engine: Engine) -> None:
    with session_scope(demo_engine) as s:
        s.add(InvoiceRun(period=str(P), status="running", heartbeat_at=utcnow()))
        s.add(InvoiceRun(period=str(P), status="locked"))
        s.add(InvoiceRun(period=str(P), status="failed"))
    with Session(demo_engine) as s:
        shown = run_view.current_run(s, P)
    assert shown is not None and shown.status == "running"


# ------------------------------------------------------------------ a worker that died


def _killed_mid_run(engine: Engine, settings: Settings, after: int) -> int:
    """The Run button's worker dies after `after` invoices reached Stripe; its heartbeat then
    ages past RUN_LOCK_STALE_SECONDS (as a restarted server leaves it). Returns the run id."""
    with session_scope(engine) as s:
        run = run_worker.request_run(s, identity=_admin(1), period=P, now=DEMO_NOW)
    run_id = run.id or 0
    assert run_worker.claim(engine, run_id)
    pushed: list[int] = []

    def die(invoice_id: int, at: str) -> None:
        if at == "create":
            pushed.append(invoice_id)
            if len(pushed) > after:
                raise SimulatedCrash("server restarted")

    opts = invoicing_runs.RunOptions(P, trigger="button", actor=run.actor, attach_test_cards=True)
    with pytest.raises(SimulatedCrash):
        invoicing_runs.run_invoices(engine, settings, opts, run_id=run_id, hook=die)
    old = utcnow() - timedelta(seconds=STALE + 60)
    with engine.begin() as conn:
        for table in (InvoiceRun.__table__, RunLock.__table__):  # type: ignore[attr-defined]
            conn.execute(update(table).values(heartbeat_at=old))
    with Session(engine) as s:
        dead = s.get(InvoiceRun, run_id)
        unpushed = s.exec(
            select(Invoice).where(
                Invoice.period == str(P), col(Invoice.push_step).not_in(("paid", "sent"))
            )
        ).all()
    assert dead is not None and dead.status == "running"
    assert unpushed, "the dead run must leave drafts unpushed"
    return run_id


def test_pending_finishes_a_run_whose_worker_died(
    demo_engine: Engine,
    demo_db_url: str,
    server: StripeTestServer,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    run_id = _killed_mid_run(demo_engine, _settings(demo_db_url, server), after=3)
    for key, value in _env(demo_db_url, server).items():
        monkeypatch.setenv(key, value)
    code = main(["invoice-run", "--pending", "--trigger", "cron", "--demo-attach-test-cards"])
    out = capsys.readouterr().out
    assert code == 0, out
    assert "no run requests pending" not in out
    [run] = _runs(demo_engine)
    assert (run.id, run.status) == (run_id, "succeeded")
    assert_billed_exactly_once(demo_engine, server)
    with Session(demo_engine) as s:
        takeover = s.exec(
            select(AuditEntry).where(AuditEntry.action == "invoice_run.takeover")
        ).one()
    assert takeover.actor == "cron" and takeover.target == f"run {run_id} {P}"
    # Nothing left to do: the next cron pass says so.
    assert main(["invoice-run", "--pending", "--trigger", "cron"]) == 0
    assert "no run requests pending" in capsys.readouterr().out


def test_two_pending_at_once_finish_a_dead_run_once(
    demo_engine: Engine, demo_db_url: str, server: StripeTestServer
) -> None:
    settings = _settings(demo_db_url, server)
    run_id = _killed_mid_run(demo_engine, settings, after=2)
    server.latency = 0.01
    results = _together(
        2,
        lambda i: run_worker.execute_pending(
            demo_engine, settings, attach_test_cards=True, actor=f"cron{i}"
        ),
    )
    server.latency = 0
    assert all(isinstance(r, list) for r in results), results
    finished = [r for batch in results for r in batch]
    assert [(r.run_id, r.status) for r in finished] == [(run_id, "succeeded")]
    assert [r.status for r in _runs(demo_engine)] == ["succeeded"]
    assert_billed_exactly_once(demo_engine, server)
    with Session(demo_engine) as s:
        takeovers = s.exec(
            select(AuditEntry).where(AuditEntry.action == "invoice_run.takeover")
        ).all()
    assert len(takeovers) == 1


def test_pending_leaves_a_run_that_still_beats(
    demo_engine: Engine, demo_db_url: str, server: StripeTestServer
) -> None:
    with session_scope(demo_engine) as s:
        s.add(InvoiceRun(period=str(P), status="running", heartbeat_at=utcnow()))
    assert run_worker.execute_pending(demo_engine, _settings(demo_db_url, server)) == []
    assert [r.status for r in _runs(demo_engine)] == ["running"]
    assert server.request_log == []


# ------------------------------------------------------------------ the migration


def test_migration_keeps_one_active_run_per_period(blank_db_url: str) -> None:
    """Databases that recorded several active runs of a period (the old race) upgrade: the run
    that beat last stays, the others are failed with a sentence, and the index then holds."""
    from alembic import command
    from sqlalchemy import text
    from sqlalchemy.exc import IntegrityError

    from billing_core.db import _alembic_config, make_engine, migrate

    engine = make_engine(blank_db_url)
    command.upgrade(_alembic_config(engine), "demo_1")
    rows = [
        ("2026-10", "requested", None),
        ("2026-10", "running", "2026-11-03 06:00:05"),
        ("2026-10", "requested", None),
        ("2026-09", "requested", None),
        ("2026-10", "failed", None),
    ]
    with engine.begin() as conn:
        for period, status, beat in rows:
            conn.execute(
                text(
                    'INSERT INTO invoicerun (period, "trigger", actor, status, dry_run, '
                    "costs_estimated, total_count, done_count, failed_count, errors, "
                    "requested_at, heartbeat_at) VALUES (:period, 'button', 'a', :status, "
                    "false, false, 0, 0, 0, '[]', '2026-11-03 06:00:00', :beat)"
                ),
                {"period": period, "status": status, "beat": beat},
            )
    migrate(engine)
    runs = _runs(engine)
    assert [r.status for r in runs] == ["failed", "running", "failed", "requested", "failed"]
    assert "run 2 is the one kept" in runs[0].errors[-1]["message"]
    with pytest.raises(IntegrityError), session_scope(engine) as s:
        s.add(InvoiceRun(period="2026-09", status="running"))
    command.downgrade(_alembic_config(engine), "demo_1")
    engine.dispose()
