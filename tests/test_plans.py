from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal

import pytest
from sqlmodel import Session, select

from billing_core import audit
from billing_core.auth import Identity
from billing_core.costs.snapshots import CostSource
from billing_core.customers import plan_specs, plans
from billing_core.errors import PermissionDenied, ValidationError
from billing_core.models import Customer, Plan
from billing_core.periods import Period
from billing_core.usage import limits
from billing_core.usage.import_checks import UsageInput
from billing_core.usage.import_csv import record_usage
from tests.support.usage_world import NOW, make_world

# The cost figures these tests bill from (the settings' defaults).
SOURCE = CostSource("UnblendedCost", "LINKED_ACCOUNT")

ADMIN = Identity(email="boss@example.com", role="admin", method="proxy")
VIEWER = Identity(email="finance@example.com", role="viewer", method="proxy")
NOV, DEC = Period(2026, 11), Period(2026, 12)


def spec(name: str = "basic", *, base: int = 1000, included: str = "1000") -> plans.PlanSpec:
    return plans.PlanSpec(
        name=name,
        currency="EUR",
        base_fee_minor=base,
        markup_pct=Decimal(5),
        aws_spend_limit_minor=None,
        metrics=(
            plans.MetricSpec("api_calls", Decimal(included), Decimal("0.01"), "calls"),
            plans.MetricSpec("seats", Decimal(5), Decimal("2.5"), "users", "max"),
        ),
    )


@pytest.mark.parametrize(
    ("plan_id", "next_id", "next_from", "period", "expected"),
    [
        (1, None, None, NOV, 1),
        (1, 2, "2026-12", NOV, 1),
        (1, 2, "2026-12", DEC, 2),
        (1, 2, "2026-12", Period(2027, 3), 2),
        (None, None, None, NOV, None),
        (1, 2, None, DEC, 1),
    ],
)
def test_effective_plan_id(
    plan_id: int | None,
    next_id: int | None,
    next_from: str | None,
    period: Period,
    expected: int | None,
) -> None:
    c = Customer(
        name="x",
        email="x@x.example",
        currency="EUR",
        plan_id=plan_id,
        next_plan_id=next_id,
        next_plan_from=next_from,
    )
    assert plans.effective_plan_id(c, period) == expected


def test_schedule_applies_from_next_period_and_is_audited(session: Session) -> None:
    plan, a, _ = make_world(session)
    other = plans.create_plan(session, identity=ADMIN, spec=spec("bigger", base=5000), now=NOW)
    plans.schedule_plan_change(
        session,
        identity=ADMIN,
        customer_id=a.id or 0,
        customer_version=a.version,
        plan_id=other.id or 0,
        plan_version=other.version,
        now=NOW,
    )
    assert (a.plan_id, a.next_plan_id, a.next_plan_from) == (plan.id, other.id, "2026-12")
    assert plans.effective_plan(session, a, NOV) == plan
    assert plans.effective_plan(session, a, DEC) == other
    entry = audit.entries(session, action="customer.plan_change")[0]
    assert entry.actor == "boss@example.com"
    assert entry.before == {"plan_id": plan.id, "next_plan_id": None, "next_plan_from": None}
    assert entry.after is not None and entry.after["next_plan_from"] == "2026-12"
    # Going back to the current plan cancels the pending change.
    plans.schedule_plan_change(
        session,
        identity=ADMIN,
        customer_id=a.id or 0,
        customer_version=a.version,
        plan_id=plan.id or 0,
        plan_version=plan.version,
        now=NOW,
    )
    assert (a.next_plan_id, a.next_plan_from) == (None, None)


def test_viewer_may_not_change_plans(session: Session) -> None:
    plan, a, _ = make_world(session)
    with pytest.raises(PermissionDenied, match="admin role is required"):
        plans.schedule_plan_change(
            session,
            identity=VIEWER,
            customer_id=a.id or 0,
            customer_version=1,
            plan_id=plan.id or 0,
            plan_version=1,
            now=NOW,
        )
    with pytest.raises(PermissionDenied):
        plans.update_plan(
            session, identity=VIEWER, plan_id=plan.id or 0, seen_version=1, spec=spec(), now=NOW
        )
    with pytest.raises(PermissionDenied):
        plans.create_plan(session, identity=VIEWER, spec=spec("x"), now=NOW)


def test_apply_due_changes_waits_for_the_old_month_to_be_invoiced(session: Session) -> None:
    plan, a, _ = make_world(session)
    other = plans.create_plan(session, identity=ADMIN, spec=spec("bigger"), now=NOW)
    plans.schedule_plan_change(
        session,
        identity=ADMIN,
        customer_id=a.id or 0,
        customer_version=a.version,
        plan_id=other.id or 0,
        plan_version=other.version,
        now=NOW,
    )
    # In December the customer's columns show December's plan; November, still being
    # invoiced, keeps pricing on the old plan (effective-dated terms, not the columns).
    assert plans.apply_due_plan_changes(session, now=datetime(2026, 12, 2, tzinfo=UTC)) == 1
    assert (a.plan_id, a.next_plan_id, a.next_plan_from) == (other.id, None, None)
    assert plans.effective_plan(session, a, NOV) == plan
    assert plans.effective_plan(session, a, DEC) == other
    assert plans.apply_due_plan_changes(session, now=datetime(2027, 1, 2, tzinfo=UTC)) == 0
    assert audit.entries(session, action="customer.plan_applied")


