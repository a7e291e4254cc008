"""Two databases sharing one Stripe account (a re-seeded demo, staging next to production).

Local ids repeat across databases (both have customer 1 and invoice 1), so everything either
database sends or looks up in Stripe must carry its install id: idempotency keys, and the
metadata that lookups match on. Driven over HTTP against the one local Stripe test server.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy.engine import Engine
from sqlmodel import Session, col, select

from billing_core.auth import LOCAL_ADMIN
from billing_core.config import load_settings
from billing_core.costs.snapshots import CostSource
from billing_core.db import make_engine, session_scope
from billing_core.invoicing import runs as invoicing_runs
from billing_core.models import Customer, Invoice, ReconciliationDiff, StripeEvent
from billing_core.payments import payment_methods as pm
from billing_core.payments import sync
from billing_core.periods import Period
from billing_core.reconciliation.diffing import STRIPE_KINDS
from billing_core.reconciliation.runs import reconcile_period
from billing_core.stripe.gateway import Gateway
from tests.conftest import DEMO_NOW
from tests.support.stripe_server import StripeTestServer
from tests.support.stripe_world import StripeWorld, make_world

# The cost figures these tests bill from (the settings' defaults).
SOURCE = CostSource("UnblendedCost", "LINKED_ACCOUNT")

NOW = datetime(2026, 11, 21, 9, 0, tzinfo=UTC)


@pytest.fixture(scope="module")
def server() -> Iterator[StripeTestServer]:
    with StripeTestServer() as srv:
        yield srv


def _second(databases: Any, kind: str, tmp_path: Path) -> Iterator[Engine]:
    folder = tmp_path / "second"
    folder.mkdir()
    url = databases.fresh(kind, folder)
    eng = make_engine(url)
    yield eng
    eng.dispose()
    databases.drop(url)


@pytest.fixture
def second_engine(_databases: Any, tmp_path: Path) -> Iterator[Engine]:
    """Another fresh, empty database: its local ids repeat the first one's."""
    yield from _second(_databases, "empty", tmp_path)


@pytest.fixture
def second_demo_engine(_databases: Any, tmp_path: Path) -> Iterator[Engine]:
    """Another copy of the demo world: same customers, same ids, same emails."""
    yield from _second(_databases, "demo", tmp_path)


@pytest.fixture
def worlds(server: StripeTestServer, engine: Engine, second_engine: Engine) -> list[StripeWorld]:
    first = make_world(server, engine)  # resets the server
    return [first, StripeWorld(server, first.client, second_engine)]


def test_payment_retries_of_two_databases_do_not_collide(
    worlds: list[StripeWorld], server: StripeTestServer
) -> None:
    invoices = []
    for world in worlds:
        cus = world.customer(email="ops@example.com")
        local, remote = world.invoice(cus, status="open")
        invoices.append((world, local, remote))
    assert len({local.id for _w, local, _r in invoices}) == 1  # the same local id in both
    for world, local, remote in invoices:
        with session_scope(world.engine) as s:
            result = pm.retry_payment(s, world.gateway, LOCAL_ADMIN, invoice_id=local.id, now=NOW)
        assert result.paid, result.message
        assert server.invoice(remote["id"])["status"] == "paid"
    keys = [k for _m, p, _s, k in server.request_log if p.endswith("/pay")]
    assert len(keys) == 2 and len(set(keys)) == 2


def test_setup_links_of_two_databases_do_not_collide(
    worlds: list[StripeWorld], server: StripeTestServer
) -> None:
    customers = [world.customer(email="ops@example.com", card=None) for world in worlds]
    assert len({c.id for c in customers}) == 1
    for world, cus in zip(worlds, customers, strict=True):
        with session_scope(world.engine) as s:
            pm.create_setup_link(
                s, world.gateway, LOCAL_ADMIN, customer_id=cus.id, return_url="http://x", now=NOW
            )
    sessions = server.checkout_sessions()
    assert [cs["customer"] for cs in sessions] == [c.stripe_customer_id for c in customers]


def _stripe_customers(engine: Engine) -> dict[int, str]:
    with Session(engine) as s:
        return {c.id or 0: c.stripe_customer_id or "" for c in s.exec(select(Customer)).all()}


def test_second_database_creates_its_own_stripe_customers(
    server: StripeTestServer, demo_engine: Engine, second_demo_engine: Engine, demo_db_url: str
) -> None:
    server.reset()
    env = {
        "DATABASE_URL": demo_db_url,
        "STRIPE_API_BASE": server.url,
        "STRIPE_API_KEY": "sk_test_x",
    }
    settings = load_settings(env, secrets_path=Path("/nonexistent/secrets.toml"))
    opts = invoicing_runs.RunOptions(Period.parse("2026-10"), attach_test_cards=True)
    for engine in (demo_engine, second_demo_engine):
        result = invoicing_runs.run_invoices(
            engine, settings, opts, now=DEMO_NOW, progress=lambda _l: None
        )
        assert result.exit_code == 0, result.problems
    first, second = _stripe_customers(demo_engine), _stripe_customers(second_demo_engine)
    assert first.keys() == second.keys()  # the same local customers ...
    assert not set(first.values()) & set(second.values())  # ... but their own Stripe customers
    assert len(server.customers()) == len(first) + len(second)
    for engine, mine in ((demo_engine, first), (second_demo_engine, second)):
        with Session(engine) as s:
            for inv in s.exec(select(Invoice).where(Invoice.period == "2026-10")).all():
                remote = server.invoice(inv.stripe_invoice_id or "")
                assert remote["customer"] == mine[inv.customer_id]


def test_sync_and_reconcile_leave_the_other_databases_invoices_alone(
    server: StripeTestServer, demo_engine: Engine, second_demo_engine: Engine, demo_db_url: str
) -> None:
    server.reset()
    env = {"STRIPE_API_BASE": server.url, "STRIPE_API_KEY": "sk_test_x"}
    settings = load_settings(env, secrets_path=Path("/nonexistent/secrets.toml"))
    period = Period.parse("2026-10")
    opts = invoicing_runs.RunOptions(period, attach_test_cards=True)
    for engine in (demo_engine, second_demo_engine):
        result = invoicing_runs.run_invoices(
            engine, settings, opts, now=DEMO_NOW, progress=lambda _l: None
        )
        assert result.exit_code == 0, result.problems
    gateway = Gateway.from_settings(settings)
    synced = sync.sync(second_demo_engine, gateway)
    assert synced.outcomes["applied"] > 0, synced.describe()
    with Session(second_demo_engine) as s:
        unmatched = s.exec(select(StripeEvent.type).where(StripeEvent.outcome == "unmatched"))
        # The other database's customers stay unknown here; its invoices are not findings.
        assert not [t for t in unmatched.all() if t.startswith("invoice.")]
    reconciled = reconcile_period(second_demo_engine, period, source=SOURCE, reader=gateway)
    assert reconciled.status == "complete"
    with Session(second_demo_engine) as s:
        stripe_diffs = s.exec(
            select(ReconciliationDiff).where(
                ReconciliationDiff.period == str(period),
                col(ReconciliationDiff.kind).in_(STRIPE_KINDS),
            )
        ).all()
    assert [(d.kind, d.subject) for d in stripe_diffs] == []
