"""Voiding a credit note against the local Stripe test server: what the note took off is due
again, a repeat or a concurrent click is one Stripe void and one audit entry, a lost answer is
finished by the next call or by sync, and a note Stripe cannot void is refused with a sentence
and nothing changes."""

from __future__ import annotations

import threading

import pytest
from sqlalchemy.engine import Engine
from sqlmodel import Session, select

from billing_core.auth import Identity
from billing_core.corrections import credit_notes as cn
from billing_core.corrections.credit_note_void import (
    VoidNoteResult,
    plan_void,
    void_credit_note,
)
from billing_core.corrections.credit_plan import CreditAsk, plan
from billing_core.errors import (
    BillingError,
    PaymentProviderError,
    PermissionDenied,
    ValidationError,
)
from billing_core.models import AuditEntry, CreditNote, Invoice
from billing_core.payments import sync
from billing_core.states import CreditNoteStatus, InvoiceStatus
from billing_core.stripe import invoices as stripe_invoices
from billing_core.stripe.gateway import Gateway
from tests.conftest import DEMO_NOW
from tests.support.stripe_server import StripeTestServer
from tests.test_credit_notes import ADMIN, _fresh, _local, server, world

__all__ = ["_fresh", "server", "world"]
World = tuple[Engine, Gateway, list[Invoice]]


def _issue(engine: Engine, gw_: Gateway, ask: CreditAsk) -> CreditNote:
    issued = cn.issue(engine, gw_, ADMIN, ask)
    with Session(engine) as s:
        note = s.get(CreditNote, issued.credit_note_id)
        assert note is not None and note.status == CreditNoteStatus.ISSUED
        return note


def _note(engine: Engine, note_id: int | None) -> CreditNote:
    with Session(engine) as s:
        note = s.get(CreditNote, note_id)
        assert note is not None
        return note


def _voids(engine: Engine) -> list[AuditEntry]:
    with Session(engine) as s:
        return list(s.exec(select(AuditEntry).where(AuditEntry.action == "credit_note.void")))


def test_void_asks_for_the_amount_again(world: World, server: StripeTestServer) -> None:
    engine, gw_, invoices = world
    inv = invoices[0]
    note = _issue(engine, gw_, CreditAsk(inv.number or "", "amount", "duplicate", "4.00"))
    assert _local(engine, inv.id or 0).due_minor == inv.total_minor - 400
    assert "asks for" in plan_void(engine, note.number or "").text
    result = void_credit_note(engine, gw_, ADMIN, note.number or "")
    assert result.changed and f"Credit note {note.number}" in result.message
    assert "is void" in result.message and "asks for" in result.message
    (remote,) = server.credit_notes(inv.stripe_invoice_id)
    assert remote["status"] == "void"
    assert server.invoice(inv.stripe_invoice_id or "")["amount_remaining"] == inv.total_minor
    local = _local(engine, inv.id or 0)
    assert (local.due_minor, local.credited_minor) == (inv.total_minor, 0)
    after = _note(engine, note.id)
    assert after.status == CreditNoteStatus.VOID and after.voided_at is not None
    (entry,) = _voids(engine)
    assert entry.actor == "ana@example.com" and entry.target == f"invoice:{inv.id}"
    assert entry.after and entry.after["stripe_credit_note_id"] == note.stripe_credit_note_id


def test_voiding_the_note_that_paid_the_invoice_opens_it_again(
    world: World, server: StripeTestServer
) -> None:
    engine, gw_, invoices = world
    inv = invoices[0]
    note = _issue(engine, gw_, CreditAsk(inv.number or "", "full", "duplicate"))
    paid = _local(engine, inv.id or 0)
    assert paid.status == InvoiceStatus.PAID and paid.paid_at is not None and paid.due_minor == 0
    void_credit_note(engine, gw_, ADMIN, f"#{note.id}")
    assert server.invoice(inv.stripe_invoice_id or "")["status"] == "open"
    local = _local(engine, inv.id or 0)
    assert local.status == InvoiceStatus.OPEN and local.due_minor == inv.total_minor
    assert local.paid_at is None  # the page would say "Paid on" an open invoice


def test_twice_is_one_stripe_void_and_one_audit_entry(
    world: World, server: StripeTestServer
) -> None:
    engine, gw_, invoices = world
    note = _issue(engine, gw_, CreditAsk(invoices[0].number or "", "amount", "duplicate", "2"))
    assert void_credit_note(engine, gw_, ADMIN, note.stripe_credit_note_id or "").changed
    again = void_credit_note(engine, gw_, ADMIN, (note.number or "").lower())
    assert not again.changed and "void already" in again.message
    assert "nothing changed" in again.message
    assert plan_void(engine, f"#{note.id}").done
    assert server.request_count("/void", "POST") == 1
    assert len(_voids(engine)) == 1