def test_editing_a_billed_plan_makes_a_new_version(session: Session) -> None:
    plan, a, b = make_world(session)
    record_usage(
        session, [UsageInput(a.email, "api_calls", "1500", "2026-11-02")], now=NOW, actor="t"
    )
    change = plans.update_plan(
        session,
        identity=ADMIN,
        plan_id=plan.id or 0,
        seen_version=plan.version,
        spec=spec(included="2000"),
        now=NOW,
    )
    assert change.new_version and sorted(change.customers_moved) == sorted([a.id, b.id])
    old = session.get(Plan, plan.id)
    assert old is not None and old.name == "basic (until 2026-11)" and not old.active
    assert change.plan.name == "basic" and change.plan.active
    # November is still billed on the old version, December on the new one.
    assert plans.effective_plan(session, a, NOV) == old
    assert plans.effective_plan(session, a, DEC) == change.plan
    row = next(
        r
        for r in limits.build_usage_report(session, NOV, NOW, source=SOURCE).rows
        if r.customer_id == a.id and r.metric == "api_calls"
    )
    assert row.included == Decimal(1000) and row.overage_minor == 500
    entry = audit.entries(session, action="plan.new_version")[0]
    assert entry.before is not None and entry.before["metrics"][0]["included"] == "1000"
    assert entry.after is not None and entry.after["from"] == "2026-12"


def test_editing_an_unused_plan_is_in_place(session: Session) -> None:
    make_world(session)
    fresh = plans.create_plan(session, identity=ADMIN, spec=spec("fresh"), now=NOW)
    change = plans.update_plan(
        session,
        identity=ADMIN,
        plan_id=fresh.id or 0,
        seen_version=fresh.version,
        spec=spec("fresh", base=2500),
        now=NOW,
    )
    assert not change.new_version and change.plan.id == fresh.id
    assert change.plan.base_fee_minor == 2500
    assert audit.entries(session, action="plan.update")
    # Saving the same values again records nothing new.
    again = plans.update_plan(
        session,
        identity=ADMIN,
        plan_id=fresh.id or 0,
        seen_version=change.plan.version,
        spec=spec("fresh", base=2500),
        now=NOW,
    )
    assert not again.changed and again.plan.version == change.plan.version
    assert len(audit.entries(session, action="plan.update")) == 1


@pytest.mark.parametrize(
    ("bad", "message"),
    [
        (dict(name=" "), "needs a name"),
        (dict(currency="XXX"), "Unknown currency"),
        (dict(base_fee_minor=-1), "base fee must be zero or more"),
        (dict(markup_pct=Decimal(-1)), "markup must be between"),
        (dict(metrics=(plans.MetricSpec("API calls", Decimal(1), Decimal(1)),)), "lower-case"),
        (
            dict(metrics=(plans.MetricSpec("x", Decimal(1), Decimal(1), aggregation="avg"),)),
            "aggregation must be one of",
        ),
        (dict(metrics=(plans.MetricSpec("x", Decimal(-1), Decimal(1)),)), "included quantity"),
        (dict(metrics=(plans.MetricSpec("x", Decimal(1), Decimal(1)),) * 2), "listed twice"),
    ],
)
def test_plan_validation(session: Session, bad: dict[str, object], message: str) -> None:
    from dataclasses import replace

    with pytest.raises(ValidationError) as err:
        plans.create_plan(session, identity=ADMIN, spec=replace(spec("p"), **bad), now=NOW)
    assert any(message in p for p in err.value.problems), err.value.problems
    assert session.exec(select(Plan)).all() == []


def test_duplicate_plan_name_refused(session: Session) -> None:
    make_world(session)
    with pytest.raises(ValidationError, match="already exists"):
        plans.create_plan(session, identity=ADMIN, spec=spec("basic"), now=NOW)


def test_spec_from_form_is_exact() -> None:
    got = plan_specs.spec_from_form(
        name="pro",
        currency="eur",
        base_fee="1,234.50",
        markup_pct="7.5",
        aws_spend_limit="",
        metrics=[
            {
                "metric": "api_calls",
                "unit": "calls",
                "aggregation": "sum",
                "included": "1000000",
                "unit_price": "0.0004",
            },
            {"metric": "seats", "included": "3", "unit_price": "3"},
            {"metric": "", "included": "", "unit_price": ""},
        ],
    )
    assert got.base_fee_minor == 123450 and got.currency == "EUR"
    assert got.aws_spend_limit_minor is None and got.markup_pct == Decimal("7.5")
    assert got.metrics[0].unit_price == Decimal("0.0004")
    assert got.metrics[1].aggregation == "max"  # the usual kind for seats
    with pytest.raises(ValidationError) as err:
        plan_specs.spec_from_form(
            name="pro",
            currency="JPY",
            base_fee="10.5",
            markup_pct="x",
            aws_spend_limit="-3",
            metrics=[{"metric": "a", "included": "q"}],
        )
    text = " ".join(err.value.problems)
    assert "more decimals than JPY allows" in text and "markup" in text
    assert "must be zero or more" in text and "a included" in text
