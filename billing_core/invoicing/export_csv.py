"""CSV exports for accounting: exactly the filtered invoices, and their lines.

Rows are streamed from the database (yield_per) and written as they come, so 50,000 invoices
with 500,000 lines never sit in memory as objects. Amounts are plain decimal strings with the
currency's digits ('1234.50', JPY '1234'), equal to the database to the cent. No payment
details, no secrets: only what accounting books.

Credit notes are documents of their own: each issued credit note is a row of the invoices CSV
(and each of its lines a row of the lines CSV) with its own number, negative amounts, document
`credit_note` and the number of the invoice it credits, after the invoices of the selection.
"""

from __future__ import annotations

import csv
import io
from collections import defaultdict
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from functools import lru_cache
from pathlib import Path
from typing import IO, Any

from sqlalchemy import BigInteger, DateTime, String, type_coerce
from sqlalchemy import select as sa_select
from sqlalchemy.engine import Engine
from sqlmodel import Session, col

from billing_core.csv_cells import CellCache
from billing_core.csv_cells import cell_text as safe_text
from billing_core.errors import ConfigError
from billing_core.invoicing.figures import Figures, by_currency
from billing_core.invoicing.line_text import plain_decimal
from billing_core.models import (
    CreditNote,
    CreditNoteLine,
    Customer,
    Invoice,
    InvoiceLine,
    bill_to_name,
    shown_status,
)
from billing_core.money import display, exponent, format_minor
from billing_core.states import CreditNoteStatus, DisplayStatus
from billing_core.views.invoices import InvoiceFilter, apply_filter

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
    "document",  # invoice or credit_note
    "credits_invoice",  # a credit note's invoice number
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
    "document",
    "credits_invoice",
)
# Rows fetched per round trip while streaming.
BATCH = 2_000
# Distinct quantity, unit amount and text cells kept while writing lines (memory stays flat).
_TEXT_CACHE = 10_000


@lru_cache(maxsize=64)
def _digits(currency: str) -> int:
    return exponent(currency)


@lru_cache(maxsize=64)
def _money(currency: str) -> tuple[int, str, int]:
    """(digits, format, scale) of a currency's amounts: ('%d.%02d', 100) for two decimals, so
    `format % divmod(minor, scale)` is format_minor's text of a minor amount >= 0, exactly and
    without Decimal; ('', 1) for zero-decimal currencies (the text is str(minor))."""
    digits = _digits(currency)
    return (digits, f"%d.%0{digits}d", 10**digits) if digits else (0, "", 1)


def money_text(minor: int, amount_format: str, scale: int) -> str:
    """A minor amount's text with `_money`'s (format, scale) of its currency."""
    if not amount_format:
        return str(minor)
    if minor >= 0:
        return amount_format % divmod(minor, scale)
    return "-" + amount_format % divmod(-minor, scale)


def plain_amount(minor: int, currency: str) -> str:
    """money.format_minor without Decimal arithmetic: the same text, fast enough for 500k rows."""
    _, amount_format, scale = _money(currency)
    return money_text(minor, amount_format, scale)


def _iso(moment: datetime | None) -> str:
    return moment.isoformat(timespec="seconds") if moment else ""


def _iso_utc(stored: datetime | None) -> str:
    """_iso of a UTCDateTime read as stored (naive UTC, type_coerce'd to DateTime): the same
    text, without making an aware datetime first."""
    return stored.isoformat(timespec="seconds") + "+00:00" if stored else ""


@dataclass
class ExportSummary:
    """Rows written; per currency the sum of the amount column, and for invoices the figures
    (billed, paid, ...) by the one definition the invoices page shows (invoicing.figures)."""

    rows: int = 0
    totals: dict[str, int] = field(default_factory=lambda: defaultdict(int))  # currency -> minor
    figures: dict[str, Figures] = field(default_factory=dict)

    def describe(self) -> str:
        if self.figures:
            money = "; ".join(
                f"billed {display(f.billed, c)}, paid {display(f.paid, c)}, "
                f"outstanding {display(f.outstanding, c)}"
                + (f", refunded {display(f.refunded, c)}" if f.refunded else "")
                + (f", credited {display(f.credited, c)}" if f.credited else "")
                + (f", credit notes {display(f.credit_notes, c)}" if f.credit_notes else "")
                for c, f in sorted(self.figures.items())
            )
        else:
            money = ", ".join(f"{c} {format_minor(v, c)}" for c, v in sorted(self.totals.items()))
        return f"{self.rows} rows" + (f" ({money})" if money else "")


