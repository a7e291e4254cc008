"""The Customer page: its view (views/customer.py) on the demo world, the upcoming invoice
priced by the run's own code, and the page in AppTest for viewers and admins."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest
import streamlit as st
from sqlmodel import Session, func, select
from streamlit.testing.v1 import AppTest

from billing_core.costs.attribution import attributed_costs
from billing_core.db import make_engine
from billing_core.demo.costs import DEMO_COST_SOURCE
from billing_core.exchange_rates.rates import load_rates
from billing_core.invoicing.drafts import build_drafts
from billing_core.invoicing.pricing import aws_amount
from billing_core.models import Customer, Invoice, Plan
from billing_core.periods import Period
from billing_core.states import LineKind
from billing_core.views.customer import build_customer_view, stripe_customer_url, usage_frame
from billing_core.views.invoices import InvoiceFilter, headline_figures
from tests.conftest import DEMO_NOW, ROOT
from tests.support.aws import settings
from tests.test_pages_access import AUTH

NOV = Period(2026, 11)
PAGE = str(ROOT / "pages/customer.py")


def _customer(session: Session, email: str) -> Customer:
    return session.exec(select(Customer).where(Customer.email == email)).one()


def test_upcoming_invoice_is_what_the_run_would_bill_today(demo_session: Session) -> None:
    acme = _customer(demo_session, "billing@acme-analytics.example")
    cid = acme.id or 0
    invoices = demo_session.exec(select(func.count()).select_from(Invoice)).one()
    view = build_customer_view(demo_session, settings(), cid, now=DEMO_NOW)
    upcoming = view.upcoming
    assert upcoming.period == NOV and upcoming.problem is None
    draft = upcoming.draft
    assert draft is not None and draft.currency == "EUR"
    # A run today refuses November (its costs are month to date); the page prices them.
    run = build_drafts(demo_session, NOV, source=DEMO_COST_SOURCE, customer_id=cid)
    assert not run.drafts and run.problems[0].step == "costs"
    # The AWS lines are the month's costs so far with the plan's markup, at the newest
    # recorded rate (November's is not recorded yet), each rounded once.
    costs = attributed_costs(demo_session, NOV, DEMO_COST_SOURCE).usage[cid]
    plan = demo_session.get(Plan, acme.plan_id)
    assert plan is not None
    rates = load_rates(demo_session, NOV, latest=True)
    aws = {line.service: line.amount_minor for line in draft.lines if line.kind == LineKind.AWS}
    assert aws == {
        service: aws_amount(usd, plan.markup_pct, currency="EUR", rates=rates).to_minor()
        for service, usd in costs.items()
        if usd
    }
    assert draft.lines[0].kind == LineKind.BASE_FEE
    assert draft.lines[0].amount_minor == plan.base_fee_minor
    assert draft.total_minor == sum(line.amount_minor for line in draft.lines)
    assert view.aws_cost == sum(costs.values(), Decimal(0))
    # Nothing was written.
    assert demo_session.exec(select(func.count()).select_from(Invoice)).one() == invoices


def test_profile_history_margin_and_lifetime(demo_session: Session) -> None:
    birch = _customer(demo_session, "accounts@birch.example")
    view = build_customer_view(demo_session, settings(), birch.id or 0, now=DEMO_NOW)
    p = view.profile
    assert p.name == "Birch & Co" and p.currency == "EUR"
    assert p.account_ids == ("222222222222",) and p.plan == "indie"
    assert p.payment_method is not None and p.stripe_url is None  # not in Stripe yet
    assert len(view.history) == 12 and set(view.history["customer"]) == {"Birch & Co"}
    months = view.margin["EUR"]
    assert [m.key for m in months] == [str(NOV.shift(-i)) for i in range(13, 0, -1)]
    billed = sum(m.revenue_minor for m in months)
    everything = headline_figures(demo_session, InvoiceFilter(customer_ids=(birch.id or 0,)))
    assert view.lifetime["EUR"] == everything[0]
    assert billed == everything[0].billed  # all twelve invoiced months are in the 13
    assert view.usage and {r.customer_id for r in view.usage} == {birch.id}
    frame = usage_frame(view.usage).set_index("Metric")
    assert frame.loc["AWS spend", "Included"] == "EUR 500.00"  # money, with its currency
    assert frame.loc["AWS spend", "Used"].startswith("EUR ")
    assert frame.loc["seats", "Included"] == "3 users"


def test_stripe_link_follows_the_key_mode() -> None:
    assert stripe_customer_url(None, settings()) is None
    test = settings(stripe_api_key="sk_test_123")
    assert stripe_customer_url("cus_1", test) == "https://dashboard.stripe.com/test/customers/cus_1"
    live = settings(stripe_api_key="sk_live_123")
    assert stripe_customer_url("cus_1", live) == "https://dashboard.stripe.com/customers/cus_1"


# --- the page ------------------------------------------------------------------------------------


def _birch_id(url: str) -> int:
    with Session(make_engine(url)) as session:
        return _customer(session, "accounts@birch.example").id or 0


def open_page(customer: int, user: dict[str, Any] | None = None) -> AppTest:
    at = AppTest.from_file(PAGE, default_timeout=90)
    at.query_params["customer"] = str(customer)
    if user is not None:
        at.secrets["auth"] = dict(AUTH)
        at.user = user
    at.run()
    assert not at.exception, at.exception
    return at


def _check_birch(at: AppTest) -> None:
    text = " ".join(m.value for m in at.markdown)
    assert "**Plan:** indie" in text and "222222222222" in text
    assert "card" in text and "not in Stripe yet" in text
    heads = [h.value for h in at.subheader]
    assert heads[:2] == ["Birch & Co", heads[1]] and "Upcoming invoice" in heads
    history = next(t.value for t in at.dataframe if "number" in t.value.columns)
    assert len(history) == 12
    # The upcoming invoice explains each line as the run preview does.
    upcoming = next(t.value for t in at.dataframe if "Rule applied" in t.value.columns)
    assert list(upcoming.columns) == [
        "Description",
        "AWS cost (at AWS rates)",
        "Rule applied",
        "Amount",
    ]
    assert len(upcoming) >= 1 and all(r for r in upcoming["Rule applied"])  # every line says why
    metrics = {m.label: m.value for m in at.metric}
    assert metrics["Billed (EUR)"].startswith("EUR ")
    assert metrics["Outstanding (EUR)"] == "EUR 179.33"  # the failed September invoice
    assert "/invoices?customer=" in text
    assert len(at.get("plotly_chart")) == 1


def test_customer_page_as_admin(app_env: dict[str, str]) -> None:
    cid = _birch_id(app_env["DATABASE_URL"])
    at = open_page(cid)
    _check_birch(at)
    assert at.query_params["customer"] == str(cid)


def test_customer_page_as_viewer_only_reads(
    app_env: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("VIEWER_EMAILS", "finance@acme.example")
    monkeypatch.setenv("ADMIN_EMAILS", "boss@acme.example")
    st.cache_resource.clear()
    at = open_page(
        _birch_id(app_env["DATABASE_URL"]),
        user={"is_logged_in": True, "email": "finance@acme.example"},
    )
    _check_birch(at)
    assert not [b for b in at.button if b.label != "Sign out"]  # nothing on it acts


def test_choosing_a_customer_moves_the_url(app_env: dict[str, str]) -> None:
    birch = _birch_id(app_env["DATABASE_URL"])
    at = open_page(birch)
    box = at.selectbox(key="customer_page_id")
    other = next(o for o in box.options if o != "Birch & Co")
    box.select(other).run()
    assert not at.exception
    assert at.subheader[0].value == other
    with Session(make_engine(app_env["DATABASE_URL"])) as session:
        chosen = session.exec(select(Customer.id).where(Customer.name == other)).one()
    assert at.query_params["customer"] == str(chosen) != str(birch)


def test_unknown_customer_in_the_url_opens_the_first(app_env: dict[str, str]) -> None:
    at = open_page(999_999)
    assert not at.exception and at.subheader
