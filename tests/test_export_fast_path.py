"""The CSV exports' fast paths write, byte for byte, what the plainest code writes.

The exports read stored integers straight from the driver, format money without Decimal and
write in batches; the plain path below reads ORM objects one by one and formats with the money
and line_text helpers. Both run on a world with credit notes, several currencies (JPY has no
decimals, KWD three), text a spreadsheet would run, quotes, commas and line breaks, invoices
whose periods are not in id order, and batches of two rows, so every batch edge is crossed.
"""

from __future__ import annotations

import csv
import io
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from sqlalchemy.engine import Engine
from sqlmodel import Session, col, select

from billing_core.corrections.models import CreditNote, CreditNoteLine
from billing_core.csv_cells import cell_text
from billing_core.db import session_scope
from billing_core.errors import MoneyError
from billing_core.invoicing import export_csv as exports
from billing_core.invoicing.figures import by_currency
from billing_core.invoicing.line_text import plain_decimal
from billing_core.models import Customer, Invoice, InvoiceLine, bill_to_name
from billing_core.money import display, exponent, format_minor, minor_to_decimal
from billing_core.states import (
    CreditNoteReason,
    CreditNoteStatus,
    InvoiceOutcome,
    InvoiceStatus,
    LineKind,
)
from billing_core.views.invoices import InvoiceFilter, apply_filter

# The one rule of every text cell (line breaks made "\n", formulas quoted), applied plainly.
safe = cell_text


