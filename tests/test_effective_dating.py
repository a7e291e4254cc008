"""Master data that prices a month is effective-dated (issue 13 item 5).

The demo world is seeded on 2026-11-21: October is closed and not invoiced yet, November runs.
Each change below, whatever its entry point, must leave October priced to the cent as before
and apply from December.
"""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import pytest
from sqlmodel import Session, select

from billing_core.auth import Identity
from billing_core.costs.attribution import Attribution, attributed_costs
from billing_core.customers import plans
from billing_core.customers.import_csv import import_customers
from billing_core.customers.terms import set_terms, terms_for
from billing_core.demo.costs import DEMO_COST_SOURCE
from billing_core.errors import ValidationError
from billing_core.exchange_rates.rates import set_rate
from billing_core.invoicing.drafts import build_drafts
from billing_core.models import AuditEntry, CostSnapshot, Customer, CustomerTerms, Plan
from billing_core.periods import Period
from billing_core.states import LineKind

ADMIN = Identity(email="boss@example.com", role="admin", method="proxy")
NOW = datetime(2026, 11, 21, 9, 0, tzinfo=UTC)
OCT, NOV, DEC = Period(2026, 10), Period(2026, 11), Period(2026, 12)
HEADER = "name,email,currency,plan,aws_account_ids,cost_tag_value\n"
ACME = "billing@acme-analytics.example"
BIRCH = "accounts@birch.example"


def _customer(session: Session, email: str) -> Customer:
    return session.exec(select(Customer).where(Customer.email == email)).one()


def _priced(session: Session, period: Period) -> dict[int, tuple[str, int, tuple[int, ...]]]:
    """Customer id -> (currency, total, each line's amount; minor units) of its draft."""
    drafts = build_drafts(session, period, source=DEMO_COST_SOURCE)
    return {
        d.customer_id: (d.currency, d.total_minor, tuple(line.amount_minor for line in d.lines))
        for d in drafts.drafts
    }


def _base_fee(session: Session, period: Period, customer: Customer) -> str:
    draft = next(
        d
        for d in build_drafts(session, period, source=DEMO_COST_SOURCE).drafts
        if d.customer_id == customer.id
    )
    return next(line.description for line in draft.lines if line.kind == LineKind.BASE_FEE)


@pytest.fixture
def world(demo_session: Session) -> Session:
    # November and December need rates to be priced at all; October's come with the demo.
    for period in (NOV, DEC):
        for currency, rate in (("EUR", "0.92"), ("GBP", "0.79")):
            set_rate(
                demo_session, period=period, currency=currency, rate=rate, source="t", actor="t"
            )
    # These tests price months ahead of the demo's clock: take November's costs as fetched
    # after it ended, so a complete snapshot prices it (a partial one would refuse it).
    for snapshot in demo_session.exec(select(CostSnapshot).where(CostSnapshot.period == "2026-11")):
        snapshot.fetched_at = datetime(2026, 12, 1, 6, tzinfo=UTC)
        demo_session.add(snapshot)
    demo_session.flush()
    return demo_session


def _version(world: Session, row: Any) -> int:
    # The version an admin's page would show now (the plan and customer versions move).
    world.refresh(row)
    return int(row.version)


def test_reimport_with_another_plan_currency_and_accounts_keeps_october(world: Session) -> None:
    acme = _customer(world, ACME)
    october = _priced(world, OCT)
    assert october[acme.id or 0][0] == "EUR"
    row = f"Acme Analytics GmbH,{ACME},USD,indie,111111111111;121212121212,acme2\n"
    result = import_customers(world, (HEADER + row).encode(), actor=ADMIN, now=NOW)
    assert result.updated == 1
    assert _priced(world, OCT) == october  # same plan, currency and costs, to the cent
    assert _priced(world, NOV)[acme.id or 0][0] == "EUR"  # the running month too
    assert _priced(world, DEC)[acme.id or 0][0] == "USD"
    assert _base_fee(world, DEC, acme).startswith("Indie plan")
    assert _base_fee(world, OCT, acme).startswith("Studio plan")
    assert Attribution.load(world, DEC).by_account["121212121212"] == acme.id
    assert "121212121212" not in Attribution.load(world, OCT).by_account
    entry = world.exec(select(AuditEntry).where(AuditEntry.action == "customer.import")).one()
    assert entry.after is not None and entry.after["from"] == "2026-12"


