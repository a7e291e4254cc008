"""Every entry point that moves money or changes billing state writes an audit entry naming its
actor: `cli` for an operator, `cron` for the scheduler (`--trigger cron`), an email for a page.

One row per entry point: what to prepare, what to run, and the (action, actor) entries it must
leave. A new money-moving command or page action joins the table."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from sqlalchemy.engine import Engine
from sqlmodel import Session, col, select
from streamlit.testing.v1 import AppTest

from billing_core.auth import Identity
from billing_core.cli import main
from billing_core.db import make_engine, session_scope
from billing_core.invoicing import run_worker
from billing_core.models import AuditEntry, Customer, Plan, PlanMetric
from billing_core.periods import Period, utcnow
from billing_core.stripe import gateway as gw
from tests.conftest import DEMO_NOW, ROOT
from tests.support.stripe_server import StripeTestServer

P = Period.parse("2026-10")
KEY = "sk_test_audit_entry_points"
BOSS = Identity("boss@acme.example", "admin", "oidc")


@pytest.fixture(scope="module")
def server() -> Iterator[StripeTestServer]:
    with StripeTestServer() as srv:
        yield srv


@pytest.fixture(autouse=True)
def _fresh(server: StripeTestServer, monkeypatch: pytest.MonkeyPatch) -> None:
    server.reset()
    monkeypatch.setattr(gw, "BACKOFF_SECONDS", 0.01)


@dataclass
class Ctx:
    engine: Engine
    tmp: Path
    settings_env: dict[str, str]
    argv: list[str] = field(default_factory=list)


def _cli(*argv: str, codes: tuple[int, ...] = (0,)) -> Callable[[Ctx], None]:
    """Run a command; `codes` are the exit codes it may end with (reconcile: 1 on open diffs)."""

    def run(ctx: Ctx) -> None:
        code = main([*argv, *ctx.argv])
        assert code in codes, f"{argv}: exit {code}"

    return run


def _billed(ctx: Ctx) -> None:
    """Invoices in Stripe (test cards), so sync and reconcile have something to do."""
    assert main(["invoice-run", "--period", str(P), "--demo-attach-test-cards"]) == 0


def _usage_file(ctx: Ctx) -> None:
    with Session(ctx.engine) as s:
        customer, metric = s.exec(
            select(Customer, PlanMetric)
            .join(Plan, col(Plan.id) == col(Customer.plan_id))
            .join(PlanMetric, col(PlanMetric.plan_id) == col(Plan.id))
        ).first()  # type: ignore[misc]
    day = utcnow().date().isoformat()
    path = ctx.tmp / "usage.csv"
    path.write_text(
        f"customer,metric,quantity,timestamp\n{customer.email},{metric.metric},1,{day}\n"
    )
    ctx.argv = [str(path)]


def _customers_file(ctx: Ctx) -> None:
    with Session(ctx.engine) as s:
        plan = s.exec(select(Plan).where(col(Plan.active))).first()
    assert plan is not None
    path = ctx.tmp / "customers.csv"
    path.write_text(
        "name,email,currency,plan,aws_account_ids,cost_tag_value\n"
        f"New Co,new@co.example,USD,{plan.name},101010101010,newco\n"
    )
    ctx.argv = [str(path)]


def _plan_change_due(ctx: Ctx) -> None:
    with session_scope(ctx.engine) as s:
        customer = s.exec(select(Customer).where(col(Customer.plan_id).is_not(None))).first()
        other = s.exec(select(Plan).where(Plan.id != customer.plan_id)).first()  # type: ignore[union-attr]
        assert customer is not None and other is not None
        customer.next_plan_id = other.id
        customer.next_plan_from = str(Period.containing(utcnow()).shift(-3))
        s.add(customer)


def _button(ctx: Ctx) -> None:
    """The Run button: a request recorded by an admin, executed by the page's worker."""
    with session_scope(ctx.engine) as s:
        run = run_worker.request_run(s, identity=BOSS, period=P, now=DEMO_NOW)
    from billing_core.config import load_settings

    settings = load_settings(ctx.settings_env, secrets_path=Path("/nonexistent/secrets.toml"))
    assert run_worker.execute_run(ctx.engine, settings, run.id or 0, attach_test_cards=True)


def _overdue(ctx: Ctx) -> None:
    """Billed, and the send-invoice invoices a week past their due date."""
    from datetime import timedelta

    from billing_core.models import Invoice

    _billed(ctx)
    with session_scope(ctx.engine) as s:
        rows = s.exec(
            select(Invoice).where(
                Invoice.collection_method == "send_invoice",
                Invoice.status == "open",
                col(Invoice.stripe_invoice_id).is_not(None),
            )
        ).all()
        assert rows
        for row in rows:
            row.due_at = utcnow() - timedelta(days=8)
            s.add(row)


def _nothing(ctx: Ctx) -> None:
    return None


