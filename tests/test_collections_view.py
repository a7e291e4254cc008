"""The Collections page's data on a database of its own: receivables summed in SQL per
currency and bucket, and the open-invoices table cut to the earliest due with a count."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from sqlalchemy.engine import Engine
from sqlmodel import Session

from billing_core.db import session_scope
from billing_core.models import CollectionStep, Customer, Invoice
from billing_core.payments.dunning import CollectionsPolicy
from billing_core.views import collections as view

NOW = datetime(2026, 11, 21, 9, 0, tzinfo=UTC)


def _world(engine: Engine) -> list[int]:
    """Six open EUR invoices due 5 days ago, 4, ... 0 days from now (one partly paid), one open
    USD invoice without a due date, one uncollectible USD one; ids in due order."""
    ids: list[int] = []
    with session_scope(engine) as s:
        customer = Customer(name="Late Ltd", email="ap@late.example", currency="EUR")
        s.add(customer)
        s.flush()
        assert customer.id is not None
        for n, days in enumerate((-5, -4, -3, -2, -1, 1)):
            inv = Invoice(
                customer_id=customer.id,
                period=f"2026-0{n + 1}",
                currency="EUR",
                subtotal_minor=10_000,
                total_minor=10_000,
                amount_paid_minor=2_500 if n == 0 else 0,
                status="open",
                collection_method="send_invoice",
                stripe_invoice_id=f"in_{n}",
                number=f"INV-{n}",
                due_at=NOW + timedelta(days=days),
            )
            s.add(inv)
            s.flush()
            assert inv.id is not None
            ids.append(inv.id)
        for period, status in (("2025-01", "open"), ("2025-02", "uncollectible")):
            s.add(
                Invoice(
                    customer_id=customer.id,
                    period=period,
                    currency="USD",
                    subtotal_minor=700,
                    total_minor=700,
                    status=status,
                )
            )
        for step, invoice_id in (("reminder+1", ids[0]), ("reminder+1", ids[-1])):
            s.add(
                CollectionStep(
                    invoice_id=invoice_id,
                    step=step,
                    status="done",
                    idempotency_key=f"k-{invoice_id}",
                    claimed_by="host:1",
                    claimed_at=NOW - timedelta(days=1),
                    done_at=NOW - timedelta(days=1),
                )
            )
    return ids


def test_receivables_are_summed_per_currency_and_bucket(engine: Engine) -> None:
    _world(engine)
    with Session(engine) as s:
        found = view.receivables(s, NOW)
    assert [(r.currency, r.bucket, r.count, r.amount_minor) for r in found] == [
        ("EUR", "not yet due", 1, 10_000),
        ("EUR", "overdue", 5, 47_500),  # the partly paid one counts what is still owed
        ("USD", "not yet due", 1, 700),  # no due date yet: not overdue
        ("USD", "uncollectible", 1, 700),
    ]
    assert view.open_count(found) == 7


def test_open_invoices_show_the_earliest_due_first_up_to_the_limit(engine: Engine) -> None:
    _world(engine)
    policy = CollectionsPolicy()
    with Session(engine) as s:
        everything = view.open_invoices_frame(s, NOW, policy)
        cut = view.open_invoices_frame(s, NOW, policy, limit=3)
        total = view.open_count(view.receivables(s, NOW))
    assert len(everything) == 7 and view.open_table_note(len(everything), total) is None
    assert list(cut["invoice"]) == ["INV-0", "INV-1", "INV-2"]
    assert cut.to_dict("records") == everything.head(3).to_dict("records")
    assert list(cut["amount due"]) == ["EUR 75.00", "EUR 100.00", "EUR 100.00"]
    assert cut["last step"].iloc[0].startswith("Reminder") and cut["last step"].iloc[1] == "—"
    assert view.open_table_note(len(cut), total) == (
        "The 3 open invoices due first (the most overdue) of 7; "
        "filter the Invoices page by status to see the others."
    )
    assert everything["last step"].iloc[5].startswith("Reminder")
