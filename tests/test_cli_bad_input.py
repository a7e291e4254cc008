"""Bad input to every command: one sentence, the documented exit code, and nothing written.

One table for the whole command line. Every command has at least one row (a test fails when a
new command joins the CLI without one), and each row checks what the README promises: exit 2
for bad usage or configuration, the reason in words, no traceback, and every table of the
database exactly as it was.
"""

from __future__ import annotations

import resource
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from sqlalchemy import MetaData, func, select
from sqlalchemy.engine import Engine

from billing_core.cli import cli, main
from billing_core.db import make_engine, session_scope
from billing_core.demo.guard import mark_demo
from billing_core.periods import utcnow
from tests.conftest import DB_BACKEND, ROOT

MEMORY_CAP = 2 * 1024**3

CUSTOMERS_HEADER = "name,email,currency,plan,aws_account_ids,cost_tag_value,stripe_customer_id\n"
USAGE_HEADER = "customer,metric,quantity,timestamp\n"
SRC = ["--source", "ECB 2026-10-31"]


def _file(name: str, content: bytes | str) -> Callable[[Path], str]:
    def make(tmp: Path) -> str:
        path = tmp / name
        path.write_bytes(content.encode() if isinstance(content, str) else content)
        return str(path)

    return make


def _sparse(name: str, size: int) -> Callable[[Path], str]:
    def make(tmp: Path) -> str:
        path = tmp / name
        with path.open("wb") as handle:
            handle.truncate(size)
        return str(path)

    return make


def _same(name: str) -> Callable[[Path], str]:
    return lambda tmp: str(tmp / name)


@dataclass
class Case:
    """`args` items may be callables that make a file in tmp_path and return its path."""

    id: str
    args: list[str | Callable[[Path], str]]
    message: str
    exit_code: int = 2
    env: dict[str, str] = field(default_factory=dict)
    # Run in a child process with a memory cap: a regression (reading /dev/zero whole) must
    # fail this test, not take the test runner down with it.
    isolated: bool = False


