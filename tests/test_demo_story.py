"""The demo's whole month offline: what `make run` starts, then preview, run, pay, sync, reconcile.

Every process runs with a `sitecustomize` that refuses (and records) any connection or name
lookup outside the loopback interface, so the story provably needs no internet.
"""

from __future__ import annotations

import os
import subprocess
import sys
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlmodel import Session, col, select

from billing_core.config import load_settings
from billing_core.db import make_engine
from billing_core.demo import serve
from billing_core.errors import ConfigError
from billing_core.models import AuditEntry, Invoice
from billing_core.periods import previous_period, utcnow
from tests.conftest import ROOT

_GUARD = """
import ipaddress, os, socket

_LOG = os.environ["OFFLINE_GUARD_LOG"]


def _note(what):
    with open(_LOG, "a", encoding="utf-8") as f:
        f.write(what + "\\n")


def _local(host):
    if host in ("localhost", "", None):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


_connect, _connect_ex = socket.socket.connect, socket.socket.connect_ex
_getaddrinfo = socket.getaddrinfo


def connect(self, address):
    if self.family in (socket.AF_INET, socket.AF_INET6) and not _local(address[0]):
        _note(f"connect {address!r}")
        raise OSError("offline test: no internet")
    return _connect(self, address)


def connect_ex(self, address):
    if self.family in (socket.AF_INET, socket.AF_INET6) and not _local(address[0]):
        _note(f"connect {address!r}")
        return 101
    return _connect_ex(self, address)


def getaddrinfo(host, *args, **kwargs):
    name = host.decode() if isinstance(host, bytes) else host
    if not _local(name):
        _note(f"lookup {name!r}")
        raise socket.gaierror("offline test: no internet")
    return _getaddrinfo(host, *args, **kwargs)


socket.socket.connect, socket.socket.connect_ex = connect, connect_ex
socket.getaddrinfo = getaddrinfo
"""


@pytest.fixture
def offline_env(tmp_path: Path) -> dict[str, str]:
    """The environment of a fresh clone: no credentials, a demo database, no internet."""
    guard_dir = tmp_path / "guard"
    guard_dir.mkdir()
    (guard_dir / "sitecustomize.py").write_text(_GUARD, encoding="utf-8")
    keep = {k: v for k, v in os.environ.items() if k in ("PATH", "HOME", "LANG", "VIRTUAL_ENV")}
    return {
        **keep,
        "PYTHONPATH": os.pathsep.join([str(guard_dir), str(ROOT)]),
        "OFFLINE_GUARD_LOG": str(tmp_path / "internet.log"),
        "DATABASE_URL": f"sqlite:///{tmp_path / 'demo.db'}",
        "BILLING_SECRETS_FILE": str(tmp_path / "none.toml"),
    }


@pytest.fixture
def local_stripe(offline_env: dict[str, str]) -> Iterator[serve.LocalStripe]:
    assert serve.seed(offline_env)  # what `make run` does first
    state = serve.state_file_for(offline_env["DATABASE_URL"])
    stripe = serve.start_local_stripe(state, port=0, cwd=ROOT, env=offline_env)
    try:
        yield stripe
    finally:
        stripe.stop()


def _cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "billing_core", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
    )


def _invoices(url: str, period: str) -> list[Invoice]:
    with Session(make_engine(url)) as s:
        return list(s.exec(select(Invoice).where(Invoice.period == period)).all())


def _pay_on_hosted_page(hosted_url: str) -> str:
    """What a send_invoice customer does: open the invoice link and pay with a test card."""
    data = urllib.parse.urlencode({"card": "pm_card_visa"}).encode()
    with urllib.request.urlopen(urllib.request.Request(hosted_url, data=data)) as resp:
        return str(resp.read().decode())


def test_guard_blocks_the_internet(offline_env: dict[str, str]) -> None:
    out = subprocess.run(
        [sys.executable, "-c", "import socket; socket.create_connection(('192.0.2.1', 443), 1)"],
        env=offline_env,
        capture_output=True,
        text=True,
    )
    assert out.returncode != 0
    assert "192.0.2.1" in Path(offline_env["OFFLINE_GUARD_LOG"]).read_text()