def _billed_invoice(status: str) -> Callable[[Ctx], None]:
    """Bill the month, then name one of its invoices in Stripe `status` (paid, open)."""

    def prepare(ctx: Ctx) -> None:
        _billed(ctx)
        from billing_core.models import Invoice

        with Session(ctx.engine) as s:
            invoice = s.exec(
                select(Invoice).where(
                    Invoice.period == str(P),
                    Invoice.status == status,
                    col(Invoice.number).is_not(None),
                )
            ).first()
        assert invoice is not None and invoice.number
        ctx.argv = ["--invoice", invoice.number]

    return prepare


CASES = [
    # id, prepare, run, expected (action, actor) entries
    (
        "invoice-run by an operator",
        _nothing,
        _cli("invoice-run", "--period", str(P), "--demo-attach-test-cards"),
        [("invoice_run.start", "cli"), ("invoice_run.finish", "cli")],
    ),
    (
        "invoice-run from cron",
        _nothing,
        _cli("invoice-run", "--period", str(P), "--demo-attach-test-cards", "--trigger", "cron"),
        [("invoice_run.start", "cron"), ("invoice_run.finish", "cron")],
    ),
    (
        "Run button (worker)",
        _nothing,
        _button,
        [
            ("invoice_run.request", BOSS.actor),
            ("invoice_run.start", BOSS.actor),
            ("invoice_run.finish", BOSS.actor),
        ],
    ),
    (
        "reconcile by an operator",
        _billed,
        _cli("reconcile", "--period", str(P), codes=(0, 1)),
        [("reconcile.run", "cli")],
    ),
    (
        "reconcile from cron",
        _billed,
        _cli("reconcile", "--period", str(P), "--trigger", "cron", codes=(0, 1)),
        [("reconcile.run", "cron")],
    ),
    ("sync from cron", _billed, _cli("sync", "--trigger", "cron"), [("stripe.sync", "cron")]),
    (
        "set-rate",
        _nothing,
        _cli(
            "set-rate", "--period", "2026-11", "--currency", "EUR", "--rate", "0.9", "--source", "t"
        ),
        [("exchange_rate.set", "cli")],
    ),
    (
        "check-alerts from cron applies a plan change",
        _plan_change_due,
        _cli("check-alerts", "--trigger", "cron"),
        [("customer.plan_applied", "cron")],
    ),
    ("import-usage", _usage_file, _cli("import-usage"), [("usage.import", "cli")]),
    (
        "collections from cron",
        _overdue,
        _cli("collections", "--trigger", "cron"),
        [("invoice.reminder_sent", "cron")],
    ),
    (
        "credit-note from cron",
        _billed_invoice("paid"),
        _cli(
            "credit-note", "--amount", "1", "--reason", "duplicate", "--refund", "--trigger", "cron"
        ),
        [("credit_note.issue", "cron")],
    ),
    (
        "void-invoice by an operator",
        _billed_invoice("open"),
        _cli("void-invoice", "--reason", "wrong usage", "--reissue"),
        [("invoice.void_request", "cli"), ("invoice.void", "cli"), ("invoice.reissue", "cli")],
    ),
    ("import-customers", _customers_file, _cli("import-customers"), [("customer.import", "cli")]),
]


@pytest.mark.parametrize(
    ("prepare", "run", "expected"), [c[1:] for c in CASES], ids=[c[0] for c in CASES]
)
def test_entry_point_is_audited_with_its_actor(
    prepare: Callable[[Ctx], None],
    run: Callable[[Ctx], None],
    expected: list[tuple[str, str]],
    demo_engine: Engine,
    demo_db_url: str,
    server: StripeTestServer,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    env = {
        "DATABASE_URL": demo_db_url,
        "STRIPE_API_BASE": server.url,
        "STRIPE_API_KEY": KEY,
        "STRIPE_REQUESTS_PER_SECOND": "1000",
        "BILLING_SECRETS_FILE": "/nonexistent/secrets.toml",
    }
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    ctx = Ctx(demo_engine, tmp_path, env)
    prepare(ctx)
    with Session(demo_engine) as s:
        before = len(s.exec(select(AuditEntry.id)).all())
    run(ctx)
    with Session(demo_engine) as s:
        entries = s.exec(select(AuditEntry).order_by(col(AuditEntry.id))).all()[before:]
    found = [(e.action, e.actor) for e in entries]
    for wanted in expected:
        assert wanted in found, found


def test_reconciliation_from_the_page_is_audited(app_env: dict[str, str]) -> None:
    at = AppTest.from_file(str(ROOT / "pages/reconciliation.py"), default_timeout=60).run()
    at.text_input(key="run_period").input("2026-09")
    next(b for b in at.button if b.label == "Reconcile").click().run()
    assert not at.exception
    engine = make_engine(app_env["DATABASE_URL"])
    with Session(engine) as s:
        entry = s.exec(select(AuditEntry).where(AuditEntry.action == "reconcile.run")).one()
    engine.dispose()
    assert entry.actor == "local-admin"
    assert entry.target.endswith(" 2026-09") and entry.after["status"] == "complete"
