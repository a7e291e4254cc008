"""The Collections page (AppTest) on the demo data: viewers see receivables, reminders sent,
failed payments with Stripe's retry schedule and write-offs; only admins retry a payment (here
with another saved card, against the local Stripe server)."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta

import pytest
import streamlit as st
from sqlmodel import Session, select
from streamlit.testing.v1 import AppTest

from billing_core.db import make_engine, session_scope
from billing_core.models import AuditEntry, CollectionStep, Customer, Invoice, InvoiceLine
from billing_core.periods import utcnow
from tests.conftest import ROOT
from tests.support.stripe_server import StripeTestServer
from tests.support.stripe_world import API_KEY

PAGE = str(ROOT / "pages/collections.py")
ADMIN = "boss@acme.example"
VIEWER = "finance@acme.example"
AUTH = {
    "redirect_uri": "http://localhost:8501/oauth2callback",
    "cookie_secret": "test-cookie-secret-not-a-real-one",
    "client_id": "billing-dashboard",
    "client_secret": "not-a-real-secret",
    "server_metadata_url": "http://127.0.0.1:9/.well-known/openid-configuration",
}


@pytest.fixture(scope="module")
def server() -> Iterator[StripeTestServer]:
    with StripeTestServer() as srv:
        yield srv


@pytest.fixture
def page_env(
    app_env: dict[str, str], server: StripeTestServer, monkeypatch: pytest.MonkeyPatch
) -> dict[str, str]:
    server.reset()
    monkeypatch.setenv("ADMIN_EMAILS", ADMIN)
    monkeypatch.setenv("VIEWER_EMAILS", VIEWER)
    monkeypatch.setenv("STRIPE_API_BASE", server.url)
    monkeypatch.setenv("STRIPE_API_KEY", API_KEY)
    st.cache_resource.clear()
    return app_env


def open_page(email: str) -> AppTest:
    at = AppTest.from_file(PAGE, default_timeout=60)
    at.secrets["auth"] = dict(AUTH)
    at.user = {"is_logged_in": True, "email": email}
    return at.run()


def failed_in_stripe(server: StripeTestServer, url: str) -> tuple[int, str]:
    """A declined automatic payment in Stripe and locally; the customer also saved a good card."""
    cus = server.create_customer_directly(email="declined@example.com", name="Declined Ltd")
    server.attach_card(cus["id"], "pm_card_chargeDeclined")
    good = server.attach_card(cus["id"], "pm_card_mastercard", default=False)
    remote = server.create_invoice_directly(cus["id"], 50_000, "eur")
    with session_scope(make_engine(url)) as s:
        customer = Customer(
            name="Declined Ltd",
            email="declined@example.com",
            currency="EUR",
            stripe_customer_id=cus["id"],
            default_payment_method="card visa 0002",
        )
        s.add(customer)
        s.flush()
        invoice = Invoice(
            customer_id=customer.id,
            period="2026-10",
            currency="EUR",
            subtotal_minor=50_000,
            total_minor=50_000,
            status="open",
            outcome="payment_failed",
            stripe_invoice_id=remote["id"],
            number=remote["number"],
            attempt_count=1,
            next_payment_attempt=utcnow() + timedelta(days=3),
            last_error="Payment attempt 1 failed: your card was declined.",
        )
        s.add(invoice)
        s.flush()
        s.add(InvoiceLine(invoice_id=invoice.id, kind="base_fee", description="Base fee",
                          amount_minor=50_000))  # fmt: skip
        # A reminder the collections command sent for a demo send-invoice invoice.
        other = s.exec(select(Invoice).where(Invoice.collection_method == "send_invoice")).first()
        assert other is not None and other.id is not None
        s.add(
            CollectionStep(
                invoice_id=other.id,
                step="reminder+7",
                status="done",
                day=7,
                days_past_due=7,
                idempotency_key="k",
                claimed_by="host:1",
                claimed_at=utcnow(),
                done_at=utcnow(),
            )
        )
        assert invoice.id is not None
        return invoice.id, good


def frame_with(at: AppTest, column: str):
    return next(d.value for d in at.dataframe if column in d.value.columns)


def test_viewer_sees_everything_and_acts_on_nothing(page_env, server) -> None:
    failed_in_stripe(server, page_env["DATABASE_URL"])
    with session_scope(make_engine(page_env["DATABASE_URL"])) as s:  # a pass that died
        late = s.exec(
            select(Invoice).where(
                Invoice.collection_method == "send_invoice", Invoice.status == "open"
            )
        ).first()
        assert late is not None and late.id is not None
        s.add(
            CollectionStep(
                invoice_id=late.id,
                step="reminder-3",
                day=-3,
                idempotency_key="k2",
                claimed_by="host:2",
                claimed_at=utcnow(),
                error="Stripe answered 500",
                status="failed",
            )
        )
    at = open_page(VIEWER)
    assert not at.exception, at.exception
    assert at.title[0].value == "Collections"
    receivables = frame_with(at, "overdue")
    assert set(receivables["currency"]) == {"EUR", "USD"}
    assert receivables["uncollectible"].str.startswith(("USD ", "—")).all()
    opened = frame_with(at, "next step")
    assert opened["amount due"].str.match(r"^(EUR|USD) [\d,]+\.\d\d$").all()
    sent = frame_with(at, "step")
    assert list(sent["step"]) == ["Reminder 7 days after the due date"]
    failed = frame_with(at, "retry schedule")
    row = failed[failed["customer"] == "Declined Ltd"].iloc[0]
    assert row["amount due"] == "EUR 500.00" and row["attempts"] == 1
    assert row["retry schedule"].startswith("Stripe retries on ")
    written = frame_with(at, "written off")
    assert written["written off"].str.startswith("USD ").all()
    assert [b.key for b in at.button] == ["sign-out"] and not at.selectbox
    assert any("Admins can retry" in c.value for c in at.caption)
    [warning] = at.warning
    assert "1 step(s) claimed but not finished" in warning.value
    assert f"invoice #{late.id} reminder-3: Stripe answered 500" in warning.value
    assert server.request_count() == 0


def test_admin_retries_with_another_saved_card(page_env, server) -> None:
    invoice_id, good_card = failed_in_stripe(server, page_env["DATABASE_URL"])
    at = open_page(ADMIN)
    assert not at.exception, at.exception
    at.selectbox(key="col_failed").set_value(invoice_id).run()
    methods = at.selectbox(key="col_pm")
    assert good_card in methods.options or any("mastercard 4444" in o for o in methods.options)
    methods.set_value(good_card).run()
    at.button(key="col_retry").click().run()
    assert not at.exception, at.exception
    assert any("is paid" in s.value for s in at.success), [e.value for e in at.error]
    with Session(make_engine(page_env["DATABASE_URL"])) as s:
        invoice = s.get(Invoice, invoice_id)
        assert invoice is not None and invoice.status == "paid"
        audit = s.exec(select(AuditEntry).where(AuditEntry.action == "invoice.retry_payment")).one()
    assert audit.actor == ADMIN and audit.after["payment_method"] == good_card
    [paid] = server.invoices(status="paid")
    assert paid["id"] == invoice.stripe_invoice_id
    assert server.request_count("/payment_methods") == 1  # read once, not on every rerun
    [pay] = [k for m, p, _s, k in server.request_log if p.endswith("/pay")]
    assert pay.endswith(f"-inv-{invoice_id}-pay-1")
