"""Plans as code (issue 17): the README's example file imports, round-trips through
export-plans, refuses a bad file whole, and a month priced with its rules bills as a hand
calculation does and reconciles without a false diff."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import pytest
from sqlalchemy.engine import Engine
from sqlmodel import Session, select

from billing_core.auth import Identity
from billing_core.cli import main
from billing_core.costs.rollups import write_rollups
from billing_core.costs.snapshots import CostSource
from billing_core.customers.plan_files import parse_plans
from billing_core.customers.plan_import import export_plans, import_plans
from billing_core.customers.pricing_tables import CustomerPricingRule, PlanPricingRule
from billing_core.db import session_scope
from billing_core.errors import ValidationError
from billing_core.invoicing import drafts as invoicing_drafts
from billing_core.models import (
    AuditEntry,
    CostLine,
    CostSnapshot,
    Customer,
    CustomerAccount,
    Invoice,
    InvoiceLine,
    Plan,
    ReconciliationDiff,
    UsageRecord,
)
from billing_core.periods import Period
from billing_core.reconciliation.runs import reconcile_period
from billing_core.views.invoices import invoice_detail
from tests.conftest import ROOT

EXAMPLE = (ROOT / "examples" / "plans.yaml").read_text()
ADMIN = Identity("admin@example.com", "admin", "cli")
SOURCE = CostSource("UnblendedCost", "LINKED_ACCOUNT")
PERIOD = Period.parse("2026-10")
BEFORE = datetime(2026, 9, 10, tzinfo=UTC)  # imported in September: applies from October
D = Decimal


def test_the_example_file_is_valid_and_complete() -> None:
    parsed = parse_plans(EXAMPLE)
    [studio] = parsed.plans
    assert studio.minimum_spend_minor == 25000 and len(studio.rules) == 4
    assert {m.metric: str(m.model) for m in studio.metrics} == {
        "api_calls": "graduated",
        "storage_gb": "package",
        "seats": "per_unit",
        "clusters": "volume",
    }
    assert dict(studio.adjustments) == {
        "Refund": "at_cost",
        "Tax": "keep",
    }
    assert parsed.customers[0].discounts[0].months == 3


def test_a_bad_file_names_every_problem_and_where(session: Session) -> None:
    text = """
plans:
  - name: studio
    currency: EUR
    base_fee: 99.001
    rules:
      - {service: AWS Lambda, markup_pct: 5, discount_pct: 3}
      - {account: "12345", markup_pct: 5}
    adjustments: {Credit: forgive}
    metrics:
      - metric: calls
        model: volume
        tiers: [{up_to: 10, unit_price: 1}, {up_to: 5, unit_price: 1}]
      - {metric: gb, model: package, unit_price: 2}
customers:
  - email: nobody@example.com
    discounts: [{percent: 120, starts: 2026-13}]
