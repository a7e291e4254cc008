"""Plans and plan assignments: what applies to a customer in a period, and admin changes.

Every change applies from the next period, so a month is always billed on one plan version:
assigning a plan records it in the customer's effective-dated terms (customers/terms.py; the
`next_plan_id`/`next_plan_from` columns mirror the pending one), and editing a plan that
customers are billed on creates a new version of it for the next period while the old version
keeps billing the current one. Every change is audited.

Admin actions name the plan or customer and the `version` the admin saw; a change in between
(another admin, another dashboard server, a stale tab) refuses them with StaleVersion
(see billing_core/versions.py).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, col, select

from billing_core import audit
from billing_core.auth import Identity, require
from billing_core.customers.plan_specs import (
    MetricSpec,
    PlanSpec,
    RuleSpec,
    plain,
    validate_plan,
)
from billing_core.customers.pricing_tables import PlanPricingRule, PlanTier
from billing_core.customers.terms import (
    first_plan,
    legacy_plan_id,
    mirror,
    replace_plan,
    set_terms,
    terms_for,
    terms_in_force,
)
from billing_core.errors import StaleVersion, ValidationError
from billing_core.invoicing.charge_models import ChargeModel, Tier
from billing_core.models import Customer, CustomerTerms, Plan, PlanMetric
from billing_core.money import minor_to_decimal, normalize_currency
from billing_core.periods import Period
from billing_core.versions import bump, changed_since, claim

# --- which plan applies -----------------------------------------------------------------


def effective_plan_id(customer: Customer, period: Period) -> int | None:
    """The plan id in the customer's columns for `period` (customers without terms rows).

    Pricing reads `terms.terms_in_force`, which falls back to this for such customers.
    """
    return legacy_plan_id(customer, period)


def effective_plan(session: Session, customer: Customer, period: Period) -> Plan | None:
    """The plan in force for `period` (customers/terms.py: effective-dated)."""
    in_force = terms_for(session, customer.id or 0, period)
    plan_id = in_force.plan_id if in_force is not None else None
    return session.get(Plan, plan_id) if plan_id is not None else None


def metrics_by_plan(session: Session) -> dict[int, dict[str, PlanMetric]]:
    """Every plan's metrics, keyed by plan id and metric name (one query)."""
    out: dict[int, dict[str, PlanMetric]] = {}
    for metric in session.exec(select(PlanMetric).order_by(col(PlanMetric.id))).all():
        out.setdefault(metric.plan_id, {})[metric.metric] = metric
    return out


def all_plans(session: Session) -> list[Plan]:
    return list(session.exec(select(Plan).order_by(col(Plan.name))).all())


def active_plan_named(session: Session, name: str) -> Plan | None:
    """The plan billing new months under `name` (old versions are renamed, see update_plan)."""
    return session.exec(select(Plan).where(Plan.name == name, col(Plan.active).is_(True))).first()


def plan_metrics(session: Session, plan_id: int) -> list[PlanMetric]:
    return list(
        session.exec(
            select(PlanMetric).where(PlanMetric.plan_id == plan_id).order_by(col(PlanMetric.id))
        ).all()
    )


# --- assigning plans --------------------------------------------------------------------


def _assignment(customer: Customer) -> dict[str, Any]:
    return {
        "plan_id": customer.plan_id,
        "next_plan_id": customer.next_plan_id,
        "next_plan_from": customer.next_plan_from,
    }


def _promote(customer: Customer) -> None:
    customer.plan_id = customer.next_plan_id
    customer.next_plan_id = None
    customer.next_plan_from = None


def _plan_as_seen(session: Session, plan_id: int, plan_version: int, now: datetime) -> Plan:
    plan = session.get(Plan, plan_id, populate_existing=True)
    if plan is None:
        raise ValidationError(f"Plan {plan_id} does not exist; reload the page.")
    if plan.version != plan_version:
        raise StaleVersion(changed_since(f"Plan {plan.name}", plan, now=now))
    if not plan.active:
        raise ValidationError(f"Plan {plan.name} is retired; pick another plan.")
    return plan


