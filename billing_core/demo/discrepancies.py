"""Deliberate reconciliation discrepancies in the newest demo month, found by the real code.

- (b) A newer cost snapshot of that month in which AWS restated three customers' costs (a late
  EC2 credit, an S3 refund, a support fee) and one by a cent (within the tolerance).
- (c) Usage reported after the month was billed, above two customers' plan limits.
- (a) Demo invoices are not Stripe objects, so a canned list shaped like Stripe's invoice list
  stands in for Stripe; it disagrees with the local invoices in every way section (a) checks.
  Its findings carry the ``demo/`` subject prefix, so live runs never mark them gone.

Everything goes through the same diffing and storing code as `python -m billing_core reconcile`.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

from sqlmodel import Session, col, select

from billing_core.costs.rollups import write_rollups
from billing_core.demo.catalog import CUSTOMERS, UNATTRIBUTED_ACCOUNTS, monthly_service_costs
from billing_core.demo.costs import DEMO_COST_SOURCE
from billing_core.models import (
    CostLine,
    CostSnapshot,
    Customer,
    Invoice,
    InvoiceLine,
    ReconciliationRun,
    UsageRecord,
)
from billing_core.periods import Period
from billing_core.reconciliation.diffing import (
    AWS_KINDS,
    STRIPE_KINDS,
    USAGE_KINDS,
    Tolerance,
    compare_invoices,
    tally,
)
from billing_core.reconciliation.findings import aws_findings, usage_findings
from billing_core.reconciliation.gather import DEMO_SCOPE, local_record, stripe_record
from billing_core.reconciliation.runs import store_findings
from billing_core.states import InvoiceStatus, ReconciliationStatus

# (customer key, service, record type, USD amount) that AWS added after the month was billed.
RESTATEMENTS: tuple[tuple[str, str, str, Decimal], ...] = (
    ("acme", "Amazon Elastic Compute Cloud - Compute", "Credit", Decimal("-120.00")),
    ("cobalt", "Amazon Simple Storage Service", "Refund", Decimal("-85.50")),
    ("ember", "AWS Support (Business)", "Support fee", Decimal("310.00")),
    ("harbor", "Amazon Simple Storage Service", "Usage", Decimal("0.05")),  # within tolerance
)
# (customer key, metric, quantity) reported after billing, above the plan's included quantity.
LATE_USAGE: tuple[tuple[str, str, Decimal], ...] = (
    ("birch", "storage_gb", Decimal(80)),
    ("fjord", "seats", Decimal(5)),
)
EXTRA_STRIPE_INVOICE = "in_demo_outside_tool"


def seed_discrepancies(session: Session, now: datetime) -> dict[str, int]:
    from billing_core.demo import demo_history_periods

    period = demo_history_periods(now)[-1]
    customers = {c.email: c for c in session.exec(select(Customer)).all()}
    by_key = {spec.key: customers[spec.email] for spec in CUSTOMERS}
    _restated_snapshot(session, period, now)
    _late_usage(session, period, by_key)
    session.flush()

    tolerance = Tolerance()
    run = ReconciliationRun(
        period=str(period), actor="demo", status=ReconciliationStatus.RUNNING, started_at=now
    )
    session.add(run)
    session.flush()
    canned = _canned_stripe_findings(session, period, by_key, tolerance)
    aws = aws_findings(session, period, tolerance, DEMO_COST_SOURCE)
    local = (aws[0] if aws else []) + usage_findings(session, period, tolerance)
    stats = store_findings(session, run, canned, STRIPE_KINDS, now=now, scope=DEMO_SCOPE)
    store_findings(session, run, local, AWS_KINDS + USAGE_KINDS, now=now)
    run.status = ReconciliationStatus.COMPLETE
    run.finished_at = now
    run.counts = {
        "kinds": tally(canned + local),
        "sections": ["aws", "stripe", "usage"],
        "notes": ["demo: section (a) compared with canned Stripe data"],
        "diffs": stats,
    }
    session.add(run)
    return {"reconciliation diffs": len(canned) + len(local)}


def _restated_snapshot(session: Session, period: Period, now: datetime) -> None:
    """A complete, newer snapshot of the month: the original figures plus the restatements."""
    snapshot = CostSnapshot(
        period=str(period),
        granularity="MONTHLY",
        group_by="LINKED_ACCOUNT",
        metric="UnblendedCost",
        source="demo: restated after billing",
        fetched_at=now,
    )
    session.add(snapshot)
    session.flush()
    day = period.start.isoformat()

    def line(account: str, service: str, amount: Decimal, record_type: str = "Usage") -> CostLine:
        return CostLine(
            snapshot_id=snapshot.id or 0,
            period=str(period),
            day=day,
            account_id=account,
            service=service,
            record_type=record_type,
            amount=amount,
            fetched_at=now,
        )

    for spec in CUSTOMERS:
        for service, usd in monthly_service_costs(spec, period).items():
            session.add(line(spec.accounts[0], service, usd))
    accounts = {spec.key: spec.accounts[0] for spec in CUSTOMERS}
    for key, service, record_type, usd in RESTATEMENTS:
        session.add(line(accounts[key], service, usd, record_type))
    session.add(line(UNATTRIBUTED_ACCOUNTS[0], "AWS CloudTrail", Decimal("42.1234567890")))
    session.flush()
    write_rollups(session, [snapshot.id or 0])  # lines stored by hand: their sums likewise


def _late_usage(session: Session, period: Period, by_key: dict[str, Customer]) -> None:
    for key, metric, quantity in LATE_USAGE:
        session.add(
            UsageRecord(
                customer_id=by_key[key].id or 0,
                metric=metric,
                quantity=quantity,
                occurred_at=period.start_at + timedelta(days=20),
                period=str(period),
                source="demo: reported after billing",
                idempotency_key=f"demo-late-usage:{period}:{key}:{metric}",
            )
        )


def _canned_stripe_findings(
    session: Session, period: Period, by_key: dict[str, Customer], tolerance: Tolerance
) -> list[Any]:
    """Section (a) against a canned Stripe invoice list derived from the demo invoices."""
    key_of = {c.id: key for key, c in by_key.items()}
    invoices = session.exec(
        select(Invoice).where(Invoice.period == str(period), col(Invoice.is_demo).is_(True))
    ).all()
    local, remote = [], []
    for inv in sorted(invoices, key=lambda i: i.id or 0):
        key = key_of[inv.customer_id]
        lines = session.exec(
            select(InvoiceLine)
            .where(InvoiceLine.invoice_id == inv.id)
            .order_by(col(InvoiceLine.position))
        ).all()
        stripe_id = f"in_demo_{period}_{key}"
        local.append(local_record(inv, f"cus_demo_{key}", lines, stripe_id=stripe_id))
        perturbed = _perturb(key, _as_stripe(inv, lines, stripe_id, f"cus_demo_{key}", period))
        if perturbed is not None:
            remote.append(perturbed)
    remote.append(_outside_invoice(period))
    customer_ids = {f"cus_demo_{key}": c.id or 0 for key, c in by_key.items()}
    records = [stripe_record(o, customer_ids) for o in remote]
    found = compare_invoices(local, records, tolerance)
    return [replace(f, subject=DEMO_SCOPE + f.subject) for f in found]


def _as_stripe(
    inv: Invoice, lines: Any, stripe_id: str, customer: str, period: Period
) -> dict[str, Any]:
    data = [{"description": li.description, "amount": li.amount_minor} for li in lines]
    return {
        "id": stripe_id,
        "object": "invoice",
        "customer": {"id": customer, "object": "customer"},
        "currency": inv.currency.lower(),
        "total": inv.total_minor,
        "status": str(inv.status),  # Stripe's status: a failed charge leaves it open
        "created": int((period.end_at + timedelta(days=3)).timestamp()),
        "metadata": {"local_invoice_id": str(inv.id), "period": str(period)},
        "lines": {"object": "list", "data": data, "has_more": False},
    }


def _bump_line(obj: dict[str, Any], index: int, amount: int) -> None:
    obj["lines"]["data"][index]["amount"] += amount


def _perturb(key: str, obj: dict[str, Any]) -> dict[str, Any] | None:
    """The planted (a) discrepancies, one customer each."""
    if key == "harbor":  # amount: a line charged EUR 15.00 more in Stripe
        _bump_line(obj, 1, 1500)
        obj["total"] += 1500
    elif key == "acme":  # amount and line within tolerance: one cent
        _bump_line(obj, 2, 1)
        obj["total"] += 1
    elif key == "cobalt":  # lines: two lines swapped USD 25.00, total unchanged
        _bump_line(obj, 1, 2500)
        _bump_line(obj, 2, -2500)
    elif key == "dune":  # status: paid in Stripe, open locally
        obj["status"] = InvoiceStatus.PAID
    elif key == "iris":  # missing in Stripe
        return None
    elif key == "fjord":  # currency
        obj["currency"] = "usd"
    elif key == "granite":  # customer deleted in Stripe
        obj["customer"] = {"id": obj["customer"]["id"], "object": "customer", "deleted": True}
    elif key == "ember":  # filed under another customer
        obj["customer"] = {"id": "cus_demo_cobalt", "object": "customer"}
    return obj


def _outside_invoice(period: Period) -> dict[str, Any]:
    """Missing locally: an invoice someone made in the Stripe dashboard."""
    line = {"description": "Consulting (created in the Stripe dashboard)", "amount": 25000}
    return {
        "id": EXTRA_STRIPE_INVOICE,
        "object": "invoice",
        "customer": {"id": "cus_demo_acme", "object": "customer"},
        "currency": "eur",
        "total": 25000,
        "status": InvoiceStatus.OPEN,
        "created": int((period.end_at + timedelta(days=9)).timestamp()),
        "metadata": {"period": str(period)},
        "lines": {"object": "list", "data": [line], "has_more": False},
    }
