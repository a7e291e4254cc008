"""CSV exports: exact totals, round trip against the database, filters, no secrets."""

from __future__ import annotations

import csv
import io
from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st
from sqlmodel import Session, func, select

from billing_core.db import session_scope
from billing_core.file_names import export_file_name
from billing_core.invoicing.export_csv import (
    INVOICE_COLUMNS,
    LINE_COLUMNS,
    csv_builder,
    plain_amount,
    safe_text,
    scaled_text,
    write_invoices_csv,
    write_lines_csv,
)
from billing_core.invoicing.line_text import plain_decimal
from billing_core.models import Customer, Invoice, InvoiceLine, display_status_in
from billing_core.money import format_minor, minor_to_decimal
from billing_core.views.invoices import InvoiceFilter
from tests.support.csv_rows import CRLF, LF, LONE_CR, as_dicts, both_readers, read_back


def _read(text: str) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(text)))


def _export(session: Session, f: InvoiceFilter, writer=write_invoices_csv) -> list[dict[str, str]]:
    buffer = io.StringIO()
    writer(session, f, buffer)
    return _read(buffer.getvalue())


def test_invoice_csv_round_trip_equals_database(demo_session: Session) -> None:
    rows = _export(demo_session, InvoiceFilter())
    assert tuple(rows[0]) == INVOICE_COLUMNS
    db = {i.id: i for i in demo_session.exec(select(Invoice)).all()}
    assert len(rows) == len(db)
    per_currency: dict[str, Decimal] = {}
    for row in rows:
        inv = db[int(row["invoice_id"])]
        for column, minor in (
            ("subtotal", inv.subtotal_minor),
            ("tax", inv.tax_minor),
            ("total", inv.total_minor),
            ("amount_paid", inv.amount_paid_minor),
            ("amount_refunded", inv.amount_refunded_minor),
        ):
            assert Decimal(row[column]) == minor_to_decimal(minor, inv.currency)
        # Plain decimal strings with the currency's digits: '179.33', never '179.3' or '1,234'.
        assert row["total"] == f"{minor_to_decimal(inv.total_minor, inv.currency)}"
        assert row["status"] == inv.display_status and row["number"] == inv.number
        per_currency[row["currency"]] = per_currency.get(row["currency"], Decimal(0)) + Decimal(
            row["total"]
        )
    for currency, total in per_currency.items():
        minor = demo_session.exec(
            select(func.sum(Invoice.total_minor)).where(Invoice.currency == currency)
        ).one()
        assert total == minor_to_decimal(int(minor), currency)


def test_line_csv_sums_to_invoice_totals(demo_session: Session) -> None:
    f = InvoiceFilter(period_from="2026-01", period_to="2026-06", currencies=("EUR",))
    invoices = _export(demo_session, f)
    lines = _export(demo_session, f, write_lines_csv)
    assert tuple(lines[0]) == LINE_COLUMNS
    sums: dict[str, Decimal] = {}
    for line in lines:
        key = line["invoice_id"]
        sums[key] = sums.get(key, Decimal(0)) + Decimal(line["amount"])
    assert {r["invoice_id"]: Decimal(r["total"]) for r in invoices} == sums
    assert {r["currency"] for r in invoices} == {"EUR"}
    assert all("2026-01" <= r["period"] <= "2026-06" for r in invoices)
    count = demo_session.exec(
        select(func.count())
        .select_from(InvoiceLine)
        .join(Invoice)
        .where(Invoice.currency == "EUR", Invoice.period >= "2026-01", Invoice.period <= "2026-06")
    ).one()
    assert len(lines) == count


def test_filters_select_exactly_what_is_asked(demo_session: Session) -> None:
    f = InvoiceFilter(statuses=("failed", "void"))
    rows = _export(demo_session, f)
    expected = demo_session.exec(
        select(func.count()).select_from(Invoice).where(display_status_in(["failed", "void"]))
    ).one()
    assert len(rows) == expected > 0
    assert {r["status"] for r in rows} <= {"failed", "void"}


def test_zero_and_three_decimal_currencies(session: Session) -> None:
    for cur, minor in (("JPY", 123456), ("KWD", 1234567)):
        c = Customer(name=f"C {cur}", email=f"{cur}@x.example", currency=cur)
        session.add(c)
        session.flush()
        session.add(
            Invoice(
                customer_id=c.id,
                period="2026-10",
                currency=cur,
                status="open",
                subtotal_minor=minor,
                total_minor=minor,
            )
        )
    session.flush()
    rows = {r["currency"]: r for r in _export(session, InvoiceFilter())}
    assert rows["JPY"]["total"] == "123456" and rows["KWD"]["total"] == "1234.567"


