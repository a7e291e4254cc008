"""Credit notes against the local Stripe test server: each kind on open and paid invoices,
totals checked in Stripe and locally, refusals that send nothing, repeats that change nothing,
concurrent requests that never over-credit, and a crash that the same request finishes."""

from __future__ import annotations

import csv
import io
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy.engine import Engine
from sqlmodel import Session, col, select

from billing_core.auth import cli_identity
from billing_core.config import Settings, load_settings
from billing_core.corrections import credit_notes as cn
from billing_core.corrections.credit_plan import CreditAsk
from billing_core.db import session_scope
from billing_core.demo.costs import DEMO_COST_SOURCE
from billing_core.errors import BillingError, PaymentProviderError, ValidationError
from billing_core.invoicing import export_csv as exports
from billing_core.invoicing import runs as invoicing_runs
from billing_core.invoicing.margin import group_margin, margin_facts
from billing_core.models import AuditEntry, CreditNote, Customer, Invoice, InvoiceLine
from billing_core.payments import sync
from billing_core.periods import Period
from billing_core.states import CreditNoteStatus, CreditState
from billing_core.stripe import gateway as gw
from billing_core.stripe import invoices as stripe_invoices
from billing_core.stripe.client import make_client
from billing_core.stripe.gateway import Gateway, RetryPolicy
from billing_core.views.invoices import InvoiceFilter, headline_figures
from tests.conftest import DEMO_NOW
from tests.support.stripe_server import StripeTestServer
from tests.support.stripe_world import settings_for as stripe_settings

P = Period.parse("2026-10")
KEY = "sk_test_credit_notes"
ADMIN = cli_identity("ana@example.com")


@pytest.fixture(scope="module")
def server() -> Iterator[StripeTestServer]:
    with StripeTestServer() as srv:
        yield srv


@pytest.fixture(autouse=True)
def _fresh(server: StripeTestServer, monkeypatch: pytest.MonkeyPatch) -> None:
    server.reset()
    monkeypatch.setattr(gw, "BACKOFF_SECONDS", 0.0)


def settings_for(server: StripeTestServer, db_url: str, tmp_path: Path) -> Settings:
    env = {
        "DATABASE_URL": db_url,
        "BILLING_MODE": "demo",
        "STRIPE_API_BASE": server.url,
        "STRIPE_API_KEY": KEY,
        "STRIPE_REQUESTS_PER_SECOND": "1000",
    }
    return load_settings(env, secrets_path=tmp_path / "none.toml")


def billed_world(engine: Engine, server: StripeTestServer, settings: Settings) -> list[Invoice]:
    """Bill October: the first customer is sent its invoice (it stays open), the others pay
    by card. Returns the pushed invoices, open one first."""
    with session_scope(engine) as s:
        customers = s.exec(select(Customer).order_by(col(Customer.id))).all()
        for i, cus in enumerate(customers):
            remote = server.create_customer_directly(email=cus.email, name=cus.name)
            cus.stripe_customer_id = remote["id"]
            server.attach_card(remote["id"])
            cus.collection_method = "send_invoice" if i == 0 else "charge_automatically"
            s.add(cus)
    result = invoicing_runs.run_invoices(
        engine, settings, invoicing_runs.RunOptions(P, attach_test_cards=False), now=DEMO_NOW
    )
    assert result.failed == 0, result
    with Session(engine) as s:
        rows = s.exec(
            select(Invoice).where(Invoice.period == str(P)).order_by(col(Invoice.id))
        ).all()
        return [r for r in rows if r.stripe_invoice_id and r.total_minor > 0]


def gateway(server: StripeTestServer) -> Gateway:
    return Gateway(
        make_client(stripe_settings(server)),
        requests_per_second=10_000,
        policy=RetryPolicy(backoff_seconds=0.0, network_retries=0, rate_limit_retries=0),
    )


@pytest.fixture
def world(
    demo_engine: Engine, server: StripeTestServer, demo_db_url: str, tmp_path: Path
) -> tuple[Engine, Gateway, list[Invoice]]:
    settings = settings_for(server, demo_db_url, tmp_path)
    return demo_engine, gateway(server), billed_world(demo_engine, server, settings)


def _local(engine: Engine, invoice_id: int) -> Invoice:
    with Session(engine) as s:
        row = s.get(Invoice, invoice_id)
        assert row is not None
        return row


def _lines(engine: Engine, invoice_id: int) -> list[InvoiceLine]:
    with Session(engine) as s:
        return list(
            s.exec(
                select(InvoiceLine)
                .where(InvoiceLine.invoice_id == invoice_id)
                .order_by(col(InvoiceLine.position))
            ).all()
        )


