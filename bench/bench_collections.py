"""Collections (dunning) over 10,000 open send-invoice invoices against the local Stripe server.

The invoices are put straight into the server's memory and the database, not over HTTP, so only
the collections pass's own requests are measured. Their due dates are spread from 5 days ahead
to 54 days past, so every kind of step is due somewhere: a first pass sends one reminder or
final notice per invoice whose first step has come; a second pass the same day sends nothing.
The gateway is not rate limited here (the tool's own cost); at Stripe's live rate the figure
printed as "at N requests/s" is the floor a real pass needs.
"""

from __future__ import annotations

import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

from bench.run import Figure
from billing_core.config import load_settings
from billing_core.db import make_engine, migrate, session_scope
from billing_core.models import Customer, Invoice
from billing_core.payments.collections import run_collections
from billing_core.payments.dunning import CollectionsPolicy
from billing_core.states import InvoiceStatus
from billing_core.stripe.client import make_client
from billing_core.stripe.gateway import Gateway, RetryPolicy
from tests.support.stripe_server import StripeTestServer

NOW = datetime(2026, 11, 21, 9, 0, tzinfo=UTC)
POLICY = CollectionsPolicy()
LIVE_RPS = 80  # STRIPE_REQUESTS_PER_SECOND's default for live keys


def _populate(engine: object, server: StripeTestServer, n: int) -> None:
    with session_scope(engine) as s:  # type: ignore[arg-type]
        for i in range(n):
            cus = server.create_customer_directly(email=f"c{i}@example.com", name=f"C{i}")
            due = NOW - timedelta(days=i % 60 - 5, hours=2)
            remote = server.create_invoice_directly(
                cus["id"], 1000 + i, "eur", due_date=int(due.timestamp())
            )
            customer = Customer(
                name=f"C{i}",
                email=f"c{i}@example.com",
                currency="EUR",
                collection_method="send_invoice",
                stripe_customer_id=cus["id"],
            )
            s.add(customer)
            s.flush()
            s.add(
                Invoice(
                    customer_id=customer.id or 0,
                    period="2026-09",
                    currency="EUR",
                    status=InvoiceStatus.OPEN,
                    total_minor=1000 + i,
                    subtotal_minor=1000 + i,
                    collection_method="send_invoice",
                    stripe_invoice_id=remote["id"],
                    number=remote["number"],
                    due_at=due,
                )
            )


def run(quick: bool) -> list[Figure]:
    n = 500 if quick else 10_000
    dataset = f"{n:,} open send-invoice invoices, due -5..+54 days"
    with tempfile.TemporaryDirectory() as tmp, StripeTestServer() as server:
        engine = make_engine(f"sqlite:///{Path(tmp) / 'bench.db'}")
        migrate(engine)
        _populate(engine, server, n)
        settings = load_settings(
            environ={"STRIPE_API_BASE": server.url}, secrets_path=Path(tmp) / "none.toml"
        )
        gateway = Gateway(
            make_client(settings), requests_per_second=1e6, policy=RetryPolicy(backoff_seconds=0)
        )
        started = time.perf_counter()
        dry = run_collections(engine, None, POLICY, now=NOW, actor="bench", dry_run=True)
        dry_s = time.perf_counter() - started
        first = run_collections(
            engine, gateway, POLICY, now=NOW, actor="bench", workers=settings.stripe_concurrency
        )
        again = run_collections(engine, gateway, POLICY, now=NOW, actor="bench")
        sent_events = len(server.events("invoice.sent"))
        engine.dispose()
    steps = len(first.planned)
    return [
        Figure("collections", "dry run (plan only) wall time", f"{dry_s:.2f} s", "", dataset),
        Figure(
            "collections",
            "steps due: listed by the dry run / taken by the first pass",
            f"{len(dry.planned):,} / {steps:,}",
            "the same",
            dataset,
        ),
        Figure(
            "collections",
            "first pass wall time (no client rate limit)",
            f"{first.seconds:.1f} s ({steps / max(first.seconds, 1e-9):.0f} steps/s)",
            "",
            dataset,
        ),
        Figure(
            "collections",
            "first pass Stripe requests",
            f"{first.stripe_calls:,}",
            "one per step due",
            dataset,
        ),
        Figure(
            "collections",
            f"first pass at {LIVE_RPS} requests/s (Stripe live rate, computed)",
            f"≥ {first.stripe_calls / LIVE_RPS:.0f} s",
            "",
            dataset,
        ),
        Figure(
            "collections",
            "emails Stripe sent (invoice.sent events)",
            f"{sent_events:,}",
            f"{first.count('sent'):,} (one per reminder or notice)",
            dataset,
        ),
        Figure(
            "collections",
            "second pass the same day: Stripe requests, wall time",
            f"{again.stripe_calls}, {again.seconds:.2f} s",
            "0 requests",
            dataset,
        ),
    ]


if __name__ == "__main__":
    for fig in run(quick=False):
        print(fig)
