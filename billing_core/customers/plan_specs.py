"""Plan specifications: what an admin types for a plan, parsed and validated whole (pure).

A PlanSpec (base fee, markup, AWS spend limit, usage metrics with included quantity, unit price
and aggregation) is checked by `validate_plan` before anything is written; `spec_from_form` builds
one from the plan editor's text fields, exact decimals, never floats."""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from typing import Any

from billing_core.errors import MoneyError, ValidationError
from billing_core.invoicing.aws_rules import ADJUSTMENT_TYPES, Treatment
from billing_core.invoicing.charge_models import ChargeModel, Tier, tier_problems
from billing_core.money import exponent, normalize_currency

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


@dataclass(frozen=True)
class MetricSpec:
    """One metric of a plan as entered by an admin (exact decimals)."""

    metric: str
    included: Decimal
    unit_price: Decimal
    unit: str = ""
    aggregation: str = "sum"
    model: str = ChargeModel.PER_UNIT
    tiers: tuple[Tier, ...] = ()
    package_size: Decimal | None = None


@dataclass(frozen=True)
class RuleSpec:
    """A scoped AWS rule: `pct` percent markup (positive) or discount (negative)."""

    pct: Decimal
    service: str | None = None
    account_id: str | None = None
    usage_type: str | None = None


@dataclass(frozen=True)
class PlanSpec:
    """A whole plan as entered by an admin; money in minor units of `currency`.

    `rules` are the scoped AWS rules beyond `markup_pct` (all AWS costs); `adjustments` maps
    an AWS record type to its treatment; `minimum_spend_minor` is the monthly minimum spend.
    """

    name: str
    currency: str
    base_fee_minor: int
    markup_pct: Decimal
    aws_spend_limit_minor: int | None
    metrics: tuple[MetricSpec, ...] = field(default_factory=tuple)
    rules: tuple[RuleSpec, ...] = ()
    adjustments: tuple[tuple[str, str], ...] = ()
    minimum_spend_minor: int | None = None


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
        try:
            model = ChargeModel(m.model)
        except ValueError:
            models = ", ".join(ChargeModel)
            problems.append(f"{where}: charge model {m.model!r} is not one of {models}")
        else:
            problems += [f"{where}: {p}" for p in tier_problems(model, m.tiers, m.package_size)]
    problems += rule_problems(spec.rules, "rule")
    if spec.minimum_spend_minor is not None and spec.minimum_spend_minor < 0:
        problems.append("the minimum spend must be zero or more (or empty for none)")
    for record_type, treatment in spec.adjustments:
        if record_type not in ADJUSTMENT_TYPES:
            problems.append(
                f"adjustment {record_type!r} is not an AWS record type the plan can decide "
                f"about ({', '.join(ADJUSTMENT_TYPES)})"
            )
        if treatment not in set(Treatment):
            problems.append(
                f"adjustment {record_type!r}: {treatment!r} is not one of {', '.join(Treatment)}"
            )
    return problems


_ACCOUNT_RE = re.compile(r"^[0-9]{12}$")


def rule_problems(rules: Sequence[RuleSpec], what: str) -> list[str]:
    """What is wrong with scoped rules (numbered from 1 as `what` 1, 2, ...)."""
    problems: list[str] = []
    seen: set[tuple[str | None, str | None, str | None]] = set()
    for i, rule in enumerate(rules, start=1):
        where = f"{what} {i}"
        scope = (rule.service, rule.account_id, rule.usage_type)
        if scope == (None, None, None) and what == "rule":
            problems.append(f"{where}: a plan's rule for all AWS costs is its markup_pct")
        if scope in seen:
            problems.append(f"{where}: another rule has the same scope")
        seen.add(scope)
        if rule.account_id is not None and not _ACCOUNT_RE.match(rule.account_id):
            problems.append(f"{where}: account {rule.account_id!r} is not a 12-digit AWS id")
        if not rule.pct.is_finite() or not -100 <= rule.pct <= _MAX_MARKUP_PCT:
            problems.append(f"{where}: the percent must be between -100 and {_MAX_MARKUP_PCT}")
        elif _places(rule.pct) > 6:
            problems.append(f"{where}: the percent may have at most 6 decimals")
    return problems


def plain(value: Decimal) -> str:
    """'1000', '0.0004': no exponent, no trailing zeros (stored decimals come back as 1E+3)."""
    return format(value.normalize(), "f")


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
    minimum_spend: str = "",
    rules: Sequence[dict[str, Any]] = (),
    adjustments: Mapping[str, str] | None = None,
    tiers: Mapping[str, tuple[Tier, ...]] | None = None,
) -> PlanSpec:
    """A PlanSpec from the plan editor's text fields (exact decimals, never floats).

    Metric rows may carry `model` and `package_size`; tiers are not edited on the page and
    come in `tiers` by metric (the plan's, kept as they were); `rules` rows hold `service`,
    `account`, `usage_type` and `pct` (positive: markup, negative: discount)."""
    problems: list[str] = []
    try:
        cur = normalize_currency(currency)
    except MoneyError as exc:
        raise ValidationError("The plan was not saved:", [str(exc)]) from None
    amounts: dict[str, int | None] = {}
    for key, label, text in (
        ("base", "base fee", base_fee),
        ("limit", "AWS spend limit", aws_spend_limit),
        ("minimum", "minimum spend", minimum_spend),
    ):
        if key in ("limit", "minimum") and not str(text or "").strip():
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
                model=str(row.get("model") or ChargeModel.PER_UNIT),
                tiers=(tiers or {}).get(metric, ()),
                package_size=_decimal(row.get("package_size"), f"{metric} package size", problems)
                if str(row.get("package_size") or "").strip()
                else None,
            )
        )
    rule_specs = []
    for row in rules:
        scope = {
            k: str(row.get(k) or "").strip() or None for k in ("service", "account", "usage_type")
        }
        if not str(row.get("pct") or "").strip() and not any(scope.values()):
            continue  # an empty editor row
        rule_specs.append(
            RuleSpec(
                _decimal(row.get("pct"), "rule percent", problems),
                scope["service"],
                scope["account"],
                scope["usage_type"],
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
        rules=tuple(rule_specs),
        adjustments=tuple(
            sorted((k, v) for k, v in (adjustments or {}).items() if v != Treatment.PASS_THROUGH)
        ),
        minimum_spend_minor=amounts.get("minimum"),
    )