class _Chunk:
    """What csv.writer writes for one batch, kept as a list of texts (list.append is the
    write method: no Python call per row), then handed to the output in one write."""

    __slots__ = ("parts", "write")

    def __init__(self) -> None:
        self.parts: list[str] = []
        self.write = self.parts.append

    def flush_to(self, out: IO[str]) -> None:
        out.write("".join(self.parts))
        self.parts.clear()


def _invoice_query(f: InvoiceFilter) -> Any:
    # Plain columns, not ORM objects: nothing accumulates in the session while streaming.
    # Status and outcome as their stored text, dates as stored (naive UTC): made into enum
    # members and aware datetimes only to be printed again, they were most of the time.
    query = (
        sa_select(
            col(Invoice.id),
            col(Invoice.number),
            col(Invoice.customer_id),
            bill_to_name(),
            col(Invoice.period),
            col(Invoice.currency),
            col(Invoice.subtotal_minor),
            col(Invoice.tax_minor),
            col(Invoice.total_minor),
            col(Invoice.amount_paid_minor),
            col(Invoice.amount_refunded_minor),
            type_coerce(col(Invoice.status), String),
            type_coerce(col(Invoice.outcome), String),
            type_coerce(col(Invoice.issued_at), DateTime),
            type_coerce(col(Invoice.paid_at), DateTime),
            col(Invoice.stripe_invoice_id),
            col(Invoice.pre_payment_credit_notes_minor),
            col(Invoice.post_payment_credit_notes_minor),
        )
        .join(Customer, col(Customer.id) == Invoice.customer_id)
        .order_by(col(Invoice.period), col(Invoice.id))
    )
    return apply_filter(query, f)


def write_invoices_csv(session: Session, f: InvoiceFilter, out: IO[str]) -> ExportSummary:
    """One row per filtered invoice; returns the row count and totals per currency."""
    chunk = _Chunk()
    writer = csv.writer(chunk, lineterminator="\n")
    writer.writerow(INVOICE_COLUMNS)
    chunk.flush_to(out)
    summary = ExportSummary()
    totals = summary.totals
    # The shown status of each (status, outcome, refund state) met: a few words for 50,000 rows.
    words: dict[tuple[str, str | None, int], DisplayStatus] = {}
    # Per (currency, shown status): [count, total, paid, refunded, credit notes before and
    # after payment], added to the figures once at the end (Figures.add sums them the same).
    groups: dict[tuple[str, DisplayStatus], list[int]] = {}
    for batch in _stream(session, _invoice_query(f)).partitions():
        out_rows = []
        for (
            iid,
            number,
            cid,
            name,
            period,
            cur,
            subtotal,
            tax,
            total,
            paid,
            refunded,
            status,
            outcome,
            issued,
            paid_at,
            stripe_id,
            pre,
            post,
        ) in batch:
            state = 0 if refunded <= 0 else (2 if refunded >= paid else 1)
            shown = words.get((status, outcome, state))
            if shown is None:
                shown = words[(status, outcome, state)] = shown_status(status, outcome, state)
            _, amount_format, scale = _money(cur)
            out_rows.append(
                (
                    iid,
                    safe_text(number),
                    cid,
                    safe_text(name),
                    period,
                    cur,
                    money_text(subtotal, amount_format, scale),
                    money_text(tax, amount_format, scale),
                    money_text(total, amount_format, scale),
                    money_text(paid, amount_format, scale),
                    money_text(refunded, amount_format, scale),
                    shown,
                    _iso_utc(issued),
                    _iso_utc(paid_at),
                    stripe_id or "",
                    "invoice",
                    "",
                )
            )
            totals[cur] += total
            sums = groups.get((cur, shown))
            if sums is None:
                sums = groups[(cur, shown)] = [0, 0, 0, 0, 0, 0]
            sums[0] += 1
            sums[1] += total
            sums[2] += paid
            sums[3] += refunded
            sums[4] += pre
            sums[5] += post
        summary.rows += len(out_rows)
        writer.writerows(out_rows)
        chunk.flush_to(out)
    for (cur, shown), (count, total, paid, refunded, pre, post) in groups.items():
        by_currency(summary.figures, cur).add(
            shown,
            count=count,
            total=total,
            paid=paid,
            refunded=refunded,
            credit_notes_before=pre,
            credit_notes_after=post,
        )
    # Credit notes are few: written as they come, straight to the output.
    writer = csv.writer(out, lineterminator="\n")
    for row in session.execute(_credit_note_query(f)):
        (iid, number, cid, name, period, cur, amount, refund, issued, of_number) = row
        writer.writerow(
            (
                iid,
                safe_text(number),
                cid,
                safe_text(name),
                period,
                cur,
                plain_amount(-amount, cur),
                plain_amount(0, cur),
                plain_amount(-amount, cur),
                plain_amount(0, cur),
                plain_amount(refund, cur),
                "issued",
                _iso(issued),
                "",
                "",
                "credit_note",
                safe_text(of_number),
            )
        )
        summary.rows += 1
        summary.totals[cur] -= amount
    return summary


