"""Reconciliation findings beyond Stripe: invoiced AWS costs against the latest cost snapshot
(restatements, late credits) and billed overage against recorded usage."""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Mapping
from decimal import Decimal
from typing import Any

from sqlmodel import Session, select

from billing_core.costs.attribution import attributed_costs
from billing_core.customers.plans import effective_plan
from billing_core.models import (
    Customer,
    Invoice,
    PlanMetric,
    display_status_in,
)
from billing_core.money import round_minor
from billing_core.periods import Period
from billing_core.reconciliation.diffing import (
    BilledInvoice,
    Finding,
    Tolerance,
    UsageFigure,
    compare_aws,
    compare_usage,
    expected_aws_minor,
)
from billing_core.reconciliation.gather import BILLED_STATUSES, _lines_by_invoice
from billing_core.states import LineKind
from billing_core.usage.overage import overage_amount, overage_quantity
from billing_core.usage.totals import totals_by_metric

log = logging.getLogger(__name__)


def _latest_costs_by_customer_service(
    session: Session, period: Period
) -> dict[tuple[int, str], Decimal] | None:
    """USD cost per (customer id, service or record type) from the latest snapshot; None if none.

    Every record type counts (usage, credits, refunds, support fees), since a restatement is
    exactly AWS adding those later. Unattributed costs are left out: no customer was billed.
    """
    attributed = attributed_costs(session, period)
    if attributed.snapshot_id is None:
        return None
    out: dict[tuple[int, str], Decimal] = {}
    for table in (attributed.usage, attributed.adjustments):
        for cid, amounts in table.items():
            for key, amount in amounts.items():
                out[(cid, key)] = out.get((cid, key), Decimal(0)) + amount
    return out


def billed_invoices(session: Session, period: Period) -> dict[int, Invoice]:
    """Issued invoices of the period by customer id (demo invoices included)."""
    invoices = session.exec(
        select(Invoice).where(Invoice.period == str(period), display_status_in(BILLED_STATUSES))
    ).all()
    return {i.customer_id: i for i in invoices}


def _billed(invoices: Mapping[int, Invoice]) -> dict[int, BilledInvoice]:
    return {cid: BilledInvoice(inv.id or 0, cid, inv.currency) for cid, inv in invoices.items()}


def aws_findings(
    session: Session, period: Period, tolerance: Tolerance
) -> tuple[list[Finding], dict[str, Any]] | None:
    """Section (b); None when the period has no cost snapshot (the section is skipped)."""
    latest_usd = _latest_costs_by_customer_service(session, period)
    if latest_usd is None:
        return None
    invoices = billed_invoices(session, period)
    ids = [i.id for i in invoices.values() if i.id is not None]
    lines = _lines_by_invoice(session, ids, LineKind.AWS)
    invoiced: dict[tuple[int, str], int] = defaultdict(int)
    for cid, inv in invoices.items():
        for line in lines.get(inv.id or 0, []):
            if line.kind == LineKind.AWS:
                invoiced[(cid, line.service or line.description)] += line.amount_minor
    latest: dict[tuple[int, str], int] = {}
    skipped: list[str] = []
    customers = {c.id: c for c in session.exec(select(Customer)).all()}
    for cid, inv in invoices.items():
        customer = customers[cid]
        plan = effective_plan(session, customer, period)
        rate = inv.fx_rate if inv.currency.upper() != inv.cost_currency.upper() else Decimal(1)
        if plan is None or rate is None:
            skipped.append(f"{customer.name}: no plan or exchange rate on the invoice")
            invoiced = defaultdict(int, {k: v for k, v in invoiced.items() if k[0] != cid})
            continue
        for (c, service), usd in latest_usd.items():
            if c == cid:
                latest[(cid, service)] = expected_aws_minor(
                    usd, plan.markup_pct, rate, inv.currency
                )
    findings = compare_aws(_billed(invoices), invoiced, latest, tolerance, str(period))
    return findings, {"skipped": skipped}


def usage_findings(session: Session, period: Period, tolerance: Tolerance) -> list[Finding]:
    """Section (c): overage lines on the invoices vs overage from the recorded usage."""
    invoices = billed_invoices(session, period)
    ids = [i.id for i in invoices.values() if i.id is not None]
    lines = _lines_by_invoice(session, ids, LineKind.OVERAGE)
    charged: dict[tuple[int, str], UsageFigure] = {}
    for cid, inv in invoices.items():
        for line in lines.get(inv.id or 0, []):
            if line.kind == LineKind.OVERAGE and line.metric:
                prev = charged.get((cid, line.metric), UsageFigure(Decimal(0), 0))
                charged[(cid, line.metric)] = UsageFigure(
                    prev.quantity + line.quantity, prev.amount_minor + line.amount_minor
                )
    used = totals_by_metric(session, period)
    customers = {c.id: c for c in session.exec(select(Customer)).all()}
    recorded: dict[tuple[int, str], UsageFigure] = {}
    metrics_of: dict[int, list[PlanMetric]] = defaultdict(list)
    for m in session.exec(select(PlanMetric)).all():
        metrics_of[m.plan_id].append(m)
    for cid in sorted({c for c, _metric in used}):
        billed = invoices.get(cid)
        plan = effective_plan(session, customers[cid], period) if billed else None
        if billed is None or plan is None:
            continue  # nothing billed: usage of an unbilled month is not a billing difference
        for metric in metrics_of[plan.id or 0]:
            quantity = used.get((cid, metric.metric), Decimal(0))
            over = overage_quantity(quantity, metric.included_quantity)
            if over > 0:
                amount = overage_amount(
                    quantity, metric.included_quantity, metric.overage_unit_price
                )
                recorded[(cid, metric.metric)] = UsageFigure(
                    over, round_minor(amount, billed.currency)
                )
    return compare_usage(_billed(invoices), charged, recorded, tolerance)
