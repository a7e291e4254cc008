"""Two admins at once, or a stale page: each admin action names the object and the version it saw.

Each race: two admins read the same version, both act; the first goes through, the second is
refused with a sentence naming who changed it and when; nothing of the first is lost and the
audit log holds one entry. The two admins use separate sessions, as two dashboard servers do.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from decimal import Decimal

import pytest
from sqlalchemy import event
from sqlalchemy.engine import Engine
from sqlmodel import Session, col, select

from billing_core import audit
from billing_core.auth import Identity
from billing_core.customers import plans
from billing_core.db import session_scope
from billing_core.errors import StaleVersion, ValidationError
from billing_core.models import (
    AuditEntry,
    Customer,
    Invoice,
    Plan,
    ReconciliationDiff,
    ReconciliationRun,
    TrueUp,
)
from billing_core.reconciliation import resolve
from billing_core.reconciliation.diffing import Finding
from billing_core.reconciliation.runs import store_findings
from tests.support.usage_world import NOW, make_world

ANA = Identity(email="ana@example.com", role="admin", method="proxy")
BEN = Identity(email="ben@example.com", role="admin", method="proxy")
LATER = datetime(2026, 11, 21, 14, 5, tzinfo=UTC)
REFUSED = (
    r"was changed by ana@example\.com at 14:05 UTC since you opened it; "
    r"reload to see their change"
)


def spec(name: str = "basic", *, base: int = 1000) -> plans.PlanSpec:
    return plans.PlanSpec(
        name=name,
        currency="EUR",
        base_fee_minor=base,
        markup_pct=Decimal(5),
        aws_spend_limit_minor=None,
        metrics=(plans.MetricSpec("api_calls", Decimal(1000), Decimal("0.01"), "calls"),),
    )


def entries(engine: Engine, action: str) -> list[AuditEntry]:
    with session_scope(engine) as s:
        return list(audit.entries(s, action=action))


def read(engine: Engine, model: type, object_id: int):  # type: ignore[no-untyped-def]
    """What a page shows: the row as read now (its version goes back with the action)."""
    with session_scope(engine) as s:
        row = s.get(model, object_id)
        assert row is not None
        return row


# ------------------------------------------------------------------ plans


@pytest.fixture
def world(engine: Engine) -> dict[str, int]:
    with session_scope(engine) as s:
        plan, a, b = make_world(s)
        unused = plans.create_plan(s, identity=ANA, spec=spec("fresh"), now=NOW)
        return {"billed": plan.id or 0, "fresh": unused.id or 0, "a": a.id or 0, "b": b.id or 0}


@pytest.mark.parametrize("which", ["fresh", "billed"])
def test_second_stale_plan_save_is_refused(
    engine: Engine, world: dict[str, int], which: str
) -> None:
    plan_id = world[which]
    seen_by_ana = read(engine, Plan, plan_id)
    seen_by_ben = read(engine, Plan, plan_id)
    name = seen_by_ana.name
    with session_scope(engine) as s:
        saved = plans.update_plan(
            s,
            identity=ANA,
            plan_id=plan_id,
            seen_version=seen_by_ana.version,
            spec=spec(name, base=49_900),
            now=LATER,
        )
        assert saved.new_version == (which == "billed")
    with pytest.raises(StaleVersion, match=f"This plan {REFUSED}"), session_scope(engine) as s:
        plans.update_plan(
            s,
            identity=BEN,
            plan_id=plan_id,
            seen_version=seen_by_ben.version,
            spec=spec(name, base=22_200),
            now=LATER,
        )
    with session_scope(engine) as s:
        live = plans.active_plan_named(s, name)
        assert live is not None and live.base_fee_minor == 49_900  # Ana's save is kept
        assert s.exec(select(Plan).where(Plan.base_fee_minor == 22_200)).all() == []
        # Nobody else's plan moved: the other plan keeps its fee.
        other = s.get(Plan, world["fresh" if which == "billed" else "billed"])
        assert other is not None and other.base_fee_minor == 1000
    action = "plan.new_version" if which == "billed" else "plan.update"
    assert [e.actor for e in entries(engine, action)] == [ANA.actor]


def test_the_database_decides_when_both_saves_pass_the_check(
    engine: Engine, world: dict[str, int]
) -> None:
    """Ana commits between Ben's check of the version and his UPDATE: the UPDATE's row count
    (`WHERE id = :id AND version = :seen`) refuses him, not the check before it."""
    plan_id = world["fresh"]
    seen = read(engine, Plan, plan_id)
    ana_went = False

    def ana_commits_first(_conn: object, _cursor: object, statement: str, *_: object) -> None:
        nonlocal ana_went
        claim = re.match(r'UPDATE "?plan"? SET .*version=', statement, re.S)
        if claim and not ana_went:
            ana_went = True
            with session_scope(engine) as s:
                plans.update_plan(
                    s,
                    identity=ANA,
                    plan_id=plan_id,
                    seen_version=seen.version,
                    spec=spec("fresh", base=49_900),
                    now=LATER,
                )

    event.listen(engine, "before_cursor_execute", ana_commits_first)
    try:
        with pytest.raises(StaleVersion, match=f"This plan {REFUSED}"), session_scope(engine) as s:
            plans.update_plan(
                s,
                identity=BEN,
                plan_id=plan_id,
                seen_version=seen.version,
                spec=spec("fresh", base=22_200),
                now=LATER,
            )
    finally:
        event.remove(engine, "before_cursor_execute", ana_commits_first)
    assert ana_went
    assert read(engine, Plan, plan_id).base_fee_minor == 49_900
    assert [e.actor for e in entries(engine, "plan.update")] == [ANA.actor]


def test_a_save_from_the_version_you_saw_goes_through(
    engine: Engine, world: dict[str, int]
) -> None:
    seen = read(engine, Plan, world["fresh"])
    with session_scope(engine) as s:
        plans.update_plan(
            s,
            identity=ANA,
            plan_id=seen.id or 0,
            seen_version=seen.version,
            spec=spec("fresh", base=1),
            now=LATER,
        )
    again = read(engine, Plan, world["fresh"])
    assert again.version == seen.version + 1 and again.updated_by == ANA.actor
    with session_scope(engine) as s:
        plans.update_plan(
            s,
            identity=BEN,
            plan_id=again.id or 0,
            seen_version=again.version,
            spec=spec("fresh", base=2),
            now=LATER,
        )
    assert read(engine, Plan, world["fresh"]).base_fee_minor == 2


def test_duplicate_plan_name_created_at_once_is_a_sentence(engine: Engine) -> None:
    """Ben's check passes, then Ana's plan of the same name commits before Ben's insert."""
    with Session(engine) as ben_session:

        def ana_commits_first(session: Session, _ctx: object, _instances: object) -> None:
            if not entries(engine, "plan.create"):
                with session_scope(engine) as s:
                    plans.create_plan(s, identity=ANA, spec=spec("gold"), now=NOW)

        event.listen(ben_session, "before_flush", ana_commits_first)
        with pytest.raises(ValidationError) as err:
            plans.create_plan(ben_session, identity=BEN, spec=spec("gold", base=5), now=NOW)
        ben_session.rollback()
    assert err.value.problems == [
        "a plan named 'gold' already exists (just saved by another admin)"
    ]
    with session_scope(engine) as s:
        [gold] = s.exec(select(Plan).where(Plan.name == "gold")).all()
        assert gold.base_fee_minor == 1000
    assert [e.actor for e in entries(engine, "plan.create")] == [ANA.actor]


