"""Reconciliation findings beyond Stripe: invoiced AWS costs against the latest cost snapshot
(restatements, late credits) and billed overage against recorded usage."""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Mapping
from decimal import Decimal
from typing import Any

from sqlalchemy import Row
from sqlalchemy import select as sa_select
from sqlmodel import Session, col, select

from billing_core.costs.attribution import AttributedCosts, attributed_costs
from billing_core.costs.snapshots import CostSource
from billing_core.customers.terms import terms_in_force
from billing_core.errors import ExchangeRateMissing
from billing_core.exchange_rates.convert import Rates
from billing_core.exchange_rates.rates import load_rates
from billing_core.invoicing.aws_rules import items_from_mapping
from billing_core.invoicing.charge_models import usage_charge
from billing_core.invoicing.drafts import SharedCosts, shared_allocation
from billing_core.invoicing.pricing import aws_amount, aws_lines, usage_amount
from billing_core.invoicing.pricing_book import PricingBook, cost_items
from billing_core.invoicing.shared_costs import SharedAllocation
from billing_core.models import (
    Customer,
    Invoice,
    Plan,
    display_status_in,
)
from billing_core.periods import Period
from billing_core.reconciliation.diffing import (
    BilledInvoice,
    Finding,
    Tolerance,
    UsageFigure,
    compare_aws,
    compare_usage,
)
from billing_core.reconciliation.gather import BILLED_STATUSES, _lines_by_invoice, core_rows
from billing_core.states import LineKind, SharedCostRule
from billing_core.usage.totals import totals_by_metric

log = logging.getLogger(__name__)


#: The key invoiced and latest shared-cost amounts are compared under (one per customer).
SHARED_KEY = "Shared AWS costs"


def _latest_costs(
    session: Session, period: Period, source: CostSource, shared: SharedCosts
) -> tuple[AttributedCosts, SharedAllocation] | None:
    """Attributed costs from the latest snapshot of `source` (the configured metric and
    grouping) and the month's split of the shared pool; None if there is no snapshot.

    Every record type counts (usage, credits, refunds, support fees), since a restatement is
    exactly AWS adding those later. The shared pool is split as a run splits it (same rule,
    same participants) and each customer's share counts under `SHARED_KEY`.
    """
    attributed = attributed_costs(session, period, source, shared.scope)
    if attributed.snapshot_id is None:
        return None
    return attributed, shared_allocation(session, period, attributed, shared.policy)


# A billed invoice as `billed_invoices` reads it (attributes: id, customer_id, customer_name,
# currency, fx_rate, cost_currency, cost_metric, cost_group_by).
BilledRow = Row[int | None, int, str | None, str, Decimal | None, str, str | None, str | None]


def billed_invoices(session: Session, period: Period) -> dict[int, BilledRow]:
    """Issued invoices of the period by customer id (demo invoices included; a customer's
    last by id), in customer order: what reconciliation reports reads the same on every
    database. Rows with the Invoice fields reconciliation reads as attributes (id,
    customer_id, customer_name, currency, fx_rate, cost_currency, cost_metric, cost_group_by):
    plain rows, since building 50,000 ORM objects took seconds."""
    rows = core_rows(
        session,
        sa_select(
            col(Invoice.id),
            col(Invoice.customer_id),
            col(Invoice.customer_name),
            col(Invoice.currency),
            col(Invoice.fx_rate),
            col(Invoice.cost_currency),
            col(Invoice.cost_metric),
            col(Invoice.cost_group_by),
        )
        .where(col(Invoice.period) == str(period), display_status_in(BILLED_STATUSES))
        .order_by(col(Invoice.customer_id), col(Invoice.id)),
    )
    return {row.customer_id: row for row in rows}


def _customer_names(session: Session) -> dict[int, str]:
    rows = core_rows(session, sa_select(col(Customer.id), col(Customer.name)))
    return {cid: name for cid, name in rows if cid is not None}


