"""Shared drill set-up: a Stripe server per drill, CLI subprocesses, invoice runs, the ledger
check (duplicates, missing, orphans) and the final "billed once" check, a report.

A drill breaks something on purpose (SIGKILL, a locked database, a Stripe outage, throttling, a
webhook flood), then checks the outcome on the real records: the local database against the
local Stripe server's state. Each drill prints one `tried:` and one `found:` line per scenario
to the terminal (even when pytest captures output), so `make test` shows what was exercised.

`DRILL_SEEDS` raises the number of random seeds of the seeded drills for a long soak, e.g.
`DRILL_SEEDS=200 python -m pytest tests/drills`.
"""

from __future__ import annotations

import os
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import update
from sqlalchemy.engine import Engine, make_url
from sqlmodel import Session, select

from billing_core.config import load_settings
from billing_core.invoicing import runs
from billing_core.models import Customer, Invoice, InvoiceLine, InvoiceRun, RunLock
from billing_core.periods import previous_period
from tests.conftest import DEMO_NOW, ROOT
from tests.support.stripe_server import StripeTestServer
from tests.test_invoicing import assert_billed_exactly_once

# The demo world is seeded at DEMO_NOW, so its last closed month is the one a run bills.
PERIOD = previous_period(DEMO_NOW)
KEY = "sk_test_drills"
DONE_STEPS = ("paid", "sent")
# The CLI invoice run every invoicing drill breaks: the demo month, with Stripe test cards.
INVOICE_RUN = ("invoice-run", "--period", str(PERIOD), "--demo-attach-test-cards")


def drill_seeds(default: int) -> list[int]:
    """Seeds of a seeded drill: `default` of them, or DRILL_SEEDS for a longer soak."""
    return list(range(int(os.environ.get("DRILL_SEEDS", str(default)))))


# ---------------------------------------------------------------------------------- report


class DrillReport:
    """Prints `drill <name>: tried ...` / `found ...` lines straight to the terminal."""

    def __init__(self, name: str, capsys: pytest.CaptureFixture[str]) -> None:
        self.name = name
        self._capsys = capsys
        self.lines: list[str] = []

    def __call__(self, kind: str, text: str) -> None:
        line = f"drill {self.name}: {kind} {text}"
        self.lines.append(line)
        with self._capsys.disabled():
            sys.stdout.write(f"\n{line}")
            sys.stdout.flush()

    def tried(self, text: str) -> None:
        self("tried:", text)

    def found(self, text: str) -> None:
        self("found:", text)


@pytest.fixture
def drill_report(request: pytest.FixtureRequest, capsys: pytest.CaptureFixture[str]) -> DrillReport:
    name = request.node.name.removeprefix("test_drill_")
    return DrillReport(name, capsys)


# ---------------------------------------------------------------------------------- Stripe


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def stripe_server() -> Iterator[StripeTestServer]:
    """A fresh Stripe server on a fixed port, so a drill can stop it and start it again."""
    srv = StripeTestServer(port=free_port())
    srv.start()
    try:
        yield srv
    finally:
        srv.stop()


# ---------------------------------------------------------------------------------- CLI


