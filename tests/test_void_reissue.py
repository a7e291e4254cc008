"""Void and reissue against the local Stripe test server: killed between every pair of steps
and run again, concurrent clicks, Stripe outages: exactly one live invoice per customer and
month, locally and in Stripe; the reissue is priced with today's figures."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest
from sqlalchemy.engine import Engine
from sqlmodel import Session, col, func, select

from billing_core.corrections import credit_notes as cn
from billing_core.corrections import void_reissue as vr
from billing_core.corrections.credit_plan import CreditAsk
from billing_core.costs.snapshots import CostSource
from billing_core.customers.terms import terms_in_force
from billing_core.db import session_scope
from billing_core.errors import BillingError, PaymentProviderError, ValidationError
from billing_core.models import AuditEntry, CreditNote, Invoice, InvoiceVoid, Plan
from billing_core.states import CreditNoteReason, InvoiceStatus, VoidStep
from billing_core.stripe.gateway import Gateway
from tests.support.stripe_server import StripeTestServer
from tests.test_credit_notes import ADMIN, P, billed_world, gateway, server, settings_for

__all__ = ["server"]  # the module-scoped Stripe server fixture, shared


class Killed(BaseException):
    """The process dying at a step: nothing in the code under test catches it."""


@pytest.fixture(autouse=True)
def _fresh(server: StripeTestServer) -> None:
    server.reset()


@pytest.fixture
def world(
    demo_engine: Engine, server: StripeTestServer, demo_db_url: str, tmp_path: Path
) -> tuple[Engine, Gateway, Invoice, CostSource]:
    settings = settings_for(server, demo_db_url, tmp_path)
    invoices = billed_world(demo_engine, server, settings)
    return demo_engine, gateway(server), invoices[0], CostSource.of(settings)


def _raise_fee(engine: Engine, invoice: Invoice, by_minor: int) -> None:
    """Today's pricing differs from the invoice's: the plan's base fee went up."""
    with session_scope(engine) as s:
        plan_id = terms_in_force(s, P, customer_ids=[invoice.customer_id])[
            invoice.customer_id
        ].plan_id
        plan = s.get(Plan, plan_id)
        assert plan is not None
        plan.base_fee_minor += by_minor
        s.add(plan)


def _live(engine: Engine, invoice: Invoice) -> list[Invoice]:
    with Session(engine) as s:
        return list(
            s.exec(
                select(Invoice).where(
                    Invoice.customer_id == invoice.customer_id,
                    Invoice.period == invoice.period,
                    Invoice.status != InvoiceStatus.VOID,
                )
            ).all()
        )


def _live_in_stripe(server: StripeTestServer, invoice: Invoice) -> list[dict[str, object]]:
    customer = server.invoice(invoice.stripe_invoice_id or "")["customer"]
    return [i for i in server.invoices(customer=str(customer)) if i["status"] != "void"]


STEPS = ["requested", "void_sent", "voided", "drafted", "create", "lines", "finalize", "send"]


@pytest.mark.parametrize("kill_at", STEPS)
def test_killed_between_steps_then_run_again_gives_one_live_invoice(
    world: tuple[Engine, Gateway, Invoice, CostSource], server: StripeTestServer, kill_at: str
) -> None:
    engine, gw_, inv, source = world
    _raise_fee(engine, inv, 1000)

    def die(step: str) -> None:
        if step == kill_at:
            raise Killed(step)

    ref = inv.number or ""
    with pytest.raises(Killed):
        vr.void_invoice(
            engine, gw_, ADMIN, ref, "wrong usage", reissue=True, source=source, hook=die
        )
    assert len(_live(engine, inv)) <= 1  # also in between: never two
    done = vr.void_invoice(engine, gw_, ADMIN, ref, "wrong usage", reissue=True, source=source)
    (live,) = _live(engine, inv)
    assert live.id == done.replacement_id and live.revision == 2
    assert live.replaces_invoice_id == inv.id
    assert live.total_minor == inv.total_minor + 1000  # priced with today's plan
    assert live.status == InvoiceStatus.OPEN and live.stripe_invoice_id
    (remote,) = _live_in_stripe(server, inv)
    assert remote["id"] == live.stripe_invoice_id and remote["total"] == live.total_minor
    assert server.invoice(inv.stripe_invoice_id or "")["status"] == "void"
    # A third run changes nothing.
    again = vr.void_invoice(engine, gw_, ADMIN, ref, "wrong usage", reissue=True, source=source)
    assert not again.changed and "nothing changed" in again.message
    assert len(_live_in_stripe(server, inv)) == 1
    with Session(engine) as s:
        actions = s.exec(select(AuditEntry.action).where(col(AuditEntry.action).like("invoice.%")))
        assert {"invoice.void_request", "invoice.void", "invoice.reissue"} <= set(actions.all())


