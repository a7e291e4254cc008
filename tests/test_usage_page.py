from __future__ import annotations

from typing import Any

import pytest
import streamlit as st
from sqlmodel import Session, func, select
from streamlit.testing.v1 import AppTest

from billing_core.db import make_engine
from billing_core.models import UsageRecord
from billing_core.periods import Period
from tests.conftest import ROOT
from tests.test_pages_access import AUTH

VIEWER = "finance@acme.example"

PAGE = str(ROOT / "pages/usage.py")
NOV = Period(2026, 11)


def usage_count(url: str) -> int:
    with Session(make_engine(url)) as s:
        return s.exec(select(func.count()).select_from(UsageRecord)).one()


def open_page(period: Period = NOV, user: dict[str, Any] | None = None) -> AppTest:
    at = AppTest.from_file(PAGE, default_timeout=60)
    if user is not None:
        at.secrets["auth"] = dict(AUTH)
        at.user = user
    at.run()
    assert not at.exception, at.exception
    period_box = next(s for s in at.selectbox if s.label == "Period")
    period_box.set_value(period).run()
    assert not at.exception, at.exception
    return at


def test_demo_usage_page_as_admin(app_env: dict[str, str]) -> None:
    at = open_page()
    metrics = {m.label: m.value for m in at.metric}
    assert metrics["Customers over a limit"] == "5"
    assert metrics["Customers near a limit"] == "2"
    assert int(metrics["Alerts this period"]) >= 10
    table = at.dataframe[0].value
    dune = table[
        (table["Customer"] == "Dune Media SARL") & (table["Metric"] == "api_calls (calls)")
    ]
    assert dune.iloc[0]["Status"] == "🔴 over"
    assert dune.iloc[0]["Used %"] == pytest.approx(118)
    assert dune.iloc[0]["Overage cost"] == "EUR 540.00"
    assert "🔔 100%" in dune.iloc[0]["Alerts"]
    acme = table[
        (table["Customer"] == "Acme Analytics GmbH") & (table["Metric"] == "api_calls (calls)")
    ]
    assert acme.iloc[0]["Status"] == "🟠 near"
    assert int(acme.iloc[0]["Projected"].replace(",", "")) >= int(
        acme.iloc[0]["Used"].replace(",", "")
    )
    spend = table[table["Metric"].str.startswith("AWS spend")]
    # AWS spend reads as money, counts as whole numbers (never 3,456.173 or 1,234.7 calls).
    assert spend["Used"].str.match(r"^(EUR|USD) [\d,]+\.\d\d$").all()
    assert not table[table["Metric"] == "api_calls (calls)"]["Projected"].str.contains(r"\.").any()
    assert len(at.get("plotly_chart")) >= 3  # drill-down of the first customer
    assert len(at.file_uploader) == 1  # admins may import
    assert any("Overage so far" in m.value for m in at.markdown)


def test_viewer_sees_data_but_cannot_upload(
    app_env: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("VIEWER_EMAILS", VIEWER)
    monkeypatch.setenv("ADMIN_EMAILS", "boss@acme.example")
    st.cache_resource.clear()
    at = open_page(user={"is_logged_in": True, "email": VIEWER})
    assert len(at.file_uploader) == 0
    assert len(at.dataframe) >= 1
    assert {m.label for m in at.metric} >= {"Customers over a limit", "Alerts this period"}


def test_page_guards_itself(app_env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ADMIN_EMAILS", "boss@acme.example")
    st.cache_resource.clear()
    at = AppTest.from_file(PAGE, default_timeout=60)
    at.secrets["auth"] = dict(AUTH)
    at.user = {"is_logged_in": False}
    at.run()
    assert not at.exception
    assert len(at.dataframe) == 0 and len(at.metric) == 0 and not at.file_uploader
    assert [b.label for b in at.button] == ["Sign in"]


def test_upload_good_then_bad_file(app_env: dict[str, str]) -> None:
    url = app_env["DATABASE_URL"]
    before = usage_count(url)
    at = open_page()
    good = (
        b"customer,metric,quantity,timestamp\n"
        b"billing@acme-analytics.example,api_calls,1000,2026-11-02T23:00:00Z\n"
        b"accounts@birch.example,seats,2,2026-11-02T23:00:00Z\n"
    )
    at.file_uploader[0].set_value(("usage.csv", good, "text/csv"))
    next(b for b in at.button if b.label == "Import usage").click().run()
    assert not at.exception
    assert any("2 imported" in s.value for s in at.success), [
        e.value for e in [*at.error, *at.warning]
    ]
    assert usage_count(url) == before + 2

    bad = (
        b"customer,metric,quantity,timestamp\n"
        b"billing@acme-analytics.example,api_calls,5,2026-11-03T23:00:00Z\n"
        b"billing@acme-analytics.example,api_calls,-5,2026-11-03T23:30:00Z\n"
        b"ghost@nowhere.example,api_calls,5,2026-11-03T23:00:00Z\n"
    )
    at.file_uploader[0].set_value(("bad.csv", bad, "text/csv"))
    next(b for b in at.button if b.label == "Import usage").click().run()
    assert not at.exception
    errors = " ".join(e.value for e in at.error)
    assert "nothing was imported" in errors
    assert "line 3: quantity -5 is negative" in errors
    assert "line 4: customer 'ghost@nowhere.example' is not a known customer" in errors
    assert usage_count(url) == before + 2


def test_import_without_a_file_says_what_to_do(app_env: dict[str, str]) -> None:
    before = usage_count(app_env["DATABASE_URL"])
    at = open_page()
    next(b for b in at.button if b.label == "Import usage").click().run()
    assert not at.exception
    assert any("Choose a CSV file first" in w.value for w in at.warning)
    assert usage_count(app_env["DATABASE_URL"]) == before
