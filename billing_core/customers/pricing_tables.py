"""Tables of pricing rules (DESIGN.md section 13; the pure arithmetic is in invoicing/).

- `PlanTier`: a graduated or volume metric's tiers, by plan and metric, in order;
- `PlanPricingRule`: a plan's scoped AWS markup (positive) or discount (negative), in percent;
- `CustomerPricingRule`: a customer's override of the same shape, effective-dated like the
  customer's terms: in force from `effective_from` up to (not including) `effective_until`;
- `CustomerDiscount`: a percentage or fixed discount for `months` months from `starts`.

A plan's rows change with the plan (editing a plan that bills customers makes a new version,
customers/plans.py), so a billed month keeps the rules it was priced with.
"""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal

from sqlmodel import Field, SQLModel

from billing_core.periods import utcnow
from billing_core.sqltypes import ExactDecimal, UTCDateTime


class PlanTier(SQLModel, table=True):
    id: int | None = Field(default=None, primary_key=True)
    plan_id: int = Field(foreign_key="plan.id", index=True)
    metric: str
    position: int = 0
    # Billable units (above the included quantity) up to this one, inclusive; None: no limit.
    up_to: Decimal | None = Field(default=None, sa_type=ExactDecimal(6))
    unit_price: Decimal = Field(default=Decimal(0), sa_type=ExactDecimal(10))
    flat_fee: Decimal = Field(default=Decimal(0), sa_type=ExactDecimal(10))


class PlanPricingRule(SQLModel, table=True):
    id: int | None = Field(default=None, primary_key=True)
    plan_id: int = Field(foreign_key="plan.id", index=True)
    service: str | None = None
    account_id: str | None = Field(default=None, max_length=12)
    usage_type: str | None = None
    pct: Decimal = Field(sa_type=ExactDecimal(6))  # + markup, - discount


class CustomerPricingRule(SQLModel, table=True):
    id: int | None = Field(default=None, primary_key=True)
    customer_id: int = Field(foreign_key="customer.id", index=True)
    effective_from: str  # YYYY-MM
    effective_until: str | None = None  # YYYY-MM, exclusive
    service: str | None = None
    account_id: str | None = Field(default=None, max_length=12)
    usage_type: str | None = None
    pct: Decimal = Field(sa_type=ExactDecimal(6))
    created_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)
    created_by: str = "system"


class CustomerDiscount(SQLModel, table=True):
    id: int | None = Field(default=None, primary_key=True)
    customer_id: int = Field(foreign_key="customer.id", index=True)
    kind: str  # percent or fixed
    value: Decimal = Field(sa_type=ExactDecimal(10))  # percent, or major units of `currency`
    currency: str | None = Field(default=None, max_length=3)
    starts: str  # YYYY-MM
    months: int = 1
    description: str = ""
    created_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)
    created_by: str = "system"