def _credit_note_query(f: InvoiceFilter) -> Any:
    """Issued credit notes of the filtered invoices, by invoice then issue order."""
    query = (
        sa_select(
            col(CreditNote.invoice_id),
            col(CreditNote.number),
            col(Invoice.customer_id),
            bill_to_name(),
            col(Invoice.period),
            col(Invoice.currency),
            col(CreditNote.amount_minor),
            col(CreditNote.refund_minor),
            col(CreditNote.issued_at),
            col(Invoice.number),
        )
        .join(Invoice, col(Invoice.id) == CreditNote.invoice_id)
        .join(Customer, col(Customer.id) == Invoice.customer_id)
        .where(col(CreditNote.status) == CreditNoteStatus.ISSUED)
        .order_by(col(Invoice.period), col(Invoice.id), col(CreditNote.id))
        .execution_options(yield_per=BATCH)
    )
    return apply_filter(query, f)


def _column_scale(column: Any) -> int:
    return int(column.type.scale)


QUANTITY_SCALE = _column_scale(InvoiceLine.__table__.c.quantity)  # type: ignore[attr-defined]
UNIT_SCALE = _column_scale(InvoiceLine.__table__.c.unit_amount)  # type: ignore[attr-defined]


def scaled_text(scaled: int, scale: int, min_places: int = 0) -> str:
    """line_text.plain_decimal of the Decimal `scaled / 10**scale` (scale >= 1) by slicing the
    integer's digits: exact, no exponent, trailing zeros dropped down to `min_places` decimals.
    A million cells a second where Decimal formatting managed a quarter of that."""
    text = str(scaled)
    sign = ""
    if text[0] == "-":
        sign, text = "-", text[1:]
    if len(text) <= scale:
        text = "0" * (scale + 1 - len(text)) + text
    decimals = text[-scale:].rstrip("0")
    if len(decimals) < min_places:
        decimals += "0" * (min_places - len(decimals))
    whole = text[:-scale]
    return f"{sign}{whole}.{decimals}" if decimals else sign + whole


def _stream(session: Session, query: Any) -> Any:
    """A Core query's result fetched BATCH rows at a time (a server-side cursor on PostgreSQL);
    the options go on the statement, so the session's connection is left as it was."""
    return session.connection().execute(query.execution_options(yield_per=BATCH))


def _heads_query(f: InvoiceFilter) -> Any:
    """The filtered invoices' own cells of the lines CSV, in the export's order."""
    query = (
        sa_select(
            col(Invoice.id),
            col(Invoice.number),
            bill_to_name(),
            col(Invoice.period),
            col(Invoice.currency),
        )
        .join(Customer, col(Customer.id) == Invoice.customer_id)
        .order_by(col(Invoice.period), col(Invoice.id))
    )
    return apply_filter(query, f)