def cli_env(db_url: str, server: StripeTestServer, **extra: str) -> dict[str, str]:
    """The environment of a CLI subprocess: this database, this Stripe server, no secrets file."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("STRIPE_", "AWS_"))}
    env.update(
        {
            "DATABASE_URL": db_url,
            "BILLING_MODE": "live",
            "STRIPE_API_BASE": server.url,
            "STRIPE_API_KEY": KEY,
            "STRIPE_REQUESTS_PER_SECOND": "1000",
            "BILLING_SECRETS_FILE": "/nonexistent/secrets.toml",
            "PYTHONUNBUFFERED": "1",
        }
    )
    env.update(extra)
    return env


@dataclass
class CliRun:
    """A `python -m billing_core` subprocess with its output in files (no pipe can fill up)."""

    args: tuple[str, ...]
    proc: subprocess.Popen[bytes]
    out_path: Path
    err_path: Path
    started: float = field(default_factory=time.monotonic)
    ended: float | None = None
    killed: bool = False

    def alive(self) -> bool:
        if self.proc.poll() is None:
            return True
        self._ended()
        return False

    def kill(self) -> None:
        """SIGKILL the whole process group: no cleanup, no finally blocks, as a crash."""
        if self.alive():
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.killed = True
        self.proc.wait(timeout=10)
        self._ended()

    def _ended(self) -> None:
        if self.ended is None:
            self.ended = time.monotonic()

    def wait(self, timeout: float = 60) -> int:
        try:
            code = self.proc.wait(timeout=timeout)
            self._ended()
            return code
        except subprocess.TimeoutExpired:
            self.kill()
            raise AssertionError(
                f"{' '.join(self.args)} did not finish in {timeout} s:\n{self.output()}"
            ) from None

    @property
    def code(self) -> int | None:
        return self.proc.returncode

    @property
    def seconds(self) -> float:
        """How long it ran (so far, if still running)."""
        return (self.ended or time.monotonic()) - self.started

    @property
    def stdout(self) -> str:
        return self.out_path.read_text(errors="replace")

    @property
    def stderr(self) -> str:
        return self.err_path.read_text(errors="replace")

    def output(self) -> str:
        return f"--- stdout\n{self.stdout[-3000:]}\n--- stderr\n{self.stderr[-3000:]}"


class Cli:
    """Starts CLI subprocesses with a given environment; numbers their output files."""

    def __init__(self, tmp_path: Path) -> None:
        self.dir = tmp_path / "cli"
        self.dir.mkdir(exist_ok=True)
        self.count = 0

    def start(self, env: dict[str, str], *args: str) -> CliRun:
        self.count += 1
        out = self.dir / f"{self.count}.out"
        err = self.dir / f"{self.count}.err"
        with out.open("wb") as fo, err.open("wb") as fe:
            proc = subprocess.Popen(
                [sys.executable, "-m", "billing_core", *args],
                cwd=ROOT,
                env=env,
                stdout=fo,
                stderr=fe,
                start_new_session=True,  # its own process group, so a kill takes it all
            )
        return CliRun(args, proc, out, err)

    def run(self, env: dict[str, str], *args: str, timeout: float = 60) -> CliRun:
        run = self.start(env, *args)
        run.wait(timeout)
        return run


@pytest.fixture
def cli(tmp_path: Path) -> Cli:
    return Cli(tmp_path)


def wait_until(run: CliRun, ready: Callable[[], bool], *, poll: float = 0.002) -> bool:
    """Poll `ready()` while `run` is alive; True once it holds, False if the run ended first."""
    while run.alive():
        if ready():
            return True
        time.sleep(poll)
    return False


def kill_when(run: CliRun, ready: Callable[[], bool], *, timeout: float = 30) -> bool:
    """SIGKILL `run` the moment `ready()` holds; False if it finished first."""
    deadline = time.monotonic() + timeout
    while run.alive() and time.monotonic() < deadline:
        if ready():
            run.kill()
            return True
        time.sleep(0.003)
    if run.alive():
        run.kill()
        raise AssertionError(f"the kill point was never reached in {timeout} s:\n{run.output()}")
    return False


def requests_seen(server: StripeTestServer, count: int) -> Callable[[], bool]:
    """A kill point: the Stripe server has received `count` requests in all."""
    return lambda: server.request_count() >= count


def delay_after_first_request(
    server: StripeTestServer, base: int, delay: float
) -> Callable[[], bool]:
    """A kill point: `delay` seconds after the first request beyond `base` (between calls)."""
    due: list[float] = []

    def ready() -> bool:
        if not due and server.request_count() > base:
            due.append(time.monotonic() + delay)
        return bool(due) and time.monotonic() >= due[0]

    return ready


def wait_quiet(server: StripeTestServer, quiet: float = 0.25, timeout: float = 10) -> None:
    """Until the server logged no request for `quiet` s: a dead client's last requests are done.

    Expiring idempotency keys stands for a re-run a day later, by when every request the
    killed process had in flight has long been processed; without this wait a request could
    straddle the expiry, which cannot happen in Stripe.
    """
    deadline = time.monotonic() + timeout
    seen = server.request_count()
    calm_since = time.monotonic()
    while time.monotonic() < deadline:
        time.sleep(0.02)
        now_count = server.request_count()
        if now_count != seen:
            seen, calm_since = now_count, time.monotonic()
        elif time.monotonic() - calm_since >= quiet:
            return


def run_in_process(
    engine: Engine, env: dict[str, str], progress: Callable[[str], None] | None = None
) -> runs.RunResult:
    """The demo month's invoice run to completion in this process, as `INVOICE_RUN` would do it
    (the service the CLI calls; saves a start-up); `progress` gets its lines (default: none)."""
    return runs.run_invoices(
        engine,
        load_settings(env),
        runs.RunOptions(PERIOD, attach_test_cards=True),
        now=DEMO_NOW,
        progress=progress or (lambda _line: None),
    )


def run_lock_held(engine: Engine) -> bool:
    """Whether a run lock is left in the database (a dead or stopped run's)."""
    with Session(engine) as s:
        return s.exec(select(RunLock)).first() is not None


def let_time_pass(engine: Engine, seconds: float) -> bool:
    """Age a killed run's heartbeats (its run lock and its run record) by `seconds`, as time
    would; True if a run lock was there."""
    locks = RunLock.__table__  # type: ignore[attr-defined]
    runs = InvoiceRun.__table__  # type: ignore[attr-defined]
    with engine.begin() as conn:
        rows = conn.execute(select(locks.c.name, locks.c.heartbeat_at)).all()
        for name, beat in rows:
            conn.execute(
                update(locks)
                .where(locks.c.name == name)
                .values(heartbeat_at=beat - timedelta(seconds=seconds))
            )
        running = conn.execute(
            select(runs.c.id, runs.c.heartbeat_at).where(runs.c.status == "running")
        ).all()
        for run_id, beat in running:
            if beat is not None:
                conn.execute(
                    update(runs)
                    .where(runs.c.id == run_id)
                    .values(heartbeat_at=beat - timedelta(seconds=seconds))
                )
    return bool(rows)


# ---------------------------------------------------------------------------------- database


def sqlite_path(db_url: str) -> Path:
    database = make_url(db_url).database
    assert database, db_url
    return Path(database)


class WriteLock:
    """Another writer: a plain sqlite3 connection holding `BEGIN EXCLUSIVE` on the file."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.conn: sqlite3.Connection | None = None
        self.held_since = 0.0

    def take(self) -> WriteLock:
        self.conn = sqlite3.connect(self.path, timeout=30, isolation_level=None)
        self.conn.execute("BEGIN EXCLUSIVE")
        self.held_since = time.monotonic()
        return self

    def release(self) -> float:
        """Roll back and close; returns how long the lock was held."""
        if self.conn is None:
            return 0.0
        self.conn.execute("ROLLBACK")
        self.conn.close()
        self.conn = None
        return time.monotonic() - self.held_since


def has_file_open(pid: int, path: Path) -> bool:
    """Whether process `pid` has `path` open (Linux /proc): it got as far as the database."""
    target = str(path.resolve())
    try:
        fds = list(Path(f"/proc/{pid}/fd").iterdir())
    except OSError:
        return False
    for fd in fds:
        try:
            if os.readlink(fd) == target:
                return True
        except OSError:
            continue
    return False


def table_counts(db_url: str) -> dict[str, int]:
    """Rows per table, read with a plain connection (readers pass a writer's lock in WAL)."""
    with sqlite3.connect(sqlite_path(db_url), timeout=30) as conn:
        names = [
            r[0]
            for r in conn.execute(
                "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'"
            )
        ]
        counts = {n: conn.execute(f'SELECT count(*) FROM "{n}"').fetchone()[0] for n in names}
    conn.close()
    return counts


def changed_tables(
    before: dict[str, int], after: dict[str, int]
) -> dict[str, tuple[int, int | None]]:
    """Tables whose row count differs between two `table_counts`: {name: (before, after)}."""
    return {t: (before[t], after.get(t)) for t in before if before[t] != after.get(t)}


# ---------------------------------------------------------------------------------- ledger


@dataclass
class Ledger:
    """Local invoices of a period against the Stripe server's: what is doubled, missing, off."""

    period: str
    customers: int
    local: int
    remote: int
    steps: Counter[str]
    local_duplicates: list[str] = field(default_factory=list)
    missing_local: list[str] = field(default_factory=list)
    stripe_duplicates: list[str] = field(default_factory=list)
    missing_in_stripe: list[str] = field(default_factory=list)
    orphans: list[str] = field(default_factory=list)
    mismatches: list[str] = field(default_factory=list)
    unfinished: list[str] = field(default_factory=list)
    customer_duplicates: list[str] = field(default_factory=list)
    double_charges: list[str] = field(default_factory=list)

    def problems(self) -> list[str]:
        out: list[str] = []
        for label, items in (
            ("customers with several local invoices", self.local_duplicates),
            ("customers without a local invoice", self.missing_local),
            ("local invoices with several Stripe invoices", self.stripe_duplicates),
            ("local invoices missing in Stripe", self.missing_in_stripe),
            ("Stripe invoices without a local invoice", self.orphans),
            ("local and Stripe disagree", self.mismatches),
            ("unfinished pushes", self.unfinished),
            ("customers with several Stripe customers", self.customer_duplicates),
            ("customers charged more than once", self.double_charges),
        ):
            if items:
                out.append(f"{label}: {'; '.join(items)}")
        return out

    @property
    def clean(self) -> bool:
        return not self.problems()

    def summary(self) -> str:
        steps = ", ".join(f"{n} {s}" for s, n in sorted(self.steps.items()))
        return (
            f"{self.local} local / {self.remote} Stripe invoices for {self.customers} customers "
            f"[{steps or 'none'}]; duplicates {len(self.stripe_duplicates)}, missing "
            f"{len(self.missing_in_stripe) + len(self.missing_local)}, orphans "
            f"{len(self.orphans)}, mismatches {len(self.mismatches)}, double charges "
            f"{len(self.double_charges)}"
        )


def compare_ledgers(
    engine: Engine, server: StripeTestServer, period: str = str(PERIOD), *, final: bool = True
) -> Ledger:
    """Compare local records with the Stripe server's. `final`: every push must be done."""
    with Session(engine) as s:
        customers = [c for c in s.exec(select(Customer)).all() if c.active]
        local = list(s.exec(select(Invoice).where(Invoice.period == period)).all())
        lines: dict[int, list[InvoiceLine]] = {}
        for line in s.exec(select(InvoiceLine)).all():
            lines.setdefault(line.invoice_id, []).append(line)
    remote = [i for i in server.invoices() if i["metadata"].get("period") == period]
    ledger = Ledger(
        period, len(customers), len(local), len(remote), Counter(i.push_step for i in local)
    )
    names = {c.id: c.name for c in customers}
    per_customer = Counter(i.customer_id for i in local)
    ledger.local_duplicates = [names.get(c, str(c)) for c, n in per_customer.items() if n > 1]
    ledger.missing_local = [c.name for c in customers if per_customer[c.id] == 0]
    by_local: dict[str, list[dict[str, Any]]] = {}
    for r in remote:
        by_local.setdefault(r["metadata"].get("local_invoice_id", "?"), []).append(r)
    local_ids = {str(i.id) for i in local}
    ledger.orphans = [
        f"{r['id']} (local id {key})"
        for key, rs in by_local.items()
        if key not in local_ids
        for r in rs
    ]
    for inv in local:
        who = f"invoice {inv.id} ({names.get(inv.customer_id, inv.customer_id)})"
        mine = [r for r in by_local.get(str(inv.id), []) if r["status"] != "void"]
        if len(mine) > 1:
            ledger.stripe_duplicates.append(f"{who}: {', '.join(r['id'] for r in mine)}")
        line_sum = sum(line.amount_minor for line in lines.get(inv.id or 0, []))
        if line_sum != inv.total_minor:
            ledger.mismatches.append(f"{who}: lines sum to {line_sum}, total {inv.total_minor}")
        if inv.display_status == "credit":  # a negative total is carried, never sent to Stripe
            continue
        if not mine:
            if final or inv.stripe_invoice_id:
                ledger.missing_in_stripe.append(who)
            continue
        r = mine[0]
        if inv.stripe_invoice_id not in (None, r["id"]):
            ledger.mismatches.append(f"{who}: local id {inv.stripe_invoice_id}, Stripe {r['id']}")
        if r["status"] != "draft" and r["total"] != inv.total_minor:
            ledger.mismatches.append(f"{who}: total {inv.total_minor} here, {r['total']} Stripe")
        if r["currency"] != inv.currency.lower():
            ledger.mismatches.append(f"{who}: currency {inv.currency} here, {r['currency']}")
        in_stripe = server.invoice_line_count(r["id"])
        if r["status"] != "draft" and in_stripe != len(lines.get(inv.id or 0, [])):
            ledger.mismatches.append(
                f"{who}: {len(lines.get(inv.id or 0, []))} lines here, {in_stripe} in Stripe"
            )
        if final:
            if inv.push_step not in DONE_STEPS:
                ledger.unfinished.append(f"{who}: step {inv.push_step}")
            if inv.status != r["status"]:
                ledger.mismatches.append(f"{who}: status {inv.status} here, {r['status']}")
            if inv.stripe_invoice_id != r["id"]:
                ledger.mismatches.append(f"{who}: no Stripe id recorded")
    by_owner = Counter(
        c["metadata"].get("local_customer_id") for c in server.customers() if c.get("metadata")
    )
    ledger.customer_duplicates = [
        names.get(int(k), k) for k, n in by_owner.items() if k and n > 1 and k.isdigit()
    ]
    paid = Counter(c["customer"] for c in server.charges() if c["paid"])
    ledger.double_charges = [f"{cus} ({n} charges)" for cus, n in paid.items() if n > 1]
    return ledger


def assert_nothing_doubled(ledger: Ledger) -> None:
    """What must hold at any moment, even mid-run: no Stripe invoice doubled or without a local
    invoice, no customer doubled in Stripe, nobody charged twice."""
    assert not ledger.stripe_duplicates and not ledger.orphans, ledger.problems()
    assert not ledger.double_charges and not ledger.customer_duplicates, ledger.problems()


def assert_billed_once(
    engine: Engine, server: StripeTestServer, ledger: Ledger | None = None
) -> None:
    """The end of every invoicing drill: the ledger (`compare_ledgers` unless given) is clean,
    and every customer has one local and one Stripe invoice, paid or sent."""
    ledger = ledger or compare_ledgers(engine, server)
    assert ledger.clean, ledger.problems()
    assert_billed_exactly_once(engine, server)


def step_counts(engine: Engine, period: str = str(PERIOD)) -> str:
    """The local push steps of a period, e.g. "2 paid, 1 creating, 6 none" (for reports)."""
    with Session(engine) as s:
        steps = Counter(
            i.push_step for i in s.exec(select(Invoice).where(Invoice.period == period)).all()
        )
    return ", ".join(f"{n} {st}" for st, n in sorted(steps.items())) or "no invoices"
