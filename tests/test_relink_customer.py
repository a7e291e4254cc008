"""A customer deleted in Stripe: re-create or re-link it, and its stuck invoices go through.

Driven against the local Stripe test server over HTTP, through the CLI and the service.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy.engine import Engine
from sqlmodel import Session, select

from billing_core.cli import main
from billing_core.config import Settings, load_settings
from billing_core.db import session_scope
from billing_core.invoicing import runs as invoicing_runs
from billing_core.models import AuditEntry, Customer, Invoice, ReconciliationDiff
from billing_core.periods import Period
from billing_core.stripe import gateway as gw
from tests.conftest import DEMO_NOW
from tests.support.stripe_server import StripeTestServer

P = Period.parse("2026-10")
KEY = "sk_test_relink"


@pytest.fixture(scope="module")
def server() -> Iterator[StripeTestServer]:
    with StripeTestServer() as srv:
        yield srv


@pytest.fixture(autouse=True)
def _fresh(server: StripeTestServer, monkeypatch: pytest.MonkeyPatch) -> None:
    server.reset()
    monkeypatch.setattr(gw, "BACKOFF_SECONDS", 0.01)


@pytest.fixture
def cli_env(
    monkeypatch: pytest.MonkeyPatch, server: StripeTestServer, demo_db_url: str, tmp_path: Path
) -> Settings:
    env = {
        "DATABASE_URL": demo_db_url,
        "BILLING_MODE": "demo",
        "BILLING_SECRETS_FILE": str(tmp_path / "none.toml"),
        "STRIPE_API_BASE": server.url,
        "STRIPE_API_KEY": KEY,
        "STRIPE_REQUESTS_PER_SECOND": "1000",
    }
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    return load_settings(env, secrets_path=tmp_path / "none.toml")


def _run(engine: Engine, settings: Settings) -> invoicing_runs.RunResult:
    opts = invoicing_runs.RunOptions(P, attach_test_cards=False)
    return invoicing_runs.run_invoices(engine, settings, opts, now=DEMO_NOW)


def _link_stripe_customers(
    engine: Engine, server: StripeTestServer, declined: str
) -> dict[str, Customer]:
    """Every customer in Stripe with a card (one that declines for `declined`)."""
    out = {}
    with session_scope(engine) as s:
        for cus in s.exec(select(Customer)).all():
            remote = server.create_customer_directly(email=cus.email, name=cus.name)
            cus.stripe_customer_id = remote["id"]
            card = "pm_card_chargeDeclined" if cus.name == declined else "pm_card_visa"
            server.attach_card(remote["id"], card)
            cus.collection_method = "charge_automatically"
            s.add(cus)
            out[cus.name] = cus
    return out


def _invoice(engine: Engine, customer: Customer) -> Invoice:
    with Session(engine) as s:
        return s.exec(
            select(Invoice).where(Invoice.customer_id == customer.id, Invoice.period == str(P))
        ).one()


def _relink(*args: Any) -> int:
    return main(["relink-customer", *[str(a) for a in args]])


def test_deleted_stripe_customers_are_recovered_and_their_invoices_go_through(
    cli_env: Settings,
    demo_engine: Engine,
    server: StripeTestServer,
    capsys: pytest.CaptureFixture[str],
) -> None:
    with Session(demo_engine) as s:
        gone, declined = sorted(c.name for c in s.exec(select(Customer)).all())[:2]
    customers = _link_stripe_customers(demo_engine, server, declined=declined)
    # `gone` is deleted in Stripe before the run: its invoice cannot even be created.
    server.set_customer_deleted(customers[gone].stripe_customer_id or "")
    first = _run(demo_engine, cli_env)
    assert first.exit_code == 1
    assert _invoice(demo_engine, customers[declined]).outcome == "payment_failed"
    # `declined` is deleted after its invoice was finalized and declined.
    old_declined_invoice = _invoice(demo_engine, customers[declined]).stripe_invoice_id
    server.set_customer_deleted(customers[declined].stripe_customer_id or "")
    # Every daily retry fails the same way.
    assert _run(demo_engine, cli_env).exit_code == 1
    assert _invoice(demo_engine, customers[gone]).stripe_invoice_id is None

    # Recovery: `gone` gets a new Stripe customer, `declined` another existing one.
    assert _relink("--customer", customers[gone].id, "--recreate") == 0
    assert "go to it on the next run" in capsys.readouterr().out
    replacement = server.create_customer_directly(email="new@example.com", name="new")
    server.attach_card(replacement["id"], "pm_card_visa")
    assert _relink("--customer", customers[declined].id, "--stripe-id", replacement["id"]) == 0
    with Session(demo_engine) as s:
        recreated = s.get(Customer, customers[gone].id)
        assert recreated is not None and recreated.stripe_customer_id
        new_gone = recreated.stripe_customer_id
    assert new_gone != customers[gone].stripe_customer_id
    server.attach_card(new_gone, "pm_card_visa")  # the customer adds a card

    # Again: nothing changes, nothing is recorded twice.
    assert _relink("--customer", customers[gone].id, "--recreate") == 0
    assert _relink("--customer", customers[declined].id, "--stripe-id", replacement["id"]) == 0
    assert capsys.readouterr().out.count("nothing to do") == 2

    # Stripe's events about the retired invoice (voided) must not touch the freed draft.
    assert main(["sync"]) == 0, capsys.readouterr().err
    assert _invoice(demo_engine, customers[declined]).display_status == "draft"
    with Session(demo_engine) as s:
        assert not s.exec(
            select(ReconciliationDiff).where(ReconciliationDiff.subject == old_declined_invoice)
        ).all()  # nor is it a finding: it stands for no invoice of ours
    third = _run(demo_engine, cli_env)
    assert third.exit_code == 0, [p.message for p in third.problems]
    for name, stripe_id in ((gone, new_gone), (declined, replacement["id"])):
        inv = _invoice(demo_engine, customers[name])
        assert inv.display_status == "paid" and inv.key_generation == 1
        remote = server.invoice(inv.stripe_invoice_id or "")
        assert remote["customer"] == stripe_id and remote["status"] == "paid"
        assert remote["total"] == inv.total_minor
    # The declined invoice on the deleted customer is void and no longer claims ours.
    old = server.invoice(old_declined_invoice or "")
    assert old["status"] == "void" and "local_invoice_id" not in old["metadata"]
    paid = [i for i in server.invoices(status="paid") if i["metadata"].get("period") == str(P)]
    assert len(paid) == len(customers)  # one paid invoice per customer, no double billing
    with Session(demo_engine) as s:
        entries = s.exec(
            select(AuditEntry).where(AuditEntry.action == "customer.stripe_relinked")
        ).all()
    assert [(e.actor, e.after["how"] if e.after else None) for e in entries] == [
        ("cli", "recreate"),
        ("cli", "link"),
    ]


@pytest.mark.parametrize(
    ("stripe_id", "message"),
    [
        ("cus_doesnotexist", "Stripe has no customer cus_doesnotexist"),
        ("deleted", "is deleted"),
        ("taken", "is already linked to"),
        ("acct_123", "is not a Stripe customer id"),
    ],
)
def test_relink_refuses_a_customer_that_cannot_bill(
    cli_env: Settings,
    demo_engine: Engine,
    server: StripeTestServer,
    capsys: pytest.CaptureFixture[str],
    stripe_id: str,
    message: str,
) -> None:
    customers = _link_stripe_customers(demo_engine, server, declined="__none__")
    first, second = sorted(customers.values(), key=lambda c: c.id or 0)[:2]
    if stripe_id == "deleted":
        stripe_id = server.create_customer_directly(email="x@example.com", name="x")["id"]
        server.set_customer_deleted(stripe_id)
    elif stripe_id == "taken":
        stripe_id = second.stripe_customer_id or ""
    assert _relink("--customer", first.id, "--stripe-id", stripe_id) == 2
    assert message in capsys.readouterr().err
    with Session(demo_engine) as s:
        row = s.get(Customer, first.id)
        assert row is not None and row.stripe_customer_id == first.stripe_customer_id
        assert not s.exec(
            select(AuditEntry).where(AuditEntry.action.startswith("customer.st"))
        ).all()


def test_relink_an_unknown_customer_is_refused(
    cli_env: Settings, server: StripeTestServer, capsys: pytest.CaptureFixture[str]
) -> None:
    assert _relink("--customer", 99999, "--recreate") == 2
    assert "There is no customer 99999" in capsys.readouterr().err
    assert server.customers() == []  # nothing made in Stripe either