CASES = [
    Case("customers-missing-file", ["import-customers", "/no/such/file.csv"], "does not exist"),
    Case(
        "customers-device", ["import-customers", "/dev/zero"], "not a regular file", isolated=True
    ),
    Case(
        "customers-over-the-cap",
        ["import-customers", _sparse("huge.csv", 11 * 1024 * 1024)],
        "larger than 10 MiB",
    ),
    Case("customers-empty", ["import-customers", _file("empty.csv", "")], "empty"),
    Case("customers-nul", ["import-customers", _file("nul.csv", b"name\0,email\n")], "NUL"),
    Case(
        "customers-same-stripe-id-twice",
        [
            "import-customers",
            _file(
                "dupe.csv",
                CUSTOMERS_HEADER
                + "A,a@new.example,EUR,indie,,,cus_same\n"
                + "B,b@new.example,EUR,indie,,,cus_same\n",
            ),
        ],
        "stripe_customer_id cus_same already on line 2",
    ),
    Case(
        "customers-stripe-id-of-another-customer",
        [
            "import-customers",
            _file(
                "taken.csv",
                CUSTOMERS_HEADER + "A,a@new.example,EUR,indie,,,cus_demo_taken\n",
            ),
        ],
        "belongs to another customer",
    ),
    Case("usage-device", ["import-usage", "/dev/zero"], "regular file", isolated=True),
    Case("usage-empty", ["import-usage", _file("empty.csv", "")], "empty"),
    Case(
        "usage-unknown-customer",
        [
            "import-usage",
            _file("u.csv", USAGE_HEADER + "nobody@x.example,api_calls,1,2026-10-01\n"),
        ],
        "line 2",
    ),
    Case(
        "export-same-file-twice",
        ["export-invoices", "--out", _same("x.csv"), "--lines-out", _same("x.csv")],
        "both name",
    ),
    Case(
        "export-unknown-status",
        ["export-invoices", "--out", _same("x.csv"), "--status", "bogus"],
        "Unknown status",
    ),
    Case(
        "export-period-and-range",
        ["export-invoices", "--out", _same("x.csv"), "--period", "2026-10", "--from", "2026-09"],
        "not both",
    ),
    Case("invoice-run-bad-period", ["invoice-run", "--period", "October"], "YYYY-MM"),
    Case("invoice-run-far-future", ["invoice-run", "--period", "2999-01"], "out of range"),
    Case("invoice-run-open-month", ["invoice-run", "--period", "2099-01"], "not closed yet"),
    Case("fetch-costs-bad-period", ["fetch-costs", "--period", "2026-13"], "Month must be 1 to 12"),
    Case("costs-report-bad-grouping", ["costs-report", "--by", "planet"], "planet"),
    Case("reconcile-bad-tolerance", ["reconcile", "--tolerance", "lots"], "--tolerance"),
    Case("check-alerts-bad-period", ["check-alerts", "--period", "26-10"], "YYYY-MM"),
    Case("set-rate-missing-options", ["set-rate", "--period", "2026-10"], "Missing option"),
    Case(
        "set-rate-absurd",
        ["set-rate", "--period", "2026-10", "--currency", "EUR", "--rate", "1e308", *SRC],
        "out of range",
    ),
    Case(
        "set-rate-zero",
        ["set-rate", "--period", "2026-10", "--currency", "EUR", "--rate", "0", *SRC],
        "must be positive",
    ),
    Case(
        "set-rate-negative",
        ["set-rate", "--period", "2026-10", "--currency", "EUR", "--rate", "-0.92", *SRC],
        "must be positive",
    ),
    Case(
        "set-rate-not-a-number",
        ["set-rate", "--period", "2026-10", "--currency", "EUR", "--rate", "abc", *SRC],
        "is not a number",
    ),
    Case(
        "set-rate-not-finite",
        ["set-rate", "--period", "2026-10", "--currency", "EUR", "--rate", "NaN", *SRC],
        "is not a number",
    ),
    Case(
        "set-rate-too-many-decimals",
        ["set-rate", "--period", "2026-10", "--currency", "EUR", "--rate", "0.921300000001", *SRC],
        "more than 10 decimals",
    ),
    Case(
        "set-rate-unknown-currency",
        ["set-rate", "--period", "2026-10", "--currency", "XYZ", "--rate", "0.92", *SRC],
        "Unknown currency",
    ),
    Case(
        "set-rate-usd",
        ["set-rate", "--period", "2026-10", "--currency", "USD", "--rate", "1", *SRC],
        "USD needs no exchange rate",
    ),
    Case(
        "set-rate-bad-period",
        ["set-rate", "--period", "Oct-2026", "--currency", "EUR", "--rate", "0.92", *SRC],
        "YYYY-MM",
    ),
    Case(
        "set-rate-no-source",
        ["set-rate", "--period", "2026-10", "--currency", "EUR", "--rate", "0.92", "--source", " "],
        "Say where the rate comes from",
    ),
    Case("sync-without-stripe", ["sync"], "STRIPE_API_KEY"),
    Case("relink-customer-no-way", ["relink-customer", "--customer", "1"], "--recreate or"),
    Case(
        "relink-customer-both-ways",
        ["relink-customer", "--customer", "1", "--recreate", "--stripe-id", "cus_x"],
        "not both",
    ),
    Case(
        "relink-customer-without-stripe",
        ["relink-customer", "--customer", "1", "--recreate"],
        "STRIPE_API_KEY",
    ),
    Case("webhook-server-bad-port", ["webhook-server", "--port", "70000"], "70000"),
    Case("seed-demo-in-live-mode", ["seed-demo"], "live mode", env={"BILLING_MODE": "live"}),
    Case(
        "show-settings-bad-setting",
        ["show-settings"],
        "STRIPE_CONCURRENCY",
        env={"STRIPE_CONCURRENCY": "lots"},
    ),
    Case(
        "db-upgrade-bad-url", ["db-upgrade"], "not a valid database URL", env={"DATABASE_URL": "x"}
    ),
    Case("unknown-command", ["no-such-command"], "No such command"),
    # The demo world is never live books (issue 13, item 2).
    Case(
        "live-fetch-on-demo-data",
        ["fetch-costs"],
        "holds the demo world",
        env={"BILLING_MODE": "live"},
    ),
    Case(
        "live-run-on-demo-data",
        ["invoice-run", "--period", "2026-10"],
        "holds the demo world",
        env={"BILLING_MODE": "live"},
    ),
    Case("collections-without-stripe", ["collections"], "STRIPE_API_KEY"),
    Case(
        "collections-unsound-policy",
        ["collections", "--dry-run"],
        "must come after the due date",
        env={"COLLECTIONS_FINAL_NOTICE_DAY": "0"},
    ),
    Case(
        "collections-policy-not-numbers",
        ["collections"],
        "COLLECTIONS_REMINDER_DAYS",
        env={"COLLECTIONS_REMINDER_DAYS": "monday"},
    ),
    Case(
        "credit-note-says-nothing-to-credit",
        ["credit-note", "--invoice", "X-0001", "--reason", "duplicate"],
        "Say what to credit",
    ),
    Case(
        "credit-note-two-ways",
        ["credit-note", "--invoice", "X-0001", "--full", "--amount", "1", "--reason", "duplicate"],
        "one of them",
    ),
    Case(
        "credit-note-unknown-reason",
        ["credit-note", "--invoice", "X-0001", "--full", "--reason", "because"],
        "because",
    ),
    Case(
        "credit-note-without-stripe",
        ["credit-note", "--invoice", "X-0001", "--full", "--reason", "duplicate"],
        "STRIPE_API_KEY",
    ),
    Case("void-invoice-without-reason", ["void-invoice", "--invoice", "X-0001"], "--reason"),
    Case("void-credit-note-without-number", ["void-credit-note", "--yes"], "NUMBER_OR_ID"),
    Case(
        "void-credit-note-unknown",
        ["void-credit-note", "X-0001-CN-01", "--yes"],
        "There is no credit note 'X-0001-CN-01'",
    ),
    Case(
        "resolve-diff-unknown",
        ["resolve-diff", "--diff", "999999", "--action", "accept", "--note", "x"],
        "does not exist",
    ),
    Case(
        "void-invoice-without-stripe",
        ["void-invoice", "--invoice", "X-0001", "--reason", "typo"],
        "STRIPE_API_KEY",
    ),
    # Plans as code (issue 17): a bad file changes nothing and names each problem and where.
    Case(
        "plans-file-with-problems",
        [
            "import-plans",
            _file(
                "plans.yaml",
                "plans:\n  - name: studio\n    currency: EUR\n    markup: 10\n"
                "    metrics:\n      - {metric: api_calls, model: graduated}\n",
            ),
        ],
        "plans[1] (studio): unknown key(s) markup",
    ),
    Case("plans-file-not-yaml", ["import-plans", _file("p.yaml", "plans: [\n")], "not valid YAML"),
    Case(
        "export-plans-to-a-folder",
        ["export-plans", "--out", _same("")],
        "is a directory",
        exit_code=2,
    ),
    # --- margin ---
    Case("margin-bad-period", ["margin-report", "--period", "2026-13"], "Month must be 1 to 12"),
    Case(
        "margin-period-and-range",
        ["margin-report", "--period", "2026-09", "--from", "2026-08"],
        "either --period or --from/--to",
    ),
    Case(
        "margin-reversed-range",
        ["margin-report", "--from", "2026-09", "--to", "2026-07"],
        "--from 2026-09 is after --to 2026-07",
    ),
    Case(
        "margin-range-too-long",
        ["margin-report", "--from", "2001-01", "--to", "2026-09"],
        "at most 120",
    ),
    Case("margin-bad-grouping", ["margin-report", "--by", "planet"], "planet"),
]
if DB_BACKEND == "sqlite":
    CASES.append(
        Case(
            "live-database-in-a-missing-folder",
            ["db-upgrade"],
            "does not exist",
            env={"BILLING_MODE": "live", "DATABASE_URL": "sqlite:///{tmp}/no/such/folder/b.db"},
        )
    )


