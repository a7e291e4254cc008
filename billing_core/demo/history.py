"""Twelve months of demo invoices with paid, open, failed and void outcomes."""

from __future__ import annotations

from datetime import datetime, timedelta
from decimal import Decimal

from sqlmodel import Session, select

from billing_core.demo.catalog import (
    CUSTOMERS,
    FX_SOURCE,
    DemoCustomer,
    monthly_service_costs,
    usd_to,
)
from billing_core.invoicing.line_text import month_label, service_label
from billing_core.models import Customer, ExchangeRate, Invoice, InvoiceLine, Plan
from billing_core.money import round_minor
from billing_core.periods import Period
from billing_core.states import DisplayStatus, LineKind, PushStep, split_display_status

_UNIT_PRECISION = Decimal("0.0000000001")
# (customer key, months before the newest demo month) -> outcome other than "paid".
_OUTCOMES: dict[tuple[str, int], DisplayStatus] = {
    ("dune", 0): DisplayStatus.OPEN,
    ("granite", 0): DisplayStatus.OPEN,
    ("birch", 0): DisplayStatus.FAILED,
    ("fjord", 2): DisplayStatus.FAILED,
    ("iris", 5): DisplayStatus.VOID,
    ("granite", 7): DisplayStatus.UNCOLLECTIBLE,
}


def seed_invoice_history(session: Session, now: datetime) -> dict[str, int]:
    from billing_core.demo import demo_history_periods

    periods = demo_history_periods(now)
    customers = {c.email: c for c in session.exec(select(Customer)).all()}
    plans = {p.id: p for p in session.exec(select(Plan)).all()}
    currencies = sorted({c.currency for c in CUSTOMERS} - {"USD"})
    for period in periods:
        for cur in currencies:
            session.add(
                ExchangeRate(
                    period=str(period),
                    base="USD",
                    quote=cur,
                    rate=usd_to(cur, period),
                    source=FX_SOURCE,
                )
            )
    count = 0
    seq = 0
    for age, period in enumerate(reversed(periods)):
        for spec in CUSTOMERS:
            seq += 1
            customer = customers[spec.email]
            plan = plans[customer.plan_id]
            outcome = _OUTCOMES.get((spec.key, age), DisplayStatus.PAID)
            _add_invoice(session, customer, plan, spec, period, outcome, seq)
            count += 1
    return {"invoices": count, "exchange rates": len(periods) * len(currencies)}


def _add_invoice(
    session: Session,
    customer: Customer,
    plan: Plan,
    spec: DemoCustomer,
    period: Period,
    outcome: DisplayStatus,
    seq: int,
) -> None:
    rate = usd_to(customer.currency, period)
    markup = Decimal(1) + plan.markup_pct / Decimal(100)
    issued = period.end_at + timedelta(days=3, hours=6)
    invoice = Invoice(
        customer_id=customer.id or 0,
        customer_name=customer.name,
        customer_email=customer.email,
        period=str(period),
        currency=customer.currency,
        status=split_display_status(outcome)[0],
        outcome=split_display_status(outcome)[1],
        cost_currency="USD",
        fx_rate=rate if customer.currency != "USD" else None,
        fx_source=FX_SOURCE if customer.currency != "USD" else None,
        collection_method=customer.collection_method,
        push_step=PushStep.PAID if outcome == DisplayStatus.PAID else PushStep.FINALIZED,
        number=f"DEMO-{period}-{seq:04d}",
        is_demo=True,
        issued_at=issued,
        due_at=issued + timedelta(days=customer.days_until_due)
        if customer.collection_method == "send_invoice"
        else issued,
        created_at=issued,
        updated_at=issued,
    )
    session.add(invoice)
    session.flush()
    lines = [
        InvoiceLine(
            invoice_id=invoice.id or 0,
            position=0,
            kind=LineKind.BASE_FEE,
            description=f"{plan.name.title()} plan, {month_label(str(period))}",
            unit_amount=Decimal(plan.base_fee_minor) / 100,
            amount_minor=plan.base_fee_minor,
        )
    ]
    for pos, (service, usd) in enumerate(sorted(monthly_service_costs(spec, period).items()), 1):
        lines.append(
            InvoiceLine(
                invoice_id=invoice.id or 0,
                position=pos,
                kind=LineKind.AWS,
                description=f"{service_label(service)}, {month_label(str(period))}",
                service=service,
                unit_amount=(usd * markup * rate).quantize(_UNIT_PRECISION),
                amount_minor=round_minor(usd * markup * rate, customer.currency),
            )
        )
    session.add_all(lines)
    total = sum(line.amount_minor for line in lines)
    invoice.subtotal_minor = total
    invoice.total_minor = total
    if outcome == DisplayStatus.PAID:
        invoice.amount_paid_minor = total
        invoice.paid_at = issued + timedelta(days=1 + seq % 9)
        invoice.attempt_count = 1
    elif outcome == DisplayStatus.FAILED:
        invoice.attempt_count = 2
        invoice.next_payment_attempt = issued + timedelta(days=5)
        invoice.last_error = "Card declined (insufficient_funds)."
    elif outcome == DisplayStatus.UNCOLLECTIBLE:
        invoice.attempt_count = 4
        invoice.last_error = "Marked uncollectible after four failed attempts."
