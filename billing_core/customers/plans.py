"""Plans and plan assignments: what applies to a customer in a period, and admin changes.

Every change applies from the next period, so a month is always billed on one plan version:
assigning a plan records it as the customer's pending plan (`next_plan_id`/`next_plan_from`),
and editing a plan that customers are billed on creates a new version of it for the next
period while the old version keeps billing the current one. Every change is audited.

Admin actions name the plan or customer and the `version` the admin saw; a change in between
(another admin, another dashboard server, a stale tab) refuses them with StaleVersion
(see billing_core/versions.py).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal, InvalidOperation
from typing import Any

from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, col, select

from billing_core import audit
from billing_core.auth import Identity, require
from billing_core.errors import MoneyError, StaleVersion, ValidationError
from billing_core.models import Customer, Plan, PlanMetric
from billing_core.money import exponent, minor_to_decimal, normalize_currency
from billing_core.periods import Period
from billing_core.versions import bump, changed_since, claim

AGGREGATIONS = ("sum", "max")
# Metrics that report a level (how many seats now), billed on the period's peak, not its sum.
LEVEL_METRICS = frozenset(
    {"seats", "users", "licences", "licenses", "clusters", "storage_gb", "nodes"}
)
_METRIC_RE = re.compile(r"^[a-z][a-z0-9_]{0,39}$")
# Digits the database keeps (ExactDecimal scales of PlanMetric).
_INCLUDED_PLACES = 6
_PRICE_PLACES = 10
_MAX_MARKUP_PCT = Decimal(1000)


def default_aggregation(metric: str) -> str:
    """The usual aggregation for a metric name: peak for levels, sum for everything else."""
    return "max" if metric in LEVEL_METRICS else "sum"


# --- which plan applies -----------------------------------------------------------------


def effective_plan_id(customer: Customer, period: Period) -> int | None:
    """The plan id billing `period` for this customer (the pending plan once it starts)."""
    pending_from = customer.next_plan_from
    if customer.next_plan_id is not None and pending_from and period >= Period.parse(pending_from):
        return customer.next_plan_id
    return customer.plan_id


def effective_plan(session: Session, customer: Customer, period: Period) -> Plan | None:
    plan_id = effective_plan_id(customer, period)
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
    # A pending change that already started is the customer's plan now: keep it as such.
    if customer.next_plan_from and Period.parse(customer.next_plan_from) <= current:
        _promote(customer)
    if customer.plan_id is None:
        # A customer without a plan has nothing billed yet: the plan applies at once.
        customer.plan_id = plan.id
    elif customer.plan_id == plan.id:
        customer.next_plan_id = None  # cancels a pending change back to the current plan
        customer.next_plan_from = None
    else:
        customer.next_plan_id = plan.id
        customer.next_plan_from = str(starts)
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
    """Make pending plans current once the old plan's last month is closed and a month old.

    The wait keeps `effective_plan` right for the last closed month, which is still being
    invoiced in the first days of a month.
    """
    last_closed = Period.containing(now).shift(-1)
    changed = 0
    pending = session.exec(select(Customer).where(col(Customer.next_plan_id).is_not(None))).all()
    for customer in pending:
        if not customer.next_plan_from or Period.parse(customer.next_plan_from) > last_closed:
            continue
        before = _assignment(customer)
        _promote(customer)
        bump(customer, actor=actor, now=now)
        session.add(customer)
        audit.record(
            session,
            actor=actor,
            action="customer.plan_applied",
            target=f"customer:{customer.id}",
            before=before,
            after=_assignment(customer),
            at=now,
        )
        changed += 1
    session.flush()
    return changed


# --- creating and editing plans ---------------------------------------------------------


@dataclass(frozen=True)
class MetricSpec:
    """One metric of a plan as entered by an admin (exact decimals)."""

    metric: str
    included: Decimal
    unit_price: Decimal
    unit: str = ""
    aggregation: str = "sum"


@dataclass(frozen=True)
class PlanSpec:
    """A whole plan as entered by an admin; money in minor units of `currency`."""

    name: str
    currency: str
    base_fee_minor: int
    markup_pct: Decimal
    aws_spend_limit_minor: int | None
    metrics: tuple[MetricSpec, ...] = field(default_factory=tuple)


@dataclass
class PlanChange:
    plan: Plan
    new_version: bool
    customers_moved: list[int] = field(default_factory=list)
    changed: bool = True  # False: the spec held the plan's values already, nothing written


def parse_major(text: str, currency: str, what: str) -> int:
    """'20.50' EUR -> 2050 minor units; refuses more digits than the currency has."""
    try:
        value = Decimal(str(text).strip().replace(",", ""))
    except InvalidOperation:
        raise ValidationError(f"{what}: {text!r} is not an amount (for example 20.00).") from None
    if not value.is_finite() or value < 0:
        raise ValidationError(f"{what}: {text!r} must be zero or more.")
    scaled = value.scaleb(exponent(currency))
    if scaled != scaled.to_integral_value():
        raise ValidationError(
            f"{what}: {text!r} has more decimals than {currency} allows ({exponent(currency)})."
        )
    return int(scaled)


def _places(value: Decimal) -> int:
    exp = value.as_tuple().exponent
    return -exp if isinstance(exp, int) and exp < 0 else 0


def validate_plan(spec: PlanSpec) -> list[str]:
    """Every problem with a plan as entered, as sentences (empty when it is fine)."""
    problems: list[str] = []
    if not spec.name.strip():
        problems.append("the plan needs a name")
    try:
        normalize_currency(spec.currency)
    except MoneyError as exc:
        problems.append(str(exc))
    if spec.base_fee_minor < 0:
        problems.append("the base fee must be zero or more")
    if not Decimal(0) <= spec.markup_pct <= _MAX_MARKUP_PCT:
        problems.append(f"the markup must be between 0 and {_MAX_MARKUP_PCT} percent")
    if _places(spec.markup_pct) > 6:
        problems.append("the markup may have at most 6 decimals")
    if spec.aws_spend_limit_minor is not None and spec.aws_spend_limit_minor < 0:
        problems.append("the AWS spend limit must be zero or more (or empty for none)")
    seen: set[str] = set()
    for m in spec.metrics:
        where = f"metric {m.metric!r}"
        if not _METRIC_RE.match(m.metric):
            problems.append(
                f"{where}: use lower-case letters, digits and _ (for example api_calls)"
            )
        if m.metric in seen:
            problems.append(f"{where} is listed twice")
        seen.add(m.metric)
        if m.aggregation not in AGGREGATIONS:
            problems.append(f"{where}: aggregation must be one of {', '.join(AGGREGATIONS)}")
        if not m.included.is_finite() or m.included < 0:
            problems.append(f"{where}: the included quantity must be zero or more")
        elif _places(m.included) > _INCLUDED_PLACES:
            problems.append(f"{where}: the included quantity has more than 6 decimals")
        if not m.unit_price.is_finite() or m.unit_price < 0:
            problems.append(f"{where}: the overage unit price must be zero or more")
        elif _places(m.unit_price) > _PRICE_PLACES:
            problems.append(f"{where}: the overage unit price has more than 10 decimals")
    return problems


def plain(value: Decimal) -> str:
    """'1000', '0.0004': no exponent, no trailing zeros (stored decimals come back as 1E+3)."""
    return format(value.normalize(), "f")


def describe_plan(session: Session, plan: Plan) -> dict[str, Any]:
    """A plan and its metrics as plain values (audit before/after, page display)."""
    metrics = tuple(
        MetricSpec(m.metric, m.included_quantity, m.overage_unit_price, m.unit, m.aggregation)
        for m in plan_metrics(session, plan.id or 0)
    )
    limit = plan.aws_spend_limit_minor
    return _spec_view(
        PlanSpec(plan.name, plan.currency, plan.base_fee_minor, plan.markup_pct, limit, metrics)
    )


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
        "metrics": [
            {
                "metric": m.metric,
                "unit": m.unit.strip(),
                "aggregation": m.aggregation,
                "included": plain(m.included),
                "unit_price": plain(m.unit_price),
            }
            for m in spec.metrics
        ],
    }


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
    for old in plan_metrics(session, plan.id or 0):
        session.delete(old)
    session.flush()
    for m in spec.metrics:
        session.add(
            PlanMetric(
                plan_id=plan.id or 0,
                metric=m.metric,
                unit=m.unit.strip(),
                aggregation=m.aggregation,
                included_quantity=m.included,
                overage_unit_price=m.unit_price,
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


def _billed_on(session: Session, plan_id: int, periods: Sequence[Period]) -> list[Customer]:
    customers = session.exec(
        select(Customer).where((Customer.plan_id == plan_id) | (Customer.next_plan_id == plan_id))
    ).all()
    return [c for c in customers if any(effective_plan_id(c, p) == plan_id for p in periods)]


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
    customers = session.exec(
        select(Customer).where((Customer.plan_id == old.id) | (Customer.next_plan_id == old.id))
    ).all()
    for customer in customers:
        if customer.next_plan_id == old.id:
            customer.next_plan_id = new.id  # the pending plan was the old version
        elif customer.next_plan_id is None:
            customer.next_plan_id = new.id
            customer.next_plan_from = str(starts)
        else:
            continue  # moving to another plan anyway
        bump(customer, actor=actor, now=now)
        session.add(customer)
        moved.append(customer.id or 0)
    session.flush()
    return moved


def plan_overview(session: Session, now: datetime) -> list[dict[str, Any]]:
    """One row per customer: current plan, pending plan and from when (for the admin page)."""
    names = {p.id: p.name for p in session.exec(select(Plan)).all()}
    current = Period.containing(now)
    rows = []
    for c in session.exec(select(Customer).order_by(col(Customer.name))).all():
        plan_now = effective_plan_id(c, current)
        plan_next = effective_plan_id(c, current.next())
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
            }
        )
    return rows


def _decimal(text: object, what: str, problems: list[str]) -> Decimal:
    try:
        value = Decimal(str(text if text is not None else "").strip().replace(",", "") or "0")
    except InvalidOperation:
        problems.append(f"{what}: {text!r} is not a number")
        return Decimal(0)
    if not value.is_finite():
        problems.append(f"{what}: {text!r} is not a number")
        return Decimal(0)
    return value


def spec_from_form(
    *,
    name: str,
    currency: str,
    base_fee: str,
    markup_pct: str,
    aws_spend_limit: str,
    metrics: Sequence[dict[str, Any]],
) -> PlanSpec:
    """A PlanSpec from the plan editor's text fields (exact decimals, never floats)."""
    problems: list[str] = []
    try:
        cur = normalize_currency(currency)
    except MoneyError as exc:
        raise ValidationError("The plan was not saved:", [str(exc)]) from None
    amounts: dict[str, int | None] = {}
    for key, label, text in (
        ("base", "base fee", base_fee),
        ("limit", "AWS spend limit", aws_spend_limit),
    ):
        if key == "limit" and not str(text or "").strip():
            amounts[key] = None
            continue
        try:
            amounts[key] = parse_major(str(text or "0"), cur, label.capitalize())
        except ValidationError as exc:
            problems.append(str(exc))
    markup = _decimal(markup_pct, "markup", problems)
    specs = []
    for row in metrics:
        metric = str(row.get("metric") or "").strip()
        if not metric:
            continue  # an empty editor row
        specs.append(
            MetricSpec(
                metric=metric,
                unit=str(row.get("unit") or "").strip(),
                aggregation=str(row.get("aggregation") or default_aggregation(metric)),
                included=_decimal(row.get("included"), f"{metric} included", problems),
                unit_price=_decimal(row.get("unit_price"), f"{metric} unit price", problems),
            )
        )
    if problems:
        raise ValidationError("The plan was not saved:", problems)
    return PlanSpec(
        name=name.strip(),
        currency=cur,
        base_fee_minor=amounts.get("base") or 0,
        markup_pct=markup,
        aws_spend_limit_minor=amounts.get("limit"),
        metrics=tuple(specs),
    )
