"""The Overview's cockpit figures (views/overview.py) against hand-computed ones on a small
world, and the Overview page in AppTest for viewers and admins."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import pytest
import streamlit as st
from sqlmodel import Session
from streamlit.testing.v1 import AppTest

from billing_core.costs.rollups import write_rollups
from billing_core.models import CostLine, CostSnapshot
from billing_core.periods import Period
from billing_core.states import InvoiceStatus, LineKind
from billing_core.views.aws_costs import build_costs_view
from billing_core.views.overview import build_cockpit, latest_billed_month
from tests.conftest import ROOT
from tests.support.aws import settings
from tests.test_margin import SEP, add_invoice, add_snapshot, world  # noqa: F401  (fixture)
from tests.test_pages_access import AUTH

OCT = Period(2026, 10)
NOV = Period(2026, 11)
NOW = datetime(2026, 11, 11, 9, 0, tzinfo=UTC)  # day 11 of November
PAGE = str(ROOT / "pages/overview.py")


@pytest.fixture
def two_months(session: Session, world: dict[str, int]) -> dict[str, int]:  # noqa: F811
    """`world`'s September, then October (cost: Aster +40, Basalt -20, Cedar +30; billed:
    Aster EUR 250.00, Basalt USD 300.00) and 11 days of November (USD 110.00 so far)."""
    add_snapshot(
        session,
        OCT,
        [
            ("111111111111", "Amazon EC2", "Usage", "150.00"),
            ("222222222222", "Amazon EC2", "Usage", "180.50"),
            ("333333333333", "Amazon EC2", "Usage", "80.00"),
        ],
    )
    add_invoice(
        session,
        world["aster"],
        OCT,
        "EUR",
        [(LineKind.BASE_FEE, None, 5000), (LineKind.AWS, "Amazon EC2", 20000)],
        fx_rate="0.9",
    )
    add_invoice(
        session,
        world["basalt"],
        OCT,
        "USD",
        [(LineKind.BASE_FEE, None, 10000), (LineKind.AWS, "Amazon EC2", 20000)],
        status=InvoiceStatus.PAID,
    )
    running = CostSnapshot(
        period=str(NOV),
        granularity="DAILY",
        group_by="LINKED_ACCOUNT",
        metric="UnblendedCost",
        estimated=True,
        fetched_at=NOW,
    )
    session.add(running)
    session.flush()
    for day in range(1, 12):
        session.add(
            CostLine(
                snapshot_id=running.id or 0,
                period=str(NOV),
                day=f"2026-11-{day:02d}",
                account_id="111111111111",
                service="Amazon EC2",
                amount=Decimal(10),
            )
        )
    session.flush()
    write_rollups(session, [running.id or 0])
    return world


def test_cockpit_margin_per_month_and_customer(
    session: Session, two_months: dict[str, int]
) -> None:
    cockpit = build_cockpit(session, settings(), now=NOW)
    assert cockpit.month == OCT  # default: the last closed month
    assert len(cockpit.months) == 13 and cockpit.months[-1] == OCT
    assert cockpit.currencies == ["EUR", "USD"]
    oct_eur = cockpit.margin_of("EUR", OCT)
    assert oct_eur.revenue == Decimal("250.00")
    assert oct_eur.cost_usd == Decimal("150.00")
    assert oct_eur.cost == Decimal("135.0000")  # 150 x 0.9, the invoice's own rate
    assert oct_eur.margin == Decimal("115.00")
    assert oct_eur.margin_pct == Decimal(46)
    sep_usd = cockpit.margin_of("USD", SEP)
    assert sep_usd.revenue_minor == 32055 and sep_usd.margin == Decimal("120.05")
    assert cockpit.margin_of("USD", Period(2026, 1)).revenue_minor == 0  # nothing billed
    (basalt,) = cockpit.by_customer["USD"]
    assert basalt.key == "Basalt" and basalt.margin == Decimal("300.00") - Decimal("180.50")


def test_cockpit_movers(session: Session, two_months: dict[str, int]) -> None:
    cockpit = build_cockpit(session, settings(), now=NOW)
    moves = [(m.customer, m.before, m.now, m.change) for m in cockpit.cost_movers]
    assert moves == [
        ("Aster", Decimal("110.00"), Decimal("150.00"), Decimal("40.00")),
        ("Cedar", Decimal("50.00"), Decimal("80.00"), Decimal("30.00")),  # not billed: counts
        ("Basalt", Decimal("200.50"), Decimal("180.50"), Decimal("-20.00")),
    ]
    assert cockpit.cost_movers[0].change_pct == Decimal("40.00") / Decimal("110.00") * 100
    eur = cockpit.invoice_movers["EUR"]
    assert [(m.customer, m.before, m.now) for m in eur] == [
        ("Aster", Decimal("199.16"), Decimal("250.00"))
    ]
    usd = cockpit.invoice_movers["USD"]
    assert [(m.customer, m.change) for m in usd] == [("Basalt", Decimal("-20.55"))]


def test_cockpit_month_to_date_and_forecast(session: Session, two_months: dict[str, int]) -> None:
    mtd = build_cockpit(session, settings(), now=NOW).month_to_date
    assert mtd.period == NOV
    assert mtd.total == Decimal(110) and mtd.covered_days == 11
    # No Cost Explorer forecast stored: the run rate of the 10 complete days (the 11th, today,
    # is partial in Cost Explorer), 100 / 10 days x 30 days.
    assert mtd.forecast_source == "run rate of the first 10 days"
    assert mtd.forecast == Decimal(300)
    assert mtd.last_month_total == Decimal("410.50")  # October: 150 + 180.50 + 80
    assert mtd.forecast_change_pct == (Decimal(300) - Decimal("410.50")) / Decimal("410.50") * 100


def test_month_to_date_totals_agree_with_the_costs_page(
    session: Session, two_months: dict[str, int]
) -> None:
    # The Overview sums the month in SQL (totals_only); the AWS costs page adds its rows up.
    full = build_costs_view(session, settings(), NOV)
    quick = build_costs_view(session, settings(), NOV, totals_only=True)
    assert quick.total == full.total == Decimal(110)
    assert (quick.previous_total, quick.previous_same_days, quick.compared_total) == (
        full.previous_total,
        full.previous_same_days,
        full.compared_total,
    )
    assert (quick.forecast, quick.forecast_source) == (full.forecast, full.forecast_source)
    assert quick.by_customer.empty and not full.by_customer.empty  # no tables built


def test_latest_billed_month(session: Session, two_months: dict[str, int]) -> None:
    assert latest_billed_month(session, NOV) == OCT  # November is not invoiced
    assert latest_billed_month(session, SEP) == SEP
    assert latest_billed_month(session, Period(2026, 8)) is None


def test_cockpit_of_another_month(session: Session, two_months: dict[str, int]) -> None:
    cockpit = build_cockpit(session, settings(), now=NOW, month=SEP)
    assert cockpit.months[-1] == SEP and Period(2026, 10) not in cockpit.months
    # Nothing in August: every customer is new, largest first, with no percentage.
    assert [m.customer for m in cockpit.cost_movers] == ["Basalt", "Aster", "Cedar"]
    assert all(m.change_pct is None for m in cockpit.cost_movers)


# --- the page ------------------------------------------------------------------------------------


def open_page(month: str = "2026-09", user: dict[str, Any] | None = None) -> AppTest:
    at = AppTest.from_file(PAGE, default_timeout=90)
    at.query_params["month"] = month
    if user is not None:
        at.secrets["auth"] = dict(AUTH)
        at.user = user
    at.run()
    assert not at.exception, at.exception
    return at


def _check_demo_cockpit(at: AppTest) -> None:
    metrics = {m.label: m.value for m in at.metric}
    assert metrics["Active customers"] == "9"
    assert metrics["Invoices billed for 2026-09"] == "9"
    billed = [m.value for m in at.metric if m.label == "Billed 2026-09"]
    assert billed == ["EUR 8,231.76", "USD 28,287.14"]  # as margin-report prints them
    margins = [m.value for m in at.metric if m.label == "Gross margin"]
    assert margins == ["EUR 1,123.55", "USD 2,548.22"]
    assert {"Open", "Overdue", "Declined, still due", "Collection rate", "DSO"} <= set(metrics)
    links = " ".join(m.value for m in at.markdown)
    assert "/invoices?status=open" in links and "/invoices?status=failed" in links
    assert "/invoices?overdue=1&currency=EUR" in links
    assert "/invoices?period=2026-09&currency=EUR" in links
    tables = [t.value for t in at.dataframe]
    by_customer = next(t for t in tables if "Gross margin" in t.columns)
    assert by_customer["Details"].str.startswith("/customer?customer=").all()
    assert len(at.get("plotly_chart")) >= 3  # revenue per currency, aging
    assert at.query_params["month"] == "2026-09"


def test_overview_page_as_admin(app_env: dict[str, str]) -> None:
    _check_demo_cockpit(open_page())


def test_overview_page_as_viewer_shows_the_same_and_offers_no_action(
    app_env: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("VIEWER_EMAILS", "finance@acme.example")
    monkeypatch.setenv("ADMIN_EMAILS", "boss@acme.example")
    st.cache_resource.clear()
    at = open_page(user={"is_logged_in": True, "email": "finance@acme.example"})
    _check_demo_cockpit(at)
    assert not [b for b in at.button if b.label != "Sign out"]


def test_month_picker_moves_the_url(app_env: dict[str, str]) -> None:
    at = open_page()
    at.selectbox(key="overview_month").set_value(Period(2026, 8)).run()
    assert not at.exception
    assert at.query_params["month"] == "2026-08"
    assert next(m.value for m in at.metric if m.label == "Billed 2026-08") == "EUR 7,881.07"


def test_overview_and_customer_pages_on_an_empty_database(
    app_env: dict[str, str], db_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DATABASE_URL", db_url)
    st.cache_resource.clear()
    at = AppTest.from_file(PAGE, default_timeout=90).run()
    assert not at.exception and not at.error
    infos = " ".join(i.value for i in at.info)
    assert "run the invoicing first" in infos and "Nobody owes anything" in infos
    at = AppTest.from_file(str(ROOT / "pages/customer.py"), default_timeout=90).run()
    assert not at.exception and not at.error
    assert any("No customers yet" in i.value for i in at.info)
