"""The Reconciliation page on the demo data: every planted discrepancy, and resolutions."""

from __future__ import annotations

import pandas as pd
import pytest
import streamlit as st
from sqlmodel import Session, select
from streamlit.testing.v1 import AppTest

from billing_core.db import make_engine
from billing_core.models import AuditEntry, Invoice, ReconciliationDiff, TrueUp
from tests.conftest import ROOT

PAGE = str(ROOT / "pages/reconciliation.py")
AUTH = {
    "redirect_uri": "http://localhost:8501/oauth2callback",
    "cookie_secret": "test-cookie-secret-not-a-real-one",
    "client_id": "billing-dashboard",
    "client_secret": "not-a-real-secret",
    "server_metadata_url": "http://127.0.0.1:9/.well-known/openid-configuration",
}


def open_page() -> AppTest:
    return AppTest.from_file(PAGE, default_timeout=60).run()


def db(app_env: dict[str, str]) -> Session:
    return Session(make_engine(app_env["DATABASE_URL"]))


def diff_table(at: AppTest) -> pd.DataFrame:
    frames = [d.value for d in at.dataframe if "subject" in d.value.columns]
    return frames[0] if frames else pd.DataFrame(columns=["kind", "subject"])


def diff_where(app_env: dict[str, str], kind: str, suffix: str = "") -> ReconciliationDiff:
    with db(app_env) as s:
        rows = s.exec(select(ReconciliationDiff).where(ReconciliationDiff.kind == kind)).all()
        return next(d for d in rows if d.subject.endswith(suffix) and not d.within_tolerance)


def test_page_shows_every_planted_discrepancy(app_env: dict[str, str]) -> None:
    at = open_page()
    assert not at.exception, at.exception
    metrics = {m.label: m.value for m in at.metric}
    assert metrics["Open above tolerance"] == "15"
    assert metrics["Within tolerance"] == "3"
    table = diff_table(at)
    assert set(table["kind"]) == {
        "amount",
        "line",
        "status",
        "missing in Stripe",
        "missing locally",
        "currency",
        "Stripe customer",
        "AWS restatement",
        "usage",
    }  # words people read, not the internal kinds
    support = table[table["key"].str.endswith(":Support fee")].iloc[0]
    assert support["subject"] == "AWS service Support fee"  # human, not the internal key
    assert (support["delta"], support["customer"]) == ("USD 325.50", "Ember Health Ltd")
    harbor = table[(table["kind"] == "amount")].iloc[0]
    assert harbor["delta"] == "EUR 15.00" and harbor["customer"] == "Harbor Studio BV"
    assert len(at.get("plotly_chart")) == 1
    # Within-tolerance differences appear on request.
    at.sidebar.checkbox(key="within").check().run()
    assert len(diff_table(at)) == 18


def test_filters_narrow_the_table(app_env: dict[str, str]) -> None:
    at = open_page()
    at.sidebar.multiselect(key="kinds").select("usage").run()
    assert set(diff_table(at)["kind"]) == {"usage"}
    at.sidebar.multiselect(key="statuses").unselect("open").select("resolved").run()
    assert any("No differences match" in s.value for s in at.success)


def test_admin_schedules_a_true_up(app_env: dict[str, str]) -> None:
    diff = diff_where(app_env, "aws_restatement", ":Support fee")
    at = open_page()
    at.selectbox(key="resolve_diff").select(diff.id).run()
    at.radio(key=f"resolve_action-{diff.id}").set_value("true_up").run()
    at.text_input(key=f"resolve_note-{diff.id}").input("Support fee added by AWS after close").run()
    at.button(key=f"resolve_apply-{diff.id}").click().run()
    assert not at.exception, at.exception
    assert any("True-up scheduled" in s.value and "USD 325.50" in s.value for s in at.success)
    with db(app_env) as s:
        [t] = s.exec(select(TrueUp)).all()
        assert (t.amount_minor, t.currency, t.applied_invoice_id) == (32_550, "USD", None)
        assert t.description.startswith("AWS adjustment for ")
        row = s.get(ReconciliationDiff, diff.id)
        assert row is not None and (row.status, row.resolution) == ("resolved", "true_up")
        assert s.exec(select(AuditEntry).where(AuditEntry.action == "reconcile.true_up")).one()
    # Resolved diffs leave the open list.
    assert diff.id not in at.selectbox(key="resolve_diff").options