def test_each_kind_on_an_open_invoice_lowers_what_is_due(
    world: tuple[Engine, Gateway, list[Invoice]], server: StripeTestServer
) -> None:
    engine, gw_, invoices = world
    inv = invoices[0]
    assert inv.status == "open"
    lines = _lines(engine, inv.id or 0)
    first = lines[0]
    # A line, by amount: 1.00 of line 1.
    one = cn.issue(
        engine,
        gw_,
        ADMIN,
        CreditAsk(inv.number or "", "line", "order_change", amount="1.00", line=1, memo="m"),
    )
    # A custom amount, with the currency named.
    two = cn.issue(
        engine,
        gw_,
        ADMIN,
        CreditAsk(
            inv.number or "", "amount", "product_unsatisfactory", amount=f"2.00 {inv.currency}"
        ),
    )
    remote = server.invoice(inv.stripe_invoice_id or "")
    credited = 300  # 1.00 + 2.00 in minor units (the demo bills in two-decimal currencies)
    assert remote["pre_payment_credit_notes_amount"] == credited
    assert remote["amount_remaining"] == inv.total_minor - credited
    local = _local(engine, inv.id or 0)
    assert local.credited_minor == credited and local.credit_state == CreditState.PARTIALLY_CREDITED
    assert local.due_minor == inv.total_minor - credited
    assert [n["number"] for n in server.credit_notes(inv.stripe_invoice_id)] == [
        one.number,
        two.number,
    ]
    assert first.amount_minor >= 100
    # The whole invoice: what is left, so the invoice is fully credited and Stripe marks it paid.
    cn.issue(engine, gw_, ADMIN, CreditAsk(inv.number or "", "full", "duplicate"))
    remote = server.invoice(inv.stripe_invoice_id or "")
    assert remote["amount_remaining"] == 0 and remote["status"] == "paid"
    local = _local(engine, inv.id or 0)
    assert local.credited_minor == inv.total_minor and local.credit_state == CreditState.CREDITED
    with Session(engine) as s:
        notes = s.exec(select(CreditNote).where(CreditNote.invoice_id == inv.id)).all()
        assert sum(n.amount_minor for n in notes) == inv.total_minor
        assert all(n.status == CreditNoteStatus.ISSUED and n.stripe_credit_note_id for n in notes)
        audits = s.exec(select(AuditEntry).where(AuditEntry.action == "credit_note.issue")).all()
        assert [a.actor for a in audits] == ["ana@example.com"] * 3


def test_each_settlement_on_a_paid_invoice(
    world: tuple[Engine, Gateway, list[Invoice]], server: StripeTestServer
) -> None:
    engine, gw_, invoices = world
    inv = invoices[1]
    assert inv.status == "paid"
    number = inv.number or ""
    refund = cn.issue(
        engine, gw_, ADMIN, CreditAsk(number, "amount", "order_change", "3.00", settlement="refund")
    )
    cn.issue(
        engine,
        gw_,
        ADMIN,
        CreditAsk(number, "amount", "order_change", "2.00", settlement="customer_balance"),
    )
    cn.issue(
        engine,
        gw_,
        ADMIN,
        CreditAsk(number, "line", "duplicate", "1.00", line=1, settlement="out_of_band"),
    )
    assert refund.changed
    remote = server.invoice(inv.stripe_invoice_id or "")
    assert remote["post_payment_credit_notes_amount"] == 600
    charge = next(c for c in server.charges() if c["customer"] == remote["customer"])
    assert charge["amount_refunded"] == 300
    assert server.customer(remote["customer"])["balance"] == -200
    local = _local(engine, inv.id or 0)
    assert (local.credited_minor, local.amount_refunded_minor) == (600, 300)
    assert local.credit_state == CreditState.PARTIALLY_CREDITED
    # A paid invoice needs to know where the money goes: refused, nothing sent.
    before = server.request_count("/v1/credit_notes", "POST")
    with pytest.raises(ValidationError, match="choose a refund"):
        cn.issue(engine, gw_, ADMIN, CreditAsk(number, "amount", "order_change", "1.00"))
    assert server.request_count("/v1/credit_notes", "POST") == before


@pytest.mark.parametrize(
    ("ask", "message"),
    [
        (dict(mode="amount", amount="999999.00"), "more than is left to credit"),
        (dict(mode="amount", amount="1.00 XYZ"), "not a currency code"),
        (dict(mode="amount", amount="1.001"), "not an amount"),
        (dict(mode="line", line=99, amount="1.00"), "is not one"),
        (dict(mode="amount", amount="1.00", reason="because"), "not one of Stripe's"),
    ],
)
def test_refused_with_a_sentence_and_nothing_sent(
    world: tuple[Engine, Gateway, list[Invoice]],
    server: StripeTestServer,
    ask: dict[str, object],
    message: str,
) -> None:
    engine, gw_, invoices = world
    inv = invoices[0]
    fields: dict[str, object] = {"reason": "order_change", **ask}
    with pytest.raises(ValidationError, match=message):
        cn.issue(engine, gw_, ADMIN, CreditAsk(inv.number or "", **fields))  # type: ignore[arg-type]
    assert server.request_count("/v1/credit_notes", "POST") == 0
    with Session(engine) as s:
        assert s.exec(select(CreditNote)).all() == []