def schedule_plan_change(
    session: Session,
    *,
    identity: Identity,
    customer_id: int,
    customer_version: int,
    plan_id: int,
    plan_version: int,
    now: datetime,
) -> Customer:
    """Assign a plan to a customer from the next period on (admin only, audited).

    `customer_version` and `plan_version` are the versions the admin saw; StaleVersion when
    either changed since, ValidationError when either is gone or the plan retired.
    """
    require(identity, "admin", "change a customer's plan")
    _plan_as_seen(session, plan_id, plan_version, now)
    shown = session.get(Customer, customer_id)
    what = shown.name if shown is not None else f"Customer {customer_id}"
    customer = claim(
        session, Customer, customer_id, customer_version, actor=identity.actor, now=now, what=what
    )
    plan = _plan_as_seen(session, plan_id, plan_version, now)  # again, the customer held
    current = Period.containing(now)
    starts = current.next()
    before = _assignment(customer)
    # Effective-dated (customers/terms.py): the last closed month, maybe not invoiced yet, and
    # the running one keep their plan; choosing the running plan again cancels a pending one.
    if not first_plan(session, customer, plan_id=plan.id or 0, now=now):
        set_terms(session, customer, starts=starts, now=now, plan_id=plan.id)
    customer.updated_at = now
    session.add(customer)
    audit.record(
        session,
        actor=identity.actor,
        action="customer.plan_change",
        target=f"customer:{customer.id}",
        before=before,
        after=_assignment(customer) | {"plan": plan.name},
        at=now,
    )
    session.flush()
    return customer


def apply_due_plan_changes(session: Session, *, now: datetime, actor: str = "system") -> int:
    """Bring the plan columns to the running month; returns how many customers changed.

    Effective-dated customers only mirror their terms (the last closed month keeps its plan
    whatever the columns say). Customers without terms rows keep the old rule: a pending plan
    becomes current once the old plan's last month is closed and a month old.
    """
    last_closed = Period.containing(now).shift(-1)
    changed = 0
    dated = set(session.exec(select(CustomerTerms.customer_id)).all())
    for customer in session.exec(select(Customer).where(col(Customer.id).in_(dated))).all():
        # Effective-dated customers: the columns only mirror the running month's plan.
        before = _assignment(customer)
        mirror(session, customer, now)
        if _assignment(customer) != before:
            _record_applied(session, customer, before, actor=actor, now=now)
            changed += 1
    pending = session.exec(select(Customer).where(col(Customer.next_plan_id).is_not(None))).all()
    for customer in pending:
        if customer.id in dated:
            continue
        if not customer.next_plan_from or Period.parse(customer.next_plan_from) > last_closed:
            continue
        before = _assignment(customer)
        _promote(customer)
        bump(customer, actor=actor, now=now)
        session.add(customer)
        _record_applied(session, customer, before, actor=actor, now=now)
        changed += 1
    session.flush()
    return changed


def _record_applied(
    session: Session, customer: Customer, before: dict[str, Any], *, actor: str, now: datetime
) -> None:
    """Audit a plan change that took effect when its month started (cron's check-alerts)."""
    audit.record(
        session,
        actor=actor,
        action="customer.plan_applied",
        target=f"customer:{customer.id}",
        before=before,
        after=_assignment(customer),
        at=now,
    )


# --- creating and editing plans ---------------------------------------------------------


@dataclass
class PlanChange:
    plan: Plan
    new_version: bool
    customers_moved: list[int] = field(default_factory=list)
    changed: bool = True  # False: the spec held the plan's values already, nothing written


def plan_spec(session: Session, plan: Plan) -> PlanSpec:
    """A stored plan as a spec: metrics with their charge models and tiers, scoped rules,
    adjustment treatments and minimum spend (export-plans writes this)."""
    tiers: dict[str, list[PlanTier]] = {}
    for t in session.exec(
        select(PlanTier).where(PlanTier.plan_id == plan.id).order_by(col(PlanTier.position))
    ).all():
        tiers.setdefault(t.metric, []).append(t)
    metrics = tuple(
        MetricSpec(
            m.metric,
            m.included_quantity,
            m.overage_unit_price,
            m.unit,
            m.aggregation,
            m.charge_model or ChargeModel.PER_UNIT,
            tuple(Tier(t.up_to, t.unit_price, t.flat_fee) for t in tiers.get(m.metric, [])),
            m.package_size,
        )
        for m in plan_metrics(session, plan.id or 0)
    )
    rules = tuple(
        RuleSpec(r.pct, r.service, r.account_id, r.usage_type)
        for r in session.exec(
            select(PlanPricingRule)
            .where(PlanPricingRule.plan_id == plan.id)
            .order_by(col(PlanPricingRule.id))
        ).all()
    )
    return PlanSpec(
        plan.name,
        plan.currency,
        plan.base_fee_minor,
        plan.markup_pct,
        plan.aws_spend_limit_minor,
        metrics,
        rules,
        tuple(sorted((plan.adjustments or {}).items())),
        plan.minimum_spend_minor,
    )


def describe_plan(session: Session, plan: Plan) -> dict[str, Any]:
    """A plan and its metrics as plain values (audit before/after, page display)."""
    return _spec_view(plan_spec(session, plan))