"""
    with pytest.raises(ValidationError) as err:
        import_plans(session, text, identity=ADMIN, now=BEFORE)
    problems = err.value.problems
    expected = [
        "plans[1] (studio).base_fee",
        "plans[1] (studio).rules[1]: give either markup_pct or discount_pct",
        "rule 1: account '12345' is not a 12-digit AWS id",
        "adjustment 'Credit': 'forgive' is not one of pass_through, at_cost, keep",
        "metric 'calls': tier 2: up_to must be above",
        "metric 'calls': the last tier must have no up_to",
        "metric 'gb': a package metric needs a package_size above zero",
        "customers[1] (nobody@example.com).discounts[1]: starts '2026-13' is not a month",
    ]
    for want in expected:
        assert any(want in p for p in problems), (want, problems)
    assert session.exec(select(Plan)).all() == []  # nothing written


def test_import_then_export_round_trips_and_a_second_import_changes_nothing(
    session: Session,
) -> None:
    session.add(Customer(name="Acme", email="billing@acme-analytics.example", currency="EUR"))
    session.flush()
    first = import_plans(session, EXAMPLE, identity=ADMIN, now=BEFORE)
    assert first.created == ["studio"] and first.customers_changed
    exported = export_plans(session, BEFORE)
    assert parse_plans(exported).plans == parse_plans(EXAMPLE).plans
    assert parse_plans(exported).customers == parse_plans(EXAMPLE).customers
    again = import_plans(session, exported, identity=ADMIN, now=BEFORE)
    assert again.unchanged == ["studio"] and again.customers_changed == []
    actions = [a.action for a in session.exec(select(AuditEntry)).all()]
    assert actions.count("plan.create") == 1
    assert actions.count("customer.pricing_overrides") == 1


def _world(session: Session) -> Customer:
    """Acme on the example's studio plan (priced in EUR, rate 1) with two accounts."""
    from billing_core.models import ExchangeRate

    acme = Customer(name="Acme", email="billing@acme-analytics.example", currency="EUR")
    session.add(acme)
    session.flush()
    import_plans(session, EXAMPLE.replace("2027-01", "2026-10"), identity=ADMIN, now=BEFORE)
    plan = session.exec(select(Plan).where(Plan.name == "studio")).one()
    acme.plan_id = plan.id
    session.add(CustomerAccount(customer_id=acme.id or 0, account_id="111111111111"))
    session.add(CustomerAccount(customer_id=acme.id or 0, account_id="444444444444"))
    session.add(ExchangeRate(period=str(PERIOD), quote="EUR", rate=D(1), source="t"))
    snap = CostSnapshot(
        period=str(PERIOD), granularity="MONTHLY", group_by="LINKED_ACCOUNT", metric="UnblendedCost"
    )
    session.add(snap)
    session.flush()
    for account, service, record_type, usd in [
        ("111111111111", "Amazon Elastic Compute Cloud - Compute", "Usage", "200"),
        ("111111111111", "AWS Lambda", "Usage", "100"),
        ("111111111111", "Amazon Simple Storage Service", "Usage", "50.005"),
        ("444444444444", "Amazon Simple Storage Service", "Usage", "40"),
        ("444444444444", "Amazon CloudFront", "Usage", "30"),
        ("111111111111", "Credit", "Credit", "-20"),
        ("111111111111", "Refund", "Refund", "-10"),
        ("111111111111", "Tax", "Tax", "25"),
    ]:
        session.add(
            CostLine(
                snapshot_id=snap.id or 0,
                period=str(PERIOD),
                day=PERIOD.start.isoformat(),
                account_id=account,
                service=service,
                record_type=record_type,
                amount=D(usd),
            )
        )
    session.flush()
    write_rollups(session, [snap.id or 0])
    for metric, quantity in [("api_calls", 16_000_000), ("storage_gb", 701), ("clusters", 4)]:
        session.add(
            UsageRecord(
                customer_id=acme.id or 0,
                metric=metric,
                quantity=D(quantity),
                occurred_at=PERIOD.start_at + timedelta(days=3),
                period=str(PERIOD),
                idempotency_key=f"t-{metric}",
            )
        )
    session.flush()
    return acme


