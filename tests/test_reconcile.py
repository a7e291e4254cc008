"""Reconciliation service: against the local Stripe test server and the demo world."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from decimal import Decimal
from typing import Any

import pytest
from sqlalchemy.engine import Engine
from sqlmodel import Session, select

from billing_core.auth import Identity
from billing_core.config import load_settings
from billing_core.costs.rollups import write_rollups
from billing_core.costs.snapshots import CostSource
from billing_core.db import session_scope
from billing_core.demo import demo_history_periods
from billing_core.errors import PermissionDenied, StaleVersion, ValidationError
from billing_core.invoicing import drafts as invoicing_drafts
from billing_core.models import (
    AuditEntry,
    CostLine,
    CostSnapshot,
    Customer,
    CustomerAccount,
    ExchangeRate,
    Invoice,
    InvoiceLine,
    Plan,
    PlanMetric,
    ReconciliationDiff,
    ReconciliationRun,
    TrueUp,
    UsageRecord,
)
from billing_core.periods import Period, utcnow
from billing_core.reconciliation.diffing import Tolerance
from billing_core.reconciliation.resolve import accept_diff, schedule_true_up, sync_from_stripe
from billing_core.reconciliation.runs import make_reader, reconcile_period
from billing_core.stripe.gateway import Gateway, RetryPolicy
from tests.conftest import DEMO_NOW
from tests.support.stripe_server import StripeTestServer

# The cost figures these tests bill from (the settings' defaults).
SOURCE = CostSource("UnblendedCost", "LINKED_ACCOUNT")

ADMIN = Identity("admin@example.com", "admin", "cli")
VIEWER = Identity("finance@example.com", "viewer", "cli")
# Invoices in the server are created "now"; the previous month's window always contains now.
PERIOD = Period.containing(utcnow()).previous()
DEMO_PERIOD = demo_history_periods(DEMO_NOW)[-1]


@pytest.fixture(scope="module")
def server() -> Iterator[StripeTestServer]:
    with StripeTestServer() as srv:
        yield srv


@pytest.fixture
def stripe_world(server: StripeTestServer) -> StripeTestServer:
    server.reset()
    return server


def reader_for(server: StripeTestServer) -> Gateway:
    settings = load_settings(environ={"STRIPE_API_BASE": server.url}, secrets_path=None)
    reader = make_reader(settings)
    assert reader is not None
    reader.policy = RetryPolicy(backoff_seconds=0.0)
    return reader


class World:
    """Local customers and invoices mirrored in the Stripe test server."""

    def __init__(self, engine: Engine, server: StripeTestServer) -> None:
        self.engine = engine
        self.server = server
        with session_scope(engine) as s:
            plan = Plan(name="std", currency="EUR", base_fee_minor=1000)
            s.add(plan)
            s.flush()
            self.plan_id = plan.id or 0
        self.n = 0

    def customer(self, currency: str = "EUR") -> Customer:
        self.n += 1
        cus = self.server.create_customer_directly(email=f"c{self.n}@example.com")
        with session_scope(self.engine) as s:
            c = Customer(
                name=f"C{self.n}",
                email=f"c{self.n}@example.com",
                currency=currency,
                plan_id=self.plan_id,
                stripe_customer_id=cus["id"],
            )
            s.add(c)
            s.flush()
            return c

    def invoice(
        self,
        customer: Customer,
        amount: int,
        *,
        status: str = "open",
        push: bool = True,
        remote_amount: int | None = None,
        currency: str | None = None,
    ) -> Invoice:
        description = f"Services {PERIOD} for {customer.name}"
        with session_scope(self.engine) as s:
            inv = Invoice(
                customer_id=customer.id or 0,
                period=str(PERIOD),
                currency=customer.currency,
                status=status,
                total_minor=amount,
                subtotal_minor=amount,
                push_step="finalized",
            )
            s.add(inv)
            s.flush()
            s.add(
                InvoiceLine(
                    invoice_id=inv.id or 0,
                    kind="base_fee",
                    description=description,
                    amount_minor=amount,
                )
            )
            if push:
                obj = self.server.create_invoice_directly(
                    customer.stripe_customer_id or "",
                    amount if remote_amount is None else remote_amount,
                    (currency or customer.currency).lower(),
                    {"local_invoice_id": str(inv.id), "period": str(PERIOD)},
                    status="paid" if status == "paid" else "open",
                    description=description,
                )
                inv.stripe_invoice_id = obj["id"]
            s.add(inv)
            return inv


@pytest.fixture
def world(engine: Engine, stripe_world: StripeTestServer) -> World:
    return World(engine, stripe_world)


def run(world: World, **kw: Any) -> Any:
    return reconcile_period(
        world.engine, PERIOD, source=SOURCE, reader=reader_for(world.server), **kw
    )


def diffs_of(engine: Engine) -> list[ReconciliationDiff]:
    with session_scope(engine) as s:
        return list(s.exec(select(ReconciliationDiff).order_by(ReconciliationDiff.id)).all())


def kinds(engine: Engine, status: str = "open") -> set[tuple[str, str]]:
    return {(d.kind, d.subject) for d in diffs_of(engine) if d.status == status}


# ------------------------------------------------------------------ (a) each kind


def test_clean_period_has_no_diffs_and_exit_0(world: World) -> None:
    for _ in range(3):
        world.invoice(world.customer(), 12_345)
    result = run(world)
    assert result.status == "complete" and result.exit_code == 0
    assert diffs_of(world.engine) == []
    assert result.counts["invoices_local"] == result.counts["invoices_stripe"] == 3


def test_each_stripe_kind_is_detected(world: World) -> None:
    srv = world.server
    amount = world.invoice(world.customer(), 10_000, remote_amount=12_000)
    status = world.invoice(world.customer(), 5_000)
    srv.pay_out_of_band(status.stripe_invoice_id or "")  # paid in Stripe, open locally
    currency = world.invoice(world.customer(), 7_000, currency="usd")
    deleted_cus = world.customer()
    customer = world.invoice(deleted_cus, 3_000)
    srv.set_customer_deleted(deleted_cus.stripe_customer_id or "")
    missing = world.invoice(world.customer(), 4_000, push=False)
    outsider = world.customer()
    tagged = {"period": str(PERIOD)}  # made outside this tool, tagged with the month
    extra = srv.create_invoice_directly(outsider.stripe_customer_id or "", 9_900, "eur", tagged)
    unknown = srv.create_invoice_directly(outsider.stripe_customer_id or "", 100, "xyz", tagged)

    result = run(world)
    assert result.status == "complete" and result.exit_code == 1
    assert kinds(world.engine) == {
        ("amount", f"invoice:{amount.id}"),
        ("line", f"invoice:{amount.id}:line:Services {PERIOD} for C1"),
        ("status", f"invoice:{status.id}"),
        ("currency", f"invoice:{currency.id}"),
        ("customer", f"invoice:{customer.id}"),
        ("missing_in_stripe", f"invoice:{missing.id}"),
        ("missing_locally", f"stripe:{extra['id']}"),
        ("missing_locally", f"stripe:{unknown['id']}"),
    }
    by = {(d.kind, d.subject): d for d in diffs_of(world.engine)}
    assert by[("amount", f"invoice:{amount.id}")].delta_minor == 2_000
    assert by[("status", f"invoice:{status.id}")].remote_value == "paid"
    assert "deleted in Stripe" in (by[("customer", f"invoice:{customer.id}")].remote_value or "")
    assert "unknown currency XYZ" in (
        by[("missing_locally", f"stripe:{unknown['id']}")].remote_value or ""
    )
    assert (
        by[("missing_in_stripe", f"invoice:{missing.id}")].remote_value == "never pushed to Stripe"
    )


def test_untagged_outside_invoice_belongs_to_its_creation_month(world: World) -> None:
    c = world.customer()
    extra = world.server.create_invoice_directly(c.stripe_customer_id or "", 500, "eur")
    run(world)
    assert kinds(world.engine) == set()
    reconcile_period(world.engine, PERIOD.next(), source=SOURCE, reader=reader_for(world.server))
    assert kinds(world.engine) == {("missing_locally", f"stripe:{extra['id']}")}


def test_linked_invoice_missing_from_stripe_is_read_once_then_reported(world: World) -> None:
    inv = world.invoice(world.customer(), 1_000, push=False)
    with session_scope(world.engine) as s:
        row = s.get(Invoice, inv.id)
        assert row is not None
        row.stripe_invoice_id = "in_doesnotexist"
    result = run(world)
    assert kinds(world.engine) == {("missing_in_stripe", f"invoice:{inv.id}")}
    assert result.stripe_requests == 2  # one list page, one lookup answered 404


@pytest.mark.parametrize("outcome", ["below_minimum", "credit_carried"])
def test_invoices_carried_to_next_month_are_not_missing_in_stripe(
    world: World, engine: Engine, outcome: str
) -> None:
    c = world.customer()
    inv = world.invoice(c, 30 if outcome == "below_minimum" else -500, push=False, status="draft")
    with session_scope(engine) as s:
        row = s.get(Invoice, inv.id)
        assert row is not None
        row.outcome = outcome
    run(world)
    assert kinds(world.engine) == set()


def _long_invoice(world: World, engine: Engine, remote_amounts: list[int]) -> Invoice:
    """A local invoice of 15 lines of 100 (L00..L14) and its Stripe twin with `remote_amounts`."""
    srv = world.server
    c = world.customer()
    inv = world.invoice(c, 1_500)
    with session_scope(engine) as s:
        for li in s.exec(select(InvoiceLine).where(InvoiceLine.invoice_id == inv.id)).all():
            s.delete(li)
        for i in range(15):
            s.add(
                InvoiceLine(
                    invoice_id=inv.id or 0,
                    position=i,
                    kind="aws",
                    description=f"L{i:02d}",
                    amount_minor=100,
                )
            )
    client = reader_for(srv).client
    obj = client.v1.invoices.create(
        params={
            "customer": c.stripe_customer_id or "",
            "currency": "eur",
            "metadata": {"local_invoice_id": str(inv.id), "period": str(PERIOD)},
        }
    )
    lines = [{"amount": a, "description": f"L{i:02d}"} for i, a in enumerate(remote_amounts)]
    client.v1.invoices.add_lines(obj.id, params={"lines": lines})  # type: ignore[typeddict-item]
    with session_scope(engine) as s:
        row = s.get(Invoice, inv.id)
        assert row is not None
        srv.void(row.stripe_invoice_id or "")
        row.stripe_invoice_id = obj.id
        row.status = "draft"
        row.push_step = "lines_added"
    return inv


def test_lines_beyond_the_first_ten_are_paged_only_when_needed(
    world: World, engine: Engine
) -> None:
    # 15 lines on both sides, one differing beyond the tenth. Stripe embeds ten and says only
    # `has_more` (no count): the rest are listed after the tenth, in one request.
    inv = _long_invoice(world, engine, [100 if i != 12 else 150 for i in range(15)])
    result = run(world)
    assert kinds(world.engine) == {
        ("amount", f"invoice:{inv.id}"),
        ("line", f"invoice:{inv.id}:line:L12"),
    }
    assert world.server.request_count("/lines", "GET") == 1
    assert result.stripe_requests == 2


def test_long_invoices_that_agree_need_no_line_requests(world: World, engine: Engine) -> None:
    _long_invoice(world, engine, [100] * 15)
    result = run(world)
    assert kinds(world.engine) == set()
    assert world.server.request_count("/lines", "GET") == 0
    assert result.stripe_requests == 1


def test_more_lines_in_stripe_than_embedded_are_read(world: World, engine: Engine) -> None:
    # Stripe has 16 lines, we have 15: the count is not in the invoice, the listing finds L15.
    inv = _long_invoice(world, engine, [100] * 16)
    run(world)
    assert ("line", f"invoice:{inv.id}:line:L15") in kinds(world.engine)
    assert world.server.request_count("/lines", "GET") == 1


def test_thousand_invoices_take_about_ten_requests(world: World, engine: Engine) -> None:
    srv = world.server
    cus = world.customer()
    with session_scope(engine) as s:
        for i in range(1000):
            inv = Invoice(
                customer_id=cus.id or 0,
                period=str(PERIOD),
                currency="EUR",
                status="open",
                total_minor=100 + i,
            )
            # One invoice per customer and period locally: fake distinct customers cheaply.
            s.add(Customer(name=f"x{i}", email=f"x{i}@example.com", currency="EUR"))
            s.flush()
            inv.customer_id = (
                s.exec(select(Customer.id).where(Customer.email == f"x{i}@example.com")).one() or 0
            )
            s.add(inv)
            s.flush()
            s.add(
                InvoiceLine(
                    invoice_id=inv.id or 0, kind="base_fee", description="Fee", amount_minor=100 + i
                )
            )
            obj = srv.create_invoice_directly(
                cus.stripe_customer_id or "",
                100 + i,
                "eur",
                {"local_invoice_id": str(inv.id), "period": str(PERIOD)},
                description="Fee",
            )
            inv.stripe_invoice_id = obj["id"]
            s.add(inv)
    before = srv.request_count()
    result = run(world)
    assert result.counts["invoices_stripe"] == 1000
    assert srv.request_count() - before == result.stripe_requests
    assert result.stripe_requests <= 11
    # every local invoice names a customer without a Stripe id, Stripe says cus_...: customer diffs
    assert {d.kind for d in diffs_of(engine)} == {"customer"}


# ------------------------------------------------------------------ faults


def test_rate_limit_is_retried_and_counted(world: World) -> None:
    world.invoice(world.customer(), 1_000)
    world.server.fail_next(2, status=429, path_contains="/v1/invoices")
    result = run(world)
    assert result.status == "complete" and result.stripe_requests == 3


def test_stripe_down_mid_run_fails_the_run_and_keeps_earlier_diffs(world: World) -> None:
    srv = world.server
    c = world.customer()
    inv = world.invoice(c, 1_000, remote_amount=2_000)
    for i in range(150):  # two pages
        srv.create_invoice_directly(
            c.stripe_customer_id or "", 10, "eur", {"period": "2000-01", "n": str(i)}
        )
    first = run(world)
    assert first.status == "complete"
    before = kinds(world.engine)
    assert ("amount", f"invoice:{inv.id}") in before
    # A linked invoice outside the listing: it is read after both pages, and that read fails.
    lost = world.invoice(world.customer(), 700, push=False)
    with session_scope(world.engine) as s:
        row = s.get(Invoice, lost.id)
        assert row is not None
        row.stripe_invoice_id = "in_lookup_fails"
    srv.fail_next(1, status=500, path_contains="in_lookup_fails")
    srv.fail_next(20, status=429, path_contains="in_lookup_fails")
    failed = run(world)
    assert failed.status == "failed" and failed.exit_code == 1
    assert "run it again later" in (failed.error or "")
    assert kinds(world.engine) == before  # nothing lost, nothing marked gone
    with session_scope(world.engine) as s:
        stored = s.get(ReconciliationRun, failed.run_id)
        assert stored is not None and stored.status == "failed" and stored.finished_at
        assert stored.error and stored.stripe_requests == failed.stripe_requests
    srv.clear_faults()
    assert run(world).status == "complete"


# ------------------------------------------------------------------ idempotency


def test_rerun_updates_the_same_diffs_and_marks_fixed_ones_gone(world: World) -> None:
    inv = world.invoice(world.customer(), 5_000)
    world.server.pay_out_of_band(inv.stripe_invoice_id or "")
    world.invoice(world.customer(), 1_000, remote_amount=1_200)
    run(world)
    first = {(d.id, d.kind, d.subject) for d in diffs_of(world.engine)}
    second_result = run(world)
    assert {(d.id, d.kind, d.subject) for d in diffs_of(world.engine)} == first
    with session_scope(world.engine) as s:
        runs = s.exec(select(ReconciliationRun)).all()
        assert [r.status for r in runs] == ["complete", "complete"]
        assert runs[-1].counts["diffs"]["new"] == 0
        row = s.get(Invoice, inv.id)
        assert row is not None
        row.status = "paid"  # fixed locally
    third = run(world)
    gone = {d.subject for d in diffs_of(world.engine) if d.status == "gone"}
    assert gone == {f"invoice:{inv.id}"}
    assert third.counts["diffs"]["gone"] == 1
    assert second_result.open_above_tolerance == 3 and third.open_above_tolerance == 2


def test_tolerance_setting_decides_what_is_raised(world: World) -> None:
    world.invoice(world.customer(), 100_000, remote_amount=100_400)  # 0.4 %
    assert run(world).exit_code == 0
    assert run(world, tolerance=Tolerance(Decimal("0.1"))).exit_code == 1
    assert {d.within_tolerance for d in diffs_of(world.engine)} == {False}


# ------------------------------------------------------------------ (b) and (c) on the demo


def test_demo_has_every_planted_discrepancy(demo_session: Session) -> None:
    rows = demo_session.exec(select(ReconciliationDiff)).all()
    raised = {d.kind for d in rows if not d.within_tolerance}
    assert raised == {
        "amount",
        "line",
        "status",
        "missing_in_stripe",
        "missing_locally",
        "currency",
        "customer",
        "aws_restatement",
        "usage",
    }
    assert any(d.within_tolerance for d in rows)
    support = next(d for d in rows if d.subject.endswith(":Support fee"))
    assert support.delta_minor == 32_550 and support.currency == "USD"  # 310.00 * 1.05 markup


def test_demo_rerun_is_idempotent_and_keeps_canned_stripe_findings(demo_engine: Engine) -> None:
    before = {(d.id, d.kind, d.subject, d.delta_minor, d.status) for d in diffs_of(demo_engine)}
    result = reconcile_period(demo_engine, DEMO_PERIOD, source=SOURCE, reader=None, now=DEMO_NOW)
    assert result.status == "complete" and result.exit_code == 1
    assert "Stripe not configured" in " ".join(result.counts["notes"])
    after = {(d.id, d.kind, d.subject, d.delta_minor, d.status) for d in diffs_of(demo_engine)}
    assert after == before


def test_late_credit_in_newer_snapshot_is_a_restatement(demo_engine: Engine) -> None:
    period = DEMO_PERIOD.previous()
    with session_scope(demo_engine) as s:
        acme = s.exec(select(Customer).where(Customer.email.startswith("billing@acme"))).one()  # type: ignore[attr-defined]
        account = s.exec(
            select(CustomerAccount).where(CustomerAccount.customer_id == acme.id)
        ).first()
        inv = s.exec(
            select(Invoice).where(Invoice.customer_id == acme.id, Invoice.period == str(period))
        ).one()
        lines = s.exec(
            select(InvoiceLine).where(InvoiceLine.invoice_id == inv.id, InvoiceLine.kind == "aws")
        ).all()
    assert account is not None
    # The demo's cost snapshot of the month equals what was billed: nothing to report yet.
    reconcile_period(demo_engine, period, source=SOURCE)
    assert not [d for d in diffs_of(demo_engine) if d.period == str(period)]
    with session_scope(demo_engine) as s:
        snap = CostSnapshot(
            period=str(period),
            granularity="MONTHLY",
            group_by="LINKED_ACCOUNT",
            metric="UnblendedCost",
        )
        s.add(snap)
        s.flush()
        from billing_core.demo.catalog import CUSTOMERS, monthly_service_costs

        for spec in CUSTOMERS:  # the month as billed, for everyone
            for service, usd in monthly_service_costs(spec, period).items():
                s.add(
                    CostLine(
                        snapshot_id=snap.id or 0,
                        period=str(period),
                        day="x",
                        account_id=spec.accounts[0],
                        service=service,
                        amount=usd,
                    )
                )
        s.add(
            CostLine(
                snapshot_id=snap.id or 0,
                period=str(period),
                day="x",
                account_id=account.account_id,
                service=lines[0].service or "",
                record_type="Credit",
                amount=Decimal("-50"),
            )
        )
        s.flush()
        write_rollups(s, [snap.id or 0])
    result = reconcile_period(demo_engine, period, source=SOURCE)
    found = [d for d in diffs_of(demo_engine) if d.period == str(period)]
    # Credits are billed as their own line (keyed by record type), so the restatement is too.
    assert [(d.kind, d.subject) for d in found] == [
        ("aws_restatement", f"customer:{acme.id}:service:Credit")
    ]
    assert found[0].delta_minor < 0 and result.exit_code == 1


def test_usage_recorded_after_billing(demo_engine: Engine) -> None:
    period = DEMO_PERIOD.previous()
    with session_scope(demo_engine) as s:
        birch = s.exec(select(Customer).where(Customer.email == "accounts@birch.example")).one()
        s.add(
            UsageRecord(
                customer_id=birch.id or 0,
                metric="seats",
                quantity=Decimal(4),
                occurred_at=period.start_at + timedelta(days=2),
                period=str(period),
                idempotency_key="t-1",
            )
        )
    reconcile_period(demo_engine, period, source=SOURCE)
    [d] = [d for d in diffs_of(demo_engine) if d.period == str(period)]
    assert (d.kind, d.subject, d.delta_minor) == ("usage", f"customer:{birch.id}:metric:seats", 300)


def test_usage_in_another_currency_than_the_plan_is_no_diff(engine: Engine) -> None:
    """A USD customer on a EUR plan is billed overage converted to USD; reconciling the usage
    prices it the same way (plan-to-invoice factor, one rounding), so there is nothing to raise."""
    with session_scope(engine) as s:
        plan = Plan(name="eur", currency="EUR", base_fee_minor=1000)
        s.add(plan)
        s.flush()
        s.add(
            PlanMetric(
                plan_id=plan.id or 0,
                metric="api_calls",
                included_quantity=Decimal(1000),
                overage_unit_price=Decimal("0.01"),
            )
        )
        customer = Customer(name="Usd", email="usd@example.com", currency="USD", plan_id=plan.id)
        s.add(customer)
        s.add(ExchangeRate(period=str(PERIOD), quote="EUR", rate=Decimal("0.8"), source="t"))
        s.flush()
        s.add(
            UsageRecord(
                customer_id=customer.id or 0,
                metric="api_calls",
                quantity=Decimal(2000),
                occurred_at=PERIOD.start_at + timedelta(days=2),
                period=str(PERIOD),
                idempotency_key="t-usd",
            )
        )
        s.flush()
        drafts = invoicing_drafts.build_drafts(s, PERIOD, source=SOURCE)
        [invoice_id] = invoicing_drafts.save_drafts(s, drafts, run_id=None)
        invoice = s.get(Invoice, invoice_id)
        assert invoice is not None
        invoice.status = "open"
        lines = s.exec(select(InvoiceLine).where(InvoiceLine.kind == "overage")).all()
        assert [line.amount_minor for line in lines] == [1250]  # EUR 10 / 0.8 = USD 12.50
    reconcile_period(engine, PERIOD, source=SOURCE)
    assert [d for d in diffs_of(engine) if d.kind == "usage"] == []
    # Without the period's rate the usage cannot be priced: skipped, not a false diff.
    with session_scope(engine) as s:
        for rate in s.exec(select(ExchangeRate)).all():
            s.delete(rate)
    assert reconcile_period(engine, PERIOD, source=SOURCE).status == "complete"
    assert [d for d in diffs_of(engine) if d.kind == "usage"] == []


# ------------------------------------------------------------------ resolutions


def _diff(engine: Engine, kind: str) -> ReconciliationDiff:
    return next(d for d in diffs_of(engine) if d.kind == kind and not d.within_tolerance)


def test_true_up_is_created_once_and_applied_once(demo_engine: Engine) -> None:
    diff = _diff(demo_engine, "aws_restatement")
    with session_scope(demo_engine) as s:
        schedule_true_up(
            s, ADMIN, diff.id or 0, "AWS credit after close", seen_version=diff.version
        )
    with session_scope(demo_engine) as s, pytest.raises(StaleVersion):
        # The same click again (a retry, a second tab) is refused: no second true-up.
        schedule_true_up(s, ADMIN, diff.id or 0, seen_version=diff.version)
    with session_scope(demo_engine) as s:
        rows = s.exec(select(TrueUp)).all()
        assert len(rows) == 1
        t = rows[0]
        assert (t.customer_id, t.amount_minor, t.currency, t.source_period) == (
            diff.customer_id,
            diff.delta_minor,
            diff.currency,
            str(DEMO_PERIOD),
        )
        assert t.description.startswith(f"AWS adjustment for {DEMO_PERIOD} (")
        # The next invoice run's drafts carry it as one line (a credit when negative), once.
        drafts = invoicing_drafts.build_drafts(
            s, DEMO_PERIOD.next(), source=SOURCE, customer_id=diff.customer_id
        )
        [draft] = drafts.drafts
        true_up_lines = [line for line in draft.lines if line.true_up_id is not None]
        assert [(x.amount_minor, x.true_up_id) for x in true_up_lines] == [(t.amount_minor, t.id)]
        invoicing_drafts.save_drafts(s, drafts, run_id=None)
        again = invoicing_drafts.build_drafts(
            s, DEMO_PERIOD.shift(2), source=SOURCE, customer_id=diff.customer_id
        )
        assert not [x for d in again.drafts for x in d.lines if x.true_up_id is not None]
        d = s.get(ReconciliationDiff, diff.id)
        assert d is not None and (d.status, d.resolution, d.resolved_by) == (
            "resolved",
            "true_up",
            ADMIN.actor,
        )
        assert (
            len(s.exec(select(AuditEntry).where(AuditEntry.action == "reconcile.true_up")).all())
            == 1
        )
    # The run after it keeps it resolved (values unchanged).
    reconcile_period(demo_engine, DEMO_PERIOD, source=SOURCE, now=DEMO_NOW)
    assert next(d for d in diffs_of(demo_engine) if d.id == diff.id).status == "resolved"


def test_true_up_refused_for_stripe_kinds_and_for_viewers(demo_engine: Engine) -> None:
    status = _diff(demo_engine, "status")
    with session_scope(demo_engine) as s, pytest.raises(ValidationError, match="true-up is for"):
        schedule_true_up(s, ADMIN, status.id or 0, seen_version=status.version)
    with session_scope(demo_engine) as s, pytest.raises(PermissionDenied):
        schedule_true_up(s, VIEWER, _diff(demo_engine, "usage").id or 0, seen_version=1)
    with session_scope(demo_engine) as s, pytest.raises(PermissionDenied):
        accept_diff(s, VIEWER, status.id or 0, "fine", seen_version=1)


def test_accept_needs_a_note_and_is_audited(demo_engine: Engine) -> None:
    diff = _diff(demo_engine, "missing_locally")
    with session_scope(demo_engine) as s, pytest.raises(ValidationError, match="note"):
        accept_diff(s, ADMIN, diff.id or 0, "  ", seen_version=diff.version)
    with session_scope(demo_engine) as s:
        accept_diff(
            s, ADMIN, diff.id or 0, "Consulting invoice, billed by hand", seen_version=diff.version
        )
        entry = s.exec(select(AuditEntry).where(AuditEntry.action == "reconcile.accepted")).one()
        assert entry.actor == ADMIN.actor and entry.after and entry.after["status"] == "resolved"


def test_resolved_diff_reopens_when_its_values_change(world: World) -> None:
    inv = world.invoice(world.customer(), 1_000, remote_amount=1_500)
    run(world)
    diff = next(d for d in diffs_of(world.engine) if d.kind == "amount")
    with session_scope(world.engine) as s:
        accept_diff(s, ADMIN, diff.id or 0, "known", seen_version=diff.version)
    run(world)
    assert next(d for d in diffs_of(world.engine) if d.id == diff.id).status == "resolved"
    with session_scope(world.engine) as s:
        row = s.get(Invoice, inv.id)
        assert row is not None
        row.total_minor = 900
    run(world)
    assert next(d for d in diffs_of(world.engine) if d.id == diff.id).status == "open"


def test_sync_status_from_stripe(world: World) -> None:
    inv = world.invoice(world.customer(), 5_000)
    world.server.pay_out_of_band(inv.stripe_invoice_id or "")
    run(world)
    diff = _diff(world.engine, "status")
    with session_scope(world.engine) as s:
        sync_from_stripe(
            s, ADMIN, diff.id or 0, seen_version=diff.version, reader=reader_for(world.server)
        )
        row = s.get(Invoice, inv.id)
        assert row is not None and row.status == "paid" and row.amount_paid_minor == 5_000
    assert run(world).exit_code == 0
    assert next(d for d in diffs_of(world.engine) if d.id == diff.id).status == "resolved"


def test_sync_demo_status_diff_without_stripe(demo_engine: Engine) -> None:
    diff = _diff(demo_engine, "status")
    with session_scope(demo_engine) as s:
        sync_from_stripe(s, ADMIN, diff.id or 0, seen_version=diff.version)
        row = s.get(Invoice, diff.invoice_id)
        assert row is not None and row.status == "paid"
    with (
        session_scope(demo_engine) as s,
        pytest.raises(ValidationError, match="status differences"),
    ):
        sync_from_stripe(s, ADMIN, _diff(demo_engine, "amount").id or 0, seen_version=1)


# ------------------------------------------------------------------ CLI


def test_cli_exit_codes(app_env: dict[str, str], capsys: pytest.CaptureFixture[str]) -> None:
    from billing_core.cli import main

    assert main(["reconcile", "--period", str(DEMO_PERIOD)]) == 1
    out = capsys.readouterr()
    assert "open diffs above tolerance: 15" in out.out
    # Each open diff is named, so the cron mail says which (issue 13, item 10).
    listed = [line for line in out.out.splitlines() if line.startswith("  open: ")]
    assert len(listed) == 15
    assert (
        "  open: DEMO-2026-09-0008, Harbor Studio BV: total differs "
        "(ours EUR 1,602.66, Stripe EUR 1,617.66)"
    ) in listed
    assert any(
        ": AWS restated: Support fee (invoiced USD 0.00, Cost Explorer now USD 325.50)" in line
        for line in listed
    )
    assert any(
        ": in Stripe only: in_demo_outside_tool (ours no local invoice, Stripe " in line
        for line in listed
    )
    assert main(["reconcile", "--period", "2020-01"]) == 0
    assert main(["reconcile", "--period", "2020-01", "--tolerance", "abc"]) == 2
