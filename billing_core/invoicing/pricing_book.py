"""The pricing rules in force for a period, read once from the database and handed to the pure
pricing code (invoicing/pricing.py) as terms.

Drafts (preview and run), the usage page and reconciliation all read plans, tiers, scoped
rules, customer overrides and discounts through `PricingBook.load`, so each prices a month
with the same rules. Reads only; about five queries whatever the number of customers.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from decimal import Decimal

from sqlmodel import Session, col, select

from billing_core.customers.pricing_tables import (
    CustomerDiscount,
    CustomerPricingRule,
    PlanPricingRule,
    PlanTier,
)
from billing_core.invoicing.aws_rules import AwsRule, CostItem, RuleSet, Treatment
from billing_core.invoicing.charge_models import ChargeModel, MetricTerms, Tier
from billing_core.invoicing.commitments import Discount, DiscountKind
from billing_core.invoicing.pricing import PlanTerms
from billing_core.models import Plan, PlanMetric
from billing_core.periods import Period


def metric_terms(metric: PlanMetric, tiers: list[PlanTier]) -> MetricTerms:
    """A stored metric (and its tiers, in order) as pure terms."""
    return MetricTerms(
        metric.metric,
        metric.included_quantity,
        metric.overage_unit_price,
        metric.unit,
        ChargeModel(metric.charge_model or ChargeModel.PER_UNIT),
        tuple(
            Tier(t.up_to, t.unit_price, t.flat_fee) for t in sorted(tiers, key=lambda t: t.position)
        ),
        metric.package_size,
    )


def plan_rule(row: PlanPricingRule | CustomerPricingRule, source: str) -> AwsRule:
    return AwsRule(row.pct, row.service, row.account_id, row.usage_type, source)


def in_force(row: CustomerPricingRule, period: Period) -> bool:
    p = str(period)
    return row.effective_from <= p and (row.effective_until is None or p < row.effective_until)


def cost_items(detail: Mapping[tuple[str | None, str, str], Decimal]) -> tuple[CostItem, ...]:
    """Attributed costs with their account (costs/attribution.py `detail`) as cost items."""
    return tuple(
        CostItem(service, usd, account, None, record_type)
        for (account, service, record_type), usd in sorted(
            detail.items(), key=lambda kv: (kv[0][1], kv[0][0] or "", kv[0][2])
        )
    )


@dataclass
class PricingBook:
    """Every plan's terms and every customer's overrides and discounts in force in `period`."""

    period: Period
    plans: dict[int, Plan]
    _metrics: dict[int, list[PlanMetric]]
    _tiers: dict[tuple[int, str], list[PlanTier]]
    _rules: dict[int, list[AwsRule]]
    _overrides: dict[int, tuple[AwsRule, ...]]
    _discounts: dict[int, tuple[Discount, ...]]
    _terms: dict[int, PlanTerms] = field(default_factory=dict)

    @classmethod
    def load(cls, session: Session, period: Period) -> PricingBook:
        plans = {p.id: p for p in session.exec(select(Plan)).all() if p.id is not None}
        metrics: dict[int, list[PlanMetric]] = {}
        for m in session.exec(select(PlanMetric).order_by(col(PlanMetric.id))).all():
            metrics.setdefault(m.plan_id, []).append(m)
        tiers: dict[tuple[int, str], list[PlanTier]] = {}
        for t in session.exec(select(PlanTier)).all():
            tiers.setdefault((t.plan_id, t.metric), []).append(t)
        rules: dict[int, list[AwsRule]] = {}
        for r in session.exec(select(PlanPricingRule).order_by(col(PlanPricingRule.id))).all():
            rules.setdefault(r.plan_id, []).append(plan_rule(r, "plan"))
        overrides: dict[int, list[AwsRule]] = {}
        for o in session.exec(
            select(CustomerPricingRule).order_by(col(CustomerPricingRule.id))
        ).all():
            if in_force(o, period):
                overrides.setdefault(o.customer_id, []).append(plan_rule(o, "customer"))
        discounts: dict[int, list[Discount]] = {}
        for d in session.exec(select(CustomerDiscount).order_by(col(CustomerDiscount.id))).all():
            discount = Discount(
                DiscountKind(d.kind), d.value, d.starts, d.months, d.currency, d.description
            )
            if discount.month_number(str(period)) is not None:
                discounts.setdefault(d.customer_id, []).append(discount)
        return cls(
            period,
            plans,
            metrics,
            tiers,
            rules,
            {k: tuple(v) for k, v in overrides.items()},
            {k: tuple(v) for k, v in discounts.items()},
        )

    def plan_terms(self, plan_id: int) -> PlanTerms:
        """A plan's pure terms (one object per plan, so its rule set is shared and memoised)."""
        found = self._terms.get(plan_id)
        if found is not None:
            return found
        plan = self.plans[plan_id]
        terms = PlanTerms(
            name=plan.name,
            currency=plan.currency,
            base_fee_minor=plan.base_fee_minor,
            markup_pct=plan.markup_pct,
            metrics=tuple(
                metric_terms(m, self._tiers.get((plan_id, m.metric), []))
                for m in self._metrics.get(plan_id, [])
            ),
            rules=tuple(self._rules.get(plan_id, [])),
            treatments={k: Treatment(v) for k, v in (plan.adjustments or {}).items()},
            minimum_spend_minor=plan.minimum_spend_minor,
        )
        self._terms[plan_id] = terms
        return terms

    def metric(self, plan_id: int, metric: str) -> MetricTerms | None:
        for terms in self.plan_terms(plan_id).metrics:
            if terms.metric == metric:
                return terms
        return None

    def rule_set(self, plan_id: int, customer_id: int) -> RuleSet:
        """The AWS rules that price a customer: its plan's, with its overrides."""
        terms = self.plan_terms(plan_id)
        overrides = self.overrides(customer_id)
        return RuleSet.of(terms.markup_pct, terms.rules, overrides) if overrides else terms.rule_set

    def overrides(self, customer_id: int) -> tuple[AwsRule, ...]:
        return self._overrides.get(customer_id, ())

    def discounts(self, customer_id: int) -> tuple[Discount, ...]:
        return self._discounts.get(customer_id, ())
