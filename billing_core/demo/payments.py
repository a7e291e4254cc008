"""Demo payment history: payment methods, retries, refunds and an event timeline per invoice.

Demo invoices are not Stripe objects, so their events are stored as already-processed records
(source "demo", ids evt_demo_...) that only feed the timeline; `sync` never re-reads them.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from sqlmodel import Session, col, select

from billing_core.demo.catalog import CUSTOMERS
from billing_core.models import Customer, Invoice, StripeEvent
from billing_core.states import DisplayStatus, EventOutcome, InvoiceStatus

# Default payment method per demo customer key, as mirrored from Stripe ("type brand last4").
# dune and granite pay by bank transfer (send_invoice); iris's card expired and was removed.
_PAYMENT_METHODS: dict[str, str | None] = {
    "acme": "card visa 4242",
    "birch": "card visa 9995",
    "cobalt": "card amex 8431",
    "dune": None,
    "ember": "card visa 5556",
    "fjord": "sepa_debit 3000",
    "granite": None,
    "harbor": "card mastercard 4444",
    "iris": None,
}
# (customer key, months before the newest demo month) -> refunded share of the total.
_REFUNDS: dict[tuple[str, int], tuple[int, int]] = {("acme", 4): (1, 4), ("cobalt", 6): (1, 1)}
# Paid invoices whose first attempt was declined and a retry succeeded.
_PAID_ON_RETRY = {("fjord", 1), ("birch", 3), ("harbor", 8)}
_DECLINE = "Your card has insufficient funds. (card_declined: insufficient_funds)"


def _key_by_customer(session: Session) -> dict[int, str]:
    by_email = {c.email: c.key for c in CUSTOMERS}
    customers = session.exec(select(Customer).where(col(Customer.is_demo).is_(True))).all()
    return {c.id or 0: by_email.get(c.email, "") for c in customers}


class _Events:
    def __init__(self, session: Session) -> None:
        self.session = session
        self.count = 0

    def add(
        self, invoice: Invoice, n: int, type_: str, at: datetime, detail: str | None, **obj: Any
    ) -> None:
        body = {
            "object": "invoice",
            "number": invoice.number,
            "currency": invoice.currency.lower(),
            "total": invoice.total_minor,
            **obj,
        }
        event_id = f"evt_demo_{invoice.id}_{n}"
        payload = {
            "id": event_id,
            "object": "event",
            "type": type_,
            "created": int(at.timestamp()),
            "livemode": False,
            "data": {"object": body},
        }
        self.session.add(
            StripeEvent(
                id=event_id,
                type=type_,
                created=at,
                payload=payload,
                source="demo",
                invoice_id=invoice.id,
                received_at=at,
                processed_at=at,
                outcome=EventOutcome.APPLIED,
                detail=detail,
            )
        )
        self.count += 1


def _invoice_events(ev: _Events, inv: Invoice, age: int, key: str) -> None:
    issued = inv.issued_at or inv.created_at
    n = 0

    def add(type_: str, at: datetime, detail: str | None = None, **obj: Any) -> None:
        nonlocal n
        n += 1
        ev.add(inv, n, type_, at, detail, **obj)

    add("invoice.finalized", issued, status=InvoiceStatus.OPEN, attempt_count=0)
    if inv.collection_method == "send_invoice":
        add("invoice.sent", issued + timedelta(minutes=1), status=InvoiceStatus.OPEN)
    failed = (DisplayStatus.FAILED, DisplayStatus.UNCOLLECTIBLE)
    failures = inv.attempt_count if inv.display_status in failed else 0
    if inv.status == InvoiceStatus.PAID and (key, age) in _PAID_ON_RETRY:
        inv.attempt_count = 2
        failures = 1
    for k in range(1, failures + 1):
        add(
            "invoice.payment_failed",
            issued + timedelta(days=3 * (k - 1), hours=1),
            status=InvoiceStatus.OPEN,
            attempt_count=k,
            detail=_DECLINE,  # as read from the PaymentIntent when the event was applied
        )
    if inv.status == InvoiceStatus.PAID and inv.paid_at:
        if inv.collection_method == "charge_automatically":
            add("invoice.payment_succeeded", inv.paid_at, attempt_count=inv.attempt_count)
        add(
            "invoice.paid",
            inv.paid_at,
            status=InvoiceStatus.PAID,
            amount_paid=inv.amount_paid_minor,
        )
    elif inv.status == InvoiceStatus.VOID:
        add("invoice.voided", issued + timedelta(days=10), status=InvoiceStatus.VOID)
    elif inv.status == InvoiceStatus.UNCOLLECTIBLE:
        add(
            "invoice.marked_uncollectible",
            issued + timedelta(days=12),
            status=InvoiceStatus.UNCOLLECTIBLE,
        )
    share = _REFUNDS.get((key, age))
    if share and inv.status == InvoiceStatus.PAID and inv.paid_at:
        inv.amount_refunded_minor = inv.total_minor * share[0] // share[1]
        add(
            "charge.refunded",
            inv.paid_at + timedelta(days=7),
            object="charge",
            amount_refunded=inv.amount_refunded_minor,
        )


def seed_payments(session: Session, now: datetime) -> dict[str, int]:
    keys = _key_by_customer(session)
    for customer in session.exec(select(Customer).where(col(Customer.is_demo).is_(True))).all():
        customer.default_payment_method = _PAYMENT_METHODS.get(keys[customer.id or 0], "card")
        session.add(customer)
    invoices = session.exec(
        select(Invoice).where(col(Invoice.is_demo).is_(True)).order_by(col(Invoice.id))
    ).all()
    newest = max((inv.period for inv in invoices), default="")
    ev = _Events(session)
    refunded = 0
    for inv in invoices:
        age = _months_between(inv.period, newest)
        _invoice_events(ev, inv, age, keys.get(inv.customer_id, ""))
        refunded += bool(inv.amount_refunded_minor)
        session.add(inv)
    # One event type the tool does not act on, to show how those are listed.
    session.add(
        StripeEvent(
            id="evt_demo_unhandled_1",
            type="billing_portal.session.created",
            created=now - timedelta(days=2),
            payload={"id": "evt_demo_unhandled_1", "type": "billing_portal.session.created"},
            source="demo",
            processed_at=now - timedelta(days=2),
            outcome=EventOutcome.IGNORED,
        )
    )
    return {"payment events": ev.count + 1, "refunded invoices": refunded}


def _months_between(period: str, newest: str) -> int:
    y1, m1 = (int(x) for x in period.split("-"))
    y2, m2 = (int(x) for x in newest.split("-"))
    return (y2 - y1) * 12 + (m2 - m1)
