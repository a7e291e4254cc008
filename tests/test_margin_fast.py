"""The Overview's quicker margin read (`margin_facts(customers_in=...)`, lines summed in SQL,
the months it does not list customers of summed over their customers) gives the figures of a
plain computation that reads every invoice line one by one, to the minor unit: credit notes
(issued ones only), a voided invoice and its reissue (only the live revision counts), a failed
payment, a draft, a total not on its lines, two currencies and adjustment lines."""

from __future__ import annotations

from collections import defaultdict

from sqlmodel import Session, select

from billing_core.corrections.models import CreditNote
from billing_core.invoicing.figures import BILLED_STATUSES
from billing_core.invoicing.margin import (
    ADJUSTMENTS,
    ALL_CUSTOMERS,
    CREDIT_NOTES,
    REVENUE_PARTS,
    group_margin,
    margin_facts,
    part_of,
)
from billing_core.models import Invoice, InvoiceLine
from billing_core.states import (
    CreditNoteReason,
    CreditNoteStatus,
    InvoiceOutcome,
    InvoiceStatus,
    LineKind,
    display_status,
)
from tests.test_margin import (  # noqa: F401  (world is a fixture)
    OCT,
    SEP,
    SOURCE,
    add_invoice,
    add_snapshot,
    world,
)


def _credit_note(session: Session, invoice_id: int, amount: int, status: CreditNoteStatus) -> None:
    inv = session.get(Invoice, invoice_id)
    assert inv is not None
    session.add(
        CreditNote(
            invoice_id=invoice_id,
            customer_id=inv.customer_id,
            currency=inv.currency,
            status=status,
            reason=CreditNoteReason.ORDER_CHANGE,
            amount_minor=amount,
            pre_payment_minor=amount,
            request_key=f"test-{invoice_id}-{amount}-{status}",
            created_by="test",
        )
    )
    session.flush()


def _per_line(session: Session) -> dict[tuple[str, str], dict[str, int]]:
    """(currency, month) -> revenue parts and invoice count, reading every billed invoice and
    each of its lines in Python (the plain computation the SQL sums replace)."""
    out: dict[tuple[str, str], dict[str, int]] = defaultdict(
        lambda: dict.fromkeys([*REVENUE_PARTS, "invoices"], 0)
    )
    for inv in session.exec(select(Invoice)).all():
        shown = display_status(
            inv.status,
            inv.outcome,
            paid_minor=inv.amount_paid_minor,
            refunded_minor=inv.amount_refunded_minor,
        )
        if shown not in BILLED_STATUSES:
            continue
        parts = out[(inv.currency, inv.period)]
        parts["invoices"] += 1
        lines = session.exec(select(InvoiceLine).where(InvoiceLine.invoice_id == inv.id)).all()
        for line in lines:
            parts[part_of(line.kind)] += line.amount_minor
        parts[ADJUSTMENTS] += inv.total_minor - sum(line.amount_minor for line in lines)
        for note in session.exec(select(CreditNote).where(CreditNote.invoice_id == inv.id)):
            if note.status == CreditNoteStatus.ISSUED:
                parts[CREDIT_NOTES] -= note.amount_minor
    return dict(out)


def test_month_sums_equal_the_plain_per_line_computation(
    session: Session,
    world: dict[str, int],  # noqa: F811
) -> None:
    aster, basalt, cedar = world["aster"], world["basalt"], world["cedar"]
    sep_aster = session.exec(
        select(Invoice.id).where(Invoice.customer_id == aster, Invoice.period == str(SEP))
    ).one()
    voided = session.exec(
        select(Invoice.id).where(Invoice.customer_id == cedar, Invoice.period == str(SEP))
    ).one()
    # Cedar's voided September invoice, reissued: only the live revision counts.
    void = session.get(Invoice, voided)
    assert void is not None
    void.revision = 0  # room for the reissue as the next revision (add_invoice writes 1)
    session.flush()
    reissue = add_invoice(
        session, cedar, SEP, "USD", [(LineKind.BASE_FEE, None, 10000), (LineKind.AWS, "x", 5000)]
    )
    inv = session.get(Invoice, reissue)
    assert inv is not None
    inv.replaces_invoice_id = voided
    _credit_note(session, sep_aster, 700, CreditNoteStatus.ISSUED)
    _credit_note(session, sep_aster, 300, CreditNoteStatus.VOID)  # counts for nothing
    _credit_note(session, voided, 900, CreditNoteStatus.ISSUED)  # on a void invoice: nothing
    add_snapshot(session, OCT, [("111111111111", "Amazon EC2", "Usage", "80.00")])
    oct_aster = add_invoice(
        session,
        aster,
        OCT,
        "EUR",
        [
            (LineKind.BASE_FEE, None, 5000),
            (LineKind.AWS, "Amazon EC2", 9504),
            (LineKind.SHARED_COST, None, 120),
            (LineKind.TRUE_UP, None, -40),
        ],
        fx_rate="0.9",
    )
    inv = session.get(Invoice, oct_aster)
    assert inv is not None
    inv.total_minor += 3  # a total not on its lines counts, as an adjustment
    add_invoice(
        session,
        basalt,
        OCT,
        "USD",
        [(LineKind.BASE_FEE, None, 10000), (LineKind.OVERAGE, None, 2500)],
        status=InvoiceStatus.OPEN,
        outcome=InvoiceOutcome.PAYMENT_FAILED,
    )
    add_invoice(session, cedar, OCT, "USD", [(LineKind.BASE_FEE, None, 777)], status="draft")
    session.flush()

    plain = _per_line(session)
    assert set(plain) == {
        ("EUR", "2026-09"),
        ("EUR", "2026-10"),
        ("USD", "2026-09"),
        ("USD", "2026-10"),
    }
    assert plain[("EUR", "2026-09")][CREDIT_NOTES] == -700
    assert plain[("USD", "2026-09")]["invoices"] == 2  # Basalt and Cedar's reissue
    assert plain[("EUR", "2026-10")][ADJUSTMENTS] == -40 + 3
    every = margin_facts(session, [SEP, OCT], SOURCE, services=False)
    for customers_in in ([OCT], [SEP], []):
        fast = margin_facts(session, [SEP, OCT], SOURCE, services=False, customers_in=customers_in)
        summed = {str(p) for p in (SEP, OCT)} - {str(p) for p in customers_in}
        assert {f.customer_id for f in fast.facts if f.period in summed} <= {ALL_CUSTOMERS}
        # The months listed by customer keep their per-customer facts unchanged.
        assert {f: m for f, m in fast.facts.items() if f.period not in summed} == {
            f: m for f, m in every.facts.items() if f.period not in summed
        }
        for facts in (every, fast):
            by_month = group_margin(facts, "month")
            got = {
                (currency, row.key): {**row.revenue_parts, "invoices": row.invoices}
                for currency, rows in by_month.items()
                for row in rows
            }
            assert got == plain
            # AWS cost converted at each invoice's own rate: the same sum either way.
            assert {
                (c, r.key): (r.cost_usd, r.cost) for c, rows in by_month.items() for r in rows
            } == {
                (c, r.key): (r.cost_usd, r.cost)
                for c, rows in group_margin(every, "month").items()
                for r in rows
            }
        assert fast.months == every.months  # customers' USD cost stays per customer