def _lines_of(session: Session, invoice_ids: list[int]) -> Iterator[Sequence[Any]]:
    """The lines of some invoices, in the order `_heads_query` gives the invoices, BATCH rows
    at a time: (invoice_id, position, kind, description, service, metric, quantity and unit
    amount as their stored scaled integers, amount_minor), without the invoice's own cells
    (made once per invoice, not once per line).

    Driving the lines from a batch of invoices lets the database read them through the
    invoice_id index and sort one batch, not all 500,000 lines before the first comes out.
    They are read from the driver's cursor: plain tuples of the stored values (every column
    is a plain one, or type_coerce'd to one), without a SQLAlchemy Row per line. The ids are
    integers written into the SQL text (literal_binds), so no driver's parameter style is
    involved."""
    statement = (
        sa_select(
            col(InvoiceLine.invoice_id),
            col(InvoiceLine.position),
            type_coerce(col(InvoiceLine.kind), String),
            col(InvoiceLine.description),
            col(InvoiceLine.service),
            col(InvoiceLine.metric),
            type_coerce(col(InvoiceLine.quantity), BigInteger),
            type_coerce(col(InvoiceLine.unit_amount), BigInteger),
            col(InvoiceLine.amount_minor),
        )
        .join(Invoice, col(Invoice.id) == InvoiceLine.invoice_id)
        .where(col(Invoice.id).in_([int(i) for i in invoice_ids]))
        .order_by(col(Invoice.period), col(Invoice.id), col(InvoiceLine.position))
    )
    connection = session.connection()
    sql = statement.compile(dialect=connection.dialect, compile_kwargs={"literal_binds": True})
    cursor = connection.connection.cursor()
    try:
        cursor.execute(str(sql))
        while batch := cursor.fetchmany(BATCH):
            yield batch
    finally:
        cursor.close()


def write_lines_csv(session: Session, f: InvoiceFilter, out: IO[str]) -> ExportSummary:
    """One row per line of the filtered invoices, in invoice order."""
    chunk = _Chunk()
    writer = csv.writer(chunk, lineterminator="\n")
    writer.writerow(LINE_COLUMNS)
    chunk.flush_to(out)
    summary = ExportSummary()
    totals = summary.totals
    rows = 0
    # Cells already made (most lines repeat a few: quantity 1, a plan's fee, a metric's price,
    # a service's description), unit amounts per currency digits; emptied when large.
    cells = CellCache()
    quantities: dict[int, str] = {}
    units_by_digits: dict[int, dict[int, str]] = defaultdict(dict)
    for heads in _stream(session, _heads_query(f)).partitions():
        # Each invoice's cells, made once: its head cells, currency, digits, amount format.
        by_id: dict[int, tuple[tuple[Any, ...], str, int, str, int]] = {}
        for iid, number, name, period, cur in heads:
            by_id[iid] = ((iid, safe_text(number), safe_text(name), period, cur), cur, *_money(cur))
        if (
            len(quantities) > _TEXT_CACHE
            or len(cells) > _TEXT_CACHE
            or any(len(u) > _TEXT_CACHE for u in units_by_digits.values())
        ):
            cells.clear()
            quantities.clear()
            units_by_digits.clear()
        last_invoice = None
        head: tuple[Any, ...] = ()
        cur, digits, amount_format, scale = "", 0, "", 1
        units: dict[int, str] = {}
        # Written BATCH lines at a time: few objects alive at once, so the garbage collector
        # (which runs as containers pile up) has little to walk.
        for batch in _lines_of(session, list(by_id)):
            out_rows = []
            for iid, pos, kind, desc, service, metric, qty, unit, amt in batch:
                if iid != last_invoice:
                    last_invoice = iid
                    head, cur, digits, amount_format, scale = by_id[iid]
                    units = units_by_digits[digits]
                quantity = quantities.get(qty)
                if quantity is None:
                    quantity = quantities[qty] = scaled_text(qty, QUANTITY_SCALE)
                unit_text = units.get(unit)
                if unit_text is None:
                    unit_text = units[unit] = scaled_text(unit, UNIT_SCALE, digits)
                if not digits:
                    amount = str(amt)
                elif amt >= 0:
                    amount = amount_format % divmod(amt, scale)
                else:
                    amount = "-" + amount_format % divmod(-amt, scale)
                # safe_text of each distinct text once: three cells on each of 500,000 lines.
                out_rows.append(
                    (
                        *head,
                        pos,
                        kind,
                        cells[desc],
                        cells[service],
                        cells[metric],
                        quantity,
                        unit_text,
                        amount,
                        "invoice",
                        "",
                    )
                )
                totals[cur] += amt
            rows += len(out_rows)
            writer.writerows(out_rows)
            chunk.flush_to(out)
    summary.rows = rows
    notes = (
        sa_select(
            col(CreditNote.invoice_id),
            col(CreditNote.number),
            bill_to_name(),
            col(Invoice.period),
            col(Invoice.currency),
            col(CreditNoteLine.position),
            col(InvoiceLine.kind),
            col(CreditNoteLine.description),
            col(InvoiceLine.service),
            col(InvoiceLine.metric),
            col(CreditNoteLine.quantity),
            col(CreditNoteLine.amount_minor),
            col(Invoice.number),
        )
        .join(CreditNote, col(CreditNote.id) == CreditNoteLine.credit_note_id)
        .join(Invoice, col(Invoice.id) == CreditNote.invoice_id)
        .join(Customer, col(Customer.id) == Invoice.customer_id)
        .outerjoin(InvoiceLine, col(InvoiceLine.id) == CreditNoteLine.invoice_line_id)
        .where(col(CreditNote.status) == CreditNoteStatus.ISSUED)
        .order_by(
            col(Invoice.period), col(Invoice.id), col(CreditNote.id), col(CreditNoteLine.position)
        )
        .execution_options(yield_per=BATCH)
    )
    # Credit notes' lines are few: written as they come, straight to the output.
    writer = csv.writer(out, lineterminator="\n")
    for row in session.execute(apply_filter(notes, f)):
        (iid, number, name, period, cur, pos, kind, desc, service, metric, qty, amount, of) = row
        writer.writerow(
            (
                iid,
                safe_text(number),
                safe_text(name),
                period,
                cur,
                pos,
                kind or "credit",
                safe_text(desc),
                safe_text(service),
                safe_text(metric),
                plain_decimal(qty) if qty is not None else "",
                "",
                plain_amount(-amount, cur),
                "credit_note",
                safe_text(of),
            )
        )
        summary.rows += 1
        summary.totals[cur] -= amount
    return summary