def _metric_view(m: MetricSpec) -> dict[str, Any]:
    view: dict[str, Any] = {
        "metric": m.metric,
        "unit": m.unit.strip(),
        "aggregation": m.aggregation,
        "included": plain(m.included),
        "unit_price": plain(m.unit_price),
    }
    # Keys beyond the per-unit model only when used: plans from before rules read as before.
    if m.model != ChargeModel.PER_UNIT:
        view["model"] = str(m.model)
    if m.package_size is not None:
        view["package_size"] = plain(m.package_size)
    if m.tiers:
        view["tiers"] = [
            {
                "up_to": None if t.up_to is None else plain(t.up_to),
                "unit_price": plain(t.unit_price),
                "flat_fee": plain(t.flat_fee),
            }
            for t in m.tiers
        ]
    return view


def _rule_view(rule: RuleSpec) -> dict[str, Any]:
    scope = {"service": rule.service, "account": rule.account_id, "usage_type": rule.usage_type}
    return {k: v for k, v in scope.items() if v is not None} | {"pct": plain(rule.pct)}


def _spec_view(spec: PlanSpec) -> dict[str, Any]:
    """A spec in `describe_plan`'s shape, to tell a save that changes nothing."""
    currency = normalize_currency(spec.currency)
    limit = spec.aws_spend_limit_minor
    return {
        "name": spec.name.strip(),
        "currency": currency,
        "base_fee": str(minor_to_decimal(spec.base_fee_minor, currency)),
        "markup_pct": plain(spec.markup_pct),
        "aws_spend_limit": None if limit is None else str(minor_to_decimal(limit, currency)),
        "metrics": [_metric_view(m) for m in spec.metrics],
    } | _rules_view(spec)


def _rules_view(spec: PlanSpec) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if spec.rules:
        out["rules"] = [_rule_view(r) for r in spec.rules]
    if spec.adjustments:
        out["adjustments"] = dict(sorted(spec.adjustments))
    if spec.minimum_spend_minor is not None:
        cur = normalize_currency(spec.currency)
        out["minimum_spend"] = str(minor_to_decimal(spec.minimum_spend_minor, cur))
    return out


def _check(session: Session, spec: PlanSpec, *, except_id: int | None = None) -> None:
    problems = validate_plan(spec)
    clash = session.exec(select(Plan).where(Plan.name == spec.name.strip())).first()
    if clash is not None and clash.id != except_id:
        problems.append(f"a plan named {spec.name.strip()!r} already exists")
    if problems:
        raise ValidationError("The plan was not saved:", problems)


def _fill(session: Session, plan: Plan, spec: PlanSpec, now: datetime) -> None:
    plan.name = spec.name.strip()
    plan.currency = normalize_currency(spec.currency)
    plan.base_fee_minor = spec.base_fee_minor
    plan.markup_pct = spec.markup_pct
    plan.aws_spend_limit_minor = spec.aws_spend_limit_minor
    plan.minimum_spend_minor = spec.minimum_spend_minor
    plan.adjustments = dict(spec.adjustments)
    plan.updated_at = now
    session.add(plan)
    try:
        session.flush()
    except IntegrityError:
        # Two admins saving the same name at once: the unique name decides, in the database.
        raise ValidationError(
            "The plan was not saved:",
            [f"a plan named {plan.name!r} already exists (just saved by another admin)"],
        ) from None
    pid = plan.id or 0
    for table in (PlanMetric, PlanTier, PlanPricingRule):
        for old in session.exec(select(table).where(table.plan_id == pid)).all():
            session.delete(old)
    session.flush()
    for m in spec.metrics:
        session.add(
            PlanMetric(
                plan_id=pid,
                metric=m.metric,
                unit=m.unit.strip(),
                aggregation=m.aggregation,
                included_quantity=m.included,
                overage_unit_price=m.unit_price,
                charge_model=str(m.model),
                package_size=m.package_size,
            )
        )
        for pos, tier in enumerate(m.tiers):
            session.add(
                PlanTier(
                    plan_id=pid,
                    metric=m.metric,
                    position=pos,
                    up_to=tier.up_to,
                    unit_price=tier.unit_price,
                    flat_fee=tier.flat_fee,
                )
            )
    for rule in spec.rules:
        session.add(
            PlanPricingRule(
                plan_id=pid,
                service=rule.service,
                account_id=rule.account_id,
                usage_type=rule.usage_type,
                pct=rule.pct,
            )
        )
    session.flush()


def create_plan(session: Session, *, identity: Identity, spec: PlanSpec, now: datetime) -> Plan:
    """A new plan (admin only, audited); customers get it through `schedule_plan_change`."""
    require(identity, "admin", "create plans")
    _check(session, spec)
    plan = Plan(
        name=spec.name.strip(),
        currency=normalize_currency(spec.currency),
        created_at=now,
        updated_by=identity.actor,
    )
    _fill(session, plan, spec, now)
    audit.record(
        session,
        actor=identity.actor,
        action="plan.create",
        target=f"plan:{plan.id}",
        after=describe_plan(session, plan),
        at=now,
    )
    return plan


