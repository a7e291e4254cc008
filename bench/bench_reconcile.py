"""Reconciling a period of 50,000 invoices against the local Stripe test server.

The invoices are put straight into the server's memory (`create_invoice_directly`), not over
HTTP, so only the reconciliation's own requests are measured. One invoice in a hundred differs.

Compute is printed twice: as wall time less the wait on Stripe (inflated when the machine is
busy) and as the run's CPU time less the CPU time its requests took (HTTP, JSON decoding),
which a busy machine barely moves. The server runs in this process: its work is in the wait.
Under `make bench-postgres` the same run follows on PostgreSQL (area "reconcile (PostgreSQL)").
"""

from __future__ import annotations

import tempfile
import time
import tracemalloc

from sqlalchemy import insert
from sqlalchemy.engine import Engine

from bench import compare
from bench.run import Figure
from billing_core.config import load_settings
from billing_core.costs.snapshots import CostSource
from billing_core.db import make_engine, migrate, session_scope
from billing_core.models import Customer, Invoice, InvoiceLine
from billing_core.periods import Period, utcnow
from billing_core.reconciliation.runs import make_reader, reconcile_period
from billing_core.states import InvoiceStatus, LineKind, PushStep
from tests.support.stripe_server import StripeTestServer


def _populate(engine: Engine, server: StripeTestServer, period: Period, n: int) -> None:
    """n customers with one open invoice of one line each, locally (bulk Core inserts with
    explicit ids) and in the server's memory; one in a hundred differs by 5.00 in Stripe."""
    customers = [server.create_customer_directly(email=f"b{i}@example.com") for i in range(n)]
    remote_ids = []
    for i, cus in enumerate(customers):
        remote_amount = 1000 + i + (500 if i % 100 == 0 else 0)
        obj = server.create_invoice_directly(
            cus["id"],
            remote_amount,
            "eur",
            {"local_invoice_id": str(i + 1), "period": str(period)},
            description="Fee",
        )
        remote_ids.append(obj["id"])
    with session_scope(engine) as s:
        s.execute(
            insert(Customer),
            [
                {
                    "id": i + 1,
                    "name": f"B{i}",
                    "email": f"b{i}@example.com",
                    "currency": "EUR",
                    "stripe_customer_id": c["id"],
                }
                for i, c in enumerate(customers)
            ],
        )
        s.execute(
            insert(Invoice),
            [
                {
                    "id": i + 1,
                    "customer_id": i + 1,
                    "period": str(period),
                    "currency": "EUR",
                    "status": InvoiceStatus.OPEN,
                    "total_minor": 1000 + i,
                    "push_step": PushStep.FINALIZED,
                    "stripe_invoice_id": remote_ids[i],
                }
                for i in range(n)
            ],
        )
        s.execute(
            insert(InvoiceLine),
            [
                {
                    "invoice_id": i + 1,
                    "kind": LineKind.BASE_FEE,
                    "description": "Fee",
                    "amount_minor": 1000 + i,
                }
                for i in range(n)
            ],
        )


def run(quick: bool) -> list[Figure]:
    figures: list[Figure] = []
    with tempfile.TemporaryDirectory() as tmp:
        # SQLite, and PostgreSQL beside it under `make bench-postgres` (area suffixed).
        for label, url in compare.backends(tmp, "reconcile"):
            figures += _section(url, "reconcile" + label, quick)
    return figures


def _section(url: str, area: str, quick: bool) -> list[Figure]:
    """One reconciliation of the period on database `url` against a fresh local Stripe."""
    n = 500 if quick else 50_000
    period = Period.containing(utcnow()).previous()
    dataset = f"{n:,} invoices, 1 line each, 1 % differing"
    with StripeTestServer() as server:
        engine = make_engine(url)
        migrate(engine)
        _populate(engine, server, period, n)
        compare.analyze(engine)  # PostgreSQL: statistics, as autovacuum would take
        settings = load_settings(environ={"STRIPE_API_BASE": server.url})

        started = time.perf_counter()
        result = reconcile_period(
            engine, period, source=CostSource.of(settings), reader=make_reader(settings)
        )
        elapsed = time.perf_counter() - started

        tracemalloc.start()
        reconcile_period(
            engine, period, source=CostSource.of(settings), reader=make_reader(settings)
        )
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        engine.dispose()
    raised = sum(row["raised"] for row in result.counts["kinds"].values())
    return [
        Figure(area, "wall time of a run", f"{elapsed:.2f} s", "", dataset),
        Figure(
            area,
            "compute time (diffing, database; not waiting on Stripe)",
            f"{result.counts['timings']['compute_s']:.2f} s",
            "< 5 s",
            dataset,
        ),
        Figure(
            area,
            "compute CPU time (the run's thread, Stripe's requests taken out)",
            f"{result.counts['timings']['compute_cpu_s']:.2f} s",
            "< 5 s",
            dataset,
        ),
        Figure(
            area,
            "waiting on the local Stripe server (in-process, shares the GIL)",
            f"{result.counts['timings']['stripe_wait_s']:.2f} s",
            "",
            dataset,
        ),
        Figure(
            area,
            "Stripe requests",
            str(result.stripe_requests),
            f"about {n // 100} (one per 100 invoices)",
            dataset,
        ),
        Figure(
            area,
            "peak traced memory (tracemalloc, run only)",
            f"{peak / 2**20:.0f} MiB",
            "",
            dataset,
        ),
        Figure(area, "diffs raised", str(raised), f"{2 * (n // 100)} (amount + line)", dataset),
    ]


if __name__ == "__main__":
    for fig in run(quick=False):
        print(fig)