def _invoice_rates(rates: Rates, invoice: BilledRow) -> Rates:
    """The period's rates, with the invoice currency's taken from the invoice (as billed)."""
    if invoice.fx_rate is None:
        return rates
    return rates.with_rate(invoice.currency, invoice.fx_rate)


def _billed(
    invoices: Mapping[int, BilledRow], *compared: Mapping[tuple[int, str], Any]
) -> dict[int, BilledInvoice]:
    """The billed invoices of the customers `compared` names (keys (customer id, ...))."""
    customers = {cid for figures in compared for cid, _ in figures}
    return {
        cid: BilledInvoice(inv.id or 0, cid, inv.currency)
        for cid, inv in invoices.items()
        if cid in customers
    }


def aws_findings(
    session: Session,
    period: Period,
    tolerance: Tolerance,
    source: CostSource,
    shared: SharedCosts | None = None,
) -> tuple[list[Finding], dict[str, Any]] | None:
    """Section (b); None when the period has no snapshot of `source` (the section is skipped).

    `shared`: the shared accounts/services and split rule the run used (SharedCosts.of)."""
    shared = shared or SharedCosts()
    latest_costs = _latest_costs(session, period, source, shared)
    if latest_costs is None:
        return None
    attributed, allocation = latest_costs
    book = PricingBook.load(session, period)
    invoices = billed_invoices(session, period)
    lines = _lines_by_invoice(session, period)
    invoiced: dict[tuple[int, str], int] = defaultdict(int)
    skipped: list[str] = []
    for cid, inv in invoices.items():
        for line in lines.get(inv.id or 0, ()):
            if line.kind == LineKind.AWS:
                invoiced[(cid, line.service or line.description)] += line.amount_minor
            elif line.kind == LineKind.SHARED_COST:
                if shared.policy.rule == SharedCostRule.UNBILLED:
                    # Split by a rule since switched off: no split to compare with, and
                    # "should be 0" would be the change of setting, not an AWS restatement.
                    skipped.append(
                        f"{inv.customer_name or cid}: shared AWS costs not compared "
                        "(SHARED_COST_RULE is now unbilled)"
                    )
                    continue
                invoiced[(cid, SHARED_KEY)] += line.amount_minor
    latest: dict[tuple[int, str], int] = {}
    names = _customer_names(session)
    plans = _plans_in_force(session, period)
    left_out: set[int] = set()  # not compared: their invoiced amounts are dropped below
    for cid, inv in invoices.items():
        if inv.cost_metric is not None and (inv.cost_metric, inv.cost_group_by) != (
            source.metric,
            source.group_by,
        ):
            # Priced from other figures (the settings changed since): comparing them with the
            # configured ones would report the change of metric as an AWS restatement.
            skipped.append(
                f"{names[cid]}: invoiced from {inv.cost_metric} by {inv.cost_group_by}, "
                f"not the configured {source}"
            )
            left_out.add(cid)
            continue
        plan = plans.get(cid)
        no_rate = inv.currency.upper() != inv.cost_currency.upper() and inv.fx_rate is None
        if plan is None or no_rate:
            skipped.append(f"{names[cid]}: no plan or exchange rate on the invoice")
            left_out.add(cid)
            continue
        rates = _invoice_rates(Rates(str(period)), inv)
        # Repriced exactly as the run priced it: the plan's and the customer's rules and
        # adjustment treatments (invoicing/pricing.py `aws_lines`), summed per service.
        items = cost_items(attributed.detail.get(cid, {})) or items_from_mapping(
            {**attributed.usage.get(cid, {}), **attributed.adjustments.get(cid, {})}
        )
        repriced, _kept = aws_lines(
            items,
            book.rule_set(plan.id or 0, cid),
            book.plan_terms(plan.id or 0).treatments,
            currency=inv.currency,
            period=str(period),
            rates=rates,
        )
        for priced in repriced:
            key = (cid, priced.service or "")
            latest[key] = latest.get(key, 0) + priced.amount_minor
        if cid in allocation.shares_minor:
            # Priced as pricing's shared-cost line: the plan's markup, the invoice's rate.
            share = aws_amount(
                allocation.share(cid), plan.markup_pct, currency=inv.currency, rates=rates
            )
            latest[(cid, SHARED_KEY)] = share.to_minor()
    if left_out:
        invoiced = defaultdict(int, {k: v for k, v in invoiced.items() if k[0] not in left_out})
    findings = compare_aws(
        _billed(invoices, invoiced, latest), invoiced, latest, tolerance, str(period)
    )
    return findings, {"skipped": skipped}