def test_plan_picked_on_the_2nd_leaves_the_closed_month_alone(world: Session) -> None:
    acme = _customer(world, ACME)
    indie = world.exec(select(Plan).where(Plan.name == "indie")).one()
    enterprise = world.exec(select(Plan).where(Plan.name == "enterprise")).one()
    october = _priced(world, OCT)
    # Picked in October: applies from November.
    plans.schedule_plan_change(
        world,
        identity=ADMIN,
        customer_id=acme.id or 0,
        customer_version=_version(world, acme),
        plan_id=indie.id or 0,
        plan_version=_version(world, indie),
        now=datetime(2026, 10, 15, tzinfo=UTC),
    )
    assert _priced(world, OCT) == october
    # Picked on November 2nd, before the October run on the 3rd: applies from December.
    plans.schedule_plan_change(
        world,
        identity=ADMIN,
        customer_id=acme.id or 0,
        customer_version=_version(world, acme),
        plan_id=enterprise.id or 0,
        plan_version=_version(world, enterprise),
        now=datetime(2026, 11, 2, 8, tzinfo=UTC),
    )
    assert _priced(world, OCT) == october
    assert _base_fee(world, OCT, acme).startswith("Studio plan")
    assert _base_fee(world, NOV, acme).startswith("Indie plan")
    assert _base_fee(world, DEC, acme).startswith("Enterprise plan")


def test_editing_a_plan_whose_pending_start_is_this_month(world: Session) -> None:
    acme = _customer(world, ACME)
    indie = world.exec(select(Plan).where(Plan.name == "indie")).one()
    plans.schedule_plan_change(
        world,
        identity=ADMIN,
        customer_id=acme.id or 0,
        customer_version=_version(world, acme),
        plan_id=indie.id or 0,
        plan_version=_version(world, indie),
        now=datetime(2026, 10, 15, tzinfo=UTC),
    )
    october, november = _priced(world, OCT), _priced(world, NOV)
    spec = plans.PlanSpec(
        name="indie",
        currency="EUR",
        base_fee_minor=indie.base_fee_minor + 5000,
        markup_pct=indie.markup_pct + Decimal(10),
        aws_spend_limit_minor=indie.aws_spend_limit_minor,
        metrics=tuple(
            plans.MetricSpec(m.metric, m.included_quantity, m.overage_unit_price, m.unit)
            for m in plans.plan_metrics(world, indie.id or 0)
        ),
    )
    change = plans.update_plan(
        world,
        identity=ADMIN,
        plan_id=indie.id or 0,
        seen_version=_version(world, indie),
        spec=spec,
        now=NOW,
    )
    assert change.new_version and acme.id in change.customers_moved
    # November started on the old version and stays on it; December is on the edited one.
    assert _priced(world, OCT) == october
    assert _priced(world, NOV) == november
    assert plans.effective_plan(world, acme, NOV) == world.get(Plan, indie.id)
    assert plans.effective_plan(world, acme, DEC) == change.plan


def test_moving_a_linked_account_leaves_the_closed_month_with_its_owner(world: Session) -> None:
    acme, birch = _customer(world, ACME), _customer(world, BIRCH)
    october = _priced(world, OCT)
    costs = attributed_costs(world, OCT, DEMO_COST_SOURCE)
    assert costs.usage.get(acme.id or 0)  # 111111111111 carries acme's October spend
    # Two imports, as a person would do it: take the account away, then give it to Birch.
    rows = [
        f"Acme Analytics GmbH,{ACME},EUR,studio,,acme\n",
        f"Birch & Co,{BIRCH},EUR,indie,222222222222;111111111111,birch\n",
    ]
    for row in rows:
        import_customers(world, (HEADER + row).encode(), actor=ADMIN, now=NOW)
    assert _priced(world, OCT) == october
    after = attributed_costs(world, OCT, DEMO_COST_SOURCE)
    assert after.usage == costs.usage and after.adjustments == costs.adjustments
    assert Attribution.load(world, NOV).by_account["111111111111"] == acme.id
    assert Attribution.load(world, DEC).by_account["111111111111"] == birch.id


def test_moving_an_account_in_one_file_and_owning_it_twice_is_refused(world: Session) -> None:
    acme, birch = _customer(world, ACME), _customer(world, BIRCH)
    both = (
        HEADER + f"Acme Analytics GmbH,{ACME},EUR,studio,,acme\n"
        f"Birch & Co,{BIRCH},EUR,indie,222222222222;111111111111,birch\n"
    )
    import_customers(world, both.encode(), actor=ADMIN, now=NOW)
    assert Attribution.load(world, DEC).by_account["111111111111"] == birch.id
    # Dune keeps its account: nobody else may take it in any month.
    taken = HEADER + "New Co,new@co.example,EUR,indie,444444444444,newco\n"
    with pytest.raises(ValidationError, match="444444444444 belongs to another customer"):
        import_customers(world, taken.encode(), actor=ADMIN, now=NOW)
    # A new customer may take an account its old owner gives up, from the next month only.
    fresh = HEADER + "New Co,new@co.example,EUR,indie,111111111111,newco\n"
    with pytest.raises(ValidationError, match="111111111111 belongs to another customer"):
        import_customers(world, fresh.encode(), actor=ADMIN, now=NOW)
    assert world.exec(select(Customer).where(Customer.email == "new@co.example")).first() is None
    assert terms_for(world, acme.id or 0, OCT) is not None


