"""Figures for the Customer page: one customer's profile, month so far, upcoming invoice,
invoice history, margin over time and lifetime totals. Reads the database only; nothing
here changes anything.

The upcoming invoice is priced by the invoice run's own code (`invoicing.drafts.build_drafts`
with `month_to_date`), so its lines are the ones a run would bill if the month ended today.
Margin figures are `invoicing.margin`'s (the Overview's and `margin-report`'s).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal

import pandas as pd
from sqlmodel import Session, col, select

from billing_core.config import Settings
from billing_core.costs.attribution import attributed_costs
from billing_core.costs.snapshots import CostSource
from billing_core.customers.terms import terms_for
from billing_core.errors import ValidationError
from billing_core.invoicing.drafts import SharedCosts, build_drafts
from billing_core.invoicing.figures import Figures
from billing_core.invoicing.line_text import with_unit
from billing_core.invoicing.margin import Margin, group_margin, margin_facts, months_between
from billing_core.invoicing.pricing import Draft
from billing_core.models import Customer, Plan
from billing_core.money import display, round_minor
from billing_core.payments.payment_methods import parse_payment_method
from billing_core.periods import Period
from billing_core.usage.limits import MetricUsage, build_usage_report
from billing_core.views.invoices import InvoiceFilter, headline_figures, invoice_table
from billing_core.views.overview import every_month

#: Months of margin history on the page.
MARGIN_MONTHS = 13
ZERO = Decimal(0)


def customer_choices(session: Session) -> dict[int, str]:
    """Customer id -> name, by name (inactive ones too: their history stays readable)."""
    rows = session.exec(select(Customer.id, Customer.name).order_by(col(Customer.name))).all()
    return {int(cid): name for cid, name in rows if cid is not None}


def stripe_customer_url(stripe_id: str | None, settings: Settings) -> str | None:
    """The customer in Stripe's dashboard (the test-mode one for test keys); None when the
    customer has no Stripe id or the settings point at a local Stripe (demo)."""
    if not stripe_id or settings.stripe_api_base:
        return None
    secret = settings.stripe_api_key
    # Only the key's mode prefix is read (never shown or logged).
    live = secret is not None and secret.get_secret_value().startswith(("sk_live_", "rk_live_"))
    test = "" if live else "test/"
    return f"https://dashboard.stripe.com/{test}customers/{stripe_id}"


@dataclass
class Profile:
    """Who the customer is and how they are billed (the terms in force this month)."""

    id: int
    name: str
    email: str
    active: bool
    currency: str
    plan: str | None
    plan_detail: str  # "EUR 99.00 a month, 10 % on AWS costs"
    next_plan: str | None  # pending plan change
    next_plan_from: str | None
    account_ids: tuple[str, ...]
    cost_tag_value: str | None
    collection_method: str
    days_until_due: int
    payment_method: str | None  # "card visa •••• 4242"; None: none on file
    stripe_customer_id: str | None
    stripe_url: str | None


@dataclass
class Upcoming:
    """What the next run would bill for `period` if the month ended today."""

    period: Period
    draft: Draft | None = None
    problem: str | None = None  # why it cannot be priced (no plan, no rate, ...)
    already_invoiced: bool = False
    coverage: str = ""  # the AWS figures' as-of time and days covered


@dataclass
class CustomerView:
    profile: Profile
    period: Period  # the running month
    aws_cost: Decimal | None  # USD at cost, month to date (None: no snapshot)
    aws_by_service: list[tuple[str, Decimal]]
    aws_coverage: str
    usage: list[MetricUsage]
    upcoming: Upcoming
    history: pd.DataFrame
    margin: dict[str, list[Margin]]  # currency -> one row per month of `months`
    months: list[Period]
    lifetime: dict[str, Figures] = field(default_factory=dict)


def _profile(session: Session, settings: Settings, customer: Customer, period: Period) -> Profile:
    cid = customer.id or 0
    terms = terms_for(session, cid, period)
    plan_id = terms.plan_id if terms else customer.plan_id
    plan = session.get(Plan, plan_id) if plan_id is not None else None
    next_plan = session.get(Plan, customer.next_plan_id) if customer.next_plan_id else None
    method = parse_payment_method(customer.default_payment_method)
    shown_method = None
    if method.present:
        shown_method = " ".join(
            p
            for p in (method.kind, method.brand, f"•••• {method.last4}" if method.last4 else "")
            if p
        )
    detail = ""
    if plan is not None:
        detail = f"{display(plan.base_fee_minor, plan.currency)} a month"
        if plan.markup_pct:
            detail += f", {plan.markup_pct.normalize():f} % on AWS costs"
    return Profile(
        id=cid,
        name=customer.name,
        email=customer.email,
        active=customer.active,
        currency=terms.currency if terms else customer.currency,
        plan=plan.name if plan else None,
        plan_detail=detail,
        next_plan=next_plan.name if next_plan else None,
        next_plan_from=customer.next_plan_from if next_plan else None,
        account_ids=terms.account_ids if terms else (),
        cost_tag_value=terms.cost_tag_value if terms else customer.cost_tag_value,
        collection_method=customer.collection_method,
        days_until_due=customer.days_until_due,
        payment_method=shown_method,
        stripe_customer_id=customer.stripe_customer_id,
        stripe_url=stripe_customer_url(customer.stripe_customer_id, settings),
    )


def upcoming_invoice(
    session: Session,
    source: CostSource,
    customer: Customer,
    period: Period,
    shared: SharedCosts | None = None,
) -> Upcoming:
    """The invoice the next run would draft for `period` if the month ended today, priced by
    the run's own `build_drafts` with the run's shared-cost rule (nothing is saved)."""
    out = Upcoming(period=period)
    if not customer.active:
        out.problem = "inactive: the run does not invoice it."
        return out
    drafts = build_drafts(
        session,
        period,
        source=source,
        customer_id=customer.id,
        shared=shared,
        month_to_date=True,
    )
    out.coverage = drafts.cost_coverage
    if drafts.already_invoiced:
        out.already_invoiced = True
    elif drafts.problems:
        out.problem = drafts.problems[0].message
    elif drafts.drafts:
        out.draft = drafts.drafts[0]
    else:
        out.problem = f"not a customer yet in {period}."
    return out


def build_customer_view(
    session: Session, settings: Settings, customer_id: int, *, now: datetime
) -> CustomerView:
    """Everything the Customer page shows; ValidationError for an unknown customer id."""
    customer = session.get(Customer, customer_id)
    if customer is None:
        raise ValidationError(f"There is no customer with id {customer_id}: choose one above.")
    period = Period.containing(now)
    source = CostSource.of(settings)
    costs = attributed_costs(session, period, source, customer_ids=[customer_id])
    aws_cost: Decimal | None = None
    by_service: dict[str, Decimal] = {}
    if costs.snapshot is not None:
        aws_cost = costs.customer_total(customer_id)
        by_service = {**costs.usage.get(customer_id, {})}
        for record_type, amount in costs.adjustments.get(customer_id, {}).items():
            by_service[record_type] = by_service.get(record_type, ZERO) + amount
    coverage = costs.snapshot.coverage() if costs.snapshot is not None else source.missing(period)
    usage = build_usage_report(session, period, now, source=source, customer_id=customer_id)
    months = months_between(period.shift(-MARGIN_MONTHS), period.previous())
    facts = margin_facts(session, months, source, customer_ids=[customer_id], services=False)
    mine = InvoiceFilter(customer_ids=(customer_id,))
    return CustomerView(
        profile=_profile(session, settings, customer, period),
        period=period,
        aws_cost=aws_cost,
        aws_by_service=sorted(by_service.items(), key=lambda item: (-item[1], item[0])),
        aws_coverage=coverage,
        usage=usage.for_customer(customer_id),
        upcoming=upcoming_invoice(session, source, customer, period, SharedCosts.of(settings)),
        history=invoice_table(session, mine, limit=120, now=now),
        margin=every_month(group_margin(facts, "month"), months),
        months=months,
        lifetime={f.currency: f for f in headline_figures(session, mine)},
    )


def _quantity(row: MetricUsage, value: Decimal) -> str:
    """A usage figure as people read it: money for the AWS spend limit, else the quantity."""
    if row.is_spend:
        return display(round_minor(value, row.plan_currency), row.plan_currency)
    text = f"{value.normalize():,f}" if value == value.to_integral() else f"{value:,}"
    return with_unit(text, value, row.unit)


def usage_frame(rows: list[MetricUsage]) -> pd.DataFrame:
    """One row per plan metric (and the AWS spend limit): used, included, used % (a number
    for a progress bar), projected month end, overage so far and status, as text people read."""
    return pd.DataFrame(
        [
            {
                "Metric": "AWS spend" if r.is_spend else r.metric,
                "Used": _quantity(r, r.used),
                "Included": _quantity(r, r.included),
                "Used %": None if r.used_pct is None else float(r.used_pct),
                "Projected": _quantity(r, r.projected),
                "Overage so far": "—"
                if r.is_spend
                else (
                    "no FX rate"
                    if r.overage_minor is None
                    else display(r.overage_minor, r.currency)
                ),
                "Status": r.status,
            }
            for r in sorted(rows, key=lambda r: (r.is_spend, r.metric))
        ],
        columns=["Metric", "Used", "Included", "Used %", "Projected", "Overage so far", "Status"],
    )