def _plans_in_force(session: Session, period: Period) -> dict[int, Plan]:
    """Customer id -> the plan that priced `period` (effective-dated, customers/terms.py)."""
    plans = {p.id: p for p in session.exec(select(Plan)).all()}
    return {
        cid: plans[t.plan_id]
        for cid, t in terms_in_force(session, period).items()
        if t.plan_id in plans
    }


def usage_findings(session: Session, period: Period, tolerance: Tolerance) -> list[Finding]:
    """Section (c): overage lines on the invoices vs overage from the recorded usage."""
    lines = _lines_by_invoice(session, period, LineKind.OVERAGE)
    used: dict[int, dict[str, Decimal]] = defaultdict(dict)  # customer -> metric -> quantity
    for (c, metric), quantity in totals_by_metric(session, period).items():
        used[c][metric] = quantity
    if not lines and not used:
        return []  # nothing billed or recorded to compare (the month's invoices are not read)
    invoices = billed_invoices(session, period)
    charged: dict[tuple[int, str], UsageFigure] = {}
    for cid, inv in invoices.items():
        for line in lines.get(inv.id or 0, ()):
            if line.kind == LineKind.OVERAGE and line.metric:
                prev = charged.get((cid, line.metric), UsageFigure(Decimal(0), 0))
                charged[(cid, line.metric)] = UsageFigure(
                    prev.quantity + line.quantity, prev.amount_minor + line.amount_minor
                )
    period_rates = load_rates(session, period)
    recorded: dict[tuple[int, str], UsageFigure] = {}
    book = PricingBook.load(session, period)
    plans = _plans_in_force(session, period)
    unpriced: set[int] = set()
    for cid in sorted(used):
        billed = invoices.get(cid)
        plan = plans.get(cid) if billed else None
        if billed is None or plan is None:
            continue  # nothing billed: usage of an unbilled month is not a billing difference
        try:
            for metric, figure in _priced_usage(
                used[cid], book, plan, billed, period_rates
            ).items():
                recorded[(cid, metric)] = figure
        except ExchangeRateMissing as exc:
            log.warning("usage of %s not reconciled: %s", _customer_names(session)[cid], exc)
            unpriced.add(cid)
    if unpriced:
        charged = {k: v for k, v in charged.items() if k[0] not in unpriced}
    return compare_usage(_billed(invoices, charged, recorded), charged, recorded, tolerance)


def _priced_usage(
    quantities: Mapping[str, Decimal],
    book: PricingBook,
    plan: Plan,
    invoice: BilledRow,
    rates: Rates,
) -> dict[str, UsageFigure]:
    """Usage charge per metric priced as the invoice line is: the plan's charge model,
    converted to the invoice currency at the invoice's rate, rounded once."""
    rates = _invoice_rates(rates, invoice)
    out: dict[str, UsageFigure] = {}
    for terms in book.plan_terms(plan.id or 0).metrics:
        quantity = quantities.get(terms.metric, Decimal(0))
        charge = usage_charge(terms, quantity)
        if charge.quantity > 0:
            amount = usage_amount(
                terms, quantity, plan.currency, currency=invoice.currency, rates=rates
            )
            out[terms.metric] = UsageFigure(charge.quantity, amount.to_minor())
    return out
