"""Reconciliation after corrections, against the local Stripe server: credit notes and
void-and-reissue leave no open difference for those invoices; a credit note made in Stripe's
dashboard is a `credit_notes` difference that syncing resolves; each kind offers what fixes it,
and acting on a diff (page or CLI) is idempotent and audited."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy.engine import Engine
from sqlmodel import Session, select
from streamlit.testing.v1 import AppTest

from billing_core.cli import main
from billing_core.corrections import credit_notes as cn
from billing_core.corrections import void_reissue as vr
from billing_core.corrections.credit_plan import CreditAsk
from billing_core.costs.snapshots import CostSource
from billing_core.db import session_scope
from billing_core.models import AuditEntry, CreditNote, Invoice, InvoiceLine, ReconciliationDiff
from billing_core.reconciliation import act
from billing_core.reconciliation.diffing import Tolerance
from billing_core.reconciliation.runs import reconcile_period
from billing_core.states import DiffStatus
from tests.conftest import ROOT
from tests.support.stripe_server import StripeTestServer
from tests.test_corrections_page import stripe_env
from tests.test_credit_notes import ADMIN, KEY, P, billed_world, gateway, server, settings_for

__all__ = ["server", "stripe_env"]


@pytest.fixture(autouse=True)
def _fresh(server: StripeTestServer) -> None:
    server.reset()


def _open_diffs(engine: Engine, invoice_ids: set[int]) -> list[ReconciliationDiff]:
    with Session(engine) as s:
        rows = s.exec(
            select(ReconciliationDiff).where(ReconciliationDiff.status == DiffStatus.OPEN)
        ).all()
        return [d for d in rows if d.invoice_id in invoice_ids]


def test_no_open_diff_after_credit_notes_and_a_reissue(
    demo_engine: Engine, server: StripeTestServer, demo_db_url: str, tmp_path: Path
) -> None:
    settings = settings_for(server, demo_db_url, tmp_path)
    invoices = billed_world(demo_engine, server, settings)
    gw_ = gateway(server)
    opened, paid, other = invoices[0], invoices[1], invoices[2]
    for settlement in ("refund", "customer_balance", "out_of_band"):
        cn.issue(
            demo_engine,
            gw_,
            ADMIN,
            CreditAsk(paid.number or "", "amount", "order_change", "1", settlement=settlement),
        )
    cn.issue(
        demo_engine,
        gw_,
        ADMIN,
        CreditAsk(other.number or "", "full", "duplicate", settlement="refund"),
    )
    done = vr.void_invoice(
        demo_engine,
        gw_,
        ADMIN,
        opened.number or "",
        "usage imported late",
        reissue=True,
        source=CostSource.of(settings),
    )
    with Session(demo_engine) as s:
        new = s.get(Invoice, done.replacement_id)
        assert new is not None
    cn.issue(demo_engine, gw_, ADMIN, CreditAsk(new.number or "", "amount", "duplicate", "3"))
    result = reconcile_period(
        demo_engine, P, source=CostSource.of(settings), tolerance=Tolerance(), reader=gw_
    )
    assert result.status == "complete", result.describe()
    ids = {i.id or 0 for i in invoices} | {new.id or 0}
    assert _open_diffs(demo_engine, ids) == []


def test_a_credit_note_made_in_stripe_is_found_and_synced(
    demo_engine: Engine, server: StripeTestServer, demo_db_url: str, tmp_path: Path
) -> None:
    settings = settings_for(server, demo_db_url, tmp_path)
    invoices = billed_world(demo_engine, server, settings)
    gw_ = gateway(server)
    paid = invoices[1]
    gw_.request(
        "post",
        "/v1/credit_notes",
        {"invoice": paid.stripe_invoice_id, "amount": 250, "out_of_band_amount": 250},
        key="dashboard-cn",
        doing="a credit note made in Stripe's dashboard",
    )
    source = CostSource.of(settings)
    reconcile_period(demo_engine, P, source=source, tolerance=Tolerance(), reader=gw_)
    (diff,) = [d for d in _open_diffs(demo_engine, {paid.id or 0}) if d.kind == "credit_notes"]
    assert diff.delta_minor == 250
    assert act.actions_for(diff.kind, diff.delta_minor) == ["accept", "sync"]
    message = act.act_on_diff(
        demo_engine, gw_, ADMIN, diff.id or 0, "sync", seen_version=diff.version
    )
    assert "resolved" in message
    again = act.act_on_diff(demo_engine, gw_, ADMIN, diff.id or 0, "sync")
    assert "nothing changed" in again
    with Session(demo_engine) as s:
        (note,) = s.exec(select(CreditNote).where(CreditNote.invoice_id == paid.id)).all()
        assert (note.amount_minor, note.out_of_band_minor) == (250, 250)
        assert s.exec(select(AuditEntry).where(AuditEntry.action == "credit_note.sync")).one()
    reconcile_period(demo_engine, P, source=source, tolerance=Tolerance(), reader=gw_)
    assert _open_diffs(demo_engine, {paid.id or 0}) == []


def test_an_amount_diff_is_resolved_by_a_credit_note_from_the_cli(
    demo_engine: Engine,
    server: StripeTestServer,
    demo_db_url: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    settings = settings_for(server, demo_db_url, tmp_path)
    invoices = billed_world(demo_engine, server, settings)
    gw_ = gateway(server)
    opened = invoices[0]
    # We billed 4.00 less than Stripe asks (a line corrected locally after the push).
    with session_scope(demo_engine) as s:
        row = s.get(Invoice, opened.id)
        assert row is not None
        row.total_minor -= 400
        row.subtotal_minor -= 400
    source = CostSource.of(settings)
    reconcile_period(demo_engine, P, source=source, tolerance=Tolerance(), reader=gw_)
    (diff,) = [d for d in _open_diffs(demo_engine, {opened.id or 0}) if d.kind == "amount"]
    assert act.actions_for(diff.kind, diff.delta_minor) == ["accept", "credit_note", "reissue"]
    env = {
        "DATABASE_URL": demo_db_url,
        "BILLING_MODE": "demo",
        "BILLING_SECRETS_FILE": str(tmp_path / "none.toml"),
        "STRIPE_API_BASE": server.url,
        "STRIPE_API_KEY": KEY,
    }
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    args = ["resolve-diff", "--diff", str(diff.id), "--action", "credit_note", "--actor", "ops"]
    assert main(args) == 0
    assert "resolved: credit note" in capsys.readouterr().out
    assert main(args) == 0
    assert "nothing changed" in capsys.readouterr().out
    remote = server.invoice(opened.stripe_invoice_id or "")
    assert remote["amount_remaining"] == opened.total_minor - 400
    assert len(server.credit_notes()) == 1
    reconcile_period(demo_engine, P, source=source, tolerance=Tolerance(), reader=gw_)
    assert _open_diffs(demo_engine, {opened.id or 0}) == []
    with Session(demo_engine) as s:
        audited = s.exec(
            select(AuditEntry.actor).where(AuditEntry.action == "reconcile.credit_note")
        ).all()
        assert audited == ["ops"]


def test_an_action_that_does_not_fit_is_refused() -> None:
    assert "credit_note" not in act.actions_for("status", 0)
    assert act.actions_for("missing_in_stripe", -100) == ["accept", "push"]
    assert act.actions_for("aws_restatement", -500) == ["accept", "true_up", "credit_note"]
    assert act.actions_for("aws_restatement", 500) == ["accept", "true_up"]
    assert act.actions_for("currency") == ["accept", "reissue"]


def test_the_page_pushes_an_invoice_missing_in_stripe(
    stripe_env: dict[str, str],
    demo_engine: Engine,
    server: StripeTestServer,
    demo_db_url: str,
    tmp_path: Path,
) -> None:
    settings = settings_for(server, demo_db_url, tmp_path)
    invoices = billed_world(demo_engine, server, settings)
    gw_ = gateway(server)
    # A local draft of the month that never reached Stripe (its customer had no Stripe link).
    target = invoices[0]
    with session_scope(demo_engine) as s:
        row = s.get(Invoice, target.id)
        assert row is not None
        server.void(row.stripe_invoice_id or "")
        row.status = "void"  # type: ignore[assignment]
        s.add(row)
        s.flush()
        fresh = Invoice(
            customer_id=row.customer_id,
            period=row.period,
            revision=2,
            currency=row.currency,
            subtotal_minor=row.total_minor,
            total_minor=row.total_minor,
        )
        s.add(fresh)
        s.flush()
        for line in s.exec(select(InvoiceLine).where(InvoiceLine.invoice_id == row.id)).all():
            s.add(
                InvoiceLine(
                    invoice_id=fresh.id or 0,
                    position=line.position,
                    kind=line.kind,
                    description=line.description,
                    service=line.service,
                    metric=line.metric,
                    quantity=line.quantity,
                    unit_amount=line.unit_amount,
                    amount_minor=line.amount_minor,
                )
            )
        fresh_id = fresh.id
    reconcile_period(
        demo_engine, P, source=CostSource.of(settings), tolerance=Tolerance(), reader=gw_
    )
    (diff,) = [d for d in _open_diffs(demo_engine, {fresh_id or 0})]
    assert diff.kind == "missing_in_stripe"
    at = AppTest.from_file(str(ROOT / "pages/reconciliation.py"), default_timeout=60).run()
    at.selectbox(key="resolve_diff").select(diff.id).run()
    at.radio(key=f"resolve_action-{diff.id}").set_value("push").run()
    at.button(key=f"resolve_apply-{diff.id}").click().run()
    assert not at.exception, at.exception
    assert any("resolved: push" in s.value for s in at.success), [e.value for e in at.error]
    with Session(demo_engine) as s:
        pushed = s.get(Invoice, fresh_id)
        assert pushed is not None and pushed.stripe_invoice_id
        assert s.exec(select(AuditEntry).where(AuditEntry.action == "reconcile.pushed")).one()
    reconcile_period(
        demo_engine, P, source=CostSource.of(settings), tolerance=Tolerance(), reader=gw_
    )
    assert _open_diffs(demo_engine, {fresh_id or 0, target.id or 0}) == []
