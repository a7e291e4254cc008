"""Plans as code: the YAML file `import-plans` reads and `export-plans` writes (no I/O here).

The format (an example: examples/plans.yaml; README "Plans as code"):

    plans:
      - name: reseller              # the plan's name (an existing plan of this name is edited)
        currency: EUR
        base_fee: 99.00             # major units of the currency
        markup_pct: 10              # on all AWS costs
        aws_spend_limit: 500.00     # optional
        minimum_spend: 250.00       # optional monthly minimum (a "minimum commitment" line)
        adjustments: {Credit: pass_through, Tax: at_cost, Refund: keep}
        rules:                      # scoped AWS rules; the most specific wins
          - {service: AWS Lambda, markup_pct: 20}
          - {account: "111111111111", discount_pct: 5}
          - {service: Amazon S3, account: "222222222222", markup_pct: 0}
        metrics:
          - {metric: seats, included: 10, unit_price: 3.00, unit: users}
          - metric: api_calls
            included: 1000000
            model: graduated        # per_unit (default), graduated, volume, package
            tiers:
              - {up_to: 1000000, unit_price: 0.0004}
              - {unit_price: 0.0002}              # no up_to: everything above
          - {metric: storage_gb, model: package, package_size: 100, unit_price: 5.00}
    customers:                      # optional: per-customer overrides, by email
      - email: billing@acme.example
        rules: [{service: AWS Lambda, markup_pct: 15}]
        discounts:
          - {percent: 20, starts: 2026-12, months: 3, description: Launch discount}
          - {amount: 50.00, currency: EUR, starts: 2027-01, months: 1}

Numbers are read as exact decimals (never floats). The whole file is checked before anything
is written: every problem is listed with where it is (`plans[2] (growth) metrics[1]: ...`).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from typing import Any

import yaml

from billing_core.customers.plan_specs import (
    MetricSpec,
    PlanSpec,
    RuleSpec,
    default_aggregation,
    parse_major,
    plain,
    rule_problems,
    validate_plan,
)
from billing_core.errors import MoneyError, ValidationError
from billing_core.invoicing.charge_models import ChargeModel, Tier
from billing_core.invoicing.commitments import DiscountKind
from billing_core.money import minor_to_decimal, normalize_currency
from billing_core.periods import Period

_PLAN_KEYS = {
    "name",
    "currency",
    "base_fee",
    "markup_pct",
    "aws_spend_limit",
    "minimum_spend",
    "adjustments",
    "rules",
    "metrics",
}
_METRIC_KEYS = {
    "metric",
    "unit",
    "aggregation",
    "included",
    "unit_price",
    "model",
    "tiers",
    "package_size",
}
_TIER_KEYS = {"up_to", "unit_price", "flat_fee"}
_RULE_KEYS = {"service", "account", "usage_type", "markup_pct", "discount_pct"}
_CUSTOMER_KEYS = {"email", "rules", "discounts"}
_DISCOUNT_KEYS = {"percent", "amount", "currency", "starts", "months", "description"}


@dataclass(frozen=True)
class DiscountSpec:
    kind: DiscountKind
    value: Decimal
    starts: str
    months: int
    currency: str | None = None
    description: str = ""


@dataclass(frozen=True)
class CustomerSpec:
    """A customer's overrides in a plans file: scoped rules and discounts."""

    email: str
    rules: tuple[RuleSpec, ...] = ()
    discounts: tuple[DiscountSpec, ...] = ()


@dataclass
class PlanFile:
    plans: list[PlanSpec] = field(default_factory=list)
    customers: list[CustomerSpec] = field(default_factory=list)


class _Loader(yaml.SafeLoader):  # type: ignore[misc]
    """YAML with decimals: `0.10` is Decimal('0.10'), never a float."""


def _decimal_node(loader: yaml.SafeLoader, node: yaml.Node) -> Decimal:
    text = str(loader.construct_scalar(node))  # type: ignore[arg-type]
    try:
        return Decimal(text.replace("_", ""))
    except InvalidOperation:
        return Decimal("NaN")


_Loader.add_constructor("tag:yaml.org,2002:float", _decimal_node)


class _Dumper(yaml.SafeDumper):  # type: ignore[misc]
    """Writes decimals as plain numbers and keeps keys in the order given."""