def test_another_currency_and_a_void_invoice_are_refused(
    world: tuple[Engine, Gateway, list[Invoice]], server: StripeTestServer
) -> None:
    engine, gw_, invoices = world
    inv = invoices[0]
    other = "USD" if inv.currency != "USD" else "EUR"
    with pytest.raises(ValidationError, match=f"not {other}"):
        cn.issue(
            engine,
            gw_,
            ADMIN,
            CreditAsk(inv.number or "", "amount", "order_change", f"1.00 {other}"),
        )
    server.void(inv.stripe_invoice_id or "")
    with session_scope(engine) as s:
        row = s.get(Invoice, inv.id)
        assert row is not None
        row.status = "void"  # type: ignore[assignment]
    with pytest.raises(ValidationError, match="is void"):
        cn.issue(engine, gw_, ADMIN, CreditAsk(inv.number or "", "full", "duplicate"))
    assert server.request_count("/v1/credit_notes", "POST") == 0


def test_the_same_request_twice_issues_one_note(
    world: tuple[Engine, Gateway, list[Invoice]], server: StripeTestServer
) -> None:
    engine, gw_, invoices = world
    ask = CreditAsk(invoices[0].number or "", "amount", "order_change", "1.00")
    first = cn.issue(engine, gw_, ADMIN, ask)
    again = cn.issue(engine, gw_, ADMIN, ask)
    assert first.changed and not again.changed and again.number == first.number
    assert "nothing changed" in again.message
    assert len(server.credit_notes()) == 1


def test_an_outage_mid_way_is_finished_by_the_same_request(
    world: tuple[Engine, Gateway, list[Invoice]], server: StripeTestServer
) -> None:
    engine, gw_, invoices = world
    ask = CreditAsk(invoices[0].number or "", "amount", "order_change", "1.00")
    # Stripe issues it, but the answer is lost: the note stays "issuing" locally.
    server.drop_response_next(1, path_contains="/v1/credit_notes")
    with pytest.raises(PaymentProviderError, match="run the same request again"):
        cn.issue(engine, gw_, ADMIN, ask)
    with Session(engine) as s:
        (note,) = s.exec(select(CreditNote)).all()
        assert note.status == CreditNoteStatus.ISSUING
    # Another request on the same invoice meanwhile: refused, nothing sent.
    with pytest.raises(ValidationError, match="being credited"):
        cn.issue(
            engine, gw_, ADMIN, CreditAsk(invoices[0].number or "", "amount", "duplicate", "2.00")
        )
    done = cn.issue(engine, gw_, ADMIN, ask)
    assert done.changed and len(server.credit_notes()) == 1
    assert _local(engine, invoices[0].id or 0).credited_minor == 100