def test_concurrent_clicks_share_one_void_and_one_reissue(
    world: tuple[Engine, Gateway, Invoice, CostSource], server: StripeTestServer
) -> None:
    engine, gw_, inv, source = world
    server.latency = 0.02
    errors: list[BaseException] = []

    def click() -> None:
        try:
            vr.void_invoice(
                engine, gw_, ADMIN, inv.number or "", "duplicate", reissue=True, source=source
            )
        except BillingError as exc:
            errors.append(exc)

    threads = [threading.Thread(target=click) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    # Whatever a click reported, one more run leaves exactly one live invoice everywhere.
    vr.void_invoice(engine, gw_, ADMIN, inv.number or "", "duplicate", reissue=True, source=source)
    assert len(_live(engine, inv)) == 1 and len(_live_in_stripe(server, inv)) == 1
    with Session(engine) as s:
        assert s.exec(select(func.count()).select_from(InvoiceVoid)).one() == 1


def test_an_outage_while_voiding_is_finished_by_a_re_run(
    world: tuple[Engine, Gateway, Invoice, CostSource], server: StripeTestServer
) -> None:
    engine, gw_, inv, source = world
    server.fail_next(1, 500, path_contains="/void")
    with pytest.raises(PaymentProviderError, match="run the same void again"):
        vr.void_invoice(engine, gw_, ADMIN, inv.number or "", "typo", reissue=False, source=source)
    assert len(_live(engine, inv)) == 1  # still the old one: nothing voided yet
    done = vr.void_invoice(
        engine, gw_, ADMIN, inv.number or "", "typo", reissue=False, source=source
    )
    assert done.replacement_id is None and _live(engine, inv) == []
    with Session(engine) as s:
        row = s.exec(select(InvoiceVoid)).one()
        assert row.step == VoidStep.DONE


def test_paid_and_draft_invoices_are_refused(
    demo_engine: Engine, server: StripeTestServer, demo_db_url: str, tmp_path: Path
) -> None:
    settings = settings_for(server, demo_db_url, tmp_path)
    invoices = billed_world(demo_engine, server, settings)
    paid = invoices[1]
    gw_ = gateway(server)
    with pytest.raises(ValidationError, match="Issue a credit note"):
        vr.void_invoice(
            demo_engine,
            gw_,
            ADMIN,
            paid.number or "",
            "x",
            reissue=True,
            source=CostSource.of(settings),
        )
    with pytest.raises(ValidationError, match="needs a reason"):
        vr.void_invoice(
            demo_engine,
            gw_,
            ADMIN,
            paid.number or "",
            " ",
            reissue=False,
            source=CostSource.of(settings),
        )
    assert server.request_count("/void", "POST") == 0


def test_a_credit_note_in_flight_blocks_a_void_and_a_void_blocks_a_credit_note(
    world: tuple[Engine, Gateway, Invoice, CostSource], server: StripeTestServer
) -> None:
    engine, gw_, inv, source = world
    with session_scope(engine) as s:
        s.add(
            CreditNote(
                invoice_id=inv.id or 0,
                customer_id=inv.customer_id,
                currency=inv.currency,
                reason=CreditNoteReason.DUPLICATE,
                amount_minor=100,
                request_key="in-flight",
                created_by="ben@example.com",
            )
        )
    with pytest.raises(ValidationError, match="credit note being issued by ben"):
        vr.void_invoice(engine, gw_, ADMIN, inv.number or "", "x", reissue=False, source=source)
    assert server.request_count("/void", "POST") == 0
    with session_scope(engine) as s:
        s.delete(s.exec(select(CreditNote)).one())
        s.add(InvoiceVoid(invoice_id=inv.id or 0, reason="x", requested_by="ana@example.com"))
    with pytest.raises(ValidationError, match="being voided"):
        cn.issue(engine, gw_, ADMIN, CreditAsk(inv.number or "", "amount", "duplicate", "1"))
    assert server.request_count("/v1/credit_notes", "POST") == 0


def test_a_429_while_sending_the_new_revision_is_finished_by_a_re_run(
    world: tuple[Engine, Gateway, Invoice, CostSource], server: StripeTestServer
) -> None:
    engine, gw_, inv, source = world
    server.fail_next(1, 429, path_contains="/finalize")
    with pytest.raises(PaymentProviderError, match="Run the same void again"):
        vr.void_invoice(engine, gw_, ADMIN, inv.number or "", "x", reissue=True, source=source)
    (live,) = _live(engine, inv)  # the new revision, drafted, not yet in Stripe
    assert live.revision == 2 and live.status == InvoiceStatus.DRAFT
    assert _live_in_stripe(server, inv) == [] or all(
        i["status"] == "draft" for i in _live_in_stripe(server, inv)
    )
    vr.void_invoice(engine, gw_, ADMIN, inv.number or "", "x", reissue=True, source=source)
    (live,) = _live(engine, inv)
    assert live.status == InvoiceStatus.OPEN
    (remote,) = _live_in_stripe(server, inv)
    assert remote["id"] == live.stripe_invoice_id


def test_a_reissue_is_priced_with_the_shared_cost_rule_like_a_run(
    world: tuple[Engine, Gateway, Invoice, CostSource],
) -> None:
    from billing_core.invoicing.drafts import SharedCosts
    from billing_core.invoicing.shared_costs import SharedCostPolicy
    from billing_core.models import InvoiceLine
    from billing_core.states import LineKind, SharedCostRule

    engine, gw_, inv, source = world
    shared = SharedCosts(policy=SharedCostPolicy(rule=SharedCostRule.EVEN))
    done = vr.void_invoice(
        engine,
        gw_,
        ADMIN,
        inv.number or "",
        "share the pool",
        reissue=True,
        source=source,
        shared=shared,
    )
    with Session(engine) as s:
        kinds = s.exec(
            select(InvoiceLine.kind).where(InvoiceLine.invoice_id == done.replacement_id)
        ).all()
    assert LineKind.SHARED_COST in kinds
