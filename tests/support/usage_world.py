"""A tiny usage world for tests: one EUR plan with a cumulative and a level metric."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal

from sqlmodel import Session

from billing_core.models import Customer, Plan, PlanMetric

NOW = datetime(2026, 11, 21, 9, 0, tzinfo=UTC)


def make_world(session: Session) -> tuple[Plan, Customer, Customer]:
    plan = Plan(name="basic", currency="EUR", base_fee_minor=1000, aws_spend_limit_minor=10000)
    session.add(plan)
    session.flush()
    session.add(
        PlanMetric(
            plan_id=plan.id or 0,
            metric="api_calls",
            unit="calls",
            included_quantity=Decimal(1000),
            overage_unit_price=Decimal("0.01"),
        )
    )
    session.add(
        PlanMetric(
            plan_id=plan.id or 0,
            metric="seats",
            unit="users",
            aggregation="max",
            included_quantity=Decimal(5),
            overage_unit_price=Decimal("2.5"),
        )
    )
    a = Customer(name="Alpha", email="a@alpha.example", currency="EUR", plan_id=plan.id)
    b = Customer(name="Beta", email="b@beta.example", currency="USD", plan_id=plan.id)
    session.add_all([a, b])
    session.flush()
    return plan, a, b