def _billed_on(session: Session, plan_id: int, periods: Sequence[Period]) -> list[int]:
    billed = {
        cid
        for p in periods
        for cid, terms in terms_in_force(session, p).items()
        if terms.plan_id == plan_id
    }
    return sorted(billed)


def update_plan(
    session: Session,
    *,
    identity: Identity,
    plan_id: int,
    seen_version: int,
    spec: PlanSpec,
    now: datetime,
) -> PlanChange:
    """Edit a plan from the next period on (admin only, audited).

    A plan nobody is billed on this month or last month (still being invoiced) is edited in
    place. Otherwise the edit becomes a new version of the plan under the plan's name, the
    old version is renamed "<name> (until YYYY-MM)" and retired, and its customers move to the
    new version from the next period (a customer with another pending plan keeps that one).
    `seen_version` is the version the admin edited: StaleVersion when the plan changed since,
    ValidationError for bad input; nothing is written then, nor for a spec equal to the plan.
    """
    require(identity, "admin", "edit plans")
    if problems := validate_plan(spec):
        raise ValidationError("The plan was not saved:", problems)
    plan = session.get(Plan, plan_id)
    if plan is None:
        raise ValidationError(f"Plan {plan_id} does not exist; reload the page.")
    if plan.version != seen_version:  # checked again, in the database, by `claim`
        raise StaleVersion(changed_since("This plan", plan, now=now))
    if describe_plan(session, plan) == _spec_view(spec):
        return PlanChange(plan=plan, new_version=False, changed=False)
    _check(session, spec, except_id=plan.id)
    plan = claim(
        session, Plan, plan_id, seen_version, actor=identity.actor, now=now, what="This plan"
    )
    if not plan.active:
        raise ValidationError(f"Plan {plan.name} is retired; edit its current version instead.")
    current = Period.containing(now)
    before = describe_plan(session, plan)
    billed = _billed_on(session, plan_id, [current.previous(), current])
    if not billed:
        _fill(session, plan, spec, now)
        after = describe_plan(session, plan)
        if after != before:
            audit.record(
                session,
                actor=identity.actor,
                action="plan.update",
                target=f"plan:{plan.id}",
                before=before,
                after=after,
                at=now,
            )
        return PlanChange(plan=plan, new_version=False)
    old_name = plan.name
    retired_name = f"{old_name} (until {current})"
    if session.exec(select(Plan).where(Plan.name == retired_name)).first() is not None:
        retired_name = f"{retired_name} #{plan.id}"
    plan.name = retired_name
    plan.active = False
    session.add(plan)
    session.flush()
    new = Plan(
        name=spec.name.strip(),
        currency=normalize_currency(spec.currency),
        created_at=now,
        updated_by=identity.actor,
    )
    _fill(session, new, spec, now)
    moved = _move_customers(
        session, old=plan, new=new, starts=current.next(), now=now, actor=identity.actor
    )
    audit.record(
        session,
        actor=identity.actor,
        action="plan.new_version",
        target=f"plan:{new.id}",
        before=before | {"plan_id": plan.id},
        after=describe_plan(session, new)
        | {"plan_id": new.id, "from": str(current.next()), "customers": moved},
        at=now,
    )
    return PlanChange(plan=new, new_version=True, customers_moved=moved)


def _move_customers(
    session: Session, *, old: Plan, new: Plan, starts: Period, now: datetime, actor: str
) -> list[int]:
    moved: list[int] = []
    for customer in session.exec(select(Customer).order_by(col(Customer.id))).all():
        # Months before `starts` (the running one included) stay on the old version.
        if replace_plan(session, customer, old_id=old.id or 0, new_id=new.id or 0, starts=starts):
            customer.updated_at = now
            mirror(session, customer, now)
            bump(customer, actor=actor, now=now)
            moved.append(customer.id or 0)
    session.flush()
    return moved


def plan_overview(session: Session, now: datetime) -> list[dict[str, Any]]:
    """One row per customer: current plan, pending plan and from when (for the admin page)."""
    names = {p.id: p.name for p in session.exec(select(Plan)).all()}
    current = Period.containing(now)
    this_month = terms_in_force(session, current)
    next_month = terms_in_force(session, current.next())
    rows = []
    for c in session.exec(select(Customer).order_by(col(Customer.name))).all():
        plan_now = this_month[c.id].plan_id if c.id in this_month else None
        plan_next = next_month[c.id].plan_id if c.id in next_month else None
        rows.append(
            {
                "id": c.id,
                "version": c.version,
                "customer": c.name,
                "email": c.email,
                "currency": c.currency,
                "active": c.active,
                "plan": names.get(plan_now, "—") if plan_now else "—",
                "next_plan": names.get(plan_next, "—") if plan_next != plan_now else "",
                "from": str(current.next()) if plan_next != plan_now else "",
                "stripe_customer": c.stripe_customer_id or "",
            }
        )
    return rows