def _represent_decimal(dumper: yaml.SafeDumper, value: Decimal) -> yaml.Node:
    text = format(value, "f")  # money keeps its digits (99.00); quantities come normalized
    tag = "tag:yaml.org,2002:float" if "." in text else "tag:yaml.org,2002:int"
    return dumper.represent_scalar(tag, text)


_Dumper.add_representer(Decimal, _represent_decimal)


class _Problems:
    def __init__(self) -> None:
        self.items: list[str] = []

    def add(self, where: str, what: str) -> None:
        self.items.append(f"{where}: {what}")


def _mapping(value: object, where: str, keys: set[str], problems: _Problems) -> dict[str, Any]:
    if not isinstance(value, Mapping):
        problems.add(where, "expected a mapping of keys and values")
        return {}
    unknown = sorted(str(k) for k in value if k not in keys)
    if unknown:
        problems.add(
            where, f"unknown key(s) {', '.join(unknown)}; allowed: {', '.join(sorted(keys))}"
        )
    return dict(value)


def _list(value: object, where: str, problems: _Problems) -> list[Any]:
    if value is None:
        return []
    if not isinstance(value, list):
        problems.add(where, "expected a list")
        return []
    return value


def _number(value: object, where: str, problems: _Problems, default: str = "0") -> Decimal:
    if value is None:
        return Decimal(default)
    if isinstance(value, bool) or not isinstance(value, int | Decimal | str):
        problems.add(where, f"{value!r} is not a number")
        return Decimal(0)
    try:
        number = Decimal(str(value).strip())
    except InvalidOperation:
        number = Decimal("NaN")
    if not number.is_finite():
        problems.add(where, f"{value!r} is not a number")
        return Decimal(0)
    return number


def _text(value: object) -> str | None:
    return None if value is None else str(value).strip() or None


def _amount(value: object, currency: str, where: str, problems: _Problems) -> int | None:
    if value is None:
        return None
    try:
        return parse_major(str(value), currency, where)
    except (ValidationError, MoneyError) as exc:
        problems.items.append(str(exc))
        return None


def _rules(value: object, where: str, problems: _Problems) -> tuple[RuleSpec, ...]:
    out = []
    for i, raw in enumerate(_list(value, where, problems), start=1):
        here = f"{where}[{i}]"
        row = _mapping(raw, here, _RULE_KEYS, problems)
        if ("markup_pct" in row) == ("discount_pct" in row):
            problems.add(here, "give either markup_pct or discount_pct")
            continue
        pct = (
            _number(row["markup_pct"], f"{here}.markup_pct", problems)
            if "markup_pct" in row
            else -_number(row["discount_pct"], f"{here}.discount_pct", problems)
        )
        out.append(
            RuleSpec(
                pct,
                _text(row.get("service")),
                _text(row.get("account")),
                _text(row.get("usage_type")),
            )
        )
    return tuple(out)


def _metric(raw: object, where: str, problems: _Problems) -> MetricSpec | None:
    name = _text(raw.get("metric")) if isinstance(raw, Mapping) else None
    where = f"{where} ({name})" if name else where
    row = _mapping(raw, where, _METRIC_KEYS, problems)
    if name is None:
        problems.add(where, "a metric needs a name (metric: api_calls)")
        return None
    tiers = []
    for i, tier_raw in enumerate(_list(row.get("tiers"), f"{where}.tiers", problems), start=1):
        here = f"{where}.tiers[{i}]"
        tier = _mapping(tier_raw, here, _TIER_KEYS, problems)
        up_to = tier.get("up_to")
        tiers.append(
            Tier(
                None if up_to is None else _number(up_to, f"{here}.up_to", problems),
                _number(tier.get("unit_price"), f"{here}.unit_price", problems),
                _number(tier.get("flat_fee"), f"{here}.flat_fee", problems),
            )
        )
    size = row.get("package_size")
    return MetricSpec(
        metric=name,
        included=_number(row.get("included"), f"{where}.included", problems),
        unit_price=_number(row.get("unit_price"), f"{where}.unit_price", problems),
        unit=_text(row.get("unit")) or "",
        aggregation=_text(row.get("aggregation")) or default_aggregation(name),
        model=_text(row.get("model")) or ChargeModel.PER_UNIT,
        tiers=tuple(tiers),
        package_size=None if size is None else _number(size, f"{where}.package_size", problems),
    )


