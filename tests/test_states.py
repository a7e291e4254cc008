"""Named states: the one word shown for an invoice, in Python and in SQL."""

import pytest
from sqlmodel import Session, col, select

from billing_core.models import Customer, Invoice, display_status_in
from billing_core.states import (
    DisplayStatus,
    InvoiceOutcome,
    InvoiceStatus,
    display_status,
    split_display_status,
)

# (Stripe's status, local outcome) -> the word pages, CSV and the CLI show.
CASES = [
    ("draft", None, "draft"),
    ("open", None, "open"),
    ("paid", None, "paid"),
    ("void", None, "void"),
    ("uncollectible", None, "uncollectible"),
    ("open", "payment_failed", "failed"),
    ("draft", "payment_failed", "failed"),  # migrated from a failure before finalizing
    ("draft", "credit_carried", "credit"),
]


@pytest.mark.parametrize(("status", "outcome", "word"), CASES)
def test_display_status(status: str, outcome: str | None, word: str) -> None:
    assert display_status(status, outcome) == word


@pytest.mark.parametrize("word", list(DisplayStatus))
def test_every_word_splits_into_a_pair_that_shows_as_it(word: DisplayStatus) -> None:
    status, outcome = split_display_status(word)
    assert status in InvoiceStatus and (outcome is None or outcome in InvoiceOutcome)
    # A refund is in the amounts, not the status: Stripe keeps a refunded invoice `paid`.
    refunded = {DisplayStatus.REFUNDED: 100, DisplayStatus.PARTIALLY_REFUNDED: 40}.get(word, 0)
    assert display_status(status, outcome, paid_minor=100, refunded_minor=refunded) == word


def test_unknown_values_are_refused_in_python_and_in_the_database(engine) -> None:
    with pytest.raises(ValueError):
        display_status("failed", None)  # no longer a status: it is an outcome
    with pytest.raises(ValueError):
        split_display_status("pending")
    with Session(engine) as s:
        s.add(Invoice(customer_id=1, period="2026-01", currency="USD", status="failed"))
        with pytest.raises(Exception, match="not a valid InvoiceStatus"):
            s.flush()


def test_sql_filter_agrees_with_the_python_word(engine) -> None:
    with Session(engine) as s:
        customer = Customer(name="C", email="c@example.com", currency="USD")
        s.add(customer)
        s.flush()
        for n, (status, outcome, _) in enumerate(CASES, 1):
            s.add(
                Invoice(
                    customer_id=customer.id or 0,
                    period=f"2025-{n:02d}",
                    currency="USD",
                    status=InvoiceStatus(status),
                    outcome=InvoiceOutcome(outcome) if outcome else None,
                )
            )
        s.commit()
        rows = s.exec(select(Invoice)).all()
        assert all(isinstance(r.status, InvoiceStatus) for r in rows)  # read back as members
        for word in DisplayStatus:
            query = select(Invoice.period).where(display_status_in([word]))
            chosen = set(s.exec(query.order_by(col(Invoice.period))).all())
            assert chosen == {r.period for r in rows if r.display_status == word}, word
            others = set(s.exec(select(Invoice.period).where(~display_status_in([word]))).all())
            assert others == {r.period for r in rows} - chosen, word
