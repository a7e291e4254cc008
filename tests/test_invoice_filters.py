"""The invoices page's receivables filters: search, age buckets, overdue, issued and paid date
ranges, file names, the CSV export following them; and the page's URL (AppTest): filters and
the open invoice come from and go to the query parameters."""

from __future__ import annotations

import csv
import io
from datetime import UTC, date, datetime, timedelta

import pytest
from sqlmodel import Session, select
from streamlit.testing.v1 import AppTest

from billing_core.db import make_engine
from billing_core.invoicing.export_csv import write_invoices_csv
from billing_core.models import Invoice, display_status_in
from billing_core.views import invoices as inv
from billing_core.views import receivables as rcv
from tests.conftest import ROOT
from tests.test_receivables import AS_OF, build_world

PAGE = str(ROOT / "pages/invoices.py")


@pytest.fixture
def world(session: Session) -> dict[str, int]:
    return build_world(session)


def _numbers(session: Session, f: inv.InvoiceFilter) -> set[str]:
    return set(inv.invoice_table(session, f, now=AS_OF)["number"])


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("open_9", {"open_90d", "open_91d"}),  # part of the number; '_' is not a wildcard
        ("EUR@example", {"eur_open"}),  # the customer's email, any case
        ("jpy ltd", {"jpy_paid"}),  # the customer's name
        ("100.00", {"current", "eur_open"}),  # USD 100.00 and EUR 100.00
        ("50", {"open_90d", "gbp_old"}),  # USD 50.00 and GBP 50.00, not JPY 50
        ("¥5,000", {"jpy_paid"}),  # JPY 5,000 (USD 5,000.00 is no total here)
        ("-25", {"credit"}),
        ("100.001", set()),  # no currency of the world has three decimals
        ("nothing like it", set()),
    ],
)
def test_free_text_search(
    session: Session, world: dict[str, int], text: str, expected: set[str]
) -> None:
    assert _numbers(session, inv.InvoiceFilter(search=text, as_of=AS_OF)) == expected


def test_search_by_the_name_an_invoice_was_issued_to(
    session: Session, world: dict[str, int]
) -> None:
    invoice = session.get(Invoice, world["open_31d"])
    assert invoice is not None
    invoice.customer_name, invoice.customer_email = "Old Name GmbH", "billing@old.example"
    session.commit()
    assert _numbers(session, inv.InvoiceFilter(search="old name")) == {"open_31d"}
    assert _numbers(session, inv.InvoiceFilter(search="@OLD.example")) == {"open_31d"}


def test_buckets_and_overdue(session: Session, world: dict[str, int]) -> None:
    f = inv.InvoiceFilter(buckets=("1-30", "over-90"), as_of=AS_OF)
    assert _numbers(session, f) == {"partial_1d", "failed_30d", "open_91d"}
    overdue = inv.InvoiceFilter(overdue=True, currencies=("USD",), as_of=AS_OF)
    assert _numbers(session, overdue) == {
        "partial_1d",
        "failed_30d",
        "open_31d",
        "open_90d",
        "open_91d",
    }
    # The headline figures of the overdue selection are the summary's overdue amount.
    (usd,) = inv.headline_figures(session, overdue)
    assert usd.outstanding == rcv.receivables_summary(session, as_of=AS_OF)["USD"].overdue_minor


def test_date_ranges_on_issued_and_paid(session: Session, world: dict[str, int]) -> None:
    issued = inv.InvoiceFilter(issued_from=date(2026, 11, 1), issued_to=date(2026, 11, 13))
    assert _numbers(session, issued) == {"current", "due_today", "eur_open"}
    assert _numbers(session, inv.InvoiceFilter(issued_from=date(2026, 11, 14))) == {"issued_later"}
    paid = inv.InvoiceFilter(paid_from=date(2026, 9, 3), paid_to=date(2026, 9, 3))
    assert _numbers(session, paid) == {"paid", "paid_up_open"}
    assert _numbers(session, inv.InvoiceFilter(paid_to=date(2026, 5, 3))) == {"gbp_old"}


