"""Drill: a flood of signed webhook deliveries, duplicated and shuffled, sent all at once.

The demo world's last closed month is invoiced against the local Stripe server; then Stripe
moves on without us: an open invoice is paid out of band, another voided, customers change
cards again and again (each change is two events). Every event Stripe emitted is then posted to
a real `python -m billing_core webhook-server` subprocess from many threads at once, about 30 %
of them more than once, in a seeded random order (Stripe retries and does not order deliveries).

Checks: every delivery answered 2xx (no 5xx), each event stored once and applied once (the
server re-reads each object from Stripe once per distinct event, never per delivery), no event
left unprocessed or in error, and the local invoices and customers end equal to Stripe's state.
"""

from __future__ import annotations

import json
import os
import random
import time
import urllib.error
import urllib.request
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from sqlalchemy import func
from sqlalchemy.engine import Engine
from sqlmodel import Session, col, select

from billing_core.models import Customer, Invoice, StripeEvent
from billing_core.payments import events as payments_events
from billing_core.stripe import mapping
from tests.drills.conftest import (
    PERIOD,
    Cli,
    DrillReport,
    cli_env,
    drill_seeds,
    free_port,
    run_in_process,
)
from tests.support.stripe_server import StripeTestServer

pytestmark = pytest.mark.drill

SECRET = "whsec_drill_flood"
DELIVERIES = int(os.environ.get("DRILL_WEBHOOKS", "2000"))
DUPLICATE_SHARE = 0.3
SENDERS = 16
CARDS = ("pm_card_visa", "pm_card_mastercard", "pm_card_amex", "pm_card_visa_debit")