def test_the_last_closed_month_end_to_end_offline(
    offline_env: dict[str, str], local_stripe: serve.LocalStripe
) -> None:
    env = serve.demo_environ(offline_env, local_stripe.url)
    settings = load_settings(env)
    assert settings.mode == "demo" and settings.stripe_api_base == local_stripe.url
    period = str(previous_period(utcnow()))
    db = offline_env["DATABASE_URL"]
    assert _invoices(db, period) == []  # the story starts with the month still to invoice

    preview = _cli(env, "invoice-run", "--dry-run")
    assert preview.returncode == 0, preview.stdout + preview.stderr
    assert f"{period}: 9 drafts (nothing saved)" in preview.stdout

    run = _cli(env, "invoice-run", "--demo-attach-test-cards")
    assert run.returncode == 0, run.stdout + run.stderr
    assert "9 pushed, 0 failed" in run.stdout
    invoices = _invoices(db, period)
    assert len(invoices) == 9
    assert all(i.hosted_invoice_url.startswith(local_stripe.url) for i in invoices)
    # Card customers were charged during the run; bank-transfer customers got an open invoice.
    open_ = [i for i in invoices if i.status == "open"]
    assert {i.collection_method for i in open_} == {"send_invoice"} and len(open_) == 2

    first, second = open_
    assert "id='status'>paid<" in _pay_on_hosted_page(first.hosted_invoice_url)
    assert {i.status for i in _invoices(db, period) if i.id == first.id} == {"open"}  # unsynced
    sync = _cli(env, "sync")  # by hand
    assert sync.returncode == 0, sync.stdout + sync.stderr
    assert {i.status for i in _invoices(db, period) if i.id == first.id} == {"paid"}

    assert "id='status'>paid<" in _pay_on_hosted_page(second.hosted_invoice_url)
    assert serve.DemoCron(env).tick() > 0  # what the launcher runs every few seconds
    invoices = _invoices(db, period)
    assert {i.status for i in invoices} == {"paid"}
    assert all(i.amount_paid_minor == i.total_minor for i in invoices)

    rec = _cli(env, "reconcile", "--period", period)
    assert rec.returncode == 0, rec.stdout + rec.stderr
    assert "open diffs above tolerance: 0" in rec.stdout

    with Session(make_engine(db)) as s:
        actions = set(
            s.exec(select(AuditEntry.action).where(col(AuditEntry.actor) != "demo")).all()
        )
    assert len(actions) >= 3  # the run, the sync and the reconciliation are each audited

    # Restarting `make run` keeps the local Stripe's objects: still nothing to reconcile.
    local_stripe.stop()
    again = serve.start_local_stripe(serve.state_file_for(db), port=0, cwd=ROOT, env=offline_env)
    try:
        env = serve.demo_environ(offline_env, again.url)
        rec = _cli(env, "reconcile", "--period", period)
        assert rec.returncode == 0, rec.stdout + rec.stderr
        assert "open diffs above tolerance: 0" in rec.stdout
    finally:
        again.stop()

    log = Path(offline_env["OFFLINE_GUARD_LOG"])
    assert not log.exists(), log.read_text()


def test_demo_mode_still_refuses_a_stripe_that_is_not_local(tmp_path: Path) -> None:
    env = serve.demo_environ({"BILLING_SECRETS_FILE": str(tmp_path / "x.toml")}, "")
    env["STRIPE_API_BASE"] = "https://api.stripe.com"
    with pytest.raises(ConfigError, match="local Stripe test server"):
        load_settings(env)


def test_local_stripe_state_sits_beside_the_demo_database(tmp_path: Path) -> None:
    assert serve.state_file_for(f"sqlite:///{tmp_path / 'demo.db'}") == tmp_path / (
        "demo-stripe.json"
    )
    assert serve.state_file_for("postgresql://u@h/db") == Path("data/demo-stripe.json")


