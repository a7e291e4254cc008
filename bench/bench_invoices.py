"""Invoices page data and CSV exports at 50,000 invoices / 500,000 lines; Stripe sync throughput.

Time is measured in a plain pass, peak Python memory in a second pass under tracemalloc (which
slows code down, so its times are not reported).
"""

from __future__ import annotations

import csv
import io
import random
import tempfile
import time
import tracemalloc
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import BigInteger, String, insert, type_coerce
from sqlalchemy import select as sa_select
from sqlalchemy.engine import Engine
from sqlmodel import Session, col

from bench import compare
from bench.run import Figure
from billing_core.db import make_engine, migrate, session_scope
from billing_core.invoicing import export_csv as exports
from billing_core.models import Customer, Invoice, InvoiceLine, bill_to_name
from billing_core.payments import sync
from billing_core.states import DisplayStatus, LineKind, split_display_status
from billing_core.views import invoices as inv
from billing_core.views import receivables

AREA = "invoices"
STATUSES = [DisplayStatus.PAID] * 14 + [
    DisplayStatus.OPEN,
    DisplayStatus.FAILED,
    DisplayStatus.VOID,
    DisplayStatus.UNCOLLECTIBLE,
]


def _populate(engine: Engine, n_invoices: int, lines_per: int) -> None:
    rng = random.Random(5)
    customers = 500
    periods = [f"{2022 + m // 12}-{m % 12 + 1:02d}" for m in range(n_invoices // customers + 1)]
    with session_scope(engine) as s:
        s.execute(
            insert(Customer),
            [
                {
                    "name": f"Customer {i}",
                    "email": f"c{i}@bench.example",
                    "currency": ("EUR", "USD", "GBP", "JPY")[i % 4],
                }
                for i in range(customers)
            ],
        )
    base = datetime(2022, 1, 1, tzinfo=UTC)
    chunk = 5_000
    for start in range(0, n_invoices, chunk):
        inv_rows: list[dict[str, Any]] = []
        line_rows: list[dict[str, Any]] = []
        for i in range(start, min(n_invoices, start + chunk)):
            cid = i % customers + 1
            amounts = [rng.randint(100, 500_000) for _ in range(lines_per)]
            total = sum(amounts)
            status = STATUSES[i % len(STATUSES)]
            issued = base + timedelta(days=i // customers * 30)
            inv_rows.append(
                {
                    "id": i + 1,
                    "customer_id": cid,
                    "period": periods[i // customers],
                    "currency": ("EUR", "USD", "GBP", "JPY")[(cid - 1) % 4],
                    "status": split_display_status(status)[0],
                    "outcome": split_display_status(status)[1],
                    "subtotal_minor": total,
                    "total_minor": total,
                    "amount_paid_minor": total if status == "paid" else 0,
                    "number": f"BENCH-{i + 1:06d}",
                    "issued_at": issued,
                    "due_at": issued + timedelta(days=30),
                    "paid_at": issued + timedelta(days=2) if status == "paid" else None,
                    "stripe_invoice_id": f"in_bench_{i + 1}",
                }
            )
            for pos, amount in enumerate(amounts):
                line_rows.append(
                    {
                        "invoice_id": i + 1,
                        "position": pos,
                        "kind": LineKind.AWS,
                        "description": f"Service {pos}, bench",
                        "service": f"Service {pos}",
                        "amount_minor": amount,
                    }
                )
        with session_scope(engine) as s:
            s.execute(insert(Invoice), inv_rows)
            s.execute(insert(InvoiceLine), line_rows)


def _measure(fn: Callable[[], Any]) -> tuple[compare.Timing, float]:
    """(timing of one plain pass: wall and CPU, peak MiB of a second, traced pass)."""
    _, timing = compare.timed(fn)
    tracemalloc.start()
    fn()
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    return timing, peak / 2**20


def _seconds(timing: compare.Timing) -> str:
    """'1.21 s (CPU 0.80 s)': on a shared machine the CPU time is the steadier figure."""
    return f"{timing.wall:.2f} s (CPU {timing.cpu:.2f} s)"


class _CountingSink(io.TextIOBase):
    """Stands in for the output file: counts characters, keeps nothing."""

    def __init__(self) -> None:
        self.chars = 0

    def write(self, text: str) -> int:
        self.chars += len(text)
        return len(text)


def _page_data(engine: Engine) -> None:
    f = inv.InvoiceFilter()
    with Session(engine) as s:
        inv.filter_options(s)
        inv.headline_figures(s, f)
        inv.billed_chart(inv.monthly_billed(s, f))
        inv.count_invoices(s, f)
        inv.invoice_table(s, f)
        inv.invoice_detail(s, 1)


def _receivables(engine: Engine) -> None:
    with Session(engine) as s:
        receivables.receivables_summary(s, as_of=datetime(2026, 1, 1, tzinfo=UTC))


def _filtered_page_data(engine: Engine) -> None:
    """The invoices page with receivables filters set: overdue, an age bucket, a search."""
    as_of = datetime(2026, 1, 1, tzinfo=UTC)
    for f in (
        inv.InvoiceFilter(overdue=True, as_of=as_of),
        inv.InvoiceFilter(buckets=("over-90",), as_of=as_of),
        inv.InvoiceFilter(search="customer 42", as_of=as_of),
        inv.InvoiceFilter(search="1234.56", as_of=as_of),
    ):
        with Session(engine) as s:
            inv.headline_figures(s, f)
            inv.monthly_billed(s, f)
            inv.count_invoices(s, f)
            inv.invoice_table(s, f)


def _export(engine: Engine, writer: exports.Writer) -> int:
    sink = _CountingSink()
    with Session(engine) as s:
        writer(s, inv.InvoiceFilter(), sink)
    return sink.chars


def _reference_query() -> Any:
    """The lines CSV's rows as one query (every line joined to its invoice and customer, in the
    export's order), their values as stored: quantity and unit amount as scaled integers."""
    return (
        sa_select(
            col(InvoiceLine.invoice_id),
            col(Invoice.number),
            bill_to_name(),
            col(Invoice.period),
            col(Invoice.currency),
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
        .join(Customer, col(Customer.id) == Invoice.customer_id)
        .order_by(col(Invoice.period), col(Invoice.id), col(InvoiceLine.position))
    )


def _reference_lines(engine: Engine) -> int:
    """The plainest correct lines CSV: the same rows streamed, written as they come by the
    csv module (no formatting of amounts, no formula quoting)."""
    sink = _CountingSink()
    writer = csv.writer(sink, lineterminator="\n")
    writer.writerow(exports.LINE_COLUMNS)
    query = _reference_query().execution_options(yield_per=exports.BATCH)
    with engine.connect() as connection:
        for batch in connection.execute(query).partitions():
            writer.writerows(batch)
    return sink.chars


# The lines CSV's goal, in seconds.
LINES_GOAL = 1.5


def _lines_csv_figure(engine: Engine, area: str, dataset: str) -> Figure:
    size = _export(engine, exports.write_lines_csv)
    ours, ref = compare.against(
        lambda: _export(engine, exports.write_lines_csv), lambda: _reference_lines(engine)
    )
    _, peak = _measure(lambda: _export(engine, exports.write_lines_csv))
    goal = f"< {LINES_GOAL} s, flat memory; reference: the csv module streaming the same rows"
    if min(ref.wall, ref.cpu) > LINES_GOAL:
        # The plainest code cannot meet the goal here: only the ratio says how we do.
        goal += (
            f". THE REFERENCE ITSELF TAKES {ref.cpu:.2f} s CPU ({ref.wall:.2f} s wall) > "
            f"{LINES_GOAL} s on this machine: judged by the ratio"
        )
    return Figure(
        area,
        "lines CSV (streamed)",
        f"{compare.seconds_vs(ours, ref)}; peak {peak:.0f} MiB, {size / 2**20:.1f} MiB",
        goal,
        dataset,
    )


def _postgres_figures(tmp: str, n_invoices: int, lines_per: int, dataset: str) -> list[Figure]:
    """The lines CSV on PostgreSQL (make bench-postgres), beside SQLite's."""
    figures: list[Figure] = []
    for label, url in compare.backends(tmp, "invoices")[1:]:
        engine = make_engine(url)
        migrate(engine)
        started = time.perf_counter()
        _populate(engine, n_invoices, lines_per)
        setup = f"{time.perf_counter() - started:.1f} s"
        figures.append(Figure(AREA + label, "load dataset (setup)", setup, "", dataset))
        figures.append(_lines_csv_figure(engine, AREA + label, dataset))
        engine.dispose()
    return figures


def _sync_throughput(n_invoices: int) -> tuple[float, int]:
    from tests.support.stripe_server import StripeTestServer
    from tests.support.stripe_world import make_world

    with tempfile.TemporaryDirectory() as tmp, StripeTestServer() as server:
        engine = make_engine(f"sqlite:///{Path(tmp) / 'sync.db'}")
        migrate(engine)
        world = make_world(server, engine)
        # 40 months per customer keeps (customer, period) unique, as the schema demands.
        customers = [world.customer(f"c{i}@bench.example") for i in range(n_invoices // 40 + 1)]
        for i in range(n_invoices):
            month = i % 40
            period = f"{2020 + month // 12}-{month % 12 + 1:02d}"
            _, remote = world.invoice(customers[i // 40], 1_000 + i, period, status="open")
            server.pay_out_of_band(remote["id"])
        started = time.perf_counter()
        result = sync.sync(engine, world.gateway)
        seconds = time.perf_counter() - started
        engine.dispose()
    return result.applied / seconds, result.applied


def run(quick: bool) -> list[Figure]:
    n_invoices, lines_per = (2_000, 10) if quick else (50_000, 10)
    dataset = f"{n_invoices:,} invoices / {n_invoices * lines_per:,} lines"
    figures: list[Figure] = []
    with tempfile.TemporaryDirectory() as tmp:
        engine = make_engine(f"sqlite:///{Path(tmp) / 'bench.db'}")
        migrate(engine)
        started = time.perf_counter()
        _populate(engine, n_invoices, lines_per)
        figures.append(
            Figure(
                AREA, "load dataset (setup)", f"{time.perf_counter() - started:.1f} s", "", dataset
            )
        )
        timing, peak = _measure(lambda: _page_data(engine))
        figures.append(
            Figure(
                AREA,
                "page data (figures, chart, table, detail)",
                f"{_seconds(timing)}, peak {peak:.0f} MiB",
                "< 2 s",
                dataset,
            )
        )
        timing, peak = _measure(lambda: _receivables(engine))
        figures.append(
            Figure(
                AREA,
                "receivables summary (aging, DSO, collection rate)",
                f"{_seconds(timing)}, peak {peak:.0f} MiB",
                "< 0.5 s",
                dataset,
            )
        )
        timing, peak = _measure(lambda: _filtered_page_data(engine))
        figures.append(
            Figure(
                AREA,
                "page data x4 filters (overdue, bucket, name, amount)",
                f"{_seconds(timing)}, peak {peak:.0f} MiB",
                "",
                dataset,
            )
        )
        size = _export(engine, exports.write_invoices_csv)
        timing, peak = _measure(lambda: _export(engine, exports.write_invoices_csv))
        figures.append(
            Figure(
                AREA,
                "invoices CSV (streamed)",
                f"{_seconds(timing)}, peak {peak:.0f} MiB, {size / 2**20:.1f} MiB",
                "flat memory",
                dataset,
            )
        )
        figures.append(_lines_csv_figure(engine, AREA, dataset))
        build = exports.csv_builder(engine, inv.InvoiceFilter(), exports.write_invoices_csv)
        timing, peak = _measure(build)
        figures.append(
            Figure(
                AREA,
                "invoices CSV download (on click, in memory)",
                f"{_seconds(timing)}, peak {peak:.0f} MiB",
                "",
                dataset,
            )
        )
        engine.dispose()
        figures += _postgres_figures(tmp, n_invoices, lines_per, dataset)
    n_sync = 20 if quick else 200
    rate, applied = _sync_throughput(n_sync)
    figures.append(
        Figure(
            AREA,
            "sync throughput (local Stripe server)",
            f"{rate:.0f} events/s",
            "",
            f"{applied} events, {n_sync} invoices",
        )
    )
    return figures
