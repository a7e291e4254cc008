"""Invoice runs against the local Stripe test server: exactly once, resumable, faults recorded."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func
from sqlalchemy.engine import Engine
from sqlmodel import Session, col, select

from billing_core.auth import LOCAL_ADMIN
from billing_core.cli import main
from billing_core.config import Settings, load_settings
from billing_core.costs.snapshots import CostSource
from billing_core.db import session_scope
from billing_core.errors import ConfigError, LockHeld
from billing_core.exchange_rates import rates
from billing_core.invoicing import drafts as invoicing_drafts
from billing_core.invoicing import push as invoicing_push
from billing_core.invoicing import run_worker
from billing_core.invoicing import runs as invoicing_runs
from billing_core.models import (
    Customer,
    ExchangeRate,
    Invoice,
    InvoiceLine,
    InvoiceRun,
    RunLock,
    SyncState,
    TrueUp,
)
from billing_core.periods import Period
from billing_core.stripe import client as stripe_client
from billing_core.stripe import gateway as gw
from tests.conftest import DEMO_NOW, ROOT
from tests.support.stripe_server import StripeTestServer

# The cost figures these tests bill from (the settings' defaults).
SOURCE = CostSource("UnblendedCost", "LINKED_ACCOUNT")

P = Period.parse("2026-10")
KEY = "sk_test_invoicing"


class SimulatedCrash(BaseException):
    """Stands for the process dying: not an Exception, so nothing in the run catches it."""


@pytest.fixture(scope="module")
def server() -> Iterator[StripeTestServer]:
    with StripeTestServer() as srv:
        yield srv


@pytest.fixture(autouse=True)
def _fresh(server: StripeTestServer, monkeypatch: pytest.MonkeyPatch) -> None:
    server.reset()
    monkeypatch.setattr(gw, "BACKOFF_SECONDS", 0.01)


def _settings(db_url: str, server: StripeTestServer, **extra: str) -> Settings:
    env = {
        "DATABASE_URL": db_url,
        "STRIPE_API_BASE": server.url,
        "STRIPE_API_KEY": KEY,
        "STRIPE_REQUESTS_PER_SECOND": "1000",
        **extra,
    }
    return load_settings(env, secrets_path=Path("/nonexistent/secrets.toml"))


def _run(engine: Engine, settings: Settings, **kw: Any) -> invoicing_runs.RunResult:
    opts = invoicing_runs.RunOptions(
        P, attach_test_cards=kw.pop("attach", True), **kw.pop("opts", {})
    )
    return invoicing_runs.run_invoices(engine, settings, opts, now=DEMO_NOW, **kw)


def _give_cards(engine: Engine, server: StripeTestServer, declined: str | None = None) -> None:
    """Stripe customers with cards, made outside the run (as an earlier onboarding would)."""
    with session_scope(engine) as s:
        for cus in s.exec(select(Customer)).all():
            remote = server.create_customer_directly(
                email=cus.email, name=cus.name, metadata={"local_customer_id": str(cus.id)}
            )
            cus.stripe_customer_id = remote["id"]
            if cus.collection_method == "charge_automatically" and cus.name != declined:
                server.attach_card(remote["id"], "pm_card_visa")
            elif cus.name == declined:
                server.attach_card(remote["id"], "pm_card_chargeDeclined")
            s.add(cus)


def _invoices(engine: Engine) -> list[Invoice]:
    with Session(engine) as s:
        return list(s.exec(select(Invoice).where(Invoice.period == str(P))).all())


def assert_billed_exactly_once(engine: Engine, server: StripeTestServer) -> None:
    """One local and one Stripe invoice per customer, same totals, paid or sent."""
    local = _invoices(engine)
    with Session(engine) as s:
        customers = s.exec(select(Customer)).all()
    assert len(local) == len(customers)
    remote = [i for i in server.invoices() if i["metadata"].get("period") == str(P)]
    assert len(remote) == len(customers), [i["metadata"] for i in remote]
    by_local = {int(i["metadata"]["local_invoice_id"]): i for i in remote}
    for inv in local:
        r = by_local[inv.id or 0]
        assert r["id"] == inv.stripe_invoice_id
        assert r["total"] == inv.total_minor
        assert r["currency"] == inv.currency.lower()
        assert r["status"] == inv.status
        assert inv.push_step == (
            "paid" if inv.collection_method == "charge_automatically" else "sent"
        )
        with Session(engine) as s:
            lines = s.exec(select(InvoiceLine).where(InvoiceLine.invoice_id == inv.id)).all()
        assert sum(line.amount_minor for line in lines) == inv.total_minor
    paid_charges = [c for c in server.charges() if c["paid"]]
    assert len({c["customer"] for c in paid_charges}) == len(paid_charges)


# ---------------------------------------------------------------------------------- happy path


def test_demo_run_bills_every_customer_once_with_draft_totals(
    demo_engine: Engine, demo_db_url: str, server: StripeTestServer
) -> None:
    settings = _settings(demo_db_url, server)
    with Session(demo_engine) as s:
        drafts = invoicing_runs.preview(s, P, source=SOURCE)
    expected = {d.customer_id: d.total_minor for d in drafts.drafts}
    assert len(expected) == 9 and not drafts.problems
    result = _run(demo_engine, settings)
    assert result.exit_code == 0 and result.status == "succeeded"
    assert {i.customer_id: i.total_minor for i in _invoices(demo_engine)} == expected
    assert_billed_exactly_once(demo_engine, server)
    for inv in _invoices(demo_engine):
        assert inv.fx_rate is not None if inv.currency == "EUR" else inv.fx_rate is None
        assert inv.hosted_invoice_url and inv.number
    with Session(demo_engine) as s:
        assert all(c.stripe_customer_id for c in s.exec(select(Customer)).all())
        run = s.exec(select(InvoiceRun)).one()
    assert (run.status, run.total_count, run.done_count, run.failed_count) == ("succeeded", 9, 9, 0)


def test_at_most_four_calls_per_invoice(
    demo_engine: Engine, demo_db_url: str, server: StripeTestServer
) -> None:
    _give_cards(demo_engine, server)
    result = _run(demo_engine, _settings(demo_db_url, server), attach=False)
    assert result.exit_code == 0
    assert result.stripe_calls == 4 * 9
    assert server.request_count("/v1/invoices") == 4 * 9
    keys = [k for _m, _p, _s, k in server.request_log]
    assert len(set(keys)) == len(keys) and all(k and "-inv-" in k for k in keys)


def test_push_progress_is_logged_with_counts_and_request_rate(
    demo_engine: Engine, demo_db_url: str, server: StripeTestServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    _give_cards(demo_engine, server)
    monkeypatch.setattr(invoicing_push, "PROGRESS_SECONDS", 0.0)  # a line after every invoice
    said: list[str] = []
    result = _run(demo_engine, _settings(demo_db_url, server), attach=False, progress=said.append)
    assert result.exit_code == 0
    assert "pushing 9 invoices to Stripe (32 at a time, at most 1000 requests/s)" in said
    progress = [line.strip() for line in said if line.startswith("  pushed ")]
    assert [line.split(" invoices")[0] for line in progress] == [
        *(f"pushed {n} of 9" for n in range(1, 10)),
        "pushed 9 of 9",  # and once more at the end
    ]
    assert progress[-1].endswith("Stripe requests/s of 1000 allowed, 0 rate-limited")
    assert "(0 failed)" in progress[-1]


def test_run_twice_gives_one_invoice_per_customer(
    demo_engine: Engine, demo_db_url: str, server: StripeTestServer
) -> None:
    settings = _settings(demo_db_url, server)
    assert _run(demo_engine, settings).exit_code == 0
    calls = len(server.request_log)
    second = _run(demo_engine, settings)
    assert second.exit_code == 0 and second.saved == 0 and second.stripe_calls == 0
    assert len(second.drafts.already_invoiced) == 9
    assert len(server.request_log) == calls
    assert_billed_exactly_once(demo_engine, server)


def test_dry_run_writes_nothing(
    demo_engine: Engine, demo_db_url: str, server: StripeTestServer
) -> None:
    def counts() -> tuple[int, ...]:
        with Session(demo_engine) as s:
            return tuple(
                s.exec(select(func.count()).select_from(t)).one()
                for t in (Invoice, InvoiceLine, InvoiceRun, SyncState, TrueUp, RunLock)
            )

    before = counts()
    result = _run(demo_engine, _settings(demo_db_url, server), opts={"dry_run": True})
    assert result.status == "preview" and len(result.drafts.drafts) == 9
    assert counts() == before
    assert server.request_log == []


# ---------------------------------------------------------------------------------- crashes


@pytest.mark.parametrize("expire_keys", [False, True], ids=["keys-kept", "keys-expired"])
@pytest.mark.parametrize("step", ["create", "lines", "finalize", "pay", "send"])
def test_killed_at_each_step_then_rerun_bills_exactly_once(
    demo_engine: Engine, demo_db_url: str, server: StripeTestServer, step: str, expire_keys: bool
) -> None:
    _give_cards(demo_engine, server)
    settings = _settings(demo_db_url, server, STRIPE_CONCURRENCY="1")
    crashed: list[int] = []

    def crash(invoice_id: int, at: str) -> None:
        if at == step and not crashed:
            crashed.append(invoice_id)
            raise SimulatedCrash(f"killed after the {at} call of invoice {invoice_id}")

    with pytest.raises(SimulatedCrash):
        _run(demo_engine, settings, attach=False, hook=crash)
    if expire_keys:
        server.expire_idempotency_keys()  # a re-run days later: only metadata and state help
    result = _run(demo_engine, settings, attach=False)
    assert result.exit_code == 0, [p.message for p in result.problems]
    assert_billed_exactly_once(demo_engine, server)
    with Session(demo_engine) as s:
        runs = s.exec(select(InvoiceRun).order_by(col(InvoiceRun.id))).all()
    assert [r.status for r in runs] == ["failed", "succeeded"]
    assert "resumed by run" in runs[0].errors[-1]["message"]


def test_run_stopped_by_an_error_is_recorded_and_releases_its_lock(
    demo_engine: Engine, demo_db_url: str, server: StripeTestServer
) -> None:
    _give_cards(demo_engine, server)
    settings = _settings(demo_db_url, server, STRIPE_CONCURRENCY="1")

    def boom(invoice_id: int, at: str) -> None:
        if at == "finalize":
            raise RuntimeError("the process ran out of memory")

    with pytest.raises(RuntimeError):
        _run(demo_engine, settings, attach=False, hook=boom)
    with Session(demo_engine) as s:
        run = s.exec(select(InvoiceRun)).one()
        assert s.exec(select(RunLock)).first() is None
    assert run.status == "failed" and run.finished_at is not None
    assert "unexpected RuntimeError" in run.errors[-1]["message"]
    assert _run(demo_engine, settings, attach=False).exit_code == 0
    assert_billed_exactly_once(demo_engine, server)


def test_killed_process_lock_is_taken_over_and_rerun_completes(
    demo_engine: Engine, demo_db_url: str, server: StripeTestServer, tmp_path: Path
) -> None:
    _give_cards(demo_engine, server)
    server.latency = 0.15
    env = {**os.environ, **_env(demo_db_url, server), "STRIPE_CONCURRENCY": "2"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "billing_core", "invoice-run", "--period", str(P)],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline and server.request_count("/finalize") < 2:
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    server.latency = 0
    # The killed run's lock is still there; make its heartbeat old, as time would.
    with session_scope(demo_engine) as s:
        lock = s.exec(select(RunLock)).one()
        lock.heartbeat_at = lock.heartbeat_at - timedelta(hours=1)
        s.add(lock)
    result = _run(demo_engine, _settings(demo_db_url, server), attach=False)
    assert result.exit_code == 0
    assert_billed_exactly_once(demo_engine, server)


def _env(db_url: str, server: StripeTestServer) -> dict[str, str]:
    return {
        "DATABASE_URL": db_url,
        "STRIPE_API_BASE": server.url,
        "STRIPE_API_KEY": KEY,
        "STRIPE_REQUESTS_PER_SECOND": "1000",
        "BILLING_SECRETS_FILE": "/nonexistent/secrets.toml",
    }


def test_two_processes_at_once_bill_each_customer_once(
    demo_engine: Engine, demo_db_url: str, server: StripeTestServer
) -> None:
    _give_cards(demo_engine, server)
    server.latency = 0.02
    env = {**os.environ, **_env(demo_db_url, server)}
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "billing_core", "invoice-run", "--period", str(P)],
            cwd=ROOT,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(2)
    ]
    outputs = [p.communicate(timeout=60) for p in procs]
    codes = sorted(p.returncode for p in procs)
    assert codes in ([0, 0], [0, 3]), outputs
    if codes == [0, 3]:
        assert any("Another invoice run holds the lock" in err for _out, err in outputs)
    assert_billed_exactly_once(demo_engine, server)


# ---------------------------------------------------------------------------------- faults


def test_rate_limits_and_server_errors_are_retried_with_the_same_key(
    demo_engine: Engine, demo_db_url: str, server: StripeTestServer
) -> None:
    _give_cards(demo_engine, server)
    server.fail_next(3, 429, "/finalize")
    server.fail_next(2, 500, "/add_lines")
    server.fail_next(1, 429, "/pay")
    result = _run(demo_engine, _settings(demo_db_url, server), attach=False)
    assert result.exit_code == 0
    assert_billed_exactly_once(demo_engine, server)
    statuses = [(p, st) for _m, p, st, _k in server.request_log]
    assert sum(1 for _p, st in statuses if st == 429) == 4
    assert sum(1 for _p, st in statuses if st == 500) == 2
    # Every retry reused its key: per key, only the faults came before the success.
    by_key: dict[str, list[int]] = {}
    for _m, _p, st, k in server.request_log:
        by_key.setdefault(k or "", []).append(st)
    assert all(codes[-1] == 200 for codes in by_key.values())


def test_lost_responses_and_timeouts_are_replayed_not_repeated(
    demo_engine: Engine, demo_db_url: str, server: StripeTestServer
) -> None:
    _give_cards(demo_engine, server)
    server.drop_response_next(2, "/pay")  # Stripe charged, the answer never arrived
    server.drop_response_next(1, "/v1/invoices")  # a create whose answer was lost
    result = _run(demo_engine, _settings(demo_db_url, server), attach=False)
    assert result.exit_code == 0
    assert_billed_exactly_once(demo_engine, server)
    assert len(server.charges()) == 7


def test_declined_card_is_recorded_while_the_others_succeed(
    demo_engine: Engine, demo_db_url: str, server: StripeTestServer
) -> None:
    _give_cards(demo_engine, server, declined="Birch & Co")
    settings = _settings(demo_db_url, server)
    result = _run(demo_engine, settings, attach=False)
    assert result.exit_code == 1 and result.status == "partial"
    birch = next(i for i in _invoices(demo_engine) if i.display_status == "failed")
    assert (birch.status, birch.outcome) == ("open", "payment_failed")  # Stripe's status kept
    assert "declined" in (birch.last_error or "") and birch.pay_attempt == 1
    assert sum(1 for i in _invoices(demo_engine) if i.display_status in ("paid", "open")) == 8
    with Session(demo_engine) as s:
        run = s.exec(select(InvoiceRun)).one()
    assert run.failed_count == 1 and "declined" in run.errors[0]["message"]
    # What the page's progress shows: 8 pushed and 1 failed of 9, the failed one counted once.
    assert (run.done_count, run.failed_count, run.total_count) == (8, 1, 9)
    # The customer fixes the card; the next run pays with a new key (the old one replays).
    server.attach_card(server.invoice(birch.stripe_invoice_id or "")["customer"], "pm_card_visa")
    again = _run(demo_engine, settings, attach=False)
    assert again.exit_code == 0
    assert_billed_exactly_once(demo_engine, server)


def test_customer_without_payment_method_gets_a_clear_error(
    demo_engine: Engine, demo_db_url: str, server: StripeTestServer
) -> None:
    result = _run(demo_engine, _settings(demo_db_url, server), attach=False)
    assert result.exit_code == 1
    failed = [i for i in _invoices(demo_engine) if i.display_status == "failed"]
    assert len(failed) == 7  # every charge_automatically demo customer
    assert all("no default payment method" in (i.last_error or "") for i in failed)
    assert sum(1 for i in _invoices(demo_engine) if i.push_step == "sent") == 2
    assert server.charges() == []


def test_missing_exchange_rate_refuses_those_customers_only(
    demo_engine: Engine, demo_db_url: str, server: StripeTestServer
) -> None:
    with session_scope(demo_engine) as s:
        for rate in s.exec(select(ExchangeRate).where(ExchangeRate.period == str(P))).all():
            s.delete(rate)
    result = _run(demo_engine, _settings(demo_db_url, server))
    assert result.exit_code == 1
    assert len(result.drafts.problems) == 6  # the EUR customers
    assert "record one with `python -m billing_core set-rate --period 2026-10 --currency EUR" in (
        result.drafts.problems[0].message
    )
    assert {i.currency for i in _invoices(demo_engine)} == {"USD"}
    with Session(demo_engine) as s:
        run = s.exec(select(InvoiceRun)).one()
    assert run.failed_count == 6 and len(run.errors) == 6
    # Record the rate and run again: the refused customers are billed now.
    with session_scope(demo_engine) as s:
        rates.set_rate(s, period=P, currency="EUR", rate="0.92", source="ECB", actor="test")
    assert _run(demo_engine, _settings(demo_db_url, server)).exit_code == 0
    assert_billed_exactly_once(demo_engine, server)


def test_stripe_down_loses_nothing_and_a_rerun_recovers(
    demo_engine: Engine, demo_db_url: str, server: StripeTestServer
) -> None:
    _give_cards(demo_engine, server)
    server.fail_next(1000, 503, "/v1/invoices")
    result = _run(demo_engine, _settings(demo_db_url, server), attach=False)
    assert result.exit_code == 1 and result.status == "failed"
    assert len(_invoices(demo_engine)) == 9
    assert all(i.last_error and "Stripe" in i.last_error for i in _invoices(demo_engine))
    server.clear_faults()
    server.expire_idempotency_keys()
    assert _run(demo_engine, _settings(demo_db_url, server), attach=False).exit_code == 0
    assert_billed_exactly_once(demo_engine, server)


def test_invalid_key_stops_the_push_and_says_so(
    demo_engine: Engine, demo_db_url: str, server: StripeTestServer
) -> None:
    server.api_key = "sk_test_the_right_one"
    try:
        result = _run(demo_engine, _settings(demo_db_url, server))
    finally:
        server.api_key = None
    assert result.exit_code == 2 and result.fatal and "STRIPE_API_KEY" in result.fatal
    assert server.invoices() == [] and len(_invoices(demo_engine)) == 9


def test_missing_key_and_open_period_are_refused_before_writing(
    demo_engine: Engine, demo_db_url: str
) -> None:
    bare = load_settings({"DATABASE_URL": demo_db_url}, secrets_path=Path("/nonexistent"))
    with pytest.raises(ConfigError, match="STRIPE_API_KEY"):
        invoicing_runs.run_invoices(demo_engine, bare, invoicing_runs.RunOptions(P), now=DEMO_NOW)
    for period in ("2026-11", "2027-01"):
        with pytest.raises(ConfigError, match="not closed yet"):
            invoicing_runs.run_invoices(
                demo_engine, bare, invoicing_runs.RunOptions(Period.parse(period)), now=DEMO_NOW
            )
    assert _invoices(demo_engine) == []


def test_negative_total_is_not_charged_and_the_credit_is_carried(
    demo_engine: Engine, demo_db_url: str, server: StripeTestServer
) -> None:
    with session_scope(demo_engine) as s:
        iris = s.exec(select(Customer).where(Customer.name == "Iris Labs SAS")).one()
        s.add(
            TrueUp(
                customer_id=iris.id or 0,
                source_period="2026-09",
                currency="EUR",
                description="Goodwill credit for an outage",
                amount_minor=-100_000,
            )
        )
    result = _run(demo_engine, _settings(demo_db_url, server))
    assert result.exit_code == 0
    credit = next(i for i in _invoices(demo_engine) if i.display_status == "credit")
    assert (credit.status, credit.outcome) == ("draft", "credit_carried")  # never in Stripe
    assert credit.total_minor < 0 and credit.stripe_invoice_id is None
    assert "nothing was charged" in (credit.last_error or "")
    assert len(server.invoices()) == 8
    with Session(demo_engine) as s:
        ups = s.exec(select(TrueUp).where(TrueUp.customer_id == credit.customer_id)).all()
    applied = [t for t in ups if t.applied_invoice_id == credit.id]
    carried = [t for t in ups if t.applied_invoice_id is None]
    assert len(applied) == 1 and len(carried) == 1
    assert carried[0].amount_minor == credit.total_minor and carried[0].source_period == str(P)
    # The next invoice shows it to the customer: in words, not as 'YYYY-MM'.
    assert carried[0].description == f"Credit carried from {P.start:%B} {P.year}"
    assert {inv["description"] for inv in server.invoices()} == {
        f"Services for {P.start:%B} {P.year}"
    }


@pytest.mark.parametrize(
    ("currency", "rate", "step"),
    [("KWD", "0.3071", 10), ("BHD", "0.376", 10), ("ISK", "137.9", 100), ("HUF", "360.6", 100)],
)
def test_amounts_are_sent_in_the_form_stripe_takes(
    demo_engine: Engine,
    demo_db_url: str,
    server: StripeTestServer,
    currency: str,
    rate: str,
    step: int,
) -> None:
    """Three-decimal currencies end in 0, ISK and HUF are whole units: the test server refuses
    anything else (Stripe's error shape), so every line is rounded once to that step."""
    with session_scope(demo_engine) as s:
        for cus in s.exec(select(Customer)).all():
            cus.currency = currency
            s.add(cus)
        rates.set_rate(s, period=P, currency=currency, rate=rate, source="ECB", actor="test")
    result = _run(demo_engine, _settings(demo_db_url, server))
    assert result.exit_code == 0, [p.message for p in result.problems]
    assert_billed_exactly_once(demo_engine, server)
    with Session(demo_engine) as s:
        lines = s.exec(select(InvoiceLine)).all()
    amounts = [
        li.amount_minor for li in lines if li.invoice_id in {i.id for i in _invoices(demo_engine)}
    ]
    assert amounts and all(a % step == 0 for a in amounts)


def test_a_saved_line_stripe_would_refuse_is_never_sent(
    demo_engine: Engine, demo_db_url: str, server: StripeTestServer
) -> None:
    with session_scope(demo_engine) as s:
        for cus in s.exec(select(Customer)).all():
            cus.currency = "KWD"
            s.add(cus)
        rates.set_rate(s, period=P, currency="KWD", rate="0.3071", source="ECB", actor="test")
    with session_scope(demo_engine) as s:
        ids = invoicing_drafts.save_drafts(
            s, invoicing_runs.preview(s, P, source=SOURCE), run_id=None
        )
        # A draft saved before the rule (or edited by hand): KWD 0.001 more on its first line.
        line = s.exec(select(InvoiceLine).where(InvoiceLine.invoice_id == ids[0])).first()
        inv = s.get(Invoice, ids[0])
        assert line is not None and inv is not None
        line.amount_minor += 1
        inv.total_minor += 1
        inv.subtotal_minor += 1
    result = _run(demo_engine, _settings(demo_db_url, server))
    assert result.exit_code == 1
    [problem] = result.problems
    assert problem.invoice_id == ids[0]
    assert "cannot be sent to Stripe: KWD amounts must be a multiple of 10" in problem.message
    sent = {int(i["metadata"]["local_invoice_id"]) for i in server.invoices()}
    assert ids[0] not in sent and len(sent) == len(ids) - 1


def test_total_below_stripes_minimum_is_not_charged_and_is_carried(
    demo_engine: Engine, demo_db_url: str, server: StripeTestServer
) -> None:
    with Session(demo_engine) as s:
        iris = s.exec(select(Customer).where(Customer.name == "Iris Labs SAS")).one()
        draft = next(
            d
            for d in invoicing_runs.preview(s, P, source=SOURCE).drafts
            if d.customer_id == iris.id
        )
    with session_scope(demo_engine) as s:
        s.add(
            TrueUp(
                customer_id=iris.id or 0,
                source_period="2026-09",
                currency="EUR",
                description="Goodwill credit for an outage",
                amount_minor=-(draft.total_minor - 30),  # leaves EUR 0.30, below EUR 0.50
            )
        )
    with Session(demo_engine) as s:
        draft = next(
            d
            for d in invoicing_runs.preview(s, P, source=SOURCE).drafts
            if d.customer_id == iris.id
        )
    assert draft.total_minor == 30 and draft.below_minimum
    assert "below Stripe's minimum charge of EUR 0.50" in "; ".join(draft.warnings)
    said: list[str] = []
    result = _run(demo_engine, _settings(demo_db_url, server), progress=said.append)
    assert result.exit_code == 0
    carried = next(i for i in _invoices(demo_engine) if i.customer_id == iris.id)
    assert (carried.status, carried.outcome, carried.display_status) == (
        "draft",
        "below_minimum",
        "carried",
    )
    assert carried.stripe_invoice_id is None and len(server.invoices()) == 8
    assert "EUR 0.30 is below Stripe's minimum charge of EUR 0.50" in (carried.last_error or "")
    assert any(line.startswith("  CARRIED Iris Labs SAS EUR 0.30") for line in said)
    with Session(demo_engine) as s:
        ups = s.exec(select(TrueUp).where(TrueUp.customer_id == iris.id)).all()
    open_ups = [t for t in ups if t.applied_invoice_id is None]
    assert [(t.amount_minor, t.source_period) for t in open_ups] == [(30, str(P))]
    # A second run leaves it alone: it is carried, not pending.
    assert _run(demo_engine, _settings(demo_db_url, server)).exit_code == 0
    assert len(server.invoices()) == 8


def test_true_up_lands_on_exactly_one_invoice(
    demo_engine: Engine, demo_db_url: str, server: StripeTestServer
) -> None:
    with session_scope(demo_engine) as s:
        acme = s.exec(select(Customer).where(Customer.name == "Acme Analytics GmbH")).one()
        s.add(
            TrueUp(
                customer_id=acme.id or 0,
                source_period="2026-09",
                currency="EUR",
                description="AWS restated 2026-09",
                amount_minor=1234,
            )
        )
    settings = _settings(demo_db_url, server)
    _run(demo_engine, settings)
    _run(demo_engine, settings)
    with Session(demo_engine) as s:
        lines = s.exec(select(InvoiceLine).where(InvoiceLine.kind == "true_up")).all()
    assert [line.amount_minor for line in lines] == [1234]


def test_estimated_costs_are_flagged_on_run_and_invoices(
    demo_engine: Engine, demo_db_url: str, server: StripeTestServer
) -> None:

    with session_scope(demo_engine) as s:
        from billing_core.costs.snapshots import latest_snapshot

        snap = latest_snapshot(s, P, SOURCE)  # the demo stores a DAILY and a later MONTHLY snapshot
        assert snap is not None
        snap.estimated = True
        s.add(snap)
    _run(demo_engine, _settings(demo_db_url, server))
    assert all(i.costs_estimated for i in _invoices(demo_engine))
    with Session(demo_engine) as s:
        assert s.exec(select(InvoiceRun)).one().costs_estimated


def test_no_cost_snapshot_refuses_the_run(
    engine: Engine, db_url: str, server: StripeTestServer
) -> None:
    with pytest.raises(invoicing_drafts.CostsMissing, match="fetch-costs"):
        _run(engine, _settings(db_url, server))


def test_lock_held_records_a_locked_run(
    demo_engine: Engine, demo_db_url: str, server: StripeTestServer
) -> None:
    from billing_core.periods import utcnow

    with session_scope(demo_engine) as s:
        s.add(
            RunLock(
                name="invoice-run:2026-10",
                owner="elsewhere:1:run 9",
                token="t",
                heartbeat_at=utcnow(),
            )
        )
    with pytest.raises(LockHeld):
        _run(demo_engine, _settings(demo_db_url, server))
    with Session(demo_engine) as s:
        run = s.exec(select(InvoiceRun)).one()
    assert run.status == "locked" and "elsewhere" in run.errors[0]["message"]
    assert _invoices(demo_engine) == []


# ---------------------------------------------------------------------------------- worker


def test_requested_run_is_executed_once_by_the_worker(
    demo_engine: Engine, demo_db_url: str, server: StripeTestServer
) -> None:
    settings = _settings(demo_db_url, server)
    with session_scope(demo_engine) as s:
        run = run_worker.request_run(s, identity=LOCAL_ADMIN, period=P, now=DEMO_NOW)
        again = run_worker.request_run(s, identity=LOCAL_ADMIN, period=P, now=DEMO_NOW)
    assert again.id == run.id
    results = run_worker.execute_pending(demo_engine, settings, attach_test_cards=True)
    assert [r.status for r in results] == ["succeeded"]
    assert run_worker.execute_pending(demo_engine, settings) == []
    assert run_worker.execute_run(demo_engine, settings, run.id or 0) is None  # claimed already
    assert_billed_exactly_once(demo_engine, server)


def test_run_button_after_a_killed_run_starts_a_new_run(
    demo_engine: Engine, demo_db_url: str, server: StripeTestServer
) -> None:
    """A killed run stays "running"; once its heartbeat is stale the button must not wait on it."""
    from billing_core.periods import utcnow

    settings = _settings(demo_db_url, server)
    stale = settings.run_lock_stale_seconds
    with session_scope(demo_engine) as s:
        live = InvoiceRun(period="2026-09", status="running", heartbeat_at=utcnow())
        dead = InvoiceRun(
            period=str(P), status="running", heartbeat_at=utcnow() - timedelta(seconds=stale + 1)
        )
        s.add(live)
        s.add(dead)
    with session_scope(demo_engine) as s:
        run = run_worker.request_run(
            s, identity=LOCAL_ADMIN, period=P, now=DEMO_NOW, stale_seconds=stale
        )
        same = run_worker.request_run(
            s,
            identity=LOCAL_ADMIN,
            period=Period.parse("2026-09"),
            now=DEMO_NOW,
            stale_seconds=stale,
        )
    assert run.id != dead.id and run.status == "requested"
    assert same.id == live.id  # a run that still beats is shown, not duplicated
    results = run_worker.execute_pending(demo_engine, settings, attach_test_cards=True)
    assert [r.status for r in results] == ["succeeded"]
    with Session(demo_engine) as s:
        old = s.get(InvoiceRun, dead.id)
    assert old is not None and old.status == "failed"
    assert "no heartbeat" in old.errors[-1]["message"]
    assert_billed_exactly_once(demo_engine, server)


# ---------------------------------------------------------------------------------- CLI


def _cli(monkeypatch: pytest.MonkeyPatch, env: dict[str, str], *args: str) -> int:
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    return main(list(args))


def test_cli_exit_codes(
    demo_db_url: str, server: StripeTestServer, monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    env = _env(demo_db_url, server)
    assert _cli(monkeypatch, env, "invoice-run", "--period", "2099-01") == 2
    assert "not closed yet" in capsys.readouterr().err
    assert _cli(monkeypatch, env, "invoice-run", "--period", "2026-10", "--dry-run") == 0
    out = capsys.readouterr().out
    assert "9 drafts (nothing saved)" in out and "total: EUR" in out
    # Charges fail without cards (exit 1); with test cards on a fresh period... a rerun is 0.
    assert _cli(monkeypatch, env, "invoice-run", "--period", "2026-10") == 1
    assert "no default payment method" in capsys.readouterr().out
    monkeypatch.delenv("STRIPE_API_BASE")
    monkeypatch.delenv("STRIPE_API_KEY")
    assert _cli(monkeypatch, {}, "invoice-run", "--period", "2026-09") == 2


def test_cli_set_rate_and_demo_cards(
    demo_db_url: str, server: StripeTestServer, monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    env = _env(demo_db_url, server)
    code = _cli(
        monkeypatch,
        env,
        "set-rate",
        "--period",
        "2026-10",
        "--currency",
        "eur",
        "--rate",
        "0.9313",
        "--source",
        "ECB 2026-10-31",
    )
    assert code == 0 and "1 USD = 0.9313 EUR (ECB 2026-10-31)" in capsys.readouterr().out
    assert (
        _cli(
            monkeypatch,
            env,
            "set-rate",
            "--period",
            "2026-10",
            "--currency",
            "EUR",
            "--rate",
            "-1",
            "--source",
            "x",
        )
        == 2
    )
    # The demo world's last closed month (seeded at DEMO_NOW), whatever today's date is.
    code = _cli(
        monkeypatch,
        env,
        "invoice-run",
        "--period",
        "2026-10",
        "--demo-attach-test-cards",
        "--trigger",
        "cron",
    )
    assert code == 0, capsys.readouterr()
    out = capsys.readouterr().out
    assert "9 pushed, 0 failed" in out


def test_demo_cards_refused_against_a_live_stripe(db_url: str) -> None:
    live = load_settings(
        {"DATABASE_URL": db_url, "STRIPE_API_KEY": "sk_live_x"}, secrets_path=Path("/nonexistent")
    )
    assert not invoicing_runs.test_cards_allowed(live)
    assert stripe_client.requests_per_second(live) == stripe_client.DEFAULT_RPS_LIVE
    test = load_settings({"STRIPE_API_KEY": "sk_test_x"}, secrets_path=Path("/nonexistent"))
    assert stripe_client.requests_per_second(test) == stripe_client.DEFAULT_RPS_TEST


def test_push_concurrency_keeps_the_rate_limit_busy_unless_set(db_url: str) -> None:
    def settings(**env: str) -> Settings:
        return load_settings(
            {"DATABASE_URL": db_url, **env}, secrets_path=Path("/nonexistent/secrets.toml")
        )

    # rate x 0.3 s calls in flight: 80/s live -> 24, 20/s test -> 6, within 4 to 32
    assert stripe_client.concurrency(settings(STRIPE_API_KEY="sk_live_x")) == 24
    assert stripe_client.concurrency(settings(STRIPE_API_KEY="sk_test_x")) == 6
    fast = settings(STRIPE_API_KEY="sk_test_x", STRIPE_REQUESTS_PER_SECOND="1000")
    assert stripe_client.concurrency(fast) == 32
    slow = settings(STRIPE_API_KEY="sk_test_x", STRIPE_REQUESTS_PER_SECOND="2")
    assert stripe_client.concurrency(slow) == 4
    pinned = settings(STRIPE_API_KEY="sk_live_x", STRIPE_CONCURRENCY="3")
    assert stripe_client.concurrency(pinned) == 3