def test_formula_like_text_is_neutralised(session: Session) -> None:
    c = Customer(name='=HYPERLINK("http://evil")', email="e@x.example", currency="EUR")
    session.add(c)
    session.flush()
    session.add(
        Invoice(
            customer_id=c.id,
            period="2026-10",
            currency="EUR",
            total_minor=-500,
            subtotal_minor=-500,
        )
    )
    session.flush()
    row = _export(session, InvoiceFilter())[0]
    assert row["customer"].startswith("'=")
    assert row["total"] == "-5.00"  # amounts are never altered
    assert safe_text("+1") == "'+1" and safe_text("ACME") == "ACME" and safe_text(None) == ""


def test_no_payment_details_or_secrets_in_exports(demo_engine, monkeypatch) -> None:
    monkeypatch.setenv("STRIPE_API_KEY", "sk_test_should_never_appear")
    with session_scope(demo_engine) as s:
        c = s.exec(select(Customer)).first()
        c.stripe_customer_id = "cus_secretish"
        s.add(c)
    data = b"".join(
        csv_builder(demo_engine, InvoiceFilter(), w)()
        for w in (write_invoices_csv, write_lines_csv)
    )
    text = data.decode()
    for needle in ("sk_test", "card visa", "sepa_debit", "cus_secretish", "@", ",4242,"):
        assert needle not in text, needle


def test_builder_runs_only_when_called(demo_engine) -> None:
    build = csv_builder(
        demo_engine, InvoiceFilter(period_from="2026-09", period_to="2026-09"), write_invoices_csv
    )
    rows = _read(build().decode())
    assert len(rows) == 9 and {r["period"] for r in rows} == {"2026-09"}


@given(st.integers(min_value=-(10**15), max_value=10**15), st.sampled_from(["EUR", "JPY", "KWD"]))
def test_plain_amount_is_format_minor(minor: int, currency: str) -> None:
    assert plain_amount(minor, currency) == format_minor(minor, currency)


@pytest.mark.parametrize(
    ("selection", "what", "name"),
    [
        (InvoiceFilter(), "invoices", "invoices_all.csv"),
        (InvoiceFilter("2026-09", "2026-09"), "invoices", "invoices_2026-09.csv"),
        (
            InvoiceFilter("2025-11", "2026-09", ("paid", "open"), (3,), ("EUR",)),
            "invoice-lines",
            "invoice-lines_2025-11-to-2026-09_paid-open_EUR_customer-3.csv",
        ),
        (InvoiceFilter(period_from="2026-01"), "invoices", "invoices_from-2026-01.csv"),
        (InvoiceFilter(period_to="2026-01"), "invoices", "invoices_until-2026-01.csv"),
    ],
)
def test_export_file_names_say_what_was_filtered(
    selection: InvoiceFilter, what: str, name: str
) -> None:
    assert selection.file_name(what) == name


def test_file_name_parts_are_safe() -> None:
    assert export_file_name("aws-costs", "2026-10", "Ünïcode & Co / Ltd", None) == (
        "aws-costs_2026-10_Ünïcode-Co-Ltd.csv"
    )


def test_quantities_and_unit_amounts_never_show_an_exponent(session: Session) -> None:
    from billing_core.views.invoices import invoice_detail

    c = Customer(name="Exact Co", email="exact@x.example", currency="EUR")
    session.add(c)
    session.flush()
    invoice = Invoice(customer_id=c.id, period="2026-10", currency="EUR", total_minor=2000)
    session.add(invoice)
    session.flush()
    # What the database hands back after Decimal arithmetic: exact values in exponent form.
    session.add(
        InvoiceLine(
            invoice_id=invoice.id,
            kind="overage",
            description="API calls",
            quantity=Decimal("1.2E+6"),
            unit_amount=Decimal("2E+1"),
            amount_minor=2000,
        )
    )
    session.flush()
    session.expire_all()
    [row] = _export(session, InvoiceFilter(), write_lines_csv)
    assert (row["quantity"], row["unit_amount"]) == ("1200000", "20.00")
    lines = invoice_detail(session, invoice.id).lines
    assert (lines.iloc[0]["quantity"], lines.iloc[0]["unit_amount"]) == ("1,200,000", "20.00")
    stored = session.exec(select(InvoiceLine)).one()
    assert stored.quantity == Decimal(1_200_000) and stored.unit_amount == Decimal(20)


