"""Events: store first, dedupe by id, apply by re-reading; sync from a cursor."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest
from sqlmodel import Session, select

from billing_core.db import session_scope
from billing_core.errors import PaymentProviderError, ValidationError
from billing_core.models import Customer, Invoice, ReconciliationDiff, StripeEvent, SyncState
from billing_core.payments import events as payments_events
from billing_core.payments import sync
from billing_core.stripe import mapping
from billing_core.views import invoices as invoice_views
from tests.support.stripe_server import StripeTestServer
from tests.support.stripe_world import StripeWorld, make_world

NOW = datetime(2026, 11, 21, 9, 0, tzinfo=UTC)


@pytest.fixture(scope="module")
def server() -> Iterator[StripeTestServer]:
    with StripeTestServer() as srv:
        yield srv


@pytest.fixture
def world(server: StripeTestServer, engine) -> StripeWorld:
    return make_world(server, engine)


def _store_and_apply(world: StripeWorld, payloads: list[dict]) -> list[str | None]:
    outcomes = []
    for payload in payloads:
        with session_scope(world.engine) as s:
            stored = payments_events.store_event(s, payload, source="webhook")
        outcomes.append(
            payments_events.process_event_id(
                world.engine, world.gateway, stored.event.id, now_fn=lambda: NOW
            )
            if stored.created
            else None
        )
    return outcomes


def _count(world: StripeWorld, model) -> int:
    with Session(world.engine) as s:
        return len(s.exec(select(model)).all())


@pytest.mark.parametrize(
    ("remote", "expected"),
    [
        ({"status": "draft"}, "draft"),
        ({"status": "open", "attempt_count": 0}, "open"),
        ({"status": "open", "attempt_count": 2}, "failed"),
        ({"status": "paid", "attempt_count": 1}, "paid"),
        ({"status": "void"}, "void"),
        ({"status": "uncollectible", "attempt_count": 4}, "uncollectible"),
    ],
)
def test_local_status_mapping(remote: dict, expected: str) -> None:
    assert mapping.local_status(remote) == expected


@pytest.mark.parametrize(
    "payload",
    [
        [],
        {"id": "nope", "type": "invoice.paid", "created": 1, "data": {"object": {}}},
        {"id": "evt_1", "type": "", "created": 1, "data": {"object": {}}},
        {"id": "evt_1", "type": "invoice.paid", "created": "yesterday", "data": {"object": {}}},
        {"id": "evt_1", "type": "invoice.paid", "created": 1, "data": {}},
    ],
)
def test_malformed_events_are_refused(payload, session) -> None:
    with pytest.raises(ValidationError):
        payments_events.store_event(session, payload, source="webhook")
    assert session.exec(select(StripeEvent)).all() == []


def test_paid_invoice_event_turns_local_invoice_paid(world: StripeWorld) -> None:
    cus = world.customer()
    local, remote = world.invoice(cus, status="open")
    world.server.pay_out_of_band(remote["id"])
    outcomes = _store_and_apply(world, world.server.events(type="invoice.*"))
    assert "applied" in outcomes
    row = world.local(local.id)
    assert row.status == "paid" and row.amount_paid_minor == 12_345 and row.paid_at
    assert row.number and row.hosted_invoice_url and row.invoice_pdf


def test_duplicate_event_is_applied_once(world: StripeWorld) -> None:
    cus = world.customer()
    local, remote = world.invoice(cus, status="open")
    world.server.pay_out_of_band(remote["id"])
    paid = world.server.events(type="invoice.paid")[-1]
    before = world.server.request_count(f"/v1/invoices/{remote['id']}", "GET")
    outcomes = _store_and_apply(world, [paid, paid, paid])
    assert outcomes == ["applied", None, None]
    assert world.server.request_count(f"/v1/invoices/{remote['id']}", "GET") == before + 1
    with Session(world.engine) as s:
        stored = s.exec(select(StripeEvent).where(StripeEvent.id == paid["id"])).all()
    assert len(stored) == 1 and stored[0].invoice_id == local.id


def test_out_of_order_events_end_in_the_right_state(world: StripeWorld) -> None:
    cus = world.customer(card="pm_card_chargeDeclined")
    local, remote = world.invoice(cus, status="open")
    with pytest.raises(Exception):  # noqa: B017  (the decline itself)
        world.client.v1.invoices.pay(remote["id"])
    world.server.attach_card(cus.stripe_customer_id, "pm_card_visa")
    world.client.v1.invoices.pay(remote["id"], {}, {"idempotency_key": "second-attempt"})
    history = world.server.events(type="invoice.*")
    # Newest first: paid arrives before the failure and the finalization.
    _store_and_apply(world, list(reversed(history)))
    row = world.local(local.id)
    assert row.status == "paid" and row.attempt_count == 2 and row.last_error is None


def test_failed_payment_shows_attempts_and_next_attempt(world: StripeWorld) -> None:
    cus = world.customer(card="pm_card_chargeDeclined")
    local, remote = world.invoice(cus, status="draft")
    world.client.v1.invoices.finalize_invoice(remote["id"], {"auto_advance": True})
    with pytest.raises(Exception):  # noqa: B017
        world.client.v1.invoices.pay(remote["id"])
    _store_and_apply(world, world.server.events(type="invoice.payment_failed"))
    row = world.local(local.id)
    assert row.display_status == "failed" and row.attempt_count == 1
    assert (row.status, row.outcome) == ("open", "payment_failed")  # Stripe's status kept
    assert row.next_payment_attempt is not None and "attempt 1 failed" in row.last_error


@pytest.mark.parametrize(
    ("card", "reason"),
    [
        (
            "pm_card_chargeDeclinedInsufficientFunds",
            "Your card has insufficient funds. (card_declined: insufficient_funds)",
        ),
        (
            "pm_card_chargeDeclinedExpiredCard",
            "Your card has expired. (expired_card: expired_card)",
        ),
        ("pm_card_chargeDeclined", "Your card was declined. (card_declined: generic_decline)"),
    ],
)
def test_failed_payment_reason_is_read_from_the_payment_intent(
    world: StripeWorld, card: str, reason: str
) -> None:
    """Stripe keeps the reason on the PaymentIntent (`last_payment_error`), not the invoice:
    each attempt shows its own, read with one request (payments expanded to their intents)."""
    cus = world.customer(card=card)
    local, remote = world.invoice(cus, status="open")
    with pytest.raises(Exception):  # noqa: B017
        world.client.v1.invoices.pay(remote["id"])
    before = world.server.request_count("/v1/", "GET")
    _store_and_apply(world, world.server.events(type="invoice.payment_failed"))
    assert world.server.request_count("/v1/", "GET") == before + 1
    row = world.local(local.id)
    assert row.last_error is not None and f"attempt 1 failed: {reason}." in row.last_error
    with Session(world.engine) as s:
        detail = invoice_views.invoice_detail(s, local.id or 0)
    assert detail is not None
    assert [a.detail for a in detail.attempts] == [f"attempt 1: {reason}"]


def test_a_later_attempt_keeps_its_own_reason(world: StripeWorld) -> None:
    cus = world.customer(card="pm_card_chargeDeclinedExpiredCard")
    local, remote = world.invoice(cus, status="open")
    with pytest.raises(Exception):  # noqa: B017
        world.client.v1.invoices.pay(remote["id"])
    _store_and_apply(world, world.server.events(type="invoice.payment_failed"))
    world.server.attach_card(cus.stripe_customer_id or "", "pm_card_chargeDeclined")
    with pytest.raises(Exception):  # noqa: B017
        world.client.v1.invoices.pay(remote["id"])
    _store_and_apply(world, world.server.events(type="invoice.payment_failed"))
    with Session(world.engine) as s:
        detail = invoice_views.invoice_detail(s, local.id or 0)
    assert detail is not None
    assert [a.detail for a in detail.attempts] == [
        "attempt 1: Your card has expired. (expired_card: expired_card)",
        "attempt 2: Your card was declined. (card_declined: generic_decline)",
    ]


@pytest.mark.parametrize("action", ["void", "mark_uncollectible"])
def test_void_and_uncollectible(world: StripeWorld, action: str) -> None:
    cus = world.customer()
    local, remote = world.invoice(cus, status="open")
    getattr(world.server, action)(remote["id"])
    _store_and_apply(world, world.server.events(type="invoice.*"))
    assert world.local(local.id).status == {"void": "void"}.get(action, "uncollectible")


def test_invoice_unknown_locally_is_a_finding(world: StripeWorld) -> None:
    cus = world.customer()
    remote = world.server.create_invoice_directly(
        cus.stripe_customer_id, 5_000, "eur", {"period": "2026-09"}, status="open"
    )
    finalized = world.server.events(type="invoice.finalized")
    assert _store_and_apply(world, finalized + finalized) == ["unmatched", None]
    # The same invoice seen again through another event updates the one finding.
    world.server.pay_out_of_band(remote["id"])
    _store_and_apply(world, world.server.events(type="invoice.paid"))
    with Session(world.engine) as s:
        diffs = s.exec(select(ReconciliationDiff)).all()
        ev = s.get(StripeEvent, finalized[0]["id"])
    assert len(diffs) == 1
    d = diffs[0]
    assert (d.kind, d.subject, d.period, d.currency) == (
        "missing_locally",
        remote["id"],
        "2026-09",
        "EUR",
    )
    assert d.customer_id == cus.id and d.remote_value == "paid 50.00 EUR"
    assert ev.outcome == "unmatched" and "missing_locally" in ev.error


def test_unlinked_local_invoice_is_linked_by_metadata(world: StripeWorld) -> None:
    cus = world.customer()
    local, remote = world.invoice(cus, status="open", link=False)
    _store_and_apply(world, world.server.events(type="invoice.finalized"))
    row = world.local(local.id)
    assert row.stripe_invoice_id == remote["id"] and row.status == "open"


def test_unknown_event_type_is_stored_and_ignored(world: StripeWorld, engine) -> None:
    payload = {
        "id": "evt_unknown_1",
        "type": "radar.early_fraud_warning.created",
        "created": 1_790_000_000,
        "data": {"object": {"id": "issfr_1"}},
    }
    assert _store_and_apply(world, [payload]) == ["ignored"]
    with Session(engine) as s:
        shown = sync.recent_events(s, outcome="ignored")
    assert [e.id for e in shown] == ["evt_unknown_1"]


def test_refund_is_mirrored(world: StripeWorld) -> None:
    cus = world.customer()
    local, remote = world.invoice(cus, status="open")
    world.client.v1.invoices.pay(remote["id"])
    charge = world.server.charges()[-1]
    world.client.v1.refunds.create({"charge": charge["id"], "amount": 2_000})
    # Only the refund event: the invoice is found through the customer's paid invoices.
    with session_scope(world.engine) as s:
        row = s.get(Invoice, local.id)
        row.status = "paid"
    assert _store_and_apply(world, world.server.events(type="charge.refunded")) == ["applied"]
    row = world.local(local.id)
    assert row.amount_refunded_minor == 2_000
    assert row.stripe_payment_intent_id == charge["payment_intent"]
    # A second refund finds it straight through the stored PaymentIntent.
    world.client.v1.refunds.create({"charge": charge["id"], "amount": 1_000})
    _store_and_apply(world, world.server.events(type="charge.refunded"))
    assert world.local(local.id).amount_refunded_minor == 3_000


def test_setup_checkout_completion_sets_default_payment_method(world: StripeWorld) -> None:
    cus = world.customer(card=None)
    session_obj = world.client.v1.checkout.sessions.create(
        {
            "mode": "setup",
            "customer": cus.stripe_customer_id,
            "currency": "eur",
            "success_url": "https://example.com/ok",
        }
    )
    world.server.complete_checkout_session(session_obj.id, "pm_card_mastercard")
    _store_and_apply(world, world.server.events())
    with Session(world.engine) as s:
        row = s.get(Customer, cus.id)
    assert row.default_payment_method == "card mastercard 4444"
    remote = world.server.customer(cus.stripe_customer_id)
    assert remote["invoice_settings"]["default_payment_method"]


def test_customer_updated_mirrors_default_card(world: StripeWorld) -> None:
    cus = world.customer(card=None)
    world.server.attach_card(cus.stripe_customer_id, "pm_card_amex")
    _store_and_apply(world, world.server.events(type="customer.updated"))
    with Session(world.engine) as s:
        assert s.get(Customer, cus.id).default_payment_method == "card amex 8431"


def test_sync_pulls_applies_and_resumes_from_cursor(world: StripeWorld) -> None:
    cus = world.customer()
    first, r1 = world.invoice(cus, status="open", period="2026-09")
    result = sync.sync(world.engine, world.gateway, page_size=2, now_fn=lambda: NOW)
    assert result.fetched == len(world.server.events()) and result.stored == result.fetched
    assert world.local(first.id).status == "open"
    cursor = result.cursor_after
    assert cursor == world.server.events()[-1]["id"]
    # Nothing new: no event is fetched again.
    assert sync.sync(world.engine, world.gateway, now_fn=lambda: NOW).fetched == 0
    world.server.pay_out_of_band(r1["id"])
    second, _ = world.invoice(cus, status="open", period="2026-10")
    seen = _count(world, StripeEvent)
    result = sync.sync(world.engine, world.gateway, page_size=2, now_fn=lambda: NOW)
    # Only what came after the cursor is fetched, over several pages.
    assert result.cursor_before == cursor
    assert result.fetched == result.stored == len(world.server.events()) - seen > 2
    assert world.local(first.id).status == "paid" and world.local(second.id).status == "open"
    assert _count(world, StripeEvent) == len(world.server.events())


def test_sync_with_stripe_unreachable_keeps_the_cursor(world: StripeWorld) -> None:
    cus = world.customer()
    local, remote = world.invoice(cus, status="open")
    sync.sync(world.engine, world.gateway, now_fn=lambda: NOW)
    with Session(world.engine) as s:
        cursor = s.get(SyncState, payments_events.CURSOR).value
    world.server.pay_out_of_band(remote["id"])
    world.server.fail_next(status=500, n=50)
    with pytest.raises(PaymentProviderError, match="cursor was not moved"):
        sync.sync(world.engine, world.gateway, now_fn=lambda: NOW)
    with Session(world.engine) as s:
        assert s.get(SyncState, payments_events.CURSOR).value == cursor
    world.server.clear_faults()
    sync.sync(world.engine, world.gateway, now_fn=lambda: NOW)
    assert world.local(local.id).status == "paid"


def _events_of(world: StripeWorld, object_id: str) -> list[StripeEvent]:
    with Session(world.engine) as s:
        return list(s.exec(select(StripeEvent).where(StripeEvent.object_id == object_id)).all())


def test_failed_event_is_retried_with_backoff_and_applied_later(world: StripeWorld) -> None:
    cus = world.customer()
    local, remote = world.invoice(cus, status="open")
    sync.sync(world.engine, world.gateway, now_fn=lambda: NOW)
    world.server.pay_out_of_band(remote["id"])
    with Session(world.engine) as s:
        cursor = sync.get_cursor(s)
    world.server.fail_next(status=503, n=1000, path_contains=f"/v1/invoices/{remote['id']}")
    result = sync.sync(world.engine, world.gateway, now_fn=lambda: NOW)
    # Stored, so the cursor moves on; the failure is kept on the event, not lost.
    assert result.exit_code == 1 and result.cursor_after != cursor
    assert world.local(local.id).status == "open"
    failed = {f.id: f for f in result.failed}
    paid = next(e for e in _events_of(world, remote["id"]) if e.type == "invoice.paid")
    assert failed[paid.id].attempts == 1 and "503" not in failed[paid.id].error
    assert failed[paid.id].error and failed[paid.id].next_attempt_at == NOW + timedelta(minutes=1)
    assert paid.outcome == "error" and paid.attempts == 1
    world.server.clear_faults()
    # Not due yet: nothing is read again.
    reads = world.server.request_count(f"/v1/invoices/{remote['id']}", "GET")
    assert sync.sync(world.engine, world.gateway, now_fn=lambda: NOW).exit_code == 1
    assert world.server.request_count(f"/v1/invoices/{remote['id']}", "GET") == reads
    later = NOW + timedelta(minutes=2)
    result = sync.sync(world.engine, world.gateway, now_fn=lambda: later)
    assert result.exit_code == 0 and result.failed == [] and result.fetched == 0
    assert world.local(local.id).status == "paid"
    assert {e.outcome for e in _events_of(world, remote["id"])} == {"applied"}
    assert {e.error for e in _events_of(world, remote["id"])} == {None}


def test_poison_event_does_not_block_the_others_and_stays_failed(world: StripeWorld) -> None:
    cus = world.customer()
    poison_local, poison = world.invoice(cus, status="open", period="2026-09")
    good_local, good = world.invoice(cus, status="open", period="2026-10")
    world.server.pay_out_of_band(poison["id"])
    world.server.pay_out_of_band(good["id"])
    world.server.fail_next(status=500, n=100_000, path_contains=f"/v1/invoices/{poison['id']}")
    when = NOW
    result = sync.sync(world.engine, world.gateway, now_fn=lambda: when)
    assert world.local(good_local.id).status == "paid"
    assert world.local(poison_local.id).status == "open" and result.exit_code == 1
    assert {f.id for f in result.failed} == {e.id for e in _events_of(world, poison["id"])}
    for _ in range(payments_events.MAX_ATTEMPTS + 2):
        when += timedelta(hours=7)
        result = sync.sync(world.engine, world.gateway, now_fn=lambda at=when: at)
        assert result.exit_code == 1
    # The cap: no more attempts, still failed and reported with its error.
    assert {(f.attempts, f.next_attempt_at) for f in result.failed} == {
        (payments_events.MAX_ATTEMPTS, None)
    }
    assert all("given up" in f.describe() and f.error for f in result.failed)
    with Session(world.engine) as s:
        assert payments_events.pending_event_ids(s, now=when + timedelta(days=30)) == []
    # The cause fixed, an operator retries the given-up events at once.
    world.server.clear_faults()
    result = sync.sync(world.engine, world.gateway, retry_failed=True, now_fn=lambda: when)
    assert result.exit_code == 0 and world.local(poison_local.id).status == "paid"


def test_stripe_outage_stops_the_pass_without_spending_every_events_attempt(
    world: StripeWorld,
) -> None:
    cus = world.customer()
    invoices = [world.invoice(cus, status="open", period=f"2026-0{m}") for m in range(4, 9)]
    sync.sync(world.engine, world.gateway, now_fn=lambda: NOW)
    for _, remote in invoices:
        world.server.pay_out_of_band(remote["id"])
    world.server.fail_next(status=500, n=100_000, path_contains="/v1/invoices/in_")
    with pytest.raises(PaymentProviderError, match="Stripe kept failing for 3 different objects"):
        sync.sync(world.engine, world.gateway, now_fn=lambda: NOW)
    with Session(world.engine) as s:
        attempted = {e.object_id for e in s.exec(select(StripeEvent)) if e.attempts}
        untried = payments_events.pending_event_ids(s)
    assert len(attempted) == payments_events.OUTAGE_OBJECTS and untried
    world.server.clear_faults()
    result = sync.sync(world.engine, world.gateway, now_fn=lambda: NOW + timedelta(minutes=2))
    assert result.exit_code == 0
    assert {world.local(local.id).status for local, _ in invoices} == {"paid"}


def test_a_bug_while_applying_is_recorded_and_retried(world: StripeWorld) -> None:
    cus = world.customer()
    _local, remote = world.invoice(cus, status="open")
    world.server.pay_out_of_band(remote["id"])
    paid = world.server.events(type="invoice.paid")[-1]
    broken = {**paid, "data": {"object": {"object": "invoice"}}}  # no id: the handler breaks
    assert _store_and_apply(world, [broken]) == ["error"]
    with Session(world.engine) as s:
        stored = s.get(StripeEvent, paid["id"])
        assert stored.attempts == 1 and "unexpected data" in stored.error


def test_reading_an_object_does_not_depend_on_its_expansion(world: StripeWorld) -> None:
    cus = world.customer()
    local, remote = world.invoice(cus, status="open")
    world.server.pay_out_of_band(remote["id"])
    # The expanded read is refused once; the plain read says the invoice is paid.
    world.server.fail_next(status=400, n=1, path_contains=f"/v1/invoices/{remote['id']}")
    paid = world.server.events(type="invoice.paid")[-1]
    assert _store_and_apply(world, [paid]) == ["applied"]
    assert world.local(local.id).status == "paid"


def test_sync_cursor_unknown_to_stripe_says_what_to_do(world: StripeWorld) -> None:
    with session_scope(world.engine) as s:
        sync.set_cursor(s, "evt_gone_long_ago", NOW)
    with pytest.raises(PaymentProviderError, match="--reset"):
        sync.sync(world.engine, world.gateway, now_fn=lambda: NOW)
    world.customer()
    result = sync.sync(world.engine, world.gateway, reset=True, now_fn=lambda: NOW)
    assert result.fetched == len(world.server.events())


def test_sync_reads_each_object_once_per_pass(world: StripeWorld) -> None:
    cus = world.customer()
    local, remote = world.invoice(cus, status="open")
    world.server.pay_out_of_band(remote["id"])
    invoice_events = world.server.events(type="invoice.*")
    assert len(invoice_events) >= 3
    sync.sync(world.engine, world.gateway, now_fn=lambda: NOW)
    assert world.server.request_count(f"/v1/invoices/{remote['id']}", "GET") == 1
    with Session(world.engine) as s:
        stored = s.exec(select(StripeEvent).where(StripeEvent.object_id == remote["id"])).all()
    assert {e.outcome for e in stored} == {"applied"} and {e.invoice_id for e in stored} == {
        local.id
    }
    assert world.local(local.id).status == "paid"