def test_a_month_priced_with_every_rule_bills_as_by_hand_and_reconciles(engine: Engine) -> None:
    with session_scope(engine) as s:
        acme = _world(s)
        drafts = invoicing_drafts.build_drafts(s, PERIOD, source=SOURCE)
        [draft] = drafts.drafts
        got = [(line.description.split(",")[0], line.amount_minor) for line in draft.lines]
        assert got == [
            ("Studio plan", 9900),
            ("AWS Lambda", 0 + 10000),  # Acme's override: Lambda at cost (plan: -10%)
            ("Amazon CloudFront", 3000),  # account 4444's CloudFront rule: 0%
            ("Amazon Elastic Compute Cloud - Compute", 21000),  # EC2 rule: +5%
            ("Amazon Simple Storage Service", 4600),  # account 4444: +15% of 40
            ("Amazon Simple Storage Service", 5501),  # all costs: +10% of 50.005 = 55.0055
            ("AWS Credit", 0 - 2200),  # passed through with the markup
            ("AWS Refund", 0 - 1000),  # at cost
            # Tax kept: no line. API calls graduated above 10M: 5M x 0.0003 + 1M x 0.0002
            ("API calls: 6", 170000),
            ("Clusters: 3 clusters over the 1 included", 21000),  # volume: 3 x 70.00
            ("Storage (GB): 201 GB over the 500 GB included", 2400),  # 3 started blocks x 8
            ("Renewal discount", 0 - 48840),  # 20% of 2,442.01 (month 1 of 3)
        ]
        assert draft.total_minor == 195361 and [k.record_type for k in draft.kept] == ["Tax"]
        assert "plan rule for account 444444444444: +15% markup" in draft.lines[4].rule
        [invoice_id] = invoicing_drafts.save_drafts(s, drafts, run_id=None)
        invoice = s.get(Invoice, invoice_id)
        assert invoice is not None
        invoice.status = "open"
        stored = s.exec(select(InvoiceLine).where(InvoiceLine.invoice_id == invoice_id)).all()
        assert stored[1].pricing_rule == "customer override for AWS Lambda: no markup"
        assert stored[1].aws_cost == D(100)
        detail = invoice_detail(s, invoice_id)
        assert detail is not None
        assert detail.lines["priced by"].iloc[4] == (
            "USD 40.00 at AWS rates, plan rule for account 444444444444: +15% markup"
        )
        cid = acme.id
    reconcile_period(engine, PERIOD, source=SOURCE)
    with session_scope(engine) as s:
        diffs = s.exec(select(ReconciliationDiff).where(ReconciliationDiff.customer_id == cid))
        assert [(d.kind, d.subject) for d in diffs] == []


def test_overrides_apply_from_the_next_month_only(session: Session) -> None:
    session.add(Customer(name="Acme", email="billing@acme-analytics.example", currency="EUR"))
    session.flush()
    import_plans(session, EXAMPLE, identity=ADMIN, now=BEFORE)
    later = EXAMPLE.replace("markup_pct: 0                   # Acme's", "markup_pct: 7 # Acme's")
    import_plans(session, later, identity=ADMIN, now=datetime(2026, 11, 5, tzinfo=UTC))
    rows = session.exec(select(CustomerPricingRule).order_by(CustomerPricingRule.id)).all()
    assert [(r.effective_from, r.effective_until, r.pct) for r in rows] == [
        ("2026-10", "2026-12", D(0)),  # October and November keep the rule they were priced on
        ("2026-12", None, D(7)),
    ]
    assert len(session.exec(select(PlanPricingRule)).all()) == 4


def test_cli_import_then_dry_run_explains_each_line(
    app_env: dict[str, str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "plans.yaml"
    path.write_text(EXAMPLE)
    assert main(["import-plans", str(path)]) == 0
    out = capsys.readouterr().out
    assert "1 new versions" in out and "customer overrides: 1 changed" in out
    assert main(["export-plans"]) == 0
    assert "discount_pct: 10" in capsys.readouterr().out
    # The demo's closed month (the import applies from the month after the clock's).
    main(["invoice-run", "--period", "2026-10", "--dry-run"])
    out = capsys.readouterr().out
    assert "at AWS rates, plan rule for all AWS costs: +10% markup, at " in out
    assert "plan base fee EUR 99.00" in out


def test_a_new_discount_may_not_start_in_a_running_or_closed_month(session: Session) -> None:
    session.add(Customer(name="Acme", email="billing@acme-analytics.example", currency="EUR"))
    session.flush()
    late = EXAMPLE.replace("starts: 2027-01", "starts: 2026-09")
    with pytest.raises(ValidationError, match="changes apply from 2026-10 at the earliest"):
        import_plans(session, late, identity=ADMIN, now=BEFORE)
    assert session.exec(select(Plan)).all() == []  # refused before anything was written
