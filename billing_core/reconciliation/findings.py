"""Reconciliation findings beyond Stripe: invoiced AWS costs against the latest cost snapshot
(restatements, late credits) and billed overage against recorded usage."""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Mapping
from decimal import Decimal
from typing import Any

from sqlalchemy import select as sa_select
from sqlmodel import Session, col, select

from billing_core.costs.attribution import attributed_costs
from billing_core.costs.snapshots import CostSource
from billing_core.customers.terms import terms_in_force
from billing_core.errors import ExchangeRateMissing
from billing_core.exchange_rates.convert import Rates
from billing_core.exchange_rates.rates import load_rates
from billing_core.invoicing.pricing import aws_amount, overage_amount, overage_quantity
from billing_core.models import (
    Customer,
    Invoice,
    Plan,
    PlanMetric,
    display_status_in,
)
from billing_core.money import Money
from billing_core.periods import Period
from billing_core.reconciliation.diffing import (
    BilledInvoice,
    Finding,
    Tolerance,
    UsageFigure,
    compare_aws,
    compare_usage,
)
from billing_core.reconciliation.gather import BILLED_STATUSES, _lines_by_invoice
from billing_core.states import LineKind
from billing_core.usage.totals import totals_by_metric

log = logging.getLogger(__name__)


def _latest_costs_by_customer_service(
    session: Session, period: Period, source: CostSource
) -> dict[tuple[int, str], Decimal] | None:
    """USD cost per (customer id, service or record type) from the latest snapshot of `source`
    (the configured metric and grouping); None if there is none.

    Every record type counts (usage, credits, refunds, support fees), since a restatement is
    exactly AWS adding those later. Unattributed costs are left out: no customer was billed.
    """
    attributed = attributed_costs(session, period, source)
    if attributed.snapshot_id is None:
        return None
    out: dict[tuple[int, str], Decimal] = {}
    for table in (attributed.usage, attributed.adjustments):
        for cid, amounts in table.items():
            for key, amount in amounts.items():
                out[(cid, key)] = out.get((cid, key), Decimal(0)) + amount
    return out


def billed_invoices(session: Session, period: Period) -> dict[int, Any]:
    """Issued invoices of the period by customer id (demo invoices included), as rows with the
    Invoice fields reconciliation reads (id, customer_id, currency, fx_rate, cost_currency,
    cost_metric, cost_group_by) as attributes: plain rows, 50,000 of them load quickly."""
    rows = session.connection().execute(
        sa_select(
            col(Invoice.id),
            col(Invoice.customer_id),
            col(Invoice.currency),
            col(Invoice.fx_rate),
            col(Invoice.cost_currency),
            col(Invoice.cost_metric),
            col(Invoice.cost_group_by),
        )
        .where(col(Invoice.period) == str(period), display_status_in(BILLED_STATUSES))
        .order_by(col(Invoice.id))
    )
    return {row.customer_id: row for row in rows}


def _invoice_rates(rates: Rates, invoice: Any) -> Rates:
    """The period's rates, with the invoice currency's taken from the invoice (as billed)."""
    if invoice.fx_rate is None:
        return rates
    return rates.with_rate(invoice.currency, invoice.fx_rate)


def _billed(invoices: Mapping[int, Any]) -> dict[int, BilledInvoice]:
    return {cid: BilledInvoice(inv.id or 0, cid, inv.currency) for cid, inv in invoices.items()}


def aws_findings(
    session: Session,
    period: Period,
    tolerance: Tolerance,
    source: CostSource,
    plans: Mapping[int, Plan] | None = None,
) -> tuple[list[Finding], dict[str, Any]] | None:
    """Section (b); None when the period has no snapshot of `source` (the section is skipped).

    `plans`: plans_in_force(session, period) when the caller has it already."""
    latest_usd = _latest_costs_by_customer_service(session, period, source)
    if latest_usd is None:
        return None
    invoices = billed_invoices(session, period)
    lines = _lines_by_invoice(session, period, LineKind.AWS)
    invoiced: dict[tuple[int, str], int] = defaultdict(int)
    for cid, inv in invoices.items():
        for line in lines.get(inv.id or 0, []):
            if line.kind == LineKind.AWS:
                invoiced[(cid, line.service or line.description)] += line.amount_minor
    latest_of: dict[int, list[tuple[str, Decimal]]] = defaultdict(list)
    for (c, service), usd in latest_usd.items():
        latest_of[c].append((service, usd))
    latest: dict[tuple[int, str], int] = {}
    skipped: list[str] = []
    left_out: set[int] = set()
    customers = dict(session.exec(select(Customer.id, Customer.name)).all())
    plans = plans_in_force(session, period) if plans is None else plans
    for cid, inv in invoices.items():
        name = customers[cid]
        if inv.cost_metric is not None and (inv.cost_metric, inv.cost_group_by) != (
            source.metric,
            source.group_by,
        ):
            # Priced from other figures (the settings changed since): comparing them with the
            # configured ones would report the change of metric as an AWS restatement.
            skipped.append(
                f"{name}: invoiced from {inv.cost_metric} by {inv.cost_group_by}, "
                f"not the configured {source}"
            )
            left_out.add(cid)
            continue
        plan = plans.get(cid)
        no_rate = inv.currency.upper() != inv.cost_currency.upper() and inv.fx_rate is None
        if plan is None or no_rate:
            skipped.append(f"{name}: no plan or exchange rate on the invoice")
            left_out.add(cid)
            continue
        rates = _invoice_rates(Rates(str(period)), inv)
        for service, usd in latest_of.get(cid, ()):
            amount = aws_amount(usd, plan.markup_pct, currency=inv.currency, rates=rates)
            latest[(cid, service)] = amount.to_minor()
    if left_out:
        invoiced = defaultdict(int, {k: v for k, v in invoiced.items() if k[0] not in left_out})
    findings = compare_aws(_billed(invoices), invoiced, latest, tolerance, str(period))
    return findings, {"skipped": skipped}


