"""`import-plans` and `export-plans`: plans, rules and customer overrides to and from a file.

An import is all or nothing, in the caller's one transaction: the file is checked whole
(customers/plan_files.py), then every plan goes through the same path as the plan editor
(`create_plan`, `update_plan`: versioned, audited, effective from the next month when customers
are billed on it), and customer overrides replace the customer's from the next month:

- rule overrides in force from the next month on are closed (`effective_until`) and the file's
  rows start then; the running and closed months keep the overrides they were priced with;
- a discount of the file not yet recorded is added (it may not start before the next month);
  a recorded discount missing from the file is removed if it has not started, and kept (with
  a note) if it has, since the months it priced are billed.

Each customer whose overrides change gets one audit entry and a new version.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

from sqlmodel import Session, col, func, select

from billing_core import audit
from billing_core.auth import Identity, require
from billing_core.customers.plan_files import (
    CustomerSpec,
    DiscountSpec,
    PlanFile,
    dump_plans,
    parse_plans,
)
from billing_core.customers.plan_specs import RuleSpec, plain
from billing_core.customers.plans import (
    active_plan_named,
    create_plan,
    plan_spec,
    update_plan,
)
from billing_core.customers.pricing_tables import CustomerDiscount, CustomerPricingRule
from billing_core.customers.terms import first_changeable
from billing_core.errors import ValidationError
from billing_core.invoicing.commitments import DiscountKind
from billing_core.invoicing.pricing_book import in_force
from billing_core.models import Customer, Plan
from billing_core.periods import Period
from billing_core.versions import bump


@dataclass
class ImportResult:
    created: list[str] = field(default_factory=list)
    updated: list[str] = field(default_factory=list)
    new_versions: list[str] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)
    customers_changed: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def describe(self) -> str:
        parts = [
            f"plans: {len(self.created)} created, {len(self.updated)} updated in place, "
            f"{len(self.new_versions)} new versions, {len(self.unchanged)} unchanged",
            f"customer overrides: {len(self.customers_changed)} changed",
        ]
        return "; ".join(parts)


def _rows_of(session: Session, customer_id: int) -> list[CustomerPricingRule]:
    return list(
        session.exec(
            select(CustomerPricingRule)
            .where(CustomerPricingRule.customer_id == customer_id)
            .order_by(col(CustomerPricingRule.id))
        ).all()
    )


def _spec_rule(row: CustomerPricingRule) -> RuleSpec:
    return RuleSpec(row.pct, row.service, row.account_id, row.usage_type)


def _discount_spec(row: CustomerDiscount) -> DiscountSpec:
    return DiscountSpec(
        DiscountKind(row.kind), row.value, row.starts, row.months, row.currency, row.description
    )


def customer_spec(session: Session, customer: Customer, period: Period) -> CustomerSpec:
    """A customer's overrides in force from `period` and its discounts (export, page)."""
    rules = tuple(_spec_rule(r) for r in _rows_of(session, customer.id or 0) if in_force(r, period))
    discounts = tuple(
        _discount_spec(d)
        for d in session.exec(
            select(CustomerDiscount)
            .where(CustomerDiscount.customer_id == customer.id)
            .order_by(col(CustomerDiscount.id))
        ).all()
    )
    return CustomerSpec(customer.email, rules, discounts)


def _rule_text(rule: RuleSpec) -> str:
    scope = [x for x in (rule.service, rule.account_id, rule.usage_type) if x] or ["all"]
    return f"{' / '.join(scope)}: {plain(rule.pct)}%"


