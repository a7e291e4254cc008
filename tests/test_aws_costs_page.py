"""The AWS costs page (AppTest): figures equal the snapshot; Cost Explorer only on Refresh."""

from __future__ import annotations

from decimal import Decimal

import pytest
from sqlmodel import Session, func, select
from streamlit.testing.v1 import AppTest

from billing_core.config import load_settings
from billing_core.costs import attribution, refresh, snapshots
from billing_core.costs.snapshots import CostSource
from billing_core.db import make_engine
from billing_core.models import CostSnapshot
from billing_core.money import display, round_minor
from billing_core.periods import Period, utcnow
from billing_core.views import aws_costs
from tests.conftest import ROOT
from tests.support.aws import FAKE_AWS, group, page, result

# The cost figures these tests bill from (the settings' defaults).
SOURCE = CostSource("UnblendedCost", "LINKED_ACCOUNT")

PAGE = str(ROOT / "pages/aws_costs.py")


def run_page() -> AppTest:
    at = AppTest.from_file(PAGE, default_timeout=60).run()
    assert not at.exception, at.exception
    return at


def usd(amount: Decimal) -> str:
    return display(round_minor(amount, "USD"), "USD")


def stored_view(db_url: str, period: Period, filters: aws_costs.CostFilter | None = None):
    with Session(make_engine(db_url)) as s:
        return aws_costs.build_costs_view(s, load_settings(), period, filters)


def snapshot_count(db_url: str) -> int:
    with Session(make_engine(db_url)) as s:
        return s.exec(select(func.count()).select_from(CostSnapshot)).one()


@pytest.fixture
def live_env(app_env, ce_stub, monkeypatch):
    """Live mode against the local Cost Explorer stub (demo snapshots already stored)."""
    monkeypatch.setenv("BILLING_MODE", "live")
    for key, value in FAKE_AWS.items():
        monkeypatch.setenv(key, value)
    return app_env


def test_demo_month_matches_the_stored_snapshot(app_env) -> None:
    at = run_page()
    period = at.selectbox(key="costs_month").value
    view = stored_view(app_env["DATABASE_URL"], period)
    metrics = {m.label: m for m in at.metric}
    headline = metrics["Month to date"] if view.running else metrics[f"Total {period}"]
    assert headline.value == usd(view.total)
    assert metrics[f"Last month ({view.previous_period})"].value == usd(view.previous_total)
    assert metrics["Unattributed"].value == usd(view.unattributed)
    expected_forecast = usd(view.forecast) if view.forecast is not None else "n/a"
    assert metrics["Forecast month end"].value == expected_forecast
    assert any("Estimated" in m.value for m in at.markdown)
    assert any("Last refreshed" in c.value for c in at.caption)
    table = at.dataframe[0].value
    assert len(table) == len(view.breakdown)
    assert at.button[0].disabled  # demo mode: nothing to refresh from
    assert len(at.get("plotly_chart")) == 3


def test_filters_narrow_every_figure(app_env) -> None:
    at = run_page()
    period = at.selectbox(key="costs_month").value
    customer = at.selectbox(key="costs_customer").options[1]
    at.selectbox(key="costs_customer").select_index(1).run()
    assert not at.exception
    with Session(make_engine(app_env["DATABASE_URL"])) as s:
        cid = next(c for c, n in attribution.Attribution.load(s).names.items() if n == customer)
    view = stored_view(app_env["DATABASE_URL"], period, aws_costs.CostFilter(customer=cid))
    assert at.metric[0].value == usd(view.total)
    assert set(at.dataframe[0].value["customer"]) == {customer}
    at.selectbox(key="costs_customer").select(snapshots.UNATTRIBUTED).run()
    view = stored_view(
        app_env["DATABASE_URL"], period, aws_costs.CostFilter(customer=snapshots.UNATTRIBUTED)
    )
    assert at.metric[0].value == usd(view.total)
    at.selectbox(key="costs_month").select(period.previous()).run()
    assert not at.exception
    closed = stored_view(
        app_env["DATABASE_URL"],
        period.previous(),
        aws_costs.CostFilter(customer=snapshots.UNATTRIBUTED),
    )
    assert at.metric[0].label == f"Total {period.previous()}"
    assert at.metric[0].value == usd(closed.total)


