"""Demo payment history: every part of the Invoices page has something to show."""

from __future__ import annotations

from sqlmodel import Session, select

from billing_core.models import Customer, Invoice, StripeEvent, display_status_in
from billing_core.payments import events as payments_events
from billing_core.payments import sync


def test_demo_has_failed_refunded_void_and_uncollectible(demo_session: Session) -> None:
    invoices = demo_session.exec(select(Invoice)).all()
    statuses = {i.display_status for i in invoices}
    assert {"paid", "open", "failed", "void", "uncollectible"} <= statuses
    refunded = [i for i in invoices if i.amount_refunded_minor]
    assert len(refunded) == 2 and all(i.status == "paid" for i in refunded)
    assert any(i.amount_refunded_minor == i.total_minor for i in refunded)  # a full refund
    assert all(0 < i.amount_refunded_minor <= i.amount_paid_minor for i in refunded)


def test_demo_events_feed_timelines_and_never_wait_for_sync(demo_session: Session) -> None:
    failed = demo_session.exec(select(Invoice).where(display_status_in(["failed"]))).all()
    for inv in failed:
        types = [
            e.type
            for e in demo_session.exec(
                select(StripeEvent).where(StripeEvent.invoice_id == inv.id)
            ).all()
        ]
        assert types.count("invoice.payment_failed") == inv.attempt_count
    assert payments_events.pending_event_ids(demo_session) == []
    assert {e.source for e in demo_session.exec(select(StripeEvent)).all()} == {"demo"}
    assert sync.get_cursor(demo_session) is None


def test_demo_payment_methods(demo_session: Session) -> None:
    methods = {c.name: c.default_payment_method for c in demo_session.exec(select(Customer))}
    assert sum(1 for m in methods.values() if m and m.startswith("card ")) >= 4
    assert any(m is None for m in methods.values())