@pytest.mark.parametrize("month", ["2026-10", "2026-11"])
def test_an_import_that_would_reprice_a_started_month_is_refused(
    world: Session, month: str
) -> None:
    october = _priced(world, OCT)
    data = (
        "name,email,currency,plan,aws_account_ids,cost_tag_value,effective_from\n"
        f"Acme Analytics GmbH,{ACME},USD,indie,111111111111,acme,{month}\n"
    )
    with pytest.raises(ValidationError) as err:
        import_customers(world, data.encode(), actor=ADMIN, now=NOW)
    assert (
        f"line 2: effective_from {month} would reprice a month that has already started or "
        "closed; changes apply from 2026-12 at the earliest"
    ) in str(err.value)
    assert world.exec(select(CustomerTerms)).all() == []
    assert _priced(world, OCT) == october


def test_an_import_may_name_a_later_month(world: Session) -> None:
    acme = _customer(world, ACME)
    data = (
        "name,email,currency,plan,aws_account_ids,cost_tag_value,effective_from\n"
        f"Acme Analytics GmbH,{ACME},EUR,indie,111111111111,acme,2027-02\n"
    )
    import_customers(world, data.encode(), actor=ADMIN, now=NOW)
    assert _base_fee(world, DEC, acme).startswith("Studio plan")
    terms = terms_for(world, acme.id or 0, Period(2027, 2))
    indie = world.exec(select(Plan).where(Plan.name == "indie")).one()
    assert terms is not None and terms.plan_id == indie.id


def test_a_program_may_not_change_a_started_month(world: Session) -> None:
    acme = _customer(world, ACME)
    with pytest.raises(ValidationError, match="changes apply from 2026-12 at the earliest"):
        set_terms(world, acme, starts=NOV, now=NOW, currency="USD")
    assert set_terms(world, acme, starts=DEC, now=NOW, currency="USD")
    assert acme.currency == "EUR"  # the running month's value, shown on screens
    assert (terms := terms_for(world, acme.id or 0, DEC)) is not None and terms.currency == "USD"


def test_a_customer_without_a_plan_gets_its_first_plan_at_once(world: Session) -> None:
    indie = world.exec(select(Plan).where(Plan.name == "indie")).one()
    new = Customer(name="New Co", email="new@co.example", currency="EUR")
    world.add(new)
    world.flush()
    plans.schedule_plan_change(
        world,
        identity=ADMIN,
        customer_id=new.id or 0,
        customer_version=_version(world, new),
        plan_id=indie.id or 0,
        plan_version=_version(world, indie),
        now=NOW,
    )
    # Never billed before (no plan, no invoice): the plan prices every month, October too.
    assert _base_fee(world, OCT, new).startswith("Indie plan")
    assert (new.plan_id, new.next_plan_id) == (indie.id, None)


def test_migration_keeps_each_customer_on_its_values_from_the_start(blank_db_url: str) -> None:
    from alembic import command
    from sqlalchemy import text

    from billing_core.db import _alembic_config, make_engine

    engine = make_engine(blank_db_url)
    command.upgrade(_alembic_config(engine), "demo_1")
    with engine.begin() as conn:
        for name in ("basic", "gold"):
            conn.execute(
                text(
                    "INSERT INTO plan (name, currency, base_fee_minor, markup_pct, active, "
                    "created_at, updated_at) VALUES (:n, 'EUR', 100, '0', true, "
                    "'2026-01-01 00:00:00', '2026-01-01 00:00:00')"
                ),
                {"n": name},
            )
        conn.execute(
            text(
                "INSERT INTO customer (name, email, currency, plan_id, next_plan_id, "
                "next_plan_from, collection_method, days_until_due, cost_tag_value, active, "
                "is_demo, created_at, updated_at) VALUES ('A', 'a@x.example', 'EUR', 1, 2, "
                "'2026-12', 'charge_automatically', 30, 'acme', true, false, "
                "'2026-01-01 00:00:00', '2026-01-01 00:00:00')"
            )
        )
        conn.execute(
            text("INSERT INTO customeraccount (customer_id, account_id) VALUES (1, '111111111111')")
        )
    command.upgrade(_alembic_config(engine), "heads")
    with Session(engine) as s:
        rows = s.exec(select(CustomerTerms).order_by(CustomerTerms.effective_from)).all()
        assert [(r.effective_from, r.plan_id) for r in rows] == [("2000-01", 1), ("2026-12", 2)]
        assert all(
            (r.currency, r.cost_tag_value, r.account_ids) == ("EUR", "acme", ["111111111111"])
            for r in rows
        )
        assert (t := terms_for(s, 1, NOV)) is not None and t.plan_id == 1
        assert (t := terms_for(s, 1, DEC)) is not None and t.plan_id == 2
    engine.dispose()


def test_reimporting_a_customer_unchanged_writes_no_terms(world: Session) -> None:
    row = f"Acme Analytics GmbH,{ACME},EUR,studio,111111111111,acme\n"
    result = import_customers(world, (HEADER + row).encode(), actor=ADMIN, now=NOW)
    assert (result.updated, result.unchanged) == (0, 1)
    assert world.exec(select(CustomerTerms)).all() == []