def _plan(raw: object, where: str, problems: _Problems) -> PlanSpec | None:
    name = _text(raw.get("name")) if isinstance(raw, Mapping) else None
    where = f"{where} ({name})" if name else where
    row = _mapping(raw, where, _PLAN_KEYS, problems)
    if name is None:
        problems.add(where, "a plan needs a name")
        return None
    try:
        currency = normalize_currency(str(row.get("currency") or ""))
    except MoneyError as exc:
        problems.add(where, str(exc))
        return None
    adjustments = row.get("adjustments") or {}
    if not isinstance(adjustments, Mapping):
        problems.add(f"{where}.adjustments", "expected record type: treatment pairs")
        adjustments = {}
    metrics = [
        _metric(m, f"{where}.metrics[{i}]", problems)
        for i, m in enumerate(_list(row.get("metrics"), f"{where}.metrics", problems), start=1)
    ]
    spec = PlanSpec(
        name=name,
        currency=currency,
        base_fee_minor=_amount(row.get("base_fee", 0), currency, f"{where}.base_fee", problems)
        or 0,
        markup_pct=_number(row.get("markup_pct"), f"{where}.markup_pct", problems),
        aws_spend_limit_minor=_amount(
            row.get("aws_spend_limit"), currency, f"{where}.aws_spend_limit", problems
        ),
        metrics=tuple(m for m in metrics if m is not None),
        rules=_rules(row.get("rules"), f"{where}.rules", problems),
        # pass_through is the default: not stored, so file and page describe a plan alike
        adjustments=tuple(
            sorted((str(k), str(v)) for k, v in adjustments.items() if v != "pass_through")
        ),
        minimum_spend_minor=_amount(
            row.get("minimum_spend"), currency, f"{where}.minimum_spend", problems
        ),
    )
    for problem in validate_plan(spec):
        problems.add(where, problem)
    return spec


def _discount(raw: object, where: str, problems: _Problems) -> DiscountSpec | None:
    row = _mapping(raw, where, _DISCOUNT_KEYS, problems)
    if ("percent" in row) == ("amount" in row):
        problems.add(where, "give either percent or amount (with currency)")
        return None
    starts = str(row.get("starts") or "")
    try:
        Period.parse(starts)
    except Exception:
        problems.add(where, f"starts {starts!r} is not a month (YYYY-MM)")
        return None
    months = row.get("months", 1)
    if isinstance(months, bool) or not isinstance(months, int) or months < 1:
        problems.add(where, f"months {months!r} must be a whole number of 1 or more")
        return None
    description = str(row.get("description") or "")
    if "percent" in row:
        value = _number(row["percent"], f"{where}.percent", problems)
        if not 0 < value <= 100:
            problems.add(where, "percent must be above 0 and at most 100")
        return DiscountSpec(DiscountKind.PERCENT, value, starts, months, None, description)
    try:
        currency = normalize_currency(str(row.get("currency") or ""))
    except MoneyError as exc:
        problems.add(where, f"a fixed discount needs its currency: {exc}")
        return None
    minor = _amount(row["amount"], currency, f"{where}.amount", problems)
    if minor is None:
        return None
    if minor <= 0:
        problems.add(where, "amount must be above zero")
    value = minor_to_decimal(minor, currency)
    return DiscountSpec(DiscountKind.FIXED, value, starts, months, currency, description)


def _customer(raw: object, where: str, problems: _Problems) -> CustomerSpec | None:
    email = _text(raw.get("email")) if isinstance(raw, Mapping) else None
    where = f"{where} ({email})" if email else where
    row = _mapping(raw, where, _CUSTOMER_KEYS, problems)
    if email is None:
        problems.add(where, "a customer needs its email")
        return None
    rules = _rules(row.get("rules"), f"{where}.rules", problems)
    problems.items += [f"{where}: {p}" for p in rule_problems(rules, "override")]
    discounts = [
        _discount(d, f"{where}.discounts[{i}]", problems)
        for i, d in enumerate(_list(row.get("discounts"), f"{where}.discounts", problems), start=1)
    ]
    return CustomerSpec(email, rules, tuple(d for d in discounts if d is not None))


