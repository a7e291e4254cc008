"""Overview and Customer page data at 1,000 customers, 13 months, 50,000 invoices (issue 15).

A world of customers (EUR and USD, one linked account each), 50 invoiced months (six lines an
invoice: 50,000 invoices at 1,000 customers), the last 13 (the months the pages show) with a
MONTHLY cost snapshot each, and a DAILY snapshot of the running month. Times the Overview's
data (`build_overview`, `build_cockpit`, `receivables_summary`) and one customer's
(`build_customer_view`, upcoming invoice included), and the Collections page's (5,000 open
invoices at 1,000 customers). Each figure is printed beside a reference
timed in the same run on the same database: the plain SQL sum of the same invoices' totals by
currency and month (every customer's for the Overview, the one customer's for the Customer
page), and the ratio, so a slower machine shows in both. Printed, never asserted. Under `make
bench-postgres` the same world and figures follow on PostgreSQL (area "cockpit (PostgreSQL)").

`python -m bench.bench_cockpit [--quick]` runs it alone; `run(quick)` fits bench/run.py's BENCHES.
"""

from __future__ import annotations

import argparse
import random
import tempfile
import time
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

from sqlalchemy import func, insert, select
from sqlalchemy.engine import Engine
from sqlmodel import Session, col

from bench import compare
from bench.run import Figure
from billing_core.config import Settings, load_settings
from billing_core.costs.rollups import write_rollups
from billing_core.db import make_engine, migrate, session_scope
from billing_core.invoicing.figures import BILLED_STATUSES
from billing_core.models import (
    CostLine,
    CostSnapshot,
    Customer,
    CustomerAccount,
    ExchangeRate,
    Invoice,
    InvoiceLine,
    Plan,
    display_status_in,
)
from billing_core.periods import Period
from billing_core.states import InvoiceStatus, LineKind
from billing_core.views import collections
from billing_core.views.customer import build_customer_view
from billing_core.views.overview import build_cockpit, build_overview
from billing_core.views.receivables import receivables_summary

AREA = "cockpit"
NOW = datetime(2026, 11, 21, 9, 0, tzinfo=UTC)
RUNNING = Period.containing(NOW)
SERVICES = [f"Service {i}" for i in range(10)]
MONTHS = 13  # months with cost snapshots: the ones the Overview and Customer page read
HISTORY = 50  # invoiced months (older ones have invoices only, as after years of billing)


def _account(i: int) -> str:
    return f"{100000000000 + i}"


def _populate(engine: Engine, customers: int) -> None:
    rng = random.Random(15)
    months = [RUNNING.shift(-m) for m in range(HISTORY, 0, -1)]
    costed = set(months[-MONTHS:])
    with session_scope(engine) as s:
        plan = Plan(name="bench", currency="USD", base_fee_minor=9900, markup_pct=Decimal(10))
        s.add(plan)
        s.flush()
        s.execute(
            insert(Customer),
            [
                {
                    "id": i + 1,
                    "name": f"Customer {i:04d}",
                    "email": f"c{i}@bench.example",
                    "currency": ("EUR", "USD")[i % 2],
                    "plan_id": plan.id,
                    "default_payment_method": "card visa 4242",
                }
                for i in range(customers)
            ],
        )
        s.execute(
            insert(CustomerAccount),
            [{"customer_id": i + 1, "account_id": _account(i)} for i in range(customers)],
        )
        for p in [*sorted(costed), RUNNING]:
            s.add(ExchangeRate(period=str(p), quote="EUR", rate=Decimal("0.92"), source="bench"))
    invoice_id = 0
    for p in months:
        snap_rows: list[dict[str, Any]] = []
        inv_rows: list[dict[str, Any]] = []
        line_rows: list[dict[str, Any]] = []
        with session_scope(engine) as s:
            snap_id = None
            if p in costed:
                snap = CostSnapshot(
                    period=str(p),
                    granularity="MONTHLY",
                    group_by="LINKED_ACCOUNT",
                    metric="UnblendedCost",
                    fetched_at=p.end_at + timedelta(days=4),
                )
                s.add(snap)
                s.flush()
                snap_id = snap.id
            for i in range(customers):
                invoice_id += 1
                eur = i % 2 == 0
                costs = [Decimal(rng.randint(1_000, 90_000)) / 100 for _ in SERVICES[:5]]
                for service, usd in zip(SERVICES, costs, strict=False):
                    if snap_id is None:
                        break
                    snap_rows.append(
                        {
                            "snapshot_id": snap_id,
                            "period": str(p),
                            "day": p.start.isoformat(),
                            "account_id": _account(i),
                            "service": service,
                            "amount": usd,
                        }
                    )
                rate = Decimal("0.92") if eur else Decimal(1)
                amounts = [9900] + [int(usd * Decimal("1.1") * rate * 100) for usd in costs]
                inv_rows.append(
                    {
                        "id": invoice_id,
                        "customer_id": i + 1,
                        "period": str(p),
                        "currency": "EUR" if eur else "USD",
                        "status": InvoiceStatus.PAID if i % 10 else InvoiceStatus.OPEN,
                        "total_minor": sum(amounts),
                        "subtotal_minor": sum(amounts),
                        "amount_paid_minor": sum(amounts) if i % 10 else 0,
                        "fx_rate": rate if eur else None,
                        "issued_at": p.end_at + timedelta(days=3),
                        "due_at": p.end_at + timedelta(days=33),
                    }
                )
                for pos, amount in enumerate(amounts):
                    line_rows.append(
                        {
                            "invoice_id": invoice_id,
                            "position": pos,
                            "kind": LineKind.BASE_FEE if pos == 0 else LineKind.AWS,
                            "description": "bench",
                            "service": None if pos == 0 else SERVICES[pos - 1],
                            "amount_minor": amount,
                        }
                    )
            if snap_rows:
                s.execute(insert(CostLine), snap_rows)
                write_rollups(s, [snap_id or 0])  # as store_snapshot does with its lines
            s.execute(insert(Invoice), inv_rows)
            s.execute(insert(InvoiceLine), line_rows)
    with session_scope(engine) as s:
        snap = CostSnapshot(
            period=str(RUNNING),
            granularity="DAILY",
            group_by="LINKED_ACCOUNT",
            metric="UnblendedCost",
            estimated=True,
            fetched_at=NOW,
        )
        s.add(snap)
        s.flush()
        days = RUNNING.days_elapsed(NOW) + 1
        s.execute(
            insert(CostLine),
            [
                {
                    "snapshot_id": snap.id,
                    "period": str(RUNNING),
                    "day": (RUNNING.start + timedelta(days=d)).isoformat(),
                    "account_id": _account(i),
                    "service": service,
                    "amount": Decimal(rng.randint(10, 3_000)) / 100,
                }
                for i in range(customers)
                for d in range(days)
                for service in SERVICES[:3]
            ],
        )
        write_rollups(s, [snap.id or 0])