def test_admin_accept_needs_a_note_then_sync_status(app_env: dict[str, str]) -> None:
    missing = diff_where(app_env, "missing_locally")
    at = open_page()
    at.selectbox(key="resolve_diff").select(missing.id).run()
    at.button(key=f"resolve_apply-{missing.id}").click().run()
    assert any("needs a note" in e.value for e in at.error)
    status = diff_where(app_env, "status")
    at.selectbox(key="resolve_diff").select(status.id).run()
    assert at.radio(key=f"resolve_action-{status.id}").options == [
        "Accept with a note",
        "Sync the status from Stripe",
    ]
    at.radio(key=f"resolve_action-{status.id}").set_value("sync").run()
    at.button(key=f"resolve_apply-{status.id}").click().run()
    assert any("synced from Stripe" in s.value for s in at.success)
    with db(app_env) as s:
        invoice = s.get(Invoice, status.invoice_id)
        assert invoice is not None and invoice.status == "paid" and invoice.outcome is None


def test_admin_runs_a_reconciliation(app_env: dict[str, str]) -> None:
    at = open_page()
    # The demo's last run carries a note that only informs: no warning for it.
    assert not [w.value for w in at.warning if "left a part out" in w.value]
    at.text_input(key="run_period").input("2026-09")  # inside a form: sent with the submit
    next(b for b in at.button if b.label == "Reconcile").click().run()
    assert not at.exception, at.exception
    assert any("open diffs above tolerance: 15" in s.value for s in at.success)
    # No Stripe in this world: the run is complete, but the page says what it left out.
    assert any(
        "left a part out" in w.value and "Stripe not configured" in w.value for w in at.warning
    ), [w.value for w in at.warning]


def test_viewer_sees_diffs_but_cannot_resolve(
    app_env: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ADMIN_EMAILS", "boss@example.com")
    monkeypatch.setenv("VIEWER_EMAILS", "finance@example.com")
    st.cache_resource.clear()
    at = AppTest.from_file(PAGE, default_timeout=60)
    at.secrets["auth"] = dict(AUTH)
    at.user = {"is_logged_in": True, "email": "finance@example.com"}
    at.run()
    assert not at.exception, at.exception
    assert len(diff_table(at)) == 15
    assert not [b for b in at.button if b.label in ("Apply resolution", "Reconcile")]


# ------------------------------------------------------------------ two admins, stale pages

STALE = "was changed by local-admin at"


def test_second_admin_accepting_the_same_diff_is_refused(app_env: dict[str, str]) -> None:
    diff = diff_where(app_env, "missing_locally")
    ana, ben = open_page(), open_page()
    for at, note in ((ana, "Ana: billed by hand"), (ben, "Ben: duplicate")):
        at.selectbox(key="resolve_diff").select(diff.id).run()
        at.text_input(key=f"resolve_note-{diff.id}").input(note)
    ana.button(key=f"resolve_apply-{diff.id}").click().run()
    assert any(f"Difference #{diff.id} accepted" in s.value for s in ana.success)
    ben.button(key=f"resolve_apply-{diff.id}").click().run()
    assert not ben.exception, ben.exception
    assert not ben.success
    [refusal] = [e.value for e in ben.error]
    assert refusal.startswith(f"Difference #{diff.id} {STALE}")
    assert refusal.endswith("since you opened it; reload to see their change.")
    with db(app_env) as s:
        row = s.get(ReconciliationDiff, diff.id)
        assert row is not None and row.resolution_note == "Ana: billed by hand"
        entries = s.exec(select(AuditEntry).where(AuditEntry.target == f"diff:{diff.id}")).all()
        assert [e.action for e in entries] == ["reconcile.accepted"]


def test_a_click_on_a_stale_page_never_resolves_the_next_diff(app_env: dict[str, str]) -> None:
    ana, ben = open_page(), open_page()
    first, following = ana.selectbox(key="resolve_diff").options[:2]
    shown = int(first.split(" ")[0].lstrip("#"))
    next_id = int(following.split(" ")[0].lstrip("#"))
    # Ben resolves the diff Ana's page still shows first.
    ben.text_input(key=f"resolve_note-{shown}").input("Ben resolved it")
    ben.button(key=f"resolve_apply-{shown}").click().run()
    assert ben.success
    # Ana, on her stale page, writes her note for that diff and clicks.
    ana.text_input(key=f"resolve_note-{shown}").input("Ana's note for the first diff")
    ana.button(key=f"resolve_apply-{shown}").click().run()
    assert any(e.value.startswith(f"Difference #{shown} {STALE}") for e in ana.error)
    with db(app_env) as s:
        untouched = s.get(ReconciliationDiff, next_id)
        assert untouched is not None and untouched.status == "open"
        assert untouched.resolution_note is None
        resolved = s.get(ReconciliationDiff, shown)
        assert resolved is not None and resolved.resolution_note == "Ben resolved it"
