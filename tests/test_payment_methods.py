"""Payment methods, the card setup link and the audited payment retry, against local Stripe."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime

import pytest
from sqlmodel import Session, select

from billing_core.auth import LOCAL_ADMIN, Identity
from billing_core.db import session_scope
from billing_core.errors import PermissionDenied, ValidationError
from billing_core.models import AuditEntry, Invoice, display_status_in
from billing_core.payments import payment_methods as pm
from billing_core.stripe.keys import install_id
from billing_core.views.invoices import payment_method_table
from tests.support.stripe_server import StripeTestServer
from tests.support.stripe_world import StripeWorld, make_world

NOW = datetime(2026, 11, 21, 9, 0, tzinfo=UTC)
VIEWER = Identity(email="finance@example.com", role="viewer", method="oidc")


@pytest.fixture(scope="module")
def server() -> Iterator[StripeTestServer]:
    with StripeTestServer() as srv:
        yield srv


@pytest.fixture
def world(server: StripeTestServer, engine) -> StripeWorld:
    return make_world(server, engine)


@pytest.mark.parametrize(
    ("text", "kind", "brand", "last4"),
    [
        ("card visa 4242", "card", "visa", "4242"),
        ("sepa_debit 3000", "sepa_debit", "", "3000"),
        ("card", "card", "", ""),
        (None, "", "", ""),
        ("card american express 8431", "card", "american express", "8431"),
    ],
)
def test_parse_payment_method(text, kind, brand, last4) -> None:
    info = pm.parse_payment_method(text)
    assert (info.kind, info.brand, info.last4) == (kind, brand, last4)


def test_payment_method_table_on_demo(demo_session: Session) -> None:
    table = payment_method_table(demo_session)
    assert len(table) == 9
    acme = table[table["customer"].str.startswith("Acme")].iloc[0]
    assert acme["has_payment_method"] and acme["last4"] == "4242" and acme["type"] == "card visa"
    iris = table[table["customer"].str.startswith("Iris")].iloc[0]
    assert not iris["has_payment_method"]
    assert table["failed_invoices"].sum() >= 2


def _audits(world: StripeWorld, action: str) -> list[AuditEntry]:
    with Session(world.engine) as s:
        return list(s.exec(select(AuditEntry).where(AuditEntry.action == action)).all())


def test_setup_link_is_admin_only_and_audited(world: StripeWorld) -> None:
    cus = world.customer(card=None)
    with session_scope(world.engine) as s, pytest.raises(PermissionDenied):
        pm.create_setup_link(
            s,
            world.gateway,
            VIEWER,
            customer_id=cus.id,
            return_url="http://localhost:8501",
            now=NOW,
        )
    with session_scope(world.engine) as s:
        url = pm.create_setup_link(
            s,
            world.gateway,
            LOCAL_ADMIN,
            customer_id=cus.id,
            return_url="http://localhost:8501",
            now=NOW,
        )
    assert url.startswith(world.server.url) and "/c/pay/cs_test_" in url
    session_obj = world.server.checkout_sessions()[-1]
    assert session_obj["mode"] == "setup" and session_obj["customer"] == cus.stripe_customer_id
    [entry] = _audits(world, "payment_method.setup_link")
    assert entry.actor == "local-admin" and entry.target == f"customer:{cus.id}"


def test_setup_link_needs_a_stripe_customer(world: StripeWorld) -> None:
    from billing_core.models import Customer

    with session_scope(world.engine) as s:
        c = Customer(name="Not pushed", email="np@example.com", currency="EUR")
        s.add(c)
    with session_scope(world.engine) as s, pytest.raises(ValidationError, match="no Stripe"):
        pm.create_setup_link(
            s, world.gateway, LOCAL_ADMIN, customer_id=c.id, return_url="http://x", now=NOW
        )


def test_retry_payment_declined_then_paid_uses_new_keys(world: StripeWorld) -> None:
    cus = world.customer(card="pm_card_chargeDeclined")
    local, _ = world.invoice(cus, status="open")
    with session_scope(world.engine) as s, pytest.raises(PermissionDenied):
        pm.retry_payment(s, world.gateway, VIEWER, invoice_id=local.id, now=NOW)
    with session_scope(world.engine) as s:
        first = pm.retry_payment(s, world.gateway, LOCAL_ADMIN, invoice_id=local.id, now=NOW)
    assert not first.paid and "declined" in first.message
    row = world.local(local.id)
    assert row.display_status == "failed" and row.pay_attempt == 1 and row.attempt_count == 1
    # The customer fixes the card; the retry must not replay the stored decline.
    world.server.attach_card(cus.stripe_customer_id, "pm_card_visa")
    with session_scope(world.engine) as s:
        second = pm.retry_payment(s, world.gateway, LOCAL_ADMIN, invoice_id=local.id, now=NOW)
    assert second.paid
    row = world.local(local.id)
    assert row.status == "paid" and row.pay_attempt == 2
    keys = [k for m, p, _s, k in world.server.request_log if p.endswith("/pay")]
    with Session(world.engine) as s:
        ns = install_id(s)
    assert keys == [f"{ns}-inv-{local.id}-pay-1", f"{ns}-inv-{local.id}-pay-2"]
    audits = _audits(world, "invoice.retry_payment")
    assert [a.after["outcome"] for a in audits] == ["declined", "paid"]
    assert all(a.target == f"invoice:{local.id}" for a in audits)


def test_retry_refuses_paid_and_demo_invoices(world: StripeWorld, demo_engine) -> None:
    cus = world.customer()
    local, _ = world.invoice(cus, status="paid")
    with session_scope(world.engine) as s:
        row = s.get(Invoice, local.id)
        row.status = "paid"
    with session_scope(world.engine) as s, pytest.raises(ValidationError, match="only open"):
        pm.retry_payment(s, world.gateway, LOCAL_ADMIN, invoice_id=local.id, now=NOW)
    with session_scope(demo_engine) as s:
        failed = s.exec(select(Invoice).where(display_status_in(["failed"]))).first()
        with pytest.raises(ValidationError, match="demo record"):
            pm.retry_payment(s, world.gateway, LOCAL_ADMIN, invoice_id=failed.id, now=NOW)