def _plain_lines_csv(session: Session, f: InvoiceFilter) -> tuple[str, int, dict[str, int]]:
    """The lines CSV as the plainest code writes it: (text, rows, amount totals per currency)."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(exports.LINE_COLUMNS)
    totals: dict[str, int] = {}
    rows = 0
    invoices = apply_filter(
        select(Invoice, bill_to_name()).join(Customer, col(Customer.id) == Invoice.customer_id),
        f,
    ).order_by(col(Invoice.period), col(Invoice.id))
    for invoice, name in session.exec(invoices).all():
        cur = invoice.currency
        lines = session.exec(
            select(InvoiceLine)
            .where(InvoiceLine.invoice_id == invoice.id)
            .order_by(col(InvoiceLine.position))
        ).all()
        for line in lines:
            writer.writerow(
                (
                    invoice.id,
                    safe(invoice.number),
                    safe(name),
                    invoice.period,
                    cur,
                    line.position,
                    str(line.kind),
                    safe(line.description),
                    safe(line.service),
                    safe(line.metric),
                    plain_decimal(line.quantity),
                    plain_decimal(line.unit_amount, exponent(cur)),
                    format_minor(line.amount_minor, cur),
                    "invoice",
                    "",
                )
            )
            rows += 1
            totals[cur] = totals.get(cur, 0) + line.amount_minor
    notes = apply_filter(
        select(CreditNote, Invoice, bill_to_name())
        .join(Invoice, col(Invoice.id) == CreditNote.invoice_id)
        .join(Customer, col(Customer.id) == Invoice.customer_id)
        .where(CreditNote.status == CreditNoteStatus.ISSUED),
        f,
    ).order_by(col(Invoice.period), col(Invoice.id), col(CreditNote.id))
    for note, invoice, name in session.exec(notes).all():
        cur = invoice.currency
        note_lines = session.exec(
            select(CreditNoteLine)
            .where(CreditNoteLine.credit_note_id == note.id)
            .order_by(col(CreditNoteLine.position))
        ).all()
        for part in note_lines:
            credited = session.get(InvoiceLine, part.invoice_line_id or 0)
            writer.writerow(
                (
                    invoice.id,
                    safe(note.number),
                    safe(name),
                    invoice.period,
                    cur,
                    part.position,
                    str(credited.kind) if credited else "credit",
                    safe(part.description),
                    safe(credited.service if credited else None),
                    safe(credited.metric if credited else None),
                    plain_decimal(part.quantity) if part.quantity is not None else "",
                    "",
                    format_minor(-part.amount_minor, cur),
                    "credit_note",
                    safe(invoice.number),
                )
            )
            rows += 1
            totals[cur] = totals.get(cur, 0) - part.amount_minor
    return out.getvalue(), rows, totals


def _iso(moment: datetime | None) -> str:
    return moment.isoformat(timespec="seconds") if moment else ""


def _plain_invoices_csv(session: Session, f: InvoiceFilter) -> tuple[str, Any]:
    """The invoices CSV as the plainest code writes it: (text, the export's summary)."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(exports.INVOICE_COLUMNS)
    summary = exports.ExportSummary()
    invoices = apply_filter(
        select(Invoice, bill_to_name()).join(Customer, col(Customer.id) == Invoice.customer_id),
        f,
    ).order_by(col(Invoice.period), col(Invoice.id))
    for invoice, name in session.exec(invoices).all():
        cur = invoice.currency
        writer.writerow(
            (
                invoice.id,
                safe(invoice.number),
                invoice.customer_id,
                safe(name),
                invoice.period,
                cur,
                format_minor(invoice.subtotal_minor, cur),
                format_minor(invoice.tax_minor, cur),
                format_minor(invoice.total_minor, cur),
                format_minor(invoice.amount_paid_minor, cur),
                format_minor(invoice.amount_refunded_minor, cur),
                invoice.display_status,
                _iso(invoice.issued_at),
                _iso(invoice.paid_at),
                invoice.stripe_invoice_id or "",
                "invoice",
                "",
            )
        )
        summary.rows += 1
        summary.totals[cur] += invoice.total_minor
        by_currency(summary.figures, cur).add(
            invoice.display_status,
            total=invoice.total_minor,
            paid=invoice.amount_paid_minor,
            refunded=invoice.amount_refunded_minor,
            credit_notes_before=invoice.pre_payment_credit_notes_minor,
            credit_notes_after=invoice.post_payment_credit_notes_minor,
        )
    notes = apply_filter(
        select(CreditNote, Invoice, bill_to_name())
        .join(Invoice, col(Invoice.id) == CreditNote.invoice_id)
        .join(Customer, col(Customer.id) == Invoice.customer_id)
        .where(CreditNote.status == CreditNoteStatus.ISSUED),
        f,
    ).order_by(col(Invoice.period), col(Invoice.id), col(CreditNote.id))
    for note, invoice, name in session.exec(notes).all():
        cur = invoice.currency
        writer.writerow(
            (
                invoice.id,
                safe(note.number),
                invoice.customer_id,
                safe(name),
                invoice.period,
                cur,
                format_minor(-note.amount_minor, cur),
                format_minor(0, cur),
                format_minor(-note.amount_minor, cur),
                format_minor(0, cur),
                format_minor(note.refund_minor, cur),
                "issued",
                _iso(note.issued_at),
                "",
                "",
                "credit_note",
                safe(invoice.number),
            )
        )
        summary.rows += 1
        summary.totals[cur] -= note.amount_minor
    return out.getvalue(), summary


# Descriptions, services and metrics a customer or an import could have typed.
ODD_TEXTS = [
    "Plain service",
    "=SUM(A1:A9)",
    '+1 "quoted", with commas',
    "-5 % off",
    "@mention",
    "\tleading tab",
    "\rcarriage return",
    "line one\nline two",
    "windows\r\nline",
    "lone\rreturn, mid-text",
    "Ünïcode — 日本 ✓",
    " leading space",
    "",
    "'already quoted",
    'only "quotes"',
]
AMOUNTS = [0, 1, 5, -5, 99, 100, 101, -100, -123_456, 2_147_483_647, 450_000]
QUANTITIES = [Decimal(1), Decimal("0.000001"), Decimal("1234567.5"), Decimal(-2), Decimal(0)]
STATES = [
    (InvoiceStatus.PAID, None),
    (InvoiceStatus.OPEN, None),
    (InvoiceStatus.OPEN, InvoiceOutcome.PAYMENT_FAILED),
    (InvoiceStatus.DRAFT, InvoiceOutcome.CREDIT_CARRIED),
    (InvoiceStatus.DRAFT, InvoiceOutcome.BELOW_MINIMUM),
    (InvoiceStatus.VOID, None),
    (InvoiceStatus.UNCOLLECTIBLE, None),
    (InvoiceStatus.PAID, None),
    (InvoiceStatus.DRAFT, None),
]
UNITS = [Decimal(0), Decimal("0.0000000001"), Decimal(-14), Decimal("20.5"), Decimal("3.1234")]


def _world(session: Session) -> None:
    customers = [
        Customer(name='=HYPERLINK("x")', email="a@x.example", currency="EUR"),
        Customer(name='Comma, "Quote" & Co', email="b@x.example", currency="JPY"),
        Customer(name="Kuwait\rTrading", email="c@x.example", currency="KWD"),
        Customer(name="Plain Inc", email="d@x.example", currency="USD"),
    ]
    session.add_all(customers)
    session.flush()
    # Periods out of id order: the export's order is (period, id), not insertion order.
    periods = ["2026-03", "2026-01", "2026-02", "2025-12", "2026-04"]
    n = 0
    invoices: list[Invoice] = []
    for month, period in enumerate(periods):
        for c in customers:
            k = len(invoices)
            status, outcome = STATES[k % len(STATES)]
            total = AMOUNTS[k % len(AMOUNTS)]
            paid = abs(total) if status == InvoiceStatus.PAID else 0
            invoice = Invoice(
                customer_id=c.id or 0,
                period=period,
                currency=c.currency,
                status=status,
                outcome=outcome,
                subtotal_minor=total - 7,
                tax_minor=7,
                total_minor=total,
                amount_paid_minor=paid,
                # None, part or all of the payment refunded.
                amount_refunded_minor=(0, paid // 3, paid, paid)[k % 4],
                pre_payment_credit_notes_minor=k % 4,
                post_payment_credit_notes_minor=k % 5,
                number=None if month == 4 else f"{'-' if month == 3 else ''}INV-{period}-{c.id}",
                customer_name="Renamed, later" if month == 1 else None,
                issued_at=datetime(2026, 1, 1, 12, 30, 15, 999_999, tzinfo=UTC) if k % 6 else None,
                paid_at=datetime(2026, 1, 2, tzinfo=UTC) if paid else None,
                stripe_invoice_id=f"in_{k}" if k % 2 else None,
            )
            session.add(invoice)
            session.flush()
            invoices.append(invoice)
            # One invoice per month has no lines at all.
            for position in range(0 if c.currency == "USD" and month == 2 else 1 + n % 5):
                n += 1
                session.add(
                    InvoiceLine(
                        invoice_id=invoice.id or 0,
                        position=position,
                        kind=list(LineKind)[n % len(LineKind)],
                        description=ODD_TEXTS[n % len(ODD_TEXTS)],
                        service=None if n % 3 == 0 else ODD_TEXTS[(n * 7) % len(ODD_TEXTS)],
                        metric=None if n % 4 else ODD_TEXTS[(n * 5) % len(ODD_TEXTS)],
                        quantity=QUANTITIES[n % len(QUANTITIES)],
                        unit_amount=UNITS[n % len(UNITS)],
                        amount_minor=AMOUNTS[n % len(AMOUNTS)],
                    )
                )
    session.flush()
    statuses = [CreditNoteStatus.ISSUED, CreditNoteStatus.VOID, CreditNoteStatus.ISSUED]
    for k, invoice in enumerate(invoices[1:10:3]):
        credited = session.exec(
            select(InvoiceLine).where(InvoiceLine.invoice_id == invoice.id)
        ).first()
        note = CreditNote(
            invoice_id=invoice.id or 0,
            customer_id=invoice.customer_id,
            currency=invoice.currency,
            status=statuses[k],
            reason=CreditNoteReason.ORDER_CHANGE,
            amount_minor=150,
            refund_minor=40 * k,
            request_key=f"key-{k}",
            number=f"=CN-{k}" if k else f"CN-{k}",
            created_by="test",
            issued_at=datetime(2026, 2, 1, tzinfo=UTC),
        )
        session.add(note)
        session.flush()
        session.add(
            CreditNoteLine(
                credit_note_id=note.id or 0,
                position=0,
                invoice_line_id=credited.id if credited else None,
                description='Part of, "the" line\nrefunded',
                quantity=Decimal("0.5"),
                amount_minor=100,
            )
        )
        session.add(
            CreditNoteLine(
                credit_note_id=note.id or 0,
                position=1,
                description="+Goodwill",
                amount_minor=50,
            )
        )
    session.flush()


SELECTIONS = [
    InvoiceFilter(),
    InvoiceFilter(currencies=("JPY", "KWD")),
    InvoiceFilter(period_from="2026-01", period_to="2026-03", statuses=("paid",)),
    InvoiceFilter(search="comma"),
]


@pytest.mark.parametrize("batch", [2, exports.BATCH])
def test_lines_csv_is_what_the_plain_path_writes(
    session: Session, monkeypatch: pytest.MonkeyPatch, batch: int
) -> None:
    _world(session)
    monkeypatch.setattr(exports, "BATCH", batch)
    monkeypatch.setattr(exports, "_TEXT_CACHE", 3)  # caches emptied along the way
    for selection in SELECTIONS:
        fast = io.StringIO()
        summary = exports.write_lines_csv(session, selection, fast)
        plain, rows, totals = _plain_lines_csv(session, selection)
        assert fast.getvalue() == plain, selection
        assert (summary.rows, dict(summary.totals)) == (rows, totals)
    # The world holds what the comparison is about (raw text). Every "\r" became "\n", which
    # the csv module quotes (it writes a lone "\r" bare, and a reader would split the row).
    everything = _plain_lines_csv(session, InvoiceFilter())[0]
    for needle in (",EUR,", ",JPY,", ",KWD,", ",USD,", ",credit_note,", "'=SUM", '"line one\nline'):
        assert needle in everything, needle
    for needle in ('"lone\nreturn, mid-text"', '"windows\nline"', '"Kuwait\nTrading"'):
        assert needle in everything, needle
    assert "\r" not in everything
    assert everything.splitlines()[1].split(",")[3] == "2025-12"


@pytest.mark.parametrize("batch", [2, exports.BATCH])
def test_invoices_csv_is_what_the_plain_path_writes(
    session: Session, monkeypatch: pytest.MonkeyPatch, batch: int
) -> None:
    _world(session)
    monkeypatch.setattr(exports, "BATCH", batch)
    for selection in SELECTIONS:
        fast = io.StringIO()
        summary = exports.write_invoices_csv(session, selection, fast)
        plain, expected = _plain_invoices_csv(session, selection)
        assert fast.getvalue() == plain, selection
        assert summary == expected
        assert summary.describe() == expected.describe()
    text, everything = _plain_invoices_csv(session, InvoiceFilter())
    shown = {word for f in everything.figures.values() for word in f.counts}
    assert {"paid", "refunded", "partially_refunded", "failed", "credit", "carried"} <= shown
    assert ",credit_note," in text and "+00:00" in text
    assert '"Kuwait\nTrading"' in text and "\r" not in text


def test_the_download_is_the_file_with_a_byte_order_mark(engine: Engine) -> None:
    with session_scope(engine) as s:
        _world(s)
    for writer in (exports.write_invoices_csv, exports.write_lines_csv):
        with Session(engine) as s:
            text = io.StringIO()
            writer(s, InvoiceFilter(), text)
        built = exports.csv_builder(engine, InvoiceFilter(), writer)()
        assert built == b"\xef\xbb\xbf" + text.getvalue().encode()
    assert "日本".encode() in built  # the lines CSV, last built, holds text beyond ASCII


@given(
    st.integers(min_value=-(10**15), max_value=10**15),
    st.sampled_from(["EUR", "JPY", "KWD", "usd", "ISK"]),
)
def test_display_is_the_decimal_text(minor: int, currency: str) -> None:
    # The invoices table shows thousands of amounts: display() formats the integer; the text
    # is the exact Decimal's, grouped.
    value = minor_to_decimal(minor, currency)
    assert display(minor, currency) == f"{currency.upper()} {value:,.{exponent(currency)}f}"


def test_display_refuses_what_is_not_minor_units() -> None:
    for bad in (1.5, True, Decimal(1), "12"):
        with pytest.raises(MoneyError, match="Minor units must be an integer"):
            display(bad, "EUR")  # type: ignore[arg-type]
    with pytest.raises(MoneyError, match="Unknown currency"):
        display(100, "XXX")
