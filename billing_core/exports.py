"""CSV exports for accounting: exactly the filtered invoices, and their lines.

Rows are streamed from the database (yield_per) and written as they come, so 50,000 invoices
with 500,000 lines never sit in memory as objects. Amounts are plain decimal strings with the
currency's digits ('1234.50', JPY '1234'), equal to the database to the cent. No payment
details, no secrets: only what accounting books.
"""

from __future__ import annotations

import csv
import io
from collections import defaultdict
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from typing import IO, Any

from sqlalchemy import select as sa_select
from sqlalchemy.engine import Engine
from sqlmodel import Session, col, select

from billing_core.invoices import InvoiceFilter, apply_filter
from billing_core.models import Customer, Invoice, InvoiceLine
from billing_core.money import format_minor

INVOICE_COLUMNS = (
    "invoice_id",
    "number",
    "customer_id",
    "customer",
    "period",
    "currency",
    "subtotal",
    "tax",
    "total",
    "amount_paid",
    "amount_refunded",
    "status",
    "issued_at",
    "paid_at",
    "stripe_invoice_id",
)
LINE_COLUMNS = (
    "invoice_id",
    "number",
    "customer",
    "period",
    "currency",
    "position",
    "kind",
    "description",
    "service",
    "metric",
    "quantity",
    "unit_amount",
    "amount",
)
# Rows fetched per round trip while streaming.
BATCH = 2_000
# Spreadsheet apps run cells starting with these as formulas; text cells get a quote first.
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def safe_text(value: str | None) -> str:
    """Text for a CSV cell that a spreadsheet will not execute (CSV injection)."""
    text = value or ""
    return "'" + text if text.startswith(_FORMULA_START) else text


def _iso(moment: datetime | None) -> str:
    return moment.isoformat(timespec="seconds") if moment else ""


@dataclass
class ExportSummary:
    rows: int = 0
    totals: dict[str, int] = field(default_factory=lambda: defaultdict(int))  # currency -> minor

    def describe(self) -> str:
        money = ", ".join(f"{c} {format_minor(v, c)}" for c, v in sorted(self.totals.items()))
        return f"{self.rows} rows" + (f" ({money})" if money else "")


def _invoice_rows(session: Session, f: InvoiceFilter) -> Iterator[tuple[Invoice, str]]:
    query = (
        select(Invoice, Customer.name)
        .join(Customer, col(Customer.id) == Invoice.customer_id)
        .order_by(col(Invoice.period), col(Invoice.id))
        .execution_options(yield_per=BATCH)
    )
    for inv, name in session.execute(apply_filter(query, f)).all():
        yield inv, name
        session.expunge(inv)  # keep the identity map small while streaming


def write_invoices_csv(session: Session, f: InvoiceFilter, out: IO[str]) -> ExportSummary:
    """One row per filtered invoice; returns the row count and totals per currency."""
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(INVOICE_COLUMNS)
    summary = ExportSummary()
    for inv, name in _invoice_rows(session, f):
        cur = inv.currency
        writer.writerow(
            (
                inv.id,
                safe_text(inv.number),
                inv.customer_id,
                safe_text(name),
                inv.period,
                cur,
                format_minor(inv.subtotal_minor, cur),
                format_minor(inv.tax_minor, cur),
                format_minor(inv.total_minor, cur),
                format_minor(inv.amount_paid_minor, cur),
                format_minor(inv.amount_refunded_minor, cur),
                inv.status,
                _iso(inv.issued_at),
                _iso(inv.paid_at),
                inv.stripe_invoice_id or "",
            )
        )
        summary.rows += 1
        summary.totals[cur] += inv.total_minor
    return summary


def write_lines_csv(session: Session, f: InvoiceFilter, out: IO[str]) -> ExportSummary:
    """One row per line of the filtered invoices, in invoice order."""
    query = (
        sa_select(
            InvoiceLine,
            col(Invoice.number),
            col(Invoice.period),
            col(Invoice.currency),
            col(Customer.name),
        )
        .join(Invoice, col(Invoice.id) == InvoiceLine.invoice_id)
        .join(Customer, col(Customer.id) == Invoice.customer_id)
        .order_by(col(Invoice.period), col(Invoice.id), col(InvoiceLine.position))
        .execution_options(yield_per=BATCH)
    )
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(LINE_COLUMNS)
    summary = ExportSummary()
    rows = session.execute(apply_filter(query, f)).all()
    for line, number, period, cur, name in rows:
        writer.writerow(
            (
                line.invoice_id,
                safe_text(number),
                safe_text(name),
                period,
                cur,
                line.position,
                line.kind,
                safe_text(line.description),
                safe_text(line.service),
                safe_text(line.metric),
                str(line.quantity.normalize()),
                str(line.unit_amount),
                format_minor(line.amount_minor, cur),
            )
        )
        session.expunge(line)
        summary.rows += 1
        summary.totals[cur] += line.amount_minor
    return summary


Writer = Callable[[Session, InvoiceFilter, IO[str]], ExportSummary]


def csv_builder(engine: Engine, f: InvoiceFilter, writer: Writer) -> Callable[[], bytes]:
    """A no-argument callable producing the CSV, for a download generated only when clicked."""

    def build() -> bytes:
        buffer = io.StringIO()
        with Session(engine) as session:
            writer(session, f, buffer)
        return buffer.getvalue().encode("utf-8")

    return build


def parse_amount_columns(text: str, columns: tuple[str, ...] = ("total",)) -> list[dict[str, Any]]:
    """Read an exported CSV back (used by tests and by anyone checking a file)."""
    return list(csv.DictReader(io.StringIO(text)))