def _row_counts(engine: Engine) -> dict[str, int]:
    meta = MetaData()
    meta.reflect(engine)
    with engine.connect() as conn:
        return {
            name: int(conn.execute(select(func.count()).select_from(table)).scalar_one())
            for name, table in meta.tables.items()
        }


def _run_capped(args: list[str]) -> tuple[int, str]:
    def cap_memory() -> None:
        resource.setrlimit(resource.RLIMIT_AS, (MEMORY_CAP, MEMORY_CAP))

    done = subprocess.run(
        [sys.executable, "-m", "billing_core", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        preexec_fn=cap_memory,
        check=False,
    )
    return done.returncode, done.stderr


def test_every_command_has_a_bad_input_row() -> None:
    covered = {str(case.args[0]) for case in CASES}
    assert set(cli.commands) - covered == set()


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_input_gets_a_sentence_and_changes_nothing(
    case: Case,
    demo_db_url: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    for var in ("STRIPE_API_KEY", "STRIPE_API_BASE", "AWS_ACCESS_KEY_ID", "AWS_PROFILE"):
        monkeypatch.delenv(var, raising=False)
    env = {
        "DATABASE_URL": demo_db_url,
        "BILLING_MODE": "demo",
        "BILLING_SECRETS_FILE": str(tmp_path / "no-secrets.toml"),
        **{k: v.format(tmp=tmp_path) for k, v in case.env.items()},
    }
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    engine = make_engine(demo_db_url)
    if case.id == "customers-stripe-id-of-another-customer":
        with engine.begin() as conn:
            conn.exec_driver_sql(
                "UPDATE customer SET stripe_customer_id = 'cus_demo_taken' "
                "WHERE id = (SELECT MIN(id) FROM customer)"
            )
    if "on-demo-data" in case.id:
        with session_scope(engine) as session:  # as `make run` leaves it
            mark_demo(session, utcnow())
    before = _row_counts(engine)
    args = [a(tmp_path) if callable(a) else a for a in case.args]

    if case.isolated:
        code, err = _run_capped(args)
    else:
        code = main(args)
        err = capsys.readouterr().err
    assert code == case.exit_code, err
    assert case.message in err, err
    assert "Traceback" not in err and "unexpected" not in err, err
    assert _row_counts(engine) == before
    engine.dispose()
    assert not (tmp_path / "x.csv").exists()
    assert not (tmp_path / "no").exists()
