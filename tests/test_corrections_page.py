"""The invoice detail's corrections panel (AppTest), against the local Stripe test server: an
admin previews and issues a credit note, voids a credit note, and voids and reissues an invoice
from the page; a viewer sees the credit notes but no form and no Void."""

from __future__ import annotations

from pathlib import Path

import pytest
import streamlit as st
from sqlalchemy.engine import Engine
from sqlmodel import Session, select
from streamlit.testing.v1 import AppTest

from billing_core.auth import cli_identity
from billing_core.corrections import credit_notes
from billing_core.corrections.credit_plan import CreditAsk
from billing_core.models import AuditEntry, CreditNote, Invoice
from billing_core.states import CreditNoteStatus, InvoiceStatus
from tests.conftest import ROOT
from tests.support.stripe_server import StripeTestServer
from tests.test_credit_notes import KEY, billed_world, gateway, server, settings_for
from tests.test_reconciliation_page import AUTH

__all__ = ["server"]
PAGE = str(ROOT / "pages/invoices.py")


@pytest.fixture
def stripe_env(
    app_env: dict[str, str],
    server: StripeTestServer,
    monkeypatch: pytest.MonkeyPatch,
) -> dict[str, str]:
    server.reset()
    env = {**app_env, "STRIPE_API_BASE": server.url, "STRIPE_API_KEY": KEY}
    monkeypatch.setenv("STRIPE_API_BASE", server.url)
    monkeypatch.setenv("STRIPE_API_KEY", KEY)
    monkeypatch.setenv("STRIPE_REQUESTS_PER_SECOND", "1000")
    return env


def _open(number: str, user: str | None = None) -> AppTest:
    at = AppTest.from_file(PAGE, default_timeout=60)
    if user is not None:
        at.secrets["auth"] = dict(AUTH)
        at.user = {"is_logged_in": True, "email": user}
    at.run()
    at.text_input(key="inv_lookup").set_value(number).run()
    assert not at.exception, at.exception
    return at


def test_admin_credits_a_paid_invoice_from_the_page(
    stripe_env: dict[str, str],
    demo_engine: Engine,
    server: StripeTestServer,
    demo_db_url: str,
    tmp_path: Path,
) -> None:
    invoices = billed_world(demo_engine, server, settings_for(server, demo_db_url, tmp_path))
    paid = invoices[1]
    at = _open(paid.number or "")
    iid = paid.id
    at.radio(key=f"cn_what_{iid}").set_value("An amount")
    at.text_input(key=f"cn_amount_{iid}").input("2.50")
    at.radio(key=f"cn_where_{iid}").set_value("refund")
    at.text_input(key=f"cn_memo_{iid}").input("Seat removed")
    next(b for b in at.button if b.label == "Preview in Stripe").click().run()
    assert any("refunded to the payment method" in i.value for i in at.info), at.info
    assert server.credit_notes() == []
    next(b for b in at.button if b.label == "Issue credit note").click().run()
    assert not at.exception, at.exception
    assert any("issued" in s.value for s in at.success), [e.value for e in at.error]
    (note,) = server.credit_notes()
    assert note["amount"] == 250 and note["refunds"][0]["amount_refunded"] == 250
    assert any("Partially credited" in c.value for c in at.caption)
    with Session(demo_engine) as s:
        row = s.exec(select(CreditNote)).one()
        assert row.created_by == "local-admin" and row.memo == "Seat removed"
        assert s.exec(select(AuditEntry).where(AuditEntry.action == "credit_note.issue")).one()


def test_admin_voids_and_reissues_from_the_page(
    stripe_env: dict[str, str],
    demo_engine: Engine,
    server: StripeTestServer,
    demo_db_url: str,
    tmp_path: Path,
) -> None:
    invoices = billed_world(demo_engine, server, settings_for(server, demo_db_url, tmp_path))
    opened = invoices[0]
    at = _open(opened.number or "")
    iid = opened.id
    at.text_input(key=f"void_reason_{iid}").input("usage imported late")
    next(b for b in at.button if b.label == "Void invoice").click().run()
    assert any("Tick the box" in w.value for w in at.warning)
    assert server.request_count("/void", "POST") == 0
    at.checkbox(key=f"void_sure_{iid}").check()
    next(b for b in at.button if b.label == "Void invoice").click().run()
    assert not at.exception, at.exception
    assert any("reissued as revision 2" in s.value for s in at.success), [e.value for e in at.error]
    with Session(demo_engine) as s:
        rows = s.exec(
            select(Invoice).where(
                Invoice.customer_id == opened.customer_id, Invoice.period == opened.period
            )
        ).all()
        assert sorted((r.revision, r.status) for r in rows) == [
            (1, InvoiceStatus.VOID),
            (2, InvoiceStatus.OPEN),
        ]