def test_second_stale_assignment_is_refused(engine: Engine, world: dict[str, int]) -> None:
    customer = read(engine, Customer, world["a"])
    fresh = read(engine, Plan, world["fresh"])
    billed = read(engine, Plan, world["billed"])
    with session_scope(engine) as s:
        plans.schedule_plan_change(
            s,
            identity=ANA,
            customer_id=customer.id or 0,
            customer_version=customer.version,
            plan_id=fresh.id or 0,
            plan_version=fresh.version,
            now=LATER,
        )
    with pytest.raises(StaleVersion, match=f"Alpha {REFUSED}"), session_scope(engine) as s:
        plans.schedule_plan_change(
            s,
            identity=BEN,
            customer_id=customer.id or 0,
            customer_version=customer.version,
            plan_id=billed.id or 0,  # "stay on basic": would cancel Ana's change
            plan_version=billed.version,
            now=LATER,
        )
    after = read(engine, Customer, world["a"])
    assert (after.next_plan_id, after.next_plan_from) == (fresh.id, "2026-12")
    assert [e.actor for e in entries(engine, "customer.plan_change")] == [ANA.actor]


def test_assignment_refused_when_the_plan_changed_since(
    engine: Engine, world: dict[str, int]
) -> None:
    customer = read(engine, Customer, world["b"])
    fresh = read(engine, Plan, world["fresh"])
    with session_scope(engine) as s:
        plans.update_plan(
            s,
            identity=ANA,
            plan_id=fresh.id or 0,
            seen_version=fresh.version,
            spec=spec("fresh", base=99_900),
            now=LATER,
        )
    with pytest.raises(StaleVersion, match=f"Plan fresh {REFUSED}"), session_scope(engine) as s:
        plans.schedule_plan_change(
            s,
            identity=BEN,
            customer_id=customer.id or 0,
            customer_version=customer.version,
            plan_id=fresh.id or 0,
            plan_version=fresh.version,
            now=LATER,
        )
    after = read(engine, Customer, world["b"])
    assert (after.next_plan_id, after.version) == (None, customer.version)
    assert entries(engine, "customer.plan_change") == []


