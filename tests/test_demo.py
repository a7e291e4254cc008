from collections import Counter

from sqlmodel import Session, select

from billing_core.demo import demo_history_periods, seed_demo
from billing_core.models import Customer, Invoice, InvoiceLine, Plan
from tests.conftest import DEMO_NOW


def test_demo_world_shape(demo_session: Session) -> None:
    customers = demo_session.exec(select(Customer)).all()
    assert len(customers) >= 8
    assert {c.currency for c in customers} >= {"EUR", "USD"}
    assert {p.name for p in demo_session.exec(select(Plan)).all()} == {
        "indie",
        "studio",
        "enterprise",
    }
    invoices = demo_session.exec(select(Invoice)).all()
    assert len({i.period for i in invoices}) == 12
    statuses = Counter(i.display_status for i in invoices)
    assert {"paid", "open", "failed", "void"} <= set(statuses)
    assert all(i.is_demo and i.stripe_invoice_id is None for i in invoices)


def test_demo_history_stops_before_last_closed_month(demo_session: Session) -> None:
    periods = {i.period for i in demo_session.exec(select(Invoice)).all()}
    assert "2026-10" not in periods and "2026-11" not in periods
    assert max(periods) == "2026-09"
    assert [str(p) for p in demo_history_periods(DEMO_NOW)][-1] == "2026-09"


def test_demo_invoice_totals_equal_sum_of_lines(demo_session: Session) -> None:
    lines = Counter[int]()
    for line in demo_session.exec(select(InvoiceLine)).all():
        lines[line.invoice_id] += line.amount_minor
    for inv in demo_session.exec(select(Invoice)).all():
        assert inv.total_minor == lines[inv.id]
        assert inv.total_minor > 0


def test_demo_is_deterministic_and_not_reseeded(demo_session: Session, session: Session) -> None:
    seed_demo(session, now=DEMO_NOW)
    a = sorted((i.period, i.total_minor) for i in demo_session.exec(select(Invoice)).all())
    b = sorted((i.period, i.total_minor) for i in session.exec(select(Invoice)).all())
    assert a == b
    assert not seed_demo(session, now=DEMO_NOW).seeded


def test_demo_seeded_early_on_the_first_has_no_fetch_from_the_future(session: Session) -> None:
    from datetime import UTC, datetime

    from billing_core.models import CostSnapshot

    early = datetime(2026, 12, 1, 2, 45, tzinfo=UTC)  # before the usual 03:00 final fetch
    seed_demo(session, now=early, with_activity=True)
    fetched = [s.fetched_at for s in session.exec(select(CostSnapshot)).all()]
    assert fetched and max(fetched) <= early
