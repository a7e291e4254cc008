"""Customer-facing line text: month names, services, metric names, units, numbers (tables)."""

from __future__ import annotations

from decimal import Decimal

import pytest

from billing_core.exchange_rates.convert import Rates
from billing_core.invoicing.line_text import (
    amount_text,
    metric_label,
    month_label,
    overage_description,
    plain_decimal,
    quantity_text,
    service_label,
    unit_label,
)
from billing_core.invoicing.pricing import MetricTerms, PlanTerms, PricingInput, price

D = Decimal


@pytest.mark.parametrize(
    ("service", "shown"),
    [
        ("AWS Lambda", "AWS Lambda"),
        ("Amazon Simple Storage Service", "Amazon Simple Storage Service"),
        ("EC2 - Other", "AWS EC2 - Other"),
        ("Tax", "AWS Tax"),
    ],
)
def test_service_names_are_never_prefixed_twice(service: str, shown: str) -> None:
    assert service_label(service) == shown


@pytest.mark.parametrize(
    ("metric", "shown"),
    [
        ("api_calls", "API calls"),
        ("seats", "Seats"),
        ("storage_gb", "Storage (GB)"),
        ("clusters", "Clusters"),
        ("licences", "Licences"),
        ("gpu_hours", "GPU hours"),
        ("egress_tb", "Egress (TB)"),
        ("Build-Minutes", "Build minutes"),
        ("x", "X"),
    ],
)
def test_metric_display_names(metric: str, shown: str) -> None:
    assert metric_label(metric) == shown


@pytest.mark.parametrize(
    ("unit", "quantity", "shown"),
    [
        ("users", D(1), "user"),
        ("users", D(2), "users"),
        ("users", D("1.5"), "users"),
        ("user", D(3), "users"),
        ("clusters", D(1), "cluster"),
        ("calls", D(1), "call"),
        ("licences", D(1), "licence"),
        ("GB", D(1), "GB"),
        ("GB", D(7), "GB"),
        ("", D(1), ""),
    ],
)
def test_units_agree_with_the_number(unit: str, quantity: Decimal, shown: str) -> None:
    assert unit_label(unit, quantity) == shown


@pytest.mark.parametrize(
    ("value", "shown"),
    [
        (D("1.2E+6"), "1,200,000"),
        (D("1200000.000000"), "1,200,000"),
        (D("2E+1"), "20"),
        (D("12.500"), "12.5"),
        (D("0.000001"), "0.000001"),
        (D(0), "0"),
        (D("-3000"), "-3,000"),
    ],
)
def test_quantities_have_separators_and_never_an_exponent(value: Decimal, shown: str) -> None:
    assert quantity_text(value) == shown


@pytest.mark.parametrize(
    ("value", "places", "shown", "csv"),
    [
        (D("2E+1"), 2, "20.00", "20.00"),
        (D("20.0000000000"), 2, "20.00", "20.00"),
        (D("0.0003000000"), 2, "0.0003", "0.0003"),
        (D("1234.5678000000"), 2, "1,234.5678", "1234.5678"),
        (D("1.2E+6"), 0, "1,200,000", "1200000"),
        (D("74.0468958579"), 2, "74.0469", "74.0468958579"),  # read rounded, exported exact
        (D("0.1234567891"), 3, "0.123457", "0.1234567891"),
        (D("-4.6200000000"), 2, "-4.62", "-4.62"),
    ],
)
def test_unit_amounts_keep_their_precision_without_exponent(
    value: Decimal, places: int, shown: str, csv: str
) -> None:
    assert amount_text(value, places) == shown
    assert plain_decimal(value, places) == csv
    assert Decimal(csv) == value  # the text is the stored value, exactly


@pytest.mark.parametrize(
    ("metric", "unit", "over", "included", "text"),
    [
        (
            "api_calls",
            "calls",
            D(1_200_000),
            D(10_000_000),
            "API calls: 1,200,000 calls over the 10,000,000 included, October 2026",
        ),
        ("seats", "users", D(1), D(10), "Seats: 1 user over the 10 included, October 2026"),
        (
            "clusters",
            "clusters",
            D(1),
            D(3),
            "Clusters: 1 cluster over the 3 included, October 2026",
        ),
        (
            "storage_gb",
            "GB",
            D("5.5"),
            D(100),
            "Storage (GB): 5.5 GB over the 100 GB included, October 2026",
        ),
        ("widgets", "", D(2000), D(1), "Widgets: 2,000 over the 1 included, October 2026"),
    ],
)
def test_overage_descriptions(
    metric: str, unit: str, over: Decimal, included: Decimal, text: str
) -> None:
    assert overage_description(metric, unit, over, included, "2026-10") == text


def test_month_labels() -> None:
    assert month_label("2026-10") == "October 2026"
    assert month_label("2027-01") == "January 2027"
    assert month_label("not a period") == "not a period"


def test_priced_lines_read_as_a_customer_reads_them() -> None:
    plan = PlanTerms(
        "growth",
        "USD",
        4900,
        markup_pct=D(10),
        metrics=(
            MetricTerms("api_calls", D(10_000_000), D("0.0003"), "calls"),
            MetricTerms("seats", D(10), D("3.00"), "users"),
            MetricTerms("clusters", D(1), D("80.00"), "clusters"),
        ),
    )
    inp = PricingInput(
        customer_id=1,
        customer_name="Acme",
        currency="USD",
        period="2026-10",
        plan=plan,
        aws_costs={"AWS Lambda": D("12.34"), "EC2 - Other": D("5")},
        usage={"api_calls": D(11_200_000), "seats": D(11), "clusters": D(2)},
    )
    lines = [line.description for line in price(inp, Rates("2026-10")).lines]
    assert lines == [
        "Growth plan, October 2026",
        "AWS Lambda, October 2026 (incl. 10% service fee)",
        "AWS EC2 - Other, October 2026 (incl. 10% service fee)",
        "API calls: 1,200,000 calls over the 10,000,000 included, October 2026",
        "Clusters: 1 cluster over the 1 included, October 2026",
        "Seats: 1 user over the 10 included, October 2026",
    ]


def test_a_unit_is_singular_for_exactly_one() -> None:
    from billing_core.invoicing.line_text import with_unit

    assert with_unit("1", Decimal(1), "clusters") == "1 cluster"
    assert with_unit("1.00", Decimal("1.00"), "seats") == "1.00 seat"
    assert with_unit("2", Decimal(2), "clusters") == "2 clusters"
    assert with_unit("1.5", Decimal("1.5"), "clusters") == "1.5 clusters"
    assert with_unit("1", Decimal(1), "GB") == "1 GB"
    assert with_unit("1", Decimal(1), "") == "1"
