"""Data for the pricing rules on the Customers and plans page: a plan's rules as rows a
finance person reads, and every customer's overrides and discounts."""

from __future__ import annotations

from typing import Any

from sqlmodel import Session, col, select

from billing_core.customers.pricing_tables import CustomerDiscount, CustomerPricingRule
from billing_core.invoicing.aws_rules import ADJUSTMENT_TYPES, AwsRule
from billing_core.invoicing.pricing_book import in_force
from billing_core.models import Customer
from billing_core.periods import Period
from billing_core.views.common_text import pct_effect


def plan_rule_rows(described: dict[str, Any]) -> list[dict[str, str]]:
    """A described plan (customers/plans.py `describe_plan`) as rows: what / applies to /
    effect, most specific rule first as in pricing."""
    currency = described["currency"]
    rows = [
        {
            "rule": "AWS rule",
            "applies to": "all AWS costs",
            "effect": pct_effect(described["markup_pct"]),
        }
    ]
    for r in described.get("rules", []):
        scope = ", ".join(
            f"{label} {r[key]}"
            for key, label in (
                ("service", "service"),
                ("account", "account"),
                ("usage_type", "usage type"),
            )
            if key in r
        )
        rows.append({"rule": "AWS rule", "applies to": scope, "effect": pct_effect(r["pct"])})
    adjustments = described.get("adjustments", {})
    for record_type in ADJUSTMENT_TYPES[:3]:
        treatment = adjustments.get(record_type, "pass_through")
        rows.append(
            {
                "rule": "AWS adjustment",
                "applies to": record_type,
                "effect": treatment.replace("_", " "),
            }
        )
    for m in described["metrics"]:
        model = m.get("model", "per_unit")
        if model == "per_unit":
            effect = f"{currency} {m['unit_price']} per unit"
        elif model == "package":
            effect = f"{currency} {m['unit_price']} per started block of {m.get('package_size')}"
        else:
            tiers = "; ".join(
                f"{'up to ' + t['up_to'] if t['up_to'] is not None else 'above'}: "
                f"{currency} {t['unit_price']}"
                + (f" + {t['flat_fee']} flat" if t["flat_fee"] != "0" else "")
                for t in m.get("tiers", [])
            )
            effect = f"{model}: {tiers}"
        rows.append(
            {
                "rule": "usage",
                "applies to": f"{m['metric']} above {m['included']} included",
                "effect": effect,
            }
        )
    if described.get("minimum_spend") is not None:
        rows.append(
            {
                "rule": "commitment",
                "applies to": "the month's charges",
                "effect": f"minimum {currency} {described['minimum_spend']}",
            }
        )
    return rows


def override_rows(session: Session, period: Period) -> list[dict[str, str]]:
    """Every customer's rule overrides in force in `period` and its discounts."""
    names = {c.id: c.name for c in session.exec(select(Customer))}
    rows = []
    for r in session.exec(select(CustomerPricingRule).order_by(col(CustomerPricingRule.id))):
        if in_force(r, period):
            rule = AwsRule(r.pct, r.service, r.account_id, r.usage_type, "customer")
            rows.append(
                {
                    "customer": names.get(r.customer_id, str(r.customer_id)),
                    "override": f"AWS rule for {rule.scope}",
                    "effect": rule.effect,
                    "months": f"from {r.effective_from}"
                    + (f" to before {r.effective_until}" if r.effective_until else ""),
                }
            )
    for d in session.exec(select(CustomerDiscount).order_by(col(CustomerDiscount.id))):
        what = f"{d.value.normalize():f}%" if d.kind == "percent" else f"{d.currency} {d.value}"
        rows.append(
            {
                "customer": names.get(d.customer_id, str(d.customer_id)),
                "override": d.description or "discount",
                "effect": f"{what} off",
                "months": f"{d.months} month(s) from {d.starts}",
            }
        )
    return rows
