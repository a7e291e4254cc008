"""Readable at a glance, in the page data and the pages (AppTest): the invoices chart keeps a
bar per month and a legend entry for every status; usage reads money as money and counts
whole; the AWS costs unattributed card follows the filters; pages keep their place in the URL."""

from __future__ import annotations

from decimal import Decimal

import pandas as pd
from sqlmodel import Session
from streamlit.testing.v1 import AppTest

from billing_core.config import load_settings
from billing_core.costs import snapshots
from billing_core.db import make_engine
from billing_core.money import display, round_minor
from billing_core.periods import Period
from billing_core.usage.limits import MetricUsage
from billing_core.views import aws_costs
from billing_core.views import invoices as inv
from billing_core.views import usage as views_usage
from tests.conftest import ROOT


def test_chart_keeps_a_bar_per_month_and_every_status_in_the_legend() -> None:
    frame = pd.DataFrame(
        [
            ("2026-09", "EUR", "paid", 10_000),
            ("2026-09", "USD", "paid", 20_000),
            ("2026-09", "USD", "failed", 5_000),  # only in the second panel
            ("2026-09", "USD", "credit", -2_500),
        ],
        columns=["period", "currency", "status", "total_minor"],
    )
    fig = inv.billed_chart(frame)
    in_legend = {t.name for t in fig.data if t.showlegend}
    assert in_legend == {"paid", "failed", "credit"}
    # One month on a category axis: a full-width bar, not a hairline on a day axis.
    assert fig.layout.xaxis.type == "category" and fig.layout.xaxis2.type == "category"
    assert fig.layout.yaxis.title.text.startswith("EUR")
    assert fig.layout.yaxis2.title.text.startswith("USD")


def _usage(metric: str, used: str, included: str, projected: str) -> MetricUsage:
    return MetricUsage(
        customer_id=1,
        customer="Acme",
        currency="EUR",
        plan="studio",
        plan_currency="EUR",
        metric=metric,
        unit="calls",
        aggregation="sum",
        used=Decimal(used),
        included=Decimal(included),
        unit_price=Decimal(0),
        projected=Decimal(projected),
    )


def test_usage_figures_read_as_money_and_whole_counts() -> None:
    spend = _usage("aws_spend", "3456.173", "3000", "4100.5")
    assert views_usage.quantity_text(spend.used, spend) == "EUR 3,456.17"
    calls = _usage("api_calls", "1234567", "1000000", "1400000.7")
    assert views_usage.quantity_text(calls.projected, calls) == "1,400,001"
    storage = _usage("storage_gb", "12.5", "50", "20.12345")
    assert views_usage.quantity_text(storage.projected, storage) == "20.123"
    row = views_usage.report_frame([spend, calls]).set_index("Metric")
    assert row.loc["AWS spend (EUR)", "Limit"] == "EUR 3,000.00"
    assert list(row.columns[:3]) == ["customer_id", "Customer", "Status"]


def test_unattributed_card_follows_the_filters(app_env: dict[str, str]) -> None:
    at = AppTest.from_file(str(ROOT / "pages/aws_costs.py"), default_timeout=60).run()
    period = at.selectbox(key="costs_month").value
    cards = {m.label: m.value for m in at.metric}
    with Session(make_engine(app_env["DATABASE_URL"])) as s:
        whole = aws_costs.build_costs_view(s, load_settings(), period)
        one = next(iter(whole.customers))[0]
        single = aws_costs.build_costs_view(
            s, load_settings(), period, aws_costs.CostFilter(customer=one)
        )
        service = next(
            svc
            for who, svc in zip(
                whole.breakdown["customer"], whole.breakdown["service"], strict=True
            )
            if who == snapshots.UNATTRIBUTED_LABEL and svc in whole.services
        )
        by_service = aws_costs.build_costs_view(
            s, load_settings(), period, aws_costs.CostFilter(service=service)
        )
    assert whole.unattributed > 0 and cards["Unattributed"] == _usd(whole.unattributed)
    assert single.selected_unattributed == 0
    assert 0 < by_service.selected_unattributed < whole.unattributed
    at.selectbox(key="costs_service").select(service).run()
    assert {m.label: m.value for m in at.metric}["Unattributed"] == _usd(
        by_service.selected_unattributed
    )
    assert at.query_params["service"] == service


def _usd(amount: Decimal) -> str:
    return display(round_minor(amount, "USD"), "USD")


def test_aws_costs_url_sets_month_and_customer(app_env: dict[str, str]) -> None:
    at = AppTest.from_file(str(ROOT / "pages/aws_costs.py"), default_timeout=60)
    at.query_params.update({"month": "2026-09", "customer": snapshots.UNATTRIBUTED})
    at.run()
    assert not at.exception
    assert at.selectbox(key="costs_month").value == Period(2026, 9)
    assert at.selectbox(key="costs_customer").value == snapshots.UNATTRIBUTED
    assert set(at.dataframe[0].value["customer"]) == {snapshots.UNATTRIBUTED_LABEL}


def test_usage_url_sets_period_statuses_and_customer(app_env: dict[str, str]) -> None:
    at = AppTest.from_file(str(ROOT / "pages/usage.py"), default_timeout=60)
    at.query_params.update({"period": "2026-11", "show": "over"})
    at.run()
    assert not at.exception
    assert at.selectbox(key="usage_period").value == Period(2026, 11)
    table = at.dataframe[0].value
    assert len(table) > 0 and set(table["Status"]) == {views_usage.STATUS_LABELS["over"]}
    customer = at.selectbox(key="usage_customer").options[-1]
    at.selectbox(key="usage_customer").select_index(
        len(at.selectbox(key="usage_customer").options) - 1
    ).run()
    assert at.query_params["customer"] != ""
    again = AppTest.from_file(str(ROOT / "pages/usage.py"), default_timeout=60)
    again.query_params.update(dict(at.query_params))
    again.run()
    assert again.selectbox(key="usage_customer").value == at.selectbox(key="usage_customer").value
    assert customer