@given(
    st.integers(min_value=-(10**17), max_value=10**17),
    st.integers(min_value=1, max_value=10),
    st.integers(min_value=0, max_value=4),
)
def test_scaled_text_is_plain_decimal(scaled: int, scale: int, min_places: int) -> None:
    # The lines export formats stored scaled integers without Decimal; the text must not change.
    value = Decimal(scaled).scaleb(-scale)
    assert scaled_text(scaled, scale, min_places) == plain_decimal(value, min_places)


def test_line_cells_a_spreadsheet_would_run_are_quoted(session: Session) -> None:
    c = Customer(name="@Formula Co", email="f@x.example", currency="JPY")
    session.add(c)
    session.flush()
    invoice = Invoice(customer_id=c.id, period="2026-10", currency="JPY", total_minor=-7)
    session.add(invoice)
    session.flush()
    session.add(
        InvoiceLine(
            invoice_id=invoice.id,
            kind="aws",
            description="=HYPERLINK(1)",
            service="+Service",
            metric="-metric",
            quantity=Decimal("0.5"),
            unit_amount=Decimal("-14"),
            amount_minor=-7,
        )
    )
    session.flush()
    [row] = _export(session, InvoiceFilter(), write_lines_csv)
    assert (row["customer"], row["description"], row["service"], row["metric"]) == (
        "'@Formula Co",
        "'=HYPERLINK(1)",
        "'+Service",
        "'-metric",
    )
    assert (row["quantity"], row["unit_amount"], row["amount"], row["kind"]) == (
        "0.5",
        "-14",
        "-7",
        "aws",
    )


def _customer_with_invoice(session: Session, name: str, total: int) -> Invoice:
    c = Customer(name=name, email=f"c{total}@x.example", currency="EUR")
    session.add(c)
    session.flush()
    invoice = Invoice(
        customer_id=c.id,
        period="2026-10",
        currency="EUR",
        status="open",
        subtotal_minor=total,
        tax_minor=0,
        total_minor=total,
    )
    session.add(invoice)
    session.flush()
    return invoice


def test_line_breaks_in_names_keep_one_invoice_per_row(session: Session) -> None:
    totals = {LONE_CR: 1234, CRLF: 5678, LF: 9012}
    ids = {_customer_with_invoice(session, name, total).id: name for name, total in totals.items()}
    out = io.StringIO()
    write_invoices_csv(session, InvoiceFilter(), out)
    text = out.getvalue()
    rows = as_dicts(both_readers(text, 3))  # a bare "\r" would split a row for either reader
    assert "\r" not in text
    for row in rows:
        name = ids[int(row["invoice_id"])]
        assert row["customer"] == read_back(name)
        assert row["total"] == row["subtotal"] == plain_amount(totals[name], "EUR")
        assert (row["currency"], row["status"]) == ("EUR", "open")


def test_line_breaks_in_line_texts_keep_one_line_per_row(session: Session) -> None:
    invoice = _customer_with_invoice(session, LONE_CR, 300)
    for position, (text, amount) in enumerate(((LONE_CR, 100), (CRLF, 120), (LF, 80)), 1):
        session.add(
            InvoiceLine(
                invoice_id=invoice.id,
                position=position,
                kind="aws",
                description=text,
                service=text,
                metric=text,
                quantity=Decimal(position),
                unit_amount=Decimal("0.5"),
                amount_minor=amount,
            )
        )
    session.flush()
    out = io.StringIO()
    write_lines_csv(session, InvoiceFilter(), out)
    text = out.getvalue()
    rows = as_dicts(both_readers(text, 3))
    assert "\r" not in text
    expected = ((LONE_CR, "1.00"), (CRLF, "1.20"), (LF, "0.80"))
    for row, (cell, amount) in zip(rows, expected, strict=True):
        assert row["customer"] == read_back(LONE_CR)
        assert row["description"] == row["service"] == row["metric"] == read_back(cell)
        assert (row["amount"], row["unit_amount"], row["currency"]) == (amount, "0.50", "EUR")
    assert [r["quantity"] for r in rows] == ["1", "2", "3"]
