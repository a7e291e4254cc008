"""Attribution precedence and shared AWS costs (issue 17): hand-computed worlds, to the cent.

The pure split is table-tested; the world tests store one October snapshot, price drafts for
customers in USD, EUR and GBP, run the month against the local Stripe test server and
reconcile it (a clean month raises nothing, a restated pool raises exactly the shared lines).
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, date, datetime
from decimal import Decimal
from pathlib import Path

import pytest
from sqlalchemy.engine import Engine
from sqlmodel import Session, func, select

from billing_core.config import Settings, load_settings
from billing_core.costs import cost_explorer as ce
from billing_core.costs.attribution import Attribution, SharedScope, attributed_costs
from billing_core.costs.snapshots import UNATTRIBUTED, CostSource, store_snapshot
from billing_core.db import session_scope
from billing_core.errors import ConfigError
from billing_core.exchange_rates.convert import Rates
from billing_core.invoicing import runs
from billing_core.invoicing.drafts import SharedCosts, build_drafts
from billing_core.invoicing.pricing import PlanTerms, PricingInput, price
from billing_core.invoicing.shared_costs import (
    SharedCostPolicy,
    allocate,
    largest_remainder,
)
from billing_core.models import (
    CostLine,
    Customer,
    CustomerTerms,
    ExchangeRate,
    InvoiceLine,
    Plan,
    ReconciliationDiff,
)
from billing_core.periods import Period
from billing_core.reconciliation.diffing import Tolerance
from billing_core.reconciliation.findings import aws_findings
from billing_core.reconciliation.runs import make_reader, reconcile_period
from billing_core.states import LineKind, SharedCostRule
from billing_core.views import aws_costs
from billing_core.views import invoice_run as run_view
from tests.support.stripe_server import StripeTestServer

OCT = Period(2026, 10)
NOW = datetime(2026, 11, 3, 6, 0, tzinfo=UTC)
SOURCE = CostSource("UnblendedCost", "LINKED_ACCOUNT")
A, B, C, U, S = "111111111111", "222222222222", "333333333333", "999999999999", "555555555555"
KEY = "sk_test_shared_costs"
R = SharedCostRule


# ------------------------------------------------------------------ the pure split, in cents


@pytest.mark.parametrize(
    ("total", "weights", "expect"),
    [
        (100, {1: Decimal(1), 2: Decimal(1), 3: Decimal(1)}, {1: 34, 2: 33, 3: 33}),
        # 1000/3 = 333.33 and 666.67: the cent left goes to the larger remainder (id 2)
        (1000, {1: Decimal(1), 2: Decimal(2)}, {1: 333, 2: 667}),
        (1, {5: Decimal(1), 2: Decimal(1), 9: Decimal(1)}, {2: 1}),  # ties: lowest id
        (7, {1: Decimal("0.5"), 2: Decimal("1.25")}, {1: 2, 2: 5}),  # decimal weights, exact
        (-100, {1: Decimal(1), 2: Decimal(1), 3: Decimal(1)}, {1: -34, 2: -33, 3: -33}),
        (10001, {1: Decimal(0), 2: Decimal(0)}, {}),  # nobody weighs anything: nothing split
        (0, {1: Decimal(1)}, {}),
        (999_999_999_999, {1: Decimal(1), 2: Decimal(1)}, {1: 500_000_000_000, 2: 499_999_999_999}),
    ],
)
def test_largest_remainder_adds_up_exactly(
    total: int, weights: dict[int, Decimal], expect: dict[int, int]
) -> None:
    got = largest_remainder(total, weights)
    assert got == expect
    assert sum(got.values()) == (total if any(w > 0 for w in weights.values()) else 0)


CHARGES = {1: Decimal(1000), 2: Decimal(500), 3: Decimal(0)}


@pytest.mark.parametrize(
    ("policy", "shares"),
    [
        # pool USD 100.005 -> 10001 cents. 1000:500:0 -> 6667.33 | 3333.67: the cent to id 2
        (SharedCostPolicy(R.PROPORTIONAL), {1: "66.67", 2: "33.34"}),
        # 10001 / 3 = 3333.67 each: two cents left, to the lowest ids (equal remainders)
        (SharedCostPolicy(R.EVEN), {1: "33.34", 2: "33.34", 3: "33.33"}),
        # weights 3 : 1.5 (id 2 has none) -> 6667.33 | 3333.67: the cent to id 3
        (
            SharedCostPolicy(R.WEIGHTS, {1: Decimal(3), 3: Decimal("1.5"), 7: Decimal(9)}),
            {1: "66.67", 3: "33.34"},
        ),
        (SharedCostPolicy(R.UNBILLED), {}),
    ],
)
def test_each_rule_splits_the_pool_to_the_cent(
    policy: SharedCostPolicy, shares: dict[int, str]
) -> None:
    got = allocate(Decimal("100.005"), policy, [1, 2, 3], CHARGES)
    assert {c: str(got.share(c)) for c in got.shares_minor} == shares
    assert got.allocated + got.left_over == Decimal("100.005")
    expect_left = Decimal("100.005") - sum((Decimal(v) for v in shares.values()), Decimal(0))
    assert got.left_over == expect_left  # -0.005 when split, the whole pool when unbilled


def test_proportional_without_charges_leaves_the_pool_unbilled() -> None:
    got = allocate(Decimal("12.34"), SharedCostPolicy(R.PROPORTIONAL), [1, 2], {1: Decimal(-5)})
    assert got.shares_minor == {} and got.left_over == Decimal("12.34")


def test_a_negative_pool_is_split_as_credits() -> None:
    got = allocate(Decimal("-10"), SharedCostPolicy(R.EVEN), [4, 8, 15], {})
    assert got.shares_minor == {4: -334, 8: -333, 15: -333} and got.left_over == 0


def test_the_shared_line_is_priced_like_aws_costs_in_the_invoice_currency() -> None:
    """USD 33.34 share, 10 % markup, EUR at 0.92: 36.674 USD x 0.92 = 33.74008 -> EUR 33.74."""
    rates = Rates("2026-10", {"EUR": Decimal("0.92")}, {"EUR": "test"})
    inp = PricingInput(
        customer_id=1,
        customer_name="Birch",
        currency="EUR",
        period="2026-10",
        plan=PlanTerms("eur", "EUR", 0, Decimal(10)),
        shared_cost_usd=Decimal("33.34"),
    )
    [line] = [x for x in price(inp, rates).lines if x.kind == LineKind.SHARED_COST]
    assert line.amount_minor == 3374
    assert line.description == "Shared AWS costs, October 2026 (incl. 10% service fee)"


def test_weights_setting_is_checked_with_a_sentence(tmp_path: Path) -> None:
    for bad, said in (
        ("3", "is not customer_id=weight"),
        ("3=-1", "must be a number of 0 or more"),
        ("x=1", "SHARED_COST_WEIGHTS"),
    ):
        with pytest.raises(ConfigError, match=said):
            load_settings({"SHARED_COST_WEIGHTS": bad}, tmp_path / "none.toml")
    with pytest.raises(ConfigError, match="SHARED_COST_RULE"):
        load_settings({"SHARED_COST_RULE": "half"}, tmp_path / "none.toml")


# ------------------------------------------------------------------ precedence


WHO = Attribution(
    by_account={A: 1, B: 2},
    by_tag={"acme": 1, "birch": 2},
    names={},
    shared=SharedScope(frozenset({S}), frozenset({"AWS Support (Business)"})),
    ambiguous=frozenset({U}),
)


@pytest.mark.parametrize(
    ("group_by", "account", "tag", "service", "owner"),
    [
        ("TAG:customer", B, "acme", "Amazon EC2", 1),  # the tag wins over the account
        ("TAG:customer", A, "", "Amazon EC2", 1),  # untagged: the account's one owner
        ("TAG:customer", A, "", "Tax", 1),  # AWS tax is never tagged
        ("TAG:customer", B, "", "Credit", 2),  # nor are credits
        ("TAG:customer", B, "nobody", "Amazon EC2", None),  # a tag value nobody has
        ("TAG:customer", S, "", "Amazon EC2", None),  # a shared account
        ("TAG:customer", S, "birch", "Amazon EC2", 2),  # tagged spend in a shared account
        ("TAG:customer", A, "acme", "AWS Support (Business)", None),  # a shared service
        ("TAG:customer", U, "", "Amazon EC2", None),  # an account two customers list
        ("TAG:customer", None, "", "Amazon EC2", None),  # old snapshots: untagged, no account
        ("LINKED_ACCOUNT", A, None, "Amazon EC2", 1),
        ("LINKED_ACCOUNT", S, None, "Amazon EC2", None),
        ("LINKED_ACCOUNT", B, None, "AWS Support (Business)", None),
    ],
)
def test_precedence(
    group_by: str, account: str | None, tag: str | None, service: str, owner: int | None
) -> None:
    assert WHO.customer_for(group_by, account, tag, service) == owner


def test_an_account_two_customers_list_is_nobodys(session: Session) -> None:
    ids = []
    for name in ("Acme", "Birch"):
        customer = Customer(name=name, email=f"{name.lower()}@x.example", currency="USD")
        session.add(customer)
        session.flush()
        ids.append(customer.id or 0)
        session.add(
            CustomerTerms(
                customer_id=customer.id or 0,
                effective_from="2000-01",
                currency="USD",
                account_ids=[U, A] if name == "Acme" else [U],
            )
        )
    session.flush()
    who = Attribution.load(session, OCT)
    assert who.by_account == {A: ids[0]} and who.ambiguous == {U}


# ------------------------------------------------------------------ a world in three currencies


def _settings(
    db_url: str = "sqlite://", server: StripeTestServer | None = None, **env: str
) -> Settings:
    values = {"BILLING_MODE": "live", "DATABASE_URL": db_url}
    if server is not None:
        values |= {
            "STRIPE_API_BASE": server.url,
            "STRIPE_API_KEY": KEY,
            "STRIPE_REQUESTS_PER_SECOND": "1000",
        }
    values |= {k.upper(): v for k, v in env.items()}
    return load_settings(values, secrets_path=Path("/nonexistent/secrets.toml"))


def _snapshot(session: Session, rows: list[tuple[str, str, str, str]], at: datetime) -> None:
    """October by LINKED_ACCOUNT: (account, service, record type, amount) rows."""
    query = ce.CostQuery(OCT, "MONTHLY", OCT.start, OCT.end)
    fetched = ce.FetchResult(
        query,
        rows=[
            ce.CostRow(date(2026, 10, 1), a, None, s, r, Decimal(v), "USD", False)
            for a, s, r, v in rows
        ],
        request_count=2,
    )
    store_snapshot(session, fetched, fetched_at=at, source="test")


OCTOBER = [
    (A, "Amazon EC2", ce.USAGE, "980"),
    (A, "AWS Support (Business)", ce.USAGE, "20"),  # Acme's, unless SHARED_SERVICES says so
    (B, "Amazon EC2", ce.USAGE, "500"),
    (B, "Tax", "Tax", "50"),  # tax: Birch's, but not part of the proportional basis
    (U, "Amazon S3", ce.USAGE, "90.005"),  # nobody's account
    (U, "Tax", "Tax", "10"),  # pool: USD 100.005
]


def _world(session: Session) -> dict[str, int]:
    """Acme (USD, no markup) owns A, Birch (EUR, 10 %) owns B, Cedar (GBP) owns C (no spend)."""
    ids: dict[str, int] = {}
    for name, currency, markup, account in (
        ("Acme", "USD", "0", A),
        ("Birch", "EUR", "10", B),
        ("Cedar", "GBP", "0", C),
    ):
        plan = Plan(
            name=f"plan {name}", currency=currency, base_fee_minor=0, markup_pct=Decimal(markup)
        )
        session.add(plan)
        session.flush()
        customer = Customer(
            name=name,
            email=f"{name.lower()}@x.example",
            currency=currency,
            plan_id=plan.id,
            default_payment_method="card visa 4242",
        )
        session.add(customer)
        session.flush()
        session.add(
            CustomerTerms(
                customer_id=customer.id or 0,
                effective_from="2000-01",
                plan_id=plan.id,
                currency=currency,
                account_ids=[account],
            )
        )
        ids[name] = customer.id or 0
    session.add(ExchangeRate(period=str(OCT), quote="EUR", rate=Decimal("0.92"), source="t"))
    session.add(ExchangeRate(period=str(OCT), quote="GBP", rate=Decimal("0.79"), source="t"))
    _snapshot(session, OCTOBER, datetime(2026, 11, 2, tzinfo=UTC))
    session.flush()
    return ids


def _shared_lines(drafts: object) -> dict[str, tuple[str, int]]:
    return {
        d.customer_name: (d.currency, line.amount_minor)
        for d in drafts.drafts  # type: ignore[attr-defined]
        for line in d.lines
        if line.kind == LineKind.SHARED_COST
    }


@pytest.mark.parametrize(
    ("env", "lines", "allocated", "left"),
    [
        # Acme 66.67 USD; Birch 33.34 x 1.10 x 0.92 = 33.74008 -> EUR 33.74
        (
            {"shared_cost_rule": "proportional"},
            {"Acme": ("USD", 6667), "Birch": ("EUR", 3374)},
            "100.01",
            "-0.005",
        ),
        # 33.34 / 33.34 / 33.33: Cedar 33.33 x 0.79 = 26.3307 -> GBP 26.33
        (
            {"shared_cost_rule": "even"},
            {"Acme": ("USD", 3334), "Birch": ("EUR", 3374), "Cedar": ("GBP", 2633)},
            "100.01",
            "-0.005",
        ),
        (
            {"shared_cost_rule": "weights", "shared_cost_weights": "Acme=3,Cedar=1.5"},
            # Cedar 33.34 x 0.79 = 26.3386 -> GBP 26.34
            {"Acme": ("USD", 6667), "Cedar": ("GBP", 2634)},
            "100.01",
            "-0.005",
        ),
        ({"shared_cost_rule": "unbilled"}, {}, "0.00", "100.005"),
        # Support shared too: pool 120.005 -> 12001 cents; charges 980:500 -> 7946.61 | 4054.39
        # (remainders 900 and 580: the cent to Acme). Birch 40.54 x 1.1 x 0.92 = 41.02648
        (
            {"shared_cost_rule": "proportional", "shared_services": "AWS Support (Business)"},
            {"Acme": ("USD", 7947), "Birch": ("EUR", 4103)},
            "120.01",
            "-0.005",
        ),
    ],
)
def test_drafts_carry_each_customers_share(
    session: Session,
    env: dict[str, str],
    lines: dict[str, tuple[str, int]],
    allocated: str,
    left: str,
) -> None:
    ids = _world(session)
    if "shared_cost_weights" in env:  # names stand for the ids the world gave them
        pairs = [p.split("=") for p in env["shared_cost_weights"].split(",")]
        env = {**env, "shared_cost_weights": ",".join(f"{ids[n]}={w}" for n, w in pairs)}
    shared = SharedCosts.of(_settings(**env))
    drafts = build_drafts(session, OCT, source=SOURCE, shared=shared)
    assert _shared_lines(drafts) == lines
    assert drafts.shared is not None
    assert drafts.shared.allocated == Decimal(allocated)
    assert drafts.shared.left_over == Decimal(left)
    assert drafts.shared.allocated + drafts.shared.left_over == drafts.shared.pool
    # One customer's draft (the upcoming invoice) gets the same share as in the whole run.
    for name, (_cur, minor) in lines.items():
        alone = build_drafts(session, OCT, source=SOURCE, customer_id=ids[name], shared=shared)
        assert _shared_lines(alone) == {name: (_cur, minor)}
    # Tax in Birch's own account stays Birch's, billed as its own line.
    costs = attributed_costs(session, OCT, SOURCE, shared.scope)
    assert costs.adjustments[ids["Birch"]] == {"Tax": Decimal(50)}


def test_only_customers_who_can_be_invoiced_share(session: Session) -> None:
    """An inactive customer, or one without a plan in force, takes no share (it would be
    billed to nobody): the pool is split among the other two."""
    ids = _world(session)
    cedar = session.get(Customer, ids["Cedar"])
    assert cedar is not None
    cedar.active = False
    session.add(cedar)
    session.add(Customer(name="Planless", email="planless@x.example", currency="USD", plan_id=None))
    session.flush()
    shared = SharedCosts.of(_settings(shared_cost_rule="even"))
    drafts = build_drafts(session, OCT, source=SOURCE, shared=shared)
    # 10001 / 2 = 5000.5 each: the cent to the lowest id (Acme). Birch 50.00 x 1.1 x 0.92
    assert _shared_lines(drafts) == {"Acme": ("USD", 5001), "Birch": ("EUR", 5060)}
    assert drafts.shared is not None and drafts.shared.left_over == Decimal("-0.005")


def test_preview_dry_run_and_costs_page_state_the_split(session: Session) -> None:
    ids = _world(session)
    cfg = _settings(shared_cost_rule="even")
    drafts = runs.preview(session, OCT, source=SOURCE, shared=SharedCosts.of(cfg))
    said = (
        "Shared AWS costs (unattributed and shared spend) USD 100.01: USD 100.01 allocated "
        "evenly among the active customers, USD 0.00 left unbilled"
    )
    assert f"  {said}" in runs.describe_drafts(drafts)
    frame = run_view.preview_frame(drafts)
    assert list(frame["customer"]) == ["Acme", "Birch", "Cedar"]
    assert any(x.kind == LineKind.SHARED_COST for d in drafts.drafts for x in d.lines)
    view = aws_costs.build_costs_view(session, cfg, OCT)
    assert view.unattributed == Decimal("100.005")
    assert view.shared_note == said + "."
    # The page's SQL filter for the unattributed agrees, shared services included.
    scoped = _settings(shared_cost_rule="even", shared_services="Tax")
    who = Attribution.load(session, OCT, SharedCosts.of(scoped).scope)
    for customer, expect in ((UNATTRIBUTED, "150.005"), (ids["Birch"], "500")):
        condition = who.condition(SOURCE.group_by, customer)
        assert condition is not None
        assert session.exec(select(func.sum(CostLine.amount)).where(condition)).one() == Decimal(
            expect
        )
    page = aws_costs.build_costs_view(session, scoped, OCT)
    assert page.unattributed == Decimal("150.005")


# ------------------------------------------------------------------ run, then reconcile


@pytest.fixture(scope="module")
def server() -> Iterator[StripeTestServer]:
    with StripeTestServer() as srv:
        yield srv


def test_reconciliation_is_clean_after_a_run_with_shared_lines(
    engine: Engine, db_url: str, server: StripeTestServer
) -> None:
    server.reset()
    with session_scope(engine) as s:
        ids = _world(s)
        for cus in s.exec(select(Customer)).all():
            remote = server.create_customer_directly(email=cus.email, name=cus.name)
            server.attach_card(remote["id"], "pm_card_visa")
            cus.stripe_customer_id = remote["id"]
            s.add(cus)
    cfg = _settings(db_url, server, shared_cost_rule="proportional")
    got = runs.run_invoices(engine, cfg, runs.RunOptions(OCT), now=NOW)
    assert got.exit_code == 0 and not got.problems
    with Session(engine) as s:
        stored = s.exec(
            select(InvoiceLine.amount_minor).where(InvoiceLine.kind == LineKind.SHARED_COST)
        ).all()
        assert sorted(stored) == [3374, 6667]
    done = reconcile_period(
        engine, OCT, source=SOURCE, reader=make_reader(cfg), now=NOW, shared=SharedCosts.of(cfg)
    )
    assert done.status == "complete"
    assert done.counts.get("aws_restatement", 0) == 0 and done.open_above_tolerance == 0
    # Reconciled with the rule since switched off: the shared lines are skipped, not diffs.
    with Session(engine) as s:
        found = aws_findings(s, OCT, Tolerance(), SOURCE)
    assert found is not None and found[0] == []
    assert sorted(found[1]["skipped"]) == [
        f"{name}: shared AWS costs not compared (SHARED_COST_RULE is now unbilled)"
        for name in ("Acme", "Birch")
    ]
    # AWS restates the pool (USD 100.005 -> 130.005): the shared lines differ, nothing else.
    restated = [
        (U, "Amazon S3", ce.USAGE, "120.005") if r[:2] == (U, "Amazon S3") else r for r in OCTOBER
    ]
    with session_scope(engine) as s:
        _snapshot(s, restated, datetime(2026, 11, 4, tzinfo=UTC))
    again = reconcile_period(
        engine, OCT, source=SOURCE, reader=make_reader(cfg), now=NOW, shared=SharedCosts.of(cfg)
    )
    with Session(engine) as s:
        diffs = s.exec(
            select(ReconciliationDiff).where(ReconciliationDiff.run_id == again.run_id)
        ).all()
    keys = sorted(d.subject for d in diffs if d.status == "open")
    assert keys == [
        f"customer:{ids['Acme']}:service:Shared AWS costs",
        f"customer:{ids['Birch']}:service:Shared AWS costs",
    ]