def set_overrides(
    session: Session, customer: Customer, spec: CustomerSpec, *, actor: str, now: datetime
) -> list[str]:
    """Replace a customer's overrides and discounts from the next month (see module doc);
    returns notes for the person importing. Audited when anything changes."""
    starts = first_changeable(now)
    nxt = str(starts)
    cid = customer.id or 0
    before = customer_spec(session, customer, starts)
    notes: list[str] = []
    changed = False
    if before.rules != spec.rules:
        changed = True
        for row in _rows_of(session, cid):
            if row.effective_from >= nxt:
                session.delete(row)
            elif row.effective_until is None or row.effective_until > nxt:
                row.effective_until = nxt
                session.add(row)
        for rule in spec.rules:
            session.add(
                CustomerPricingRule(
                    customer_id=cid,
                    effective_from=nxt,
                    service=rule.service,
                    account_id=rule.account_id,
                    usage_type=rule.usage_type,
                    pct=rule.pct,
                    created_at=now,
                    created_by=actor,
                )
            )
    recorded = {
        _discount_spec(d): d
        for d in session.exec(
            select(CustomerDiscount).where(CustomerDiscount.customer_id == cid)
        ).all()
    }
    for wanted in spec.discounts:
        if wanted in recorded:
            continue
        if wanted.starts < nxt:
            raise ValidationError(
                f"The plans file was not imported: a new discount of {customer.email} starts "
                f"{wanted.starts}, but changes apply from {nxt} at the earliest (months before "
                "are running or closed)."
            )
        changed = True
        session.add(
            CustomerDiscount(
                customer_id=cid,
                kind=str(wanted.kind),
                value=wanted.value,
                currency=wanted.currency,
                starts=wanted.starts,
                months=wanted.months,
                description=wanted.description,
                created_at=now,
                created_by=actor,
            )
        )
    for old, stored in recorded.items():
        if old in spec.discounts:
            continue
        if old.starts >= nxt:
            changed = True
            session.delete(stored)
        else:
            notes.append(
                f"{customer.email}: the discount starting {old.starts} has started and is kept "
                "(the months it priced are billed)"
            )
    if changed:
        session.flush()
        bump(customer, actor=actor, now=now)
        session.add(customer)
        audit.record(
            session,
            actor=actor,
            action="customer.pricing_overrides",
            target=f"customer:{cid}",
            before={
                "rules": [_rule_text(r) for r in before.rules],
                "discounts": len(before.discounts),
            },
            after={
                "rules": [_rule_text(r) for r in spec.rules],
                "discounts": len(spec.discounts),
                "from": nxt,
            },
            at=now,
        )
    return notes


def import_plans(session: Session, text: str, *, identity: Identity, now: datetime) -> ImportResult:
    """Apply a plans file (validated whole first; see the module docstring)."""
    require(identity, "admin", "import plans")
    parsed: PlanFile = parse_plans(text)
    customers = {}
    missing = []
    for c in parsed.customers:
        found = session.exec(
            select(Customer).where(func.lower(Customer.email) == c.email.lower())
        ).first()
        if found is None:
            missing.append(f"customers: no customer has the email {c.email}")
        customers[c.email] = found
    nxt = str(first_changeable(now))
    for c in parsed.customers:
        found = customers[c.email]
        if found is None:
            continue
        recorded = set(customer_spec(session, found, Period.parse(nxt)).discounts)
        missing += [
            f"customers ({c.email}): a new discount starts {d.starts}, but changes apply from "
            f"{nxt} at the earliest (months before are running or closed)"
            for d in c.discounts
            if d not in recorded and d.starts < nxt
        ]
    if missing:
        raise ValidationError("The plans file was not imported (nothing was changed):", missing)
    result = ImportResult()
    for spec in parsed.plans:
        plan = active_plan_named(session, spec.name)
        if plan is None:
            create_plan(session, identity=identity, spec=spec, now=now)
            result.created.append(spec.name)
            continue
        change = update_plan(
            session,
            identity=identity,
            plan_id=plan.id or 0,
            seen_version=plan.version,
            spec=spec,
            now=now,
        )
        if not change.changed:
            result.unchanged.append(spec.name)
        elif change.new_version:
            result.new_versions.append(spec.name)
        else:
            result.updated.append(spec.name)
    for c in parsed.customers:
        customer = customers[c.email]
        assert customer is not None
        before = customer.version
        result.notes += set_overrides(session, customer, c, actor=identity.actor, now=now)
        if customer.version != before:
            result.customers_changed.append(c.email)
    return result


def export_plans(session: Session, now: datetime) -> str:
    """Every active plan and every customer with overrides or discounts, as a plans file
    (the rules that apply from the next month: what an import would change)."""
    plans = session.exec(select(Plan).where(col(Plan.active).is_(True)).order_by(col(Plan.name)))
    nxt = first_changeable(now)
    customers = []
    for customer in session.exec(select(Customer).order_by(col(Customer.email))).all():
        spec = customer_spec(session, customer, nxt)
        if spec.rules or spec.discounts:
            customers.append(spec)
    return dump_plans([plan_spec(session, p) for p in plans], customers)