def test_table_shows_due_date_days_late_and_only_future_attempts(
    session: Session, world: dict[str, int]
) -> None:
    failed = session.get(Invoice, world["failed_30d"])
    partial = session.get(Invoice, world["partial_1d"])
    assert failed is not None and partial is not None
    failed.next_payment_attempt = AS_OF + timedelta(days=2)
    partial.next_payment_attempt = AS_OF - timedelta(days=2)
    session.commit()
    table = inv.invoice_table(session, inv.InvoiceFilter(), now=AS_OF).set_index("number")
    assert table.loc["open_31d", "days_past_due"] == 31
    assert table.loc["open_31d", "due"] == datetime(2026, 10, 20, 6, tzinfo=UTC)
    for owing_nothing in ("paid", "void", "uncollectible", "current", "undated", "due_today"):
        assert table.isna().loc[owing_nothing, "days_past_due"], owing_nothing
    assert table.loc["failed_30d", "next_attempt"] == AS_OF + timedelta(days=2)
    assert table.isna().loc["partial_1d", "next_attempt"]  # in the past: nothing scheduled


def test_file_name_says_every_filter() -> None:
    f = inv.InvoiceFilter(
        statuses=("open",),
        buckets=("1-30",),
        overdue=True,
        search="acme",
        issued_from=date(2026, 1, 1),
        issued_to=date(2026, 3, 31),
        paid_from=date(2026, 2, 1),
    )
    assert f.file_name("invoices") == (
        "invoices_open_overdue_age-1-30_issued-2026-01-01-to-2026-03-31_"
        "paid-on-from-2026-02-01_search-acme.csv"
    )


def test_csv_export_follows_the_filters(session: Session, world: dict[str, int]) -> None:
    f = inv.InvoiceFilter(overdue=True, search="usd", as_of=AS_OF)
    buffer = io.StringIO()
    summary = write_invoices_csv(session, f, buffer)
    rows = list(csv.DictReader(io.StringIO(buffer.getvalue())))
    assert {r["number"] for r in rows} == _numbers(session, f)
    assert summary.rows == len(rows) == inv.count_invoices(session, f) == 5


# ------------------------------------------------------------------------------ page and URL


def _page(**params: str) -> AppTest:
    at = AppTest.from_file(PAGE, default_timeout=60)
    at.query_params.update(params)
    return at.run()


def test_url_sets_the_filters(app_env: dict[str, str]) -> None:
    at = _page(status="failed,bogus", currency="EUR", period="2026-01..2026-08")
    assert not at.exception
    assert at.multiselect(key="inv_status").value == ["failed"]  # the unknown word is dropped
    assert at.select_slider(key="inv_periods").value == ("2026-01", "2026-08")
    table = at.dataframe(key="inv_table").value
    assert len(table) > 0 and set(table["status"]) == {"failed"}
    assert set(table["period"]) <= {f"2026-{m:02d}" for m in range(1, 9)}


def test_url_overdue_bucket_and_search(app_env: dict[str, str]) -> None:
    at = _page(overdue="1")
    assert at.checkbox(key="inv_overdue").value is True
    overdue = at.dataframe(key="inv_table").value
    assert len(overdue) > 0 and (overdue["days_past_due"].astype(int) >= 1).all()
    number = str(overdue.iloc[0]["number"])
    at = _page(q=number.lower())
    assert list(at.dataframe(key="inv_table").value["number"]) == [number]
    at = _page(bucket="current", status="paid")
    assert at.dataframe(key="inv_table").value.empty  # a paid invoice owes nothing


def test_url_opens_an_invoice_and_follows_the_widgets(app_env: dict[str, str]) -> None:
    with Session(make_engine(app_env["DATABASE_URL"])) as s:
        failed = s.exec(select(Invoice).where(display_status_in(["failed"]))).first()
    assert failed is not None and failed.number
    at = _page(invoice=failed.number)
    assert not at.exception
    assert at.text_input(key="inv_lookup").value == failed.number
    assert {m.label: m.value for m in at.metric}["Status"] == "failed"
    at.multiselect(key="inv_status").set_value(["paid", "open"]).run()
    at.checkbox(key="inv_overdue").check().run()
    assert at.query_params["status"] == "paid,open"
    assert at.query_params["overdue"] == "1"
    assert at.query_params["invoice"] == failed.number
    assert "period" not in at.query_params  # the default range keeps a plain URL


def test_a_broken_link_still_opens_the_page(app_env: dict[str, str]) -> None:
    at = _page(period="1999-01..2000-01", issued="2026-13-01..x", customer="abc,999999")
    assert not at.exception
    assert at.multiselect(key="inv_customer").value == []
    assert len(at.dataframe(key="inv_table").value) > 0