def _make_history(server: StripeTestServer, engine: Engine, rng: random.Random, unique: int) -> str:
    """Invoice the month, then let Stripe change things until it has `unique` events."""
    env = cli_env("sqlite://", server)  # only the Stripe settings are used here
    result = run_in_process(engine, env)
    assert result.exit_code == 0, [p.message for p in result.problems]
    open_invoices = [i for i in server.invoices() if i["status"] == "open"]
    assert len(open_invoices) >= 2
    server.pay_out_of_band(open_invoices[0]["id"])
    server.void(open_invoices[1]["id"])
    customers = [c["id"] for c in server.customers()]
    changes = 0
    while (missing := unique - len(server.events())) > 0:
        for _ in range((missing + 1) // 2):  # a card change emits two events
            server.attach_card(rng.choice(customers), rng.choice(CARDS))
            changes += 1
    return (
        f"{len(server.invoices())} invoices pushed, 1 paid out of band, 1 voided, "
        f"{changes} card changes"
    )


def _deliver(url: str, event: dict[str, Any]) -> int | str:
    """The HTTP status, or the name of the connection error."""
    payload = json.dumps(event).encode()
    req = urllib.request.Request(
        url,
        data=payload,
        method="POST",
        headers={
            "Content-Type": "application/json; charset=utf-8",
            "Stripe-Signature": StripeTestServer.sign_payload(payload, SECRET),
        },
    )
    try:
        with urllib.request.urlopen(req, timeout=60) as resp:
            return int(resp.status)
    except urllib.error.HTTPError as exc:
        return int(exc.code)
    except OSError as exc:
        return (
            type(exc.__cause__ or exc).__name__
            if isinstance(exc, urllib.error.URLError)
            else (type(exc).__name__)
        )


def _wait_ready(url: str, run: Any, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert run.alive(), run.output()
        try:
            with urllib.request.urlopen(url, timeout=1) as resp:
                if resp.status == 200:
                    return
        except OSError:
            time.sleep(0.05)
    raise AssertionError(f"the webhook server did not start:\n{run.output()}")


def _wait_processed(engine: Engine, expected: int, timeout: float = 90) -> tuple[int, int]:
    """(stored, unprocessed) once everything is processed or the time is up."""
    deadline = time.monotonic() + timeout
    while True:
        with Session(engine) as s:
            stored = s.exec(select(func.count()).select_from(StripeEvent)).one()
            pending = s.exec(
                select(func.count())
                .select_from(StripeEvent)
                .where(col(StripeEvent.processed_at).is_(None))
            ).one()
        if (stored >= expected and pending == 0) or time.monotonic() > deadline:
            return stored, pending
        time.sleep(0.1)


def _describe_default(server: StripeTestServer, customer_id: str) -> str | None:
    pm_id = server.customer(customer_id)["invoice_settings"]["default_payment_method"]
    pms = {pm["id"]: pm for pm in server.payment_methods(customer_id)}
    return mapping.describe_payment_method(pms.get(pm_id)) if pm_id else None


@pytest.mark.parametrize("seed", drill_seeds(1))
def test_drill_webhook_flood(
    seed: int,
    demo_engine: Engine,
    demo_db_url: str,
    stripe_server: StripeTestServer,
    cli: Cli,
    drill_report: DrillReport,
) -> None:
    rng = random.Random(seed)
    unique = round(DELIVERIES * (1 - DUPLICATE_SHARE))
    history = _make_history(stripe_server, demo_engine, rng, unique)
    emitted = stripe_server.events()
    deliveries = emitted + [rng.choice(emitted) for _ in range(DELIVERIES - len(emitted))]
    rng.shuffle(deliveries)
    port = free_port()
    env = cli_env(demo_db_url, stripe_server, STRIPE_WEBHOOK_SECRET=SECRET)
    server = cli.start(env, "webhook-server", "--port", str(port))
    try:
        _wait_ready(f"http://127.0.0.1:{port}/healthz", server)
        reads_before = stripe_server.request_count(method="GET")
        with Session(demo_engine) as s:
            seeded = {e.id for e in s.exec(select(StripeEvent)).all()}  # demo history
        url = f"http://127.0.0.1:{port}/stripe/webhook"
        started = time.monotonic()
        with ThreadPoolExecutor(SENDERS) as pool:
            answers = list(pool.map(lambda e: _deliver(url, e), deliveries))
        statuses = Counter(answers)
        delivered_in = time.monotonic() - started
        # Wait for what was acknowledged (a refused delivery is never stored).
        acked = {e["id"] for e, a in zip(deliveries, answers, strict=True) if a == 200}
        stored, pending = _wait_processed(demo_engine, len(seeded) + len(acked))
        settled_in = time.monotonic() - started
        reads = stripe_server.request_count(method="GET") - reads_before
    finally:
        server.kill()
    with Session(demo_engine) as s:
        rows = [r for r in s.exec(select(StripeEvent)).all() if r.id not in seeded]
        local_invoices = list(s.exec(select(Invoice).where(Invoice.period == str(PERIOD))).all())
        customers = [c for c in s.exec(select(Customer)).all() if c.stripe_customer_id]
    outcomes = Counter(r.outcome for r in rows)
    errors = [f"{r.id} {r.type}: {r.error}" for r in rows if r.outcome == payments_events.ERROR]
    handled = sum(1 for e in emitted if e["type"] in payments_events.HANDLERS)
    stale_invoices = []
    for inv in local_invoices:
        remote = stripe_server.invoice(inv.stripe_invoice_id or "")
        want = (mapping.local_status(remote), remote["amount_paid"])
        if (inv.display_status, inv.amount_paid_minor) != want:
            stale_invoices.append(f"{inv.id}: {inv.display_status} here, {want[0]} in Stripe")
    stale_customers = [
        f"{c.name}: {c.default_payment_method} here, {_describe_default(stripe_server, sid)}"
        for c in customers
        if (sid := c.stripe_customer_id)
        and c.default_payment_method != _describe_default(stripe_server, sid)
    ]
    drill_report.tried(
        f"seed {seed}: {len(deliveries)} deliveries of {len(emitted)} distinct events "
        f"({len(deliveries) - len(emitted)} duplicates, shuffled) from {SENDERS} threads; "
        f"history: {history}"
    )
    drill_report.found(
        f"seed {seed}: statuses {dict(statuses)}; {len(rows)} stored, {pending} unprocessed; "
        f"outcomes {dict(outcomes)}; {reads} Stripe re-reads for {handled} handled events; "
        f"delivered in {delivered_in:.1f} s, settled in {settled_in:.1f} s; invoices differing "
        f"from Stripe {len(stale_invoices)}, customers differing {len(stale_customers)}"
    )
    assert set(statuses) == {200}, f"{dict(statuses)}\n{server.output()}"
    assert len(rows) == len(emitted) and stored == len(seeded) + len(emitted) and pending == 0
    assert {r.id for r in rows} == {e["id"] for e in emitted}
    assert errors == []
    assert reads <= handled, "some event was applied more than once"
    assert stale_invoices == [] and stale_customers == [], stale_invoices + stale_customers
    assert "paid" in {i.status for i in local_invoices} and "void" in {
        i.status for i in local_invoices
    }