def test_reruns_never_call_cost_explorer(live_env, ce_stub) -> None:
    before = snapshot_count(live_env["DATABASE_URL"])
    at = run_page()
    for i in range(30):
        if i % 10 == 1:
            at.selectbox(key="costs_customer").select_index(i % 3)
        if i % 10 == 5:
            at.selectbox(key="costs_service").select_index(1)
        at.run()
        assert not at.exception
    assert ce_stub.request_count == 0
    assert snapshot_count(live_env["DATABASE_URL"]) == before


def test_refresh_button_fetches_through_the_service(live_env, ce_stub, db_url, monkeypatch) -> None:
    # An empty database: the demo's snapshots are stamped at DEMO_NOW, which may be later
    # than the real clock this refresh is stamped with.
    monkeypatch.setenv("DATABASE_URL", db_url)
    current = Period.containing(utcnow())
    day = current.start.isoformat()
    ce_stub.add(
        "GetCostAndUsage",
        page(
            result(
                day,
                day,
                [
                    group("111111111111", "AWS Lambda", "40.005"),
                    group("123456789012", "AWS Lambda", "2.4"),
                ],
                estimated=True,
            )
        ),
    )
    ce_stub.add("GetCostAndUsage", page())
    ce_stub.add("GetCostForecast", {"Total": {"Amount": "99", "Unit": "USD"}})
    at = run_page()
    at.selectbox(key="costs_month").select(current).run()
    at.button[0].click().run()
    assert not at.exception
    assert ce_stub.operations()[:2] == ["GetCostAndUsage", "GetCostAndUsage"]
    spent = ce_stub.request_count
    assert at.metric[0].value == "USD 42.41"  # 40.005 + 2.4, rounded once
    assert at.metric[3].value == "USD 42.41"  # no customers in this database: all unattributed
    with Session(make_engine(db_url)) as s:
        snap = snapshots.latest_snapshot(s, current, SOURCE)
        assert snap.granularity == "DAILY" and snap.estimated and snap.source == "cost_explorer"
        assert snap.request_count == 3  # usage, adjustments, forecast
        # Last month had no snapshot, so the refresh fetched it too; every request is recorded.
        assert snapshots.latest_snapshot(s, current.previous(), SOURCE) is not None
        assert refresh.requests_since(s, current.previous().start_at) == spent == 5
    at.run()
    at.run()
    assert ce_stub.request_count == spent  # reruns after the refresh fetch nothing


def test_refresh_failure_keeps_the_last_snapshot_on_screen(live_env, ce_stub) -> None:
    ce_stub.fail("GetCostAndUsage", "AccessDeniedException", "not authorized", times=3)
    at = run_page()
    shown = at.metric[0].value
    before = snapshot_count(live_env["DATABASE_URL"])
    at.button[0].click().run()
    assert not at.exception
    assert any(
        "ce:GetCostAndUsage" in e.value and "Still showing the snapshot" in e.value
        for e in at.error
    )
    assert at.metric[0].value == shown
    with Session(make_engine(live_env["DATABASE_URL"])) as s:
        complete = s.exec(
            select(func.count()).select_from(CostSnapshot).where(CostSnapshot.status == "complete")
        ).one()
    assert complete == before  # nothing half-stored; one failed attempt recorded
    at.run()
    assert any("last refresh" in w.value and "failed" in w.value for w in at.warning)


def test_month_without_snapshot_says_what_to_do(app_env, monkeypatch) -> None:
    monkeypatch.setenv("COST_METRIC", "AmortizedCost")  # no snapshots for this metric
    at = run_page()
    assert len(at.metric) == 0
    assert any("fetch-costs" in i.value for i in at.info)


# The role guard is covered for every page and identity by tests/test_pages_access.py.


def test_unattributed_card_says_how_invoices_split_it(app_env, monkeypatch) -> None:
    """With a split rule the page states the pool, what is allocated and what is left."""
    monkeypatch.setenv("SHARED_COST_RULE", "even")
    at = run_page()
    period = at.selectbox(key="costs_month").value
    view = stored_view(app_env["DATABASE_URL"], period)
    assert view.shared is not None and view.shared.pool == view.unattributed != 0
    [said] = [c.value for c in at.caption if c.value.startswith("Shared AWS costs")]
    assert said == view.shared_note
    assert f"{usd(view.unattributed)} allocated evenly among the active customers" in said