def test_demo_run_history_and_audit_log_tell_twelve_months(session: Session) -> None:
    from billing_core.demo import seed_demo
    from billing_core.invoicing.run_worker import run_history
    from billing_core.models import InvoiceRun, ReconciliationRun
    from billing_core.reconciliation.runs import latest_run
    from tests.conftest import DEMO_NOW

    assert seed_demo(session, now=DEMO_NOW, with_activity=True).seeded  # what `make run` seeds
    demo_session = session

    runs = demo_session.exec(select(InvoiceRun)).all()
    assert len({r.period for r in runs}) == 12 and len(runs) == 13
    assert sorted(r.status for r in runs).count("partial") == 1
    invoices = demo_session.exec(select(Invoice)).all()
    for period in {r.period for r in runs}:
        of_month = [i for i in invoices if i.period == period]
        done = sum(r.done_count for r in runs if r.period == period)
        assert done == len(of_month)  # the re-run billed what the partial run left
    finishes = demo_session.exec(
        select(AuditEntry).where(AuditEntry.action == "invoice_run.finish")
    ).all()
    billed: dict[str, int] = {}
    for entry in finishes:
        for cur, minor in (entry.after or {})["billed_minor"].items():
            billed[cur] = billed.get(cur, 0) + minor
    expected: dict[str, int] = {}
    for inv in invoices:
        expected[inv.currency] = expected.get(inv.currency, 0) + inv.total_minor
    assert billed == expected  # the audit log agrees with the invoices to the cent
    actions = set(demo_session.exec(select(AuditEntry.action)).all())
    assert {
        "invoice_run.start",
        "invoice_run.finish",
        "invoice_run.request",
        "stripe.sync",
        "reconcile.run",
    } <= actions
    times = demo_session.exec(select(AuditEntry.at).order_by(col(AuditEntry.id))).all()
    assert list(times) == sorted(times)  # the log reads in time order
    assert len(demo_session.exec(select(ReconciliationRun)).all()) == 12
    newest = latest_run(demo_session)
    assert newest is not None and newest.actor == "demo"  # the one with findings stays newest
    assert len(run_history(demo_session)) >= 13


def _answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2):
            return True
    except OSError:
        return False


def test_make_run_starts_dashboard_local_stripe_and_stops_both(
    offline_env: dict[str, str], tmp_path: Path
) -> None:
    import signal
    import socket
    import time

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    out = (tmp_path / "serve.log").open("w+")
    launcher = subprocess.Popen(
        [sys.executable, "-m", "billing_core.demo.serve", "--port", str(port), "--sync-every", "1"],
        cwd=ROOT,
        env=offline_env,
        stdout=out,
        stderr=subprocess.STDOUT,
        text=True,
    )
    dashboard = f"http://127.0.0.1:{port}/_stcore/health"
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and not _answers(dashboard):
            assert launcher.poll() is None, Path(out.name).read_text()
            time.sleep(0.5)
        log = Path(out.name).read_text()
        assert _answers(dashboard), log
        assert "Demo data seeded" in log and "invoice runs" in log
        stripe_url = log.split("Demo: local Stripe at ", 1)[1].split(" ", 1)[0]
        assert stripe_url.startswith("http://127.0.0.1:") and _answers(stripe_url + "/")
    finally:
        launcher.send_signal(signal.SIGTERM)
        launcher.wait(timeout=60)
    assert not _answers(dashboard) and not _answers(stripe_url + "/")  # both stopped with it
    assert serve.state_file_for(offline_env["DATABASE_URL"]).exists()
    log_file = Path(offline_env["OFFLINE_GUARD_LOG"])
    assert not log_file.exists(), log_file.read_text()


def test_a_damaged_local_stripe_state_file_is_named_with_what_to_do(
    offline_env: dict[str, str], tmp_path: Path
) -> None:
    state = tmp_path / "demo-stripe.json"
    state.write_text("{not json", encoding="utf-8")
    with pytest.raises(RuntimeError, match=r"delete .*demo-stripe\.json"):
        serve.start_local_stripe(state, port=0, cwd=ROOT, env=offline_env)
    assert state.read_text(encoding="utf-8") == "{not json"  # nothing overwritten


def test_a_demo_database_whose_local_stripe_is_gone_is_pointed_out(
    offline_env: dict[str, str], tmp_path: Path
) -> None:
    from billing_core.db import session_scope

    url = offline_env["DATABASE_URL"]
    assert serve.seed(offline_env)
    state = serve.state_file_for(url)
    assert serve.pushed_without_state(url, state) is None  # nothing pushed yet
    engine = make_engine(url)
    with session_scope(engine) as s:
        invoice = s.exec(select(Invoice)).first()
        assert invoice is not None
        invoice.stripe_invoice_id = "in_gone"
        s.add(invoice)
    engine.dispose()
    warning = serve.pushed_without_state(url, state)
    assert warning is not None and "make clean" in warning and "1 invoice(s)" in warning
    state.write_text("{}", encoding="utf-8")
    assert serve.pushed_without_state(url, state) is None