def test_concurrent_credit_notes_never_over_credit(
    world: tuple[Engine, Gateway, list[Invoice]], server: StripeTestServer
) -> None:
    engine, gw_, invoices = world
    inv = invoices[0]
    server.latency = 0.05  # keeps each one in flight while the others try
    outcomes: list[object] = []

    def credit(memo: str) -> None:
        try:
            outcomes.append(
                cn.issue(
                    engine, gw_, ADMIN, CreditAsk(inv.number or "", "full", "duplicate", memo=memo)
                )
            )
        except BillingError as exc:
            outcomes.append(exc)

    threads = [threading.Thread(target=credit, args=(f"click {i}",)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    issued = [o for o in outcomes if isinstance(o, cn.IssueResult)]
    assert len(issued) == 1, outcomes
    remote = server.invoice(inv.stripe_invoice_id or "")
    assert remote["pre_payment_credit_notes_amount"] == inv.total_minor
    assert _local(engine, inv.id or 0).credited_minor == inv.total_minor
    assert len(server.credit_notes()) == 1


def test_preview_shows_the_split_and_creates_nothing(
    world: tuple[Engine, Gateway, list[Invoice]], server: StripeTestServer
) -> None:
    engine, gw_, invoices = world
    plan, text = cn.preview(engine, gw_, CreditAsk(invoices[0].number or "", "full", "duplicate"))
    assert plan.amount_minor == invoices[0].total_minor and "off the amount due" in text
    assert server.credit_notes() == [] and server.request_count("/v1/credit_notes/preview") == 1


def test_credit_notes_in_the_csv_exports_and_the_figures(
    world: tuple[Engine, Gateway, list[Invoice]], server: StripeTestServer
) -> None:
    engine, gw_, invoices = world
    opened, paid = invoices[0], invoices[1]
    cn.issue(engine, gw_, ADMIN, CreditAsk(opened.number or "", "amount", "duplicate", "5.00"))
    note = cn.issue(
        engine,
        gw_,
        ADMIN,
        CreditAsk(paid.number or "", "line", "order_change", "1.25", line=1, settlement="refund"),
    )
    selection = InvoiceFilter(period_from=str(P), period_to=str(P))
    out, lines_out = io.StringIO(), io.StringIO()
    with Session(engine) as s:
        summary = exports.write_invoices_csv(s, selection, out)
        exports.write_lines_csv(s, selection, lines_out)
        (fig,) = [f for f in headline_figures(s, selection) if f.currency == paid.currency]
    rows = list(csv.DictReader(io.StringIO(out.getvalue())))
    notes = [r for r in rows if r["document"] == "credit_note"]
    assert {(r["number"], r["total"], r["credits_invoice"]) for r in notes} >= {
        (note.number, "-1.25", paid.number)
    }
    assert next(r for r in notes if r["number"] == note.number)["amount_refunded"] == "1.25"
    lines = list(csv.DictReader(io.StringIO(lines_out.getvalue())))
    credit_lines = [r for r in lines if r["number"] == note.number]
    assert [(r["amount"], r["document"]) for r in credit_lines] == [("-1.25", "credit_note")]
    # The figures: billed stays what the invoices said; credit notes are counted apart, and
    # the open invoice's outstanding amount is what Stripe still asks for.
    same = [i for i in invoices if i.currency == paid.currency]
    assert fig.credit_notes == 125 + (500 if opened.currency == paid.currency else 0)
    assert summary.figures[paid.currency].credit_notes == fig.credit_notes
    if opened.currency == paid.currency:
        remote = server.invoice(opened.stripe_invoice_id or "")
        assert fig.outstanding == remote["amount_remaining"]
    assert fig.billed == sum(i.total_minor for i in same)
    # The margin: revenue is what was billed less what credit notes took back.
    with Session(engine) as s:
        margin = group_margin(margin_facts(s, [P], DEMO_COST_SOURCE), "month")
    (month,) = margin[paid.currency]
    assert month.revenue_parts["credit_notes"] == -fig.credit_notes
    assert month.revenue_minor == fig.billed - fig.credit_notes


def test_sync_takes_a_credit_note_voided_in_stripe(
    world: tuple[Engine, Gateway, list[Invoice]], server: StripeTestServer
) -> None:
    engine, gw_, invoices = world
    inv = invoices[0]
    issued = cn.issue(engine, gw_, ADMIN, CreditAsk(inv.number or "", "amount", "duplicate", "4"))
    with Session(engine) as s:
        note = s.get(CreditNote, issued.credit_note_id)
        assert note is not None and note.stripe_credit_note_id
    # Voided in Stripe's dashboard: the events bring it back.
    gw_.request(
        "post",
        f"/v1/credit_notes/{note.stripe_credit_note_id}/void",
        key="dashboard-void",
        doing="voiding in the dashboard",
    )
    result = sync.sync(engine, gw_)
    assert not result.failed
    with Session(engine) as s:
        note = s.get(CreditNote, issued.credit_note_id)
        assert note is not None and note.status == CreditNoteStatus.VOID
    assert _local(engine, inv.id or 0).credited_minor == 0


def test_killed_after_the_claim_and_before_stripe_the_same_request_issues_it_once(
    world: tuple[Engine, Gateway, list[Invoice]], server: StripeTestServer
) -> None:
    engine, gw_, invoices = world
    ask = CreditAsk(
        invoices[1].number or "", "line", "order_change", "2", line=1, settlement="refund"
    )
    remote = stripe_invoices.read_invoice(gw_, invoices[1].stripe_invoice_id or "")
    with Session(engine) as s:
        plan = cn.plan(s, ask, remote)
    # The process dies right after recording the claim: Stripe never heard of it.
    note, created = cn._claim(engine, plan, "ana@example.com", DEMO_NOW)
    assert created and note.status == CreditNoteStatus.ISSUING and server.credit_notes() == []
    done = cn.issue(engine, gw_, ADMIN, ask)
    assert done.changed and done.credit_note_id == note.id
    assert len(server.credit_notes()) == 1 and server.refunds()[0]["amount"] == 200
    assert not cn.issue(engine, gw_, ADMIN, ask).changed