def _time(fn: Any, repeat: int = 3) -> float:
    """The best of `repeat` runs, in seconds."""
    return _times(fn, repeat)[0]


def _times(fn: Any, repeat: int = 3) -> tuple[float, float]:
    """The best wall time and the best CPU time (this process) of `repeat` runs, in seconds:
    on a machine shared with other work, the CPU time is the steadier figure."""
    wall = cpu = float("inf")
    for _ in range(repeat):
        started, started_cpu = time.perf_counter(), time.process_time()
        fn()
        wall = min(wall, time.perf_counter() - started)
        cpu = min(cpu, time.process_time() - started_cpu)
    return wall, cpu


def _reference(engine: Engine, customer_id: int | None) -> None:
    """The plain SQL sum of the shown months' billed invoice totals by currency and month
    (one customer's when `customer_id` is given): the floor any page's figures stand on."""
    first, last = str(RUNNING.shift(-MONTHS)), str(RUNNING.previous())
    query = (
        select(col(Invoice.currency), col(Invoice.period), func.sum(col(Invoice.total_minor)))
        .where(
            col(Invoice.period) >= first,
            col(Invoice.period) <= last,
            display_status_in(BILLED_STATUSES),
        )
        .group_by(col(Invoice.currency), col(Invoice.period))
    )
    if customer_id is not None:
        query = query.where(col(Invoice.customer_id) == customer_id)
    with Session(engine) as s:
        s.execute(query).all()


def run(quick: bool) -> list[Figure]:
    customers = 100 if quick else 1_000
    settings = load_settings({"BILLING_MODE": "live"}, secrets_path=Path("/nonexistent.toml"))
    figures: list[Figure] = []
    with tempfile.TemporaryDirectory() as tmp:
        # SQLite, and PostgreSQL beside it under `make bench-postgres` (area suffixed).
        for label, url in compare.backends(tmp, "cockpit"):
            figures += _section(url, AREA + label, customers, settings)
    return figures


def _section(url: str, area: str, customers: int, settings: Settings) -> list[Figure]:
    """The world, then the three pages' data beside their reference, on database `url`."""
    engine = make_engine(url)
    migrate(engine)
    started = time.perf_counter()
    _populate(engine, customers)
    compare.analyze(engine)  # PostgreSQL: statistics, as autovacuum would take
    seeded = time.perf_counter() - started
    dataset = f"{customers} customers, {MONTHS} months, {customers * HISTORY} invoices"
    chosen = customers // 2

    def overview() -> None:
        with Session(engine) as s:
            build_overview(s, NOW)
            build_cockpit(s, settings, now=NOW)
            receivables_summary(s, as_of=NOW)

    def customer() -> None:
        with Session(engine) as s:
            build_customer_view(s, settings, chosen, now=NOW)

    def collections_page() -> None:
        with Session(engine) as s:  # what pages/collections.py reads, in its order
            collections.receivables(s, NOW)
            collections.open_invoices_frame(s, NOW, settings.collections_policy)
            collections.reminders_frame(s)
            collections.failed_payments(s)
            collections.write_offs_frame(s)
            collections.pending_claims(s)

    figures = [Figure(area, "world seeded", f"{seeded:.1f} s", "", dataset)]
    for name, fn, only in (
        ("Overview data", overview, None),
        ("Customer page data", customer, chosen),
        ("Collections page data", collections_page, None),
    ):
        took, cpu = _times(fn)
        floor = _time(lambda only=only: _reference(engine, only), repeat=5)
        figures += [
            Figure(area, name, f"{took:.2f} s", "< 0.5 s", dataset),
            Figure(area, f"{name}: CPU", f"{cpu:.2f} s", "", "CPU time of this process"),
            Figure(
                area,
                f"{name}: SQL sum reference",
                f"{floor * 1000:.1f} ms",
                "",
                "same invoices' totals by currency and month, plain SQL",
            ),
            Figure(area, f"{name}: ratio", f"{took / floor:.0f}x", "", "page / reference"),
        ]
    engine.dispose()
    return figures


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="100 customers instead of 1,000")
    for f in run(parser.parse_args().quick):
        print(f"{f.area:8} {f.figure:36} {f.value:>10}  {f.goal:8} {f.dataset}")
