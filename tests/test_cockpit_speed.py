"""The quicker readers behind the Overview and Customer page (issue 15's speed goal) give the
same figures as the month-by-month, every-customer ones they replace.

- `terms_by_period` / `Attribution.load_many` read terms once for many months, yet each month
  keeps its own owners (an account moved from December on stays with its old owner before);
- `attributed_costs(customer_ids=...)` reads one customer's lines only, and
  `attributed_costs(by_service=False)` sums over services in SQL: the same totals to the digit.
"""

from __future__ import annotations

from decimal import Decimal

from sqlmodel import Session, select

from billing_core.costs.attribution import Attribution, attributed_costs
from billing_core.customers.import_csv import import_customers
from billing_core.customers.terms import terms_by_period, terms_in_force
from billing_core.demo.costs import DEMO_COST_SOURCE
from billing_core.invoicing.margin import margin_facts
from billing_core.models import Customer, CustomerAccount, Plan
from tests.test_effective_dating import (  # noqa: F401  (fixture)
    ACME,
    ADMIN,
    BIRCH,
    DEC,
    HEADER,
    NOV,
    NOW,
    OCT,
    _customer,
    world,
)


def test_owners_read_once_for_several_months_follow_each_months_terms(world: Session) -> None:  # noqa: F811
    acme, birch = _customer(world, ACME), _customer(world, BIRCH)
    for row in (
        f"Acme Analytics GmbH,{ACME},EUR,studio,,acme\n",
        f"Birch & Co,{BIRCH},EUR,indie,222222222222;111111111111,birch\n",
    ):
        import_customers(world, (HEADER + row).encode(), actor=ADMIN, now=NOW)
    owners = Attribution.load_many(world, [OCT, NOV, DEC])
    assert owners[OCT].by_account["111111111111"] == acme.id
    assert owners[NOV].by_account["111111111111"] == acme.id
    assert owners[DEC].by_account["111111111111"] == birch.id
    for month in (OCT, NOV, DEC):
        assert owners[month] == Attribution.load(world, month)


def test_terms_of_a_customer_without_rows_switch_to_its_pending_plan(world: Session) -> None:  # noqa: F811
    plans = world.exec(select(Plan).order_by(Plan.id)).all()
    legacy = Customer(
        name="Legacy Ltd",
        email="legacy@example.com",
        currency="USD",
        plan_id=plans[0].id,
        next_plan_id=plans[1].id,
        next_plan_from=str(DEC),
    )
    world.add(legacy)
    world.flush()
    world.add(CustomerAccount(customer_id=legacy.id or 0, account_id="424242424242"))
    world.flush()
    cid = legacy.id or 0
    many = terms_by_period(world, [NOV, DEC])
    assert many[NOV][cid].plan_id == plans[0].id
    assert many[DEC][cid].plan_id == plans[1].id
    assert many[DEC][cid].account_ids == ("424242424242",)
    assert many == {month: terms_in_force(world, month) for month in (NOV, DEC)}


def test_one_customers_costs_and_costs_without_services_match_the_full_figures(
    world: Session,  # noqa: F811
) -> None:
    full = attributed_costs(world, OCT, DEMO_COST_SOURCE)
    customers = sorted(set(full.usage) | set(full.adjustments))
    assert len(customers) > 1 and full.unattributed_total != 0
    for cid in customers:
        one = attributed_costs(world, OCT, DEMO_COST_SOURCE, customer_ids=[cid])
        assert one.usage == ({cid: full.usage[cid]} if cid in full.usage else {})
        assert one.adjustments == ({cid: full.adjustments[cid]} if cid in full.adjustments else {})
        assert one.unattributed_total == Decimal(0)
    totals = attributed_costs(world, OCT, DEMO_COST_SOURCE, by_service=False)
    assert totals.total == full.total
    assert totals.unattributed_total == full.unattributed_total
    for cid in customers:
        assert totals.customer_total(cid) == full.customer_total(cid)
        assert set(totals.usage.get(cid, {})) <= {""}  # one sum, not split by service


def test_margin_of_one_customer_is_its_share_of_everyones(world: Session) -> None:  # noqa: F811
    everyone = margin_facts(world, [OCT, NOV], DEMO_COST_SOURCE, services=False)
    acme = _customer(world, ACME).id or 0
    mine = margin_facts(world, [OCT, NOV], DEMO_COST_SOURCE, customer_ids=[acme], services=False)
    assert mine.facts == {f: m for f, m in everyone.facts.items() if f.customer_id == acme}
    for month, costs in mine.months.items():
        shared = everyone.months[month].customer_usd
        assert costs.customer_usd == ({acme: shared[acme]} if acme in shared else {})