Writer = Callable[[Session, InvoiceFilter, IO[str]], ExportSummary]


def csv_builder(engine: Engine, f: InvoiceFilter, writer: Writer) -> Callable[[], bytes]:
    """A no-argument callable producing the CSV, for a download generated only when clicked."""

    def build() -> bytes:
        # Encoded batch by batch (the file is in memory once, not as text, copy and bytes);
        # with a byte-order mark, as every CSV this tool writes: Excel then reads UTF-8.
        buffer = io.BytesIO()
        text = io.TextIOWrapper(buffer, encoding="utf-8-sig", newline="")
        with Session(engine) as session:
            writer(session, f, text)
        text.flush()
        return buffer.getvalue()

    return build


def parse_amount_columns(text: str, columns: tuple[str, ...] = ("total",)) -> list[dict[str, Any]]:
    """Read an exported CSV back (used by tests and by anyone checking a file)."""
    return list(csv.DictReader(io.StringIO(text)))


def same_file(one: Path, other: Path) -> bool:
    """Whether two CLI paths name one file ('-' is standard output)."""
    if "-" in (str(one), str(other)):
        return str(one) == str(other)
    return one.expanduser().resolve() == other.expanduser().resolve()


def write_csv_file(target: Path, writer: Writer, session: Session, selection: InvoiceFilter) -> Any:
    """Write to a temporary file beside the target, then rename: no half-written CSV.

    Returns what `writer` returns; ConfigError (with the reason) when the file cannot be written.
    """
    tmp = target.with_name(f".{target.name}.partial")
    try:
        # A byte-order mark, as in every CSV file this tool writes, so Excel reads UTF-8.
        with tmp.open("w", encoding="utf-8-sig", newline="") as handle:
            result = writer(session, selection, handle)
        tmp.replace(target)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise ConfigError(f"Cannot write {target}: {exc.strerror}.") from None
    return result