def test_viewer_sees_no_correction_form(
    stripe_env: dict[str, str],
    demo_engine: Engine,
    server: StripeTestServer,
    demo_db_url: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    invoices = billed_world(demo_engine, server, settings_for(server, demo_db_url, tmp_path))
    monkeypatch.setenv("ADMIN_EMAILS", "boss@example.com")
    monkeypatch.setenv("VIEWER_EMAILS", "finance@example.com")
    st.cache_resource.clear()
    at = _open(invoices[1].number or "", user="finance@example.com")
    assert any("No credit notes." in c.value for c in at.caption)
    assert not [b for b in at.button if b.label in ("Issue credit note", "Void invoice")]


def _credit(server: StripeTestServer, engine: Engine, invoice: Invoice, amount: str) -> int:
    ask = CreditAsk(invoice.number or "", "amount", "duplicate", amount)
    issued = credit_notes.issue(engine, gateway(server), cli_identity("ana@example.com"), ask)
    return issued.credit_note_id


def test_admin_voids_a_credit_note_from_the_page(
    stripe_env: dict[str, str],
    demo_engine: Engine,
    server: StripeTestServer,
    demo_db_url: str,
    tmp_path: Path,
) -> None:
    invoices = billed_world(demo_engine, server, settings_for(server, demo_db_url, tmp_path))
    opened = invoices[0]
    note_id = _credit(server, demo_engine, opened, "4.00")
    at = _open(opened.number or "")
    void = at.button(key=f"cn_void_{note_id}")
    assert void.label == "Void"
    assert any("voiding it means" in m.value and "asks for" in m.value for m in at.markdown)
    void.click().run()
    assert any("Tick the box" in w.value for w in at.warning)
    assert server.request_count("/void", "POST") == 0
    at.checkbox(key=f"cn_void_sure_{note_id}").check()
    at.button(key=f"cn_void_{note_id}").click().run()
    assert not at.exception, at.exception
    assert any("is void" in s.value for s in at.success), [e.value for e in at.error]
    assert server.credit_notes()[0]["status"] == "void"
    assert not [b for b in at.button if b.label == "Void"]  # a void note offers no Void
    (table,) = [d.value for d in at.dataframe if "reason" in d.value.columns]
    assert list(table["status"]) == ["void"]
    with Session(demo_engine) as s:
        note = s.get(CreditNote, note_id)
        assert note is not None and note.status == CreditNoteStatus.VOID
        row = s.get(Invoice, opened.id)
        assert row is not None and row.due_minor == opened.total_minor
        (entry,) = s.exec(select(AuditEntry).where(AuditEntry.action == "credit_note.void")).all()
        assert entry.actor == "local-admin"


def test_viewer_sees_credit_notes_but_no_void(
    stripe_env: dict[str, str],
    demo_engine: Engine,
    server: StripeTestServer,
    demo_db_url: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    invoices = billed_world(demo_engine, server, settings_for(server, demo_db_url, tmp_path))
    _credit(server, demo_engine, invoices[0], "4.00")
    monkeypatch.setenv("ADMIN_EMAILS", "boss@example.com")
    monkeypatch.setenv("VIEWER_EMAILS", "finance@example.com")
    st.cache_resource.clear()
    at = _open(invoices[0].number or "", user="finance@example.com")
    assert any("Partially credited" in c.value for c in at.caption)
    assert not [b for b in at.button if b.label == "Void"]
    assert not [c for c in at.checkbox if c.key and c.key.startswith("cn_void_sure_")]
    # The same page as an admin offers it (so the viewer's page is not merely broken).
    st.cache_resource.clear()
    admin = _open(invoices[0].number or "", user="boss@example.com")
    assert [b.label for b in admin.button if b.label == "Void"] == ["Void"]
