"""Seed a realistic, deterministic demo database (DESIGN.md section 10)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime

from sqlmodel import Session, func, select

from billing_core.customers.plan_specs import default_aggregation
from billing_core.demo import activity, costs, discrepancies, history, payments
from billing_core.demo import usage as demo_usage
from billing_core.demo.catalog import CUSTOMERS, PLANS
from billing_core.demo.guard import mark_demo
from billing_core.demo.invoicing import seed_last_closed_month
from billing_core.models import Customer, CustomerAccount, Plan, PlanMetric
from billing_core.periods import Period


@dataclass
class DemoSummary:
    seeded: bool
    counts: dict[str, int] = field(default_factory=dict)

    def describe(self) -> str:
        if not self.seeded:
            return "The database already holds customers; demo data was not added."
        return "Demo data seeded: " + ", ".join(f"{v} {k}" for k, v in self.counts.items())


# Each step adds one part of the demo world; later features append their own step.
Seeder = Callable[[Session, datetime], dict[str, int]]


def _seed_plans_and_customers(session: Session, now: datetime) -> dict[str, int]:
    plans: dict[str, Plan] = {}
    for spec in PLANS:
        plan = Plan(
            name=spec.name,
            currency=spec.currency,
            base_fee_minor=spec.base_fee_minor,
            markup_pct=spec.markup_pct,
            aws_spend_limit_minor=spec.aws_spend_limit_minor,
        )
        session.add(plan)
        session.flush()
        for m in spec.metrics:
            session.add(
                PlanMetric(
                    plan_id=plan.id or 0,
                    metric=m.metric,
                    unit=m.unit,
                    included_quantity=m.included,
                    overage_unit_price=m.unit_price,
                    aggregation=default_aggregation(m.metric),
                )
            )
        plans[spec.name] = plan
    for c in CUSTOMERS:
        customer = Customer(
            name=c.name,
            email=c.email,
            currency=c.currency,
            plan_id=plans[c.plan].id,
            collection_method=c.collection_method,
            cost_tag_value=c.tag,
            is_demo=True,
            default_payment_method=None if c.collection_method == "send_invoice" else "card",
        )
        session.add(customer)
        session.flush()
        for acct in c.accounts:
            session.add(CustomerAccount(customer_id=customer.id or 0, account_id=acct))
    return {"plans": len(PLANS), "customers": len(CUSTOMERS)}


SEEDERS: list[Seeder] = [
    _seed_plans_and_customers,
    history.seed_invoice_history,
    # Before seed_last_closed_month, which adds a cost snapshot only when none exists.
    costs.seed_costs,
    seed_last_closed_month,
    demo_usage.seed_usage,
    discrepancies.seed_discrepancies,
    payments.seed_payments,
]


def demo_history_periods(now: datetime, months: int = 12) -> list[Period]:
    """The demo's invoiced months: `months` months ending before the last closed month."""
    last = Period.containing(now).shift(-2)
    return [last.shift(-i) for i in range(months - 1, -1, -1)]


def _seeders(with_activity: bool) -> list[Seeder]:
    steps = list(SEEDERS)
    if with_activity:
        # Before the discrepancies: their reconciliation run (with findings) stays the newest.
        steps.insert(steps.index(discrepancies.seed_discrepancies), activity.seed_activity)
    return steps


def seed_demo(session: Session, *, now: datetime, with_activity: bool = False) -> DemoSummary:
    """Fill an empty database with the demo world; a database with customers is left alone.

    `with_activity` adds the operating history (invoice runs, syncs, reconciliations and their
    audit entries, demo/activity.py) that `make run` shows; tests start without it so that
    the runs and audit entries they make are the only ones.
    """
    if session.exec(select(func.count()).select_from(Customer)).one() > 0:
        return DemoSummary(seeded=False)
    counts: dict[str, int] = {}
    for seeder in _seeders(with_activity):
        counts.update(seeder(session, now))
        session.flush()
    mark_demo(session, now)  # live mode refuses this database from now on
    return DemoSummary(seeded=True, counts=counts)