def parse_plans(text: str) -> PlanFile:
    """The plans and overrides of a file; ValidationError listing every problem and where."""
    problems = _Problems()
    try:
        data = yaml.load(text, Loader=_Loader)  # noqa: S506 (a SafeLoader subclass)
    except yaml.YAMLError as exc:
        raise ValidationError(
            f"The plans file is not valid YAML ({exc}); nothing was imported."
        ) from None
    top = _mapping(data, "file", {"plans", "customers"}, problems)
    out = PlanFile()
    names: set[str] = set()
    for i, raw in enumerate(_list(top.get("plans"), "plans", problems), start=1):
        spec = _plan(raw, f"plans[{i}]", problems)
        if spec is not None:
            if spec.name in names:
                problems.add(f"plans[{i}]", f"the plan {spec.name!r} is listed twice")
            names.add(spec.name)
            out.plans.append(spec)
    emails: set[str] = set()
    for i, raw in enumerate(_list(top.get("customers"), "customers", problems), start=1):
        customer = _customer(raw, f"customers[{i}]", problems)
        if customer is not None:
            if customer.email.lower() in emails:
                problems.add(f"customers[{i}]", f"{customer.email} is listed twice")
            emails.add(customer.email.lower())
            out.customers.append(customer)
    if problems.items:
        raise ValidationError(
            "The plans file was not imported (nothing was changed):", problems.items
        )
    return out


def _n(value: Decimal) -> Decimal:
    """A stored quantity without its storage scale's trailing zeros (100, 0.0003)."""
    return Decimal(plain(value))


def _rule_out(rule: RuleSpec) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if rule.service is not None:
        out["service"] = rule.service
    if rule.account_id is not None:
        out["account"] = rule.account_id
    if rule.usage_type is not None:
        out["usage_type"] = rule.usage_type
    if rule.pct < 0:
        out["discount_pct"] = _n(-rule.pct)
    else:
        out["markup_pct"] = _n(rule.pct)
    return out


def _metric_out(m: MetricSpec) -> dict[str, Any]:
    out: dict[str, Any] = {"metric": m.metric, "included": _n(m.included)}
    if m.unit:
        out["unit"] = m.unit
    if m.aggregation != default_aggregation(m.metric):
        out["aggregation"] = m.aggregation
    if m.model != ChargeModel.PER_UNIT:
        out["model"] = str(m.model)
    if m.tiers:
        out["tiers"] = [
            ({} if t.up_to is None else {"up_to": _n(t.up_to)})
            | {"unit_price": _n(t.unit_price)}
            | ({"flat_fee": _n(t.flat_fee)} if t.flat_fee else {})
            for t in m.tiers
        ]
    else:
        out["unit_price"] = _n(m.unit_price)
    if m.package_size is not None:
        out["package_size"] = _n(m.package_size)
    return out


def _money(minor: int, currency: str) -> Decimal:
    return minor_to_decimal(minor, currency)


def plan_out(spec: PlanSpec) -> dict[str, Any]:
    """One plan in the file's shape (export-plans)."""
    cur = spec.currency
    out: dict[str, Any] = {
        "name": spec.name,
        "currency": cur,
        "base_fee": _money(spec.base_fee_minor, cur),
        "markup_pct": _n(spec.markup_pct),
    }
    if spec.aws_spend_limit_minor is not None:
        out["aws_spend_limit"] = _money(spec.aws_spend_limit_minor, cur)
    if spec.minimum_spend_minor is not None:
        out["minimum_spend"] = _money(spec.minimum_spend_minor, cur)
    if spec.adjustments:
        out["adjustments"] = dict(spec.adjustments)
    if spec.rules:
        out["rules"] = [_rule_out(r) for r in spec.rules]
    out["metrics"] = [_metric_out(m) for m in spec.metrics]
    return out


def customer_out(spec: CustomerSpec) -> dict[str, Any]:
    out: dict[str, Any] = {"email": spec.email}
    if spec.rules:
        out["rules"] = [_rule_out(r) for r in spec.rules]
    if spec.discounts:
        out["discounts"] = [
            (
                {"percent": _n(d.value)}
                if d.kind is DiscountKind.PERCENT
                else {"amount": d.value, "currency": d.currency}
            )
            | {"starts": d.starts, "months": d.months}
            | ({"description": d.description} if d.description else {})
            for d in spec.discounts
        ]
    return out


def dump_plans(plans: Sequence[PlanSpec], customers: Sequence[CustomerSpec]) -> str:
    """The YAML text of plans and overrides (what `parse_plans` reads back to the same)."""
    data: dict[str, Any] = {"plans": [plan_out(p) for p in plans]}
    if customers:
        data["customers"] = [customer_out(c) for c in customers]
    dump: Callable[..., str] = yaml.dump
    return dump(data, Dumper=_Dumper, sort_keys=False, allow_unicode=True, width=100)