def test_a_new_plan_version_moves_its_customers_versions(
    engine: Engine, world: dict[str, int]
) -> None:
    """A page that showed a customer before its plan got a new version is stale for it too."""
    customer = read(engine, Customer, world["a"])
    billed = read(engine, Plan, world["billed"])
    with session_scope(engine) as s:
        plans.update_plan(
            s,
            identity=ANA,
            plan_id=billed.id or 0,
            seen_version=billed.version,
            spec=spec("basic", base=2000),
            now=LATER,
        )
    assert read(engine, Customer, world["a"]).version == customer.version + 1


# ------------------------------------------------------------------ reconciliation diffs


def open_diff(engine: Engine, kind: str) -> ReconciliationDiff:
    with session_scope(engine) as s:
        return s.exec(
            select(ReconciliationDiff)
            .where(ReconciliationDiff.kind == kind, ReconciliationDiff.status == "open")
            .where(col(ReconciliationDiff.within_tolerance).is_(False))
            .order_by(col(ReconciliationDiff.id))
        ).first() or pytest.fail(f"no open {kind} diff")


def diff_entries(engine: Engine, diff_id: int) -> list[AuditEntry]:
    with session_scope(engine) as s:
        return [
            e
            for e in audit.entries(s, target_contains=f"diff:{diff_id}")
            if e.target == f"diff:{diff_id}"
        ]


def test_second_accept_of_the_same_diff_is_refused(demo_engine: Engine) -> None:
    diff = open_diff(demo_engine, "missing_locally")
    with session_scope(demo_engine) as s:
        resolve.accept_diff(
            s, ANA, diff.id or 0, "Ana's note", seen_version=diff.version, now=LATER
        )
    with (
        pytest.raises(StaleVersion, match=f"Difference #{diff.id} {REFUSED}"),
        session_scope(demo_engine) as s,
    ):
        resolve.accept_diff(
            s, BEN, diff.id or 0, "Ben's note", seen_version=diff.version, now=LATER
        )
    row = read(demo_engine, ReconciliationDiff, diff.id or 0)
    assert (row.resolution_note, row.resolved_by) == ("Ana's note", ANA.actor)
    assert [(e.actor, e.action) for e in diff_entries(demo_engine, diff.id or 0)] == [
        (ANA.actor, "reconcile.accepted")
    ]


def test_stale_true_up_after_an_accept_is_refused(demo_engine: Engine) -> None:
    diff = open_diff(demo_engine, "aws_restatement")
    with session_scope(demo_engine) as s:
        resolve.accept_diff(
            s, ANA, diff.id or 0, "known credit", seen_version=diff.version, now=LATER
        )
    with pytest.raises(StaleVersion, match=REFUSED), session_scope(demo_engine) as s:
        resolve.schedule_true_up(s, BEN, diff.id or 0, seen_version=diff.version, now=LATER)
    with session_scope(demo_engine) as s:
        assert s.exec(select(TrueUp).where(TrueUp.diff_id == diff.id)).all() == []
    assert len(diff_entries(demo_engine, diff.id or 0)) == 1


def test_second_sync_of_the_same_diff_is_refused(demo_engine: Engine) -> None:
    diff = open_diff(demo_engine, "status")
    with session_scope(demo_engine) as s:
        resolve.sync_from_stripe(s, ANA, diff.id or 0, seen_version=diff.version, now=LATER)
    with pytest.raises(StaleVersion, match=REFUSED), session_scope(demo_engine) as s:
        resolve.sync_from_stripe(s, BEN, diff.id or 0, seen_version=diff.version, now=LATER)
    with session_scope(demo_engine) as s:
        synced = audit.entries(s, action="invoice.sync_from_stripe")
        assert [e.actor for e in synced] == [ANA.actor]
        invoice = s.get(Invoice, diff.invoice_id)
        assert invoice is not None and invoice.status == "paid"


def test_a_rerun_that_changes_a_diff_makes_the_page_stale(demo_engine: Engine) -> None:
    """The admin saw a delta; reconciliation found another since: accepting it is refused."""
    diff = open_diff(demo_engine, "amount")
    with session_scope(demo_engine) as s:
        run = ReconciliationRun(period=diff.period, actor="cron")
        s.add(run)
        s.flush()
        finding = Finding(
            kind=diff.kind,
            subject=diff.subject,
            customer_id=diff.customer_id,
            invoice_id=diff.invoice_id,
            currency=diff.currency,
            local_value=diff.local_value,
            remote_value="EUR 999.00",
            delta_minor=diff.delta_minor + 1,
            within_tolerance=False,
        )
        store_findings(s, run, [finding], [diff.kind], now=LATER)
    with (
        pytest.raises(StaleVersion, match=f"Difference #{diff.id} was changed by cron"),
        session_scope(demo_engine) as s,
    ):
        resolve.accept_diff(s, ANA, diff.id or 0, "fine", seen_version=diff.version, now=LATER)
    assert diff_entries(demo_engine, diff.id or 0) == []