def plans_in_force(session: Session, period: Period) -> dict[int, Plan]:
    """Customer id -> the plan that priced `period` (effective-dated, customers/terms.py)."""
    plans = {p.id: p for p in session.exec(select(Plan)).all()}
    return {
        cid: plans[t.plan_id]
        for cid, t in terms_in_force(session, period).items()
        if t.plan_id in plans
    }


def usage_findings(
    session: Session,
    period: Period,
    tolerance: Tolerance,
    plans: Mapping[int, Plan] | None = None,
) -> list[Finding]:
    """Section (c): overage lines on the invoices vs overage from the recorded usage.

    `plans`: plans_in_force(session, period) when the caller has it already."""
    invoices = billed_invoices(session, period)
    lines = _lines_by_invoice(session, period, LineKind.OVERAGE)
    charged: dict[tuple[int, str], UsageFigure] = {}
    for cid, inv in invoices.items():
        for line in lines.get(inv.id or 0, []):
            if line.kind == LineKind.OVERAGE and line.metric:
                prev = charged.get((cid, line.metric), UsageFigure(Decimal(0), 0))
                charged[(cid, line.metric)] = UsageFigure(
                    prev.quantity + line.quantity, prev.amount_minor + line.amount_minor
                )
    used = totals_by_metric(session, period)
    used_by: dict[int, dict[str, Decimal]] = defaultdict(dict)
    for (c, metric), quantity in used.items():
        used_by[c][metric] = quantity
    period_rates = load_rates(session, period)
    customers = dict(session.exec(select(Customer.id, Customer.name)).all())
    recorded: dict[tuple[int, str], UsageFigure] = {}
    metrics_of: dict[int, list[PlanMetric]] = defaultdict(list)
    for m in session.exec(select(PlanMetric)).all():
        metrics_of[m.plan_id].append(m)
    plans = plans_in_force(session, period) if plans is None else plans
    unpriced: set[int] = set()
    for cid in sorted(used_by):
        billed = invoices.get(cid)
        plan = plans.get(cid) if billed else None
        if billed is None or plan is None:
            continue  # nothing billed: usage of an unbilled month is not a billing difference
        try:
            for metric, figure in _priced_usage(
                used_by[cid], metrics_of[plan.id or 0], plan.currency, billed, period_rates
            ).items():
                recorded[(cid, metric)] = figure
        except ExchangeRateMissing as exc:
            log.warning("usage of %s not reconciled: %s", customers[cid], exc)
            unpriced.add(cid)
    if unpriced:
        charged = {k: v for k, v in charged.items() if k[0] not in unpriced}
    return compare_usage(_billed(invoices), charged, recorded, tolerance)


def _priced_usage(
    quantities: Mapping[str, Decimal],
    metrics: list[PlanMetric],
    plan_currency: str,
    invoice: Any,
    rates: Rates,
) -> dict[str, UsageFigure]:
    """Overage per metric priced as the invoice line is: the plan's price, converted to the
    invoice currency at the invoice's rate, rounded once."""
    rates = _invoice_rates(rates, invoice)
    out: dict[str, UsageFigure] = {}
    for metric in metrics:
        quantity = quantities.get(metric.metric, Decimal(0))
        over = overage_quantity(quantity, metric.included_quantity)
        if over > 0:
            unit_price = Money(metric.overage_unit_price, plan_currency)
            amount = overage_amount(
                quantity,
                metric.included_quantity,
                unit_price,
                currency=invoice.currency,
                rates=rates,
            )
            out[metric.metric] = UsageFigure(over, amount.to_minor())
    return out
