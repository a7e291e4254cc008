"""Exact decimals, UTC datetimes and JSON survive a round trip on SQLite and PostgreSQL."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal

import pytest
from sqlalchemy import func
from sqlalchemy.engine import Engine
from sqlmodel import Session, select

from billing_core.models import CostLine, CostSnapshot, StripeEvent

AMOUNTS = [
    Decimal("0.0000000001"),
    Decimal("-1234.5678901234"),
    Decimal("922337203.6854775807"),  # the largest value a scaled 64-bit integer holds
    Decimal("-922337203.6854775808"),
    Decimal(0),
]


def _snapshot(session: Session) -> int:
    snap = CostSnapshot(
        period="2026-10", granularity="DAILY", group_by="LINKED_ACCOUNT", metric="UnblendedCost"
    )
    session.add(snap)
    session.commit()
    assert snap.id is not None
    return snap.id


def test_exact_decimals_round_trip_and_sum_exactly(engine: Engine) -> None:
    with Session(engine) as s:
        snap = _snapshot(s)
        for n, amount in enumerate(AMOUNTS):
            s.add(CostLine(snapshot_id=snap, period="2026-10", day="2026-10-01",
                           service=f"s{n}", amount=amount))  # fmt: skip
        s.commit()
    with Session(engine) as s:
        stored = [line.amount for line in s.exec(select(CostLine).order_by(CostLine.id)).all()]
        assert stored == AMOUNTS
        # SUM runs on the scaled integers in SQL: exact, no float on the way.
        small = ["s0", "s1", "s4"]  # the extremes would overflow SQLite's 64-bit SUM
        total = s.exec(select(func.sum(CostLine.amount)).where(CostLine.service.in_(small))).one()
        assert total == Decimal("-1234.5678901233")


def test_utc_datetimes_and_json_round_trip(engine: Engine) -> None:
    when = datetime(2026, 10, 31, 23, 59, 59, 999999, tzinfo=UTC)
    payload = {"id": "evt_1", "data": {"object": {"amount_due": 1999, "lines": [1, 2]}},
               "note": "café ✓", "nothing": None, "flag": True}  # fmt: skip
    with Session(engine) as s:
        s.add(StripeEvent(id="evt_1", type="invoice.paid", created=when, payload=payload))
        s.commit()
    with Session(engine) as s:
        event = s.exec(select(StripeEvent)).one()
        assert event.created == when and event.created.tzinfo is UTC
        assert event.payload == payload
        later = s.exec(select(StripeEvent).where(StripeEvent.created >= when)).all()
        assert [e.id for e in later] == ["evt_1"]


def test_out_of_range_amount_is_refused(engine: Engine) -> None:
    with Session(engine) as s:
        snap = _snapshot(s)
        s.add(CostLine(snapshot_id=snap, period="2026-10", day="2026-10-01", service="x",
                       amount=Decimal("922337204")))  # fmt: skip
        with pytest.raises(Exception):  # noqa: B017 (driver-specific overflow error)
            s.commit()
