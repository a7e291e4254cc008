"""Receivables aging, failed payments, collection rate and DSO against figures computed by hand
on a small world; the SQL bucket filters agree with the Python bucketing."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest
from sqlalchemy.sql.elements import ColumnElement
from sqlmodel import Session, col, select

from billing_core.models import Customer, Invoice
from billing_core.states import AgeBucket, InvoiceOutcome, InvoiceStatus
from billing_core.views import receivables as rcv

AS_OF = datetime(2026, 11, 20, 12, 0, tzinfo=UTC)  # window: issued from 2026-08-22 12:00


def _at(month: int, day: int, hour: int = 6) -> datetime:
    return datetime(2026, month, day, hour, 0, tzinfo=UTC)


# name -> (currency, status, outcome, total, paid, refunded, due_at, issued_at)
WORLD: dict[str, tuple[Any, ...]] = {}
WORLD.update(
    {
        # USD receivables
        "current": ("USD", "open", None, 10_000, 0, 0, _at(11, 25), _at(11, 3)),
        "partial_1d": ("USD", "open", None, 20_000, 5_000, 0, _at(11, 19, 10), _at(10, 20)),
        "failed_30d": ("USD", "open", "payment_failed", 30_000, 0, 0, _at(10, 21), _at(10, 21)),
        "open_31d": ("USD", "open", None, 4_000, 0, 0, _at(10, 20), _at(9, 20)),
        "open_90d": ("USD", "open", None, 5_000, 0, 0, _at(8, 22), _at(8, 1)),
        "open_91d": ("USD", "open", None, 6_000, 0, 0, _at(8, 21), _at(7, 22)),
        "undated": ("USD", "open", None, 7_000, 0, 0, None, None),
        "due_today": ("USD", "open", None, 1_000, 0, 0, _at(11, 20, 0), _at(11, 13)),
        # USD, owing nothing
        "paid": ("USD", "paid", None, 50_000, 50_000, 0, _at(9, 1), _at(9, 1)),
        "void": ("USD", "void", None, 8_000, 0, 0, _at(10, 31), _at(10, 1)),
        "uncollectible": ("USD", "uncollectible", None, 9_000, 0, 0, _at(6, 1), _at(9, 10)),
        "refunded": ("USD", "paid", None, 12_000, 12_000, 12_000, _at(10, 5), _at(10, 5)),
        "credit": ("USD", "draft", "credit_carried", -2_500, 0, 0, None, None),
        "paid_up_open": ("USD", "open", None, 3_000, 3_000, 0, _at(9, 1), _at(9, 1)),
        "issued_later": ("USD", "open", None, 99_900, 0, 0, _at(12, 21), _at(11, 21)),
        # EUR: one receivable, not yet due
        "eur_open": ("EUR", "open", None, 10_000, 0, 0, _at(11, 30), _at(11, 1)),
        # JPY: only a paid invoice in the window
        "jpy_paid": ("JPY", "paid", None, 5_000, 5_000, 0, _at(10, 1), _at(10, 1)),
        # GBP: only an old paid invoice, outside the window
        "gbp_old": ("GBP", "paid", None, 5_000, 5_000, 0, _at(5, 1), _at(5, 1)),
    }
)


def build_world(session: Session) -> dict[str, int]:
    """WORLD in the database (paid ones paid two days after issue): invoice id by name."""
    ids: dict[str, int] = {}
    customers: dict[str, Customer] = {}
    for n, (name, row) in enumerate(WORLD.items()):
        currency, status, outcome, total, paid, refunded, due, issued = row
        if currency not in customers:
            customers[currency] = Customer(
                name=f"{currency} Ltd", email=f"{currency.lower()}@example.com", currency=currency
            )
            session.add(customers[currency])
            session.flush()
        invoice = Invoice(
            customer_id=customers[currency].id or 0,
            period=f"{2020 + n // 12}-{n % 12 + 1:02d}",
            currency=currency,
            status=InvoiceStatus(status),
            outcome=InvoiceOutcome(outcome) if outcome else None,
            total_minor=total,
            subtotal_minor=total,
            amount_paid_minor=paid,
            amount_refunded_minor=refunded,
            due_at=due,
            issued_at=issued,
            number=name,
            paid_at=issued + timedelta(days=2) if issued and paid else None,
        )
        session.add(invoice)
        session.flush()
        ids[name] = invoice.id or 0
    session.commit()
    return ids


@pytest.fixture
def world(session: Session) -> dict[str, int]:
    return build_world(session)


@pytest.mark.parametrize(
    ("due", "days", "bucket"),
    [
        (None, None, AgeBucket.CURRENT),
        (datetime(2026, 11, 25, tzinfo=UTC), -5, AgeBucket.CURRENT),
        (datetime(2026, 11, 20, 23, 59, tzinfo=UTC), 0, AgeBucket.CURRENT),
        (datetime(2026, 11, 19, 23, 59, tzinfo=UTC), 1, AgeBucket.DAYS_1_30),
        (datetime(2026, 10, 21, tzinfo=UTC), 30, AgeBucket.DAYS_1_30),
        (datetime(2026, 10, 20, tzinfo=UTC), 31, AgeBucket.DAYS_31_60),
        (datetime(2026, 9, 21, tzinfo=UTC), 60, AgeBucket.DAYS_31_60),
        (datetime(2026, 9, 20, tzinfo=UTC), 61, AgeBucket.DAYS_61_90),
        (datetime(2026, 8, 22, tzinfo=UTC), 90, AgeBucket.DAYS_61_90),
        (datetime(2026, 8, 21, 23, 0, tzinfo=UTC), 91, AgeBucket.OVER_90),
        (datetime(2025, 1, 1, tzinfo=UTC), 688, AgeBucket.OVER_90),
    ],
)
def test_days_past_due_and_bucket(due: datetime | None, days: int | None, bucket: str) -> None:
    assert rcv.days_past_due(due, AS_OF) == days
    assert rcv.age_bucket(days) == bucket


def test_due_ranges_are_whole_days() -> None:
    assert rcv.due_range(AgeBucket.CURRENT, AS_OF) == (_at(11, 20, 0), None)
    assert rcv.due_range(AgeBucket.DAYS_1_30, AS_OF) == (_at(10, 21, 0), _at(11, 20, 0))
    assert rcv.due_range(AgeBucket.OVER_90, AS_OF) == (None, _at(8, 22, 0))


def test_summary_by_hand(session: Session, world: dict[str, int]) -> None:
    summary = rcv.receivables_summary(session, as_of=AS_OF)
    assert list(summary) == ["EUR", "JPY", "USD"]  # GBP: nothing due, nothing in the window

    usd = summary["USD"]
    # Receivables: current 10,000 + 7,000 (no due date) + 1,000 (due today); 1-30: 15,000 left
    # of the partly paid one, 30,000 failed; 31-60: 4,000; 61-90: 5,000; over 90: 6,000.
    buckets = {b: (f.count, f.amount_minor) for b, f in usd.buckets.items()}
    assert buckets == {
        AgeBucket.CURRENT: (3, 18_000),
        AgeBucket.DAYS_1_30: (2, 45_000),
        AgeBucket.DAYS_31_60: (1, 4_000),
        AgeBucket.DAYS_61_90: (1, 5_000),
        AgeBucket.OVER_90: (1, 6_000),
    }
    assert (usd.open_count, usd.open_minor) == (8, 78_000)
    assert (usd.overdue_count, usd.overdue_minor) == (5, 60_000)
    assert (usd.failed_count, usd.failed_minor) == (1, 30_000)
    assert (usd.undated_count, usd.undated_minor) == (1, 7_000)
    # Issued 2026-08-22 12:00 .. 2026-11-20 12:00: billed = 10,000 + 20,000 + 30,000 + 4,000 +
    # 1,000 + 50,000 (paid) + 9,000 (uncollectible) + 12,000 (refunded) + 3,000 (open, paid
    # up) = 139,000; void and the credit are not billed; paid = 5,000 + 50,000 + 12,000 (before
    # refunds) + 3,000 = 70,000.
    assert usd.billed_in_window_minor == 139_000
    assert usd.paid_in_window_minor == 70_000
    assert usd.invoices_in_window == 10
    assert usd.collection_rate == Decimal("0.5036")  # 70,000 / 139,000 = 0.50359...
    assert usd.dso_days == Decimal("50.5")  # 78,000 / 139,000 x 90 = 50.503...

    eur = summary["EUR"]
    assert (eur.open_minor, eur.overdue_minor, eur.failed_count) == (10_000, 0, 0)
    assert eur.collection_rate == Decimal("0.0000")
    assert eur.dso_days == Decimal("90.0")  # everything billed in 90 days is still open

    jpy = summary["JPY"]
    assert (jpy.open_count, jpy.open_minor) == (0, 0)
    assert jpy.collection_rate == Decimal("1.0000")
    assert jpy.dso_days == Decimal("0.0")
    assert sum(f.amount_minor for f in jpy.buckets.values()) == 0


def test_no_bills_in_window_gives_no_rate(session: Session, world: dict[str, int]) -> None:
    later = datetime(2028, 1, 1, tzinfo=UTC)
    usd = rcv.receivables_summary(session, as_of=later)["USD"]
    assert usd.collection_rate is None and usd.dso_days is None
    # Two years on, every dated receivable is over 90 days late, the one issued later too.
    assert usd.buckets[AgeBucket.OVER_90].count == 8
    assert usd.buckets[AgeBucket.CURRENT].count == 1  # no due date: never overdue
    assert usd.open_minor == 78_000 + 99_900


def _matching(session: Session, clause: ColumnElement[bool]) -> set[str]:
    rows = session.exec(select(Invoice.number).where(clause).order_by(col(Invoice.id))).all()
    return {str(n) for n in rows}


def test_sql_buckets_match_the_summary(session: Session, world: dict[str, int]) -> None:
    expected = {
        AgeBucket.CURRENT: {"current", "undated", "due_today", "eur_open", "issued_later"},
        AgeBucket.DAYS_1_30: {"partial_1d", "failed_30d"},
        AgeBucket.DAYS_31_60: {"open_31d"},
        AgeBucket.DAYS_61_90: {"open_90d"},
        AgeBucket.OVER_90: {"open_91d"},
    }
    for bucket, names in expected.items():
        assert _matching(session, rcv.bucket_clause((bucket,), AS_OF)) == names, bucket
    overdue = {"partial_1d", "failed_30d", "open_31d", "open_90d", "open_91d"}
    assert _matching(session, rcv.overdue_clause(AS_OF)) == overdue
    both = rcv.bucket_clause((AgeBucket.DAYS_31_60, AgeBucket.OVER_90), AS_OF)
    assert _matching(session, both) == {"open_31d", "open_91d"}