def test_concurrent_voids_audit_once(world: World, server: StripeTestServer) -> None:
    engine, gw_, invoices = world
    inv = invoices[0]
    note = _issue(engine, gw_, CreditAsk(inv.number or "", "amount", "duplicate", "3"))
    server.latency = 0.05  # keeps each one in flight while the others try
    outcomes: list[object] = []

    def void() -> None:
        try:
            outcomes.append(void_credit_note(engine, gw_, ADMIN, note.number or ""))
        except BillingError as exc:
            outcomes.append(exc)

    threads = [threading.Thread(target=void) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    results = [o for o in outcomes if isinstance(o, VoidNoteResult)]
    assert len(results) == 3, outcomes
    assert [r.changed for r in results].count(True) == 1, [r.message for r in results]
    assert all("void already" in r.message for r in results if not r.changed)
    assert len(_voids(engine)) == 1
    assert server.invoice(inv.stripe_invoice_id or "")["amount_remaining"] == inv.total_minor


@pytest.mark.parametrize("key_expired", [False, True])
def test_a_lost_answer_is_finished_by_the_next_call(
    world: World, server: StripeTestServer, key_expired: bool
) -> None:
    engine, gw_, invoices = world
    inv = invoices[0]
    note = _issue(engine, gw_, CreditAsk(inv.number or "", "amount", "duplicate", "5"))
    # Stripe voids it, the answer is lost: the note is still issued here.
    server.drop_response_next(1, path_contains="/void")
    with pytest.raises(PaymentProviderError, match="run the same void again"):
        void_credit_note(engine, gw_, ADMIN, note.number or "")
    assert server.credit_notes()[0]["status"] == "void"
    assert _note(engine, note.id).status == CreditNoteStatus.ISSUED
    if key_expired:  # a day later Stripe forgot the key: it answers "already void"
        server.expire_idempotency_keys()
    done = void_credit_note(engine, gw_, ADMIN, note.number or "")
    assert done.changed, done.message
    assert ("void in Stripe already" in done.message) == key_expired
    assert _note(engine, note.id).status == CreditNoteStatus.VOID
    assert _local(engine, inv.id or 0).due_minor == inv.total_minor
    assert server.invoice(inv.stripe_invoice_id or "")["amount_remaining"] == inv.total_minor
    assert len(_voids(engine)) == 1
    assert not void_credit_note(engine, gw_, ADMIN, note.number or "").changed


def test_a_lost_answer_is_repaired_by_sync_and_audited_by_the_next_call(
    world: World, server: StripeTestServer
) -> None:
    engine, gw_, invoices = world
    inv = invoices[0]
    note = _issue(engine, gw_, CreditAsk(inv.number or "", "amount", "duplicate", "6"))
    server.drop_response_next(1, path_contains="/void")
    with pytest.raises(PaymentProviderError):
        void_credit_note(engine, gw_, ADMIN, note.number or "")
    assert not sync.sync(engine, gw_).failed
    assert _note(engine, note.id).status == CreditNoteStatus.VOID
    assert _local(engine, inv.id or 0).due_minor == inv.total_minor
    assert _voids(engine) == []
    assert void_credit_note(engine, gw_, ADMIN, note.number or "").changed
    assert [e.actor for e in _voids(engine)] == ["ana@example.com"]
    assert server.invoice(inv.stripe_invoice_id or "")["amount_remaining"] == inv.total_minor


def test_a_refunded_note_is_refused_and_nothing_changes(
    world: World, server: StripeTestServer
) -> None:
    engine, gw_, invoices = world
    paid = invoices[1]
    ask = CreditAsk(paid.number or "", "amount", "order_change", "3.00", settlement="refund")
    note = _issue(engine, gw_, ask)
    before = _local(engine, paid.id or 0)
    with pytest.raises(ValidationError, match="cannot void a credit note with a refund") as exc:
        void_credit_note(engine, gw_, ADMIN, note.number or "")
    assert f"Credit note {note.number} refunded" in str(exc.value)
    with pytest.raises(ValidationError, match="with a refund"):
        plan_void(engine, note.number or "")
    assert server.request_count("/void", "POST") == 0
    assert server.credit_notes()[0]["status"] == "issued"
    assert _note(engine, note.id).status == CreditNoteStatus.ISSUED
    assert _local(engine, paid.id or 0).credited_minor == before.credited_minor == 300
    assert _voids(engine) == []


def test_stripe_refusing_the_void_is_a_sentence_and_nothing_changes(
    world: World, server: StripeTestServer
) -> None:
    engine, gw_, invoices = world
    inv = invoices[0]
    note = _issue(engine, gw_, CreditAsk(inv.number or "", "amount", "duplicate", "1.00"))
    # The customer paid the rest: what the note took off can no longer be asked for again.
    server.pay_out_of_band(inv.stripe_invoice_id or "")
    with pytest.raises(ValidationError) as exc:
        void_credit_note(engine, gw_, ADMIN, note.number or "")
    assert str(exc.value).startswith(f"Stripe refused to void credit note {note.number}: ")
    assert str(exc.value).endswith("since been paid; it cannot be voided. Nothing changed.")
    assert server.credit_notes()[0]["status"] == "issued"
    assert _note(engine, note.id).status == CreditNoteStatus.ISSUED
    assert _voids(engine) == []


@pytest.mark.parametrize("ref", ["NOPE-0001-CN-01", "#999", "999", ""])
def test_an_unknown_note_says_what_to_give(world: World, ref: str) -> None:
    engine, gw_, _invoices = world
    with pytest.raises(ValidationError, match=r"There is no credit note .*#<id> for the local id"):
        void_credit_note(engine, gw_, ADMIN, ref)


def test_a_note_being_issued_or_a_viewer_is_refused(world: World, server: StripeTestServer) -> None:
    engine, gw_, invoices = world
    ask = CreditAsk(invoices[0].number or "", "amount", "duplicate", "1.00")
    remote = stripe_invoices.read_invoice(gw_, invoices[0].stripe_invoice_id or "")
    with Session(engine) as s:
        planned = plan(s, ask, remote)
    claimed, _created = cn._claim(engine, planned, "ana@example.com", DEMO_NOW)
    with pytest.raises(ValidationError, match="still being issued: run the same credit-note"):
        void_credit_note(engine, gw_, ADMIN, f"#{claimed.id}")
    viewer = Identity("finance@example.com", "viewer", "proxy")
    with pytest.raises(PermissionDenied, match="may not void credit notes"):
        void_credit_note(engine, gw_, viewer, f"#{claimed.id}")
    assert server.request_count("/void", "POST") == 0
