"""Shared AWS costs: split the spend no customer owns among the customers. Pure: no I/O.

The shared pool of a month is its unattributed spend plus the spend of the configured shared
accounts and services (costs/attribution.py), in the cost currency (USD), net of credits and
tax. The split happens in USD **before** each customer's pricing and exchange rate, so every
customer's share is the same USD figure whatever currency its invoice is in; pricing then
treats the share like its other AWS costs (markup, FX, one rounding step: a line of kind
`shared_cost`, "Shared AWS costs, <month>").

Rules (`SharedCostRule`, SHARED_COST_RULE):
- proportional: to each participant's attributed AWS charges of the month (credits, refunds
  and tax left out, negative charges count as 0);
- even: the same to every participant;
- weights: by SHARED_COST_WEIGHTS (customer id -> weight; a participant without one gets 0);
- unbilled (the default): nobody; the company bears the pool (the AWS costs page shows it).

Participants are the active customers with a plan in force in the month (customers/terms.py),
whether or not this run invoices them, so every run and preview of a month computes the same
split. The pool is rounded once to whole cents (half up) and those cents are split by the
largest-remainder method in integers: each participant gets the floor of its exact quota, and
the cents still unassigned go one each to the largest remainders (ties: lowest customer id).
So the shares add up to the rounded pool exactly, and

    allocated + left_over == pool   (exactly, in USD)

where `left_over` is what no invoice carries: the sub-cent rounding of the pool, and the whole
pool when the rule is `unbilled` or nobody has a weight. A negative pool (unattributed credits
exceeding charges) is split the same way into negative shares.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from decimal import Decimal

from billing_core.money import minor_to_decimal, round_minor
from billing_core.states import SharedCostRule

ZERO = Decimal(0)


@dataclass(frozen=True)
class SharedCostPolicy:
    """How the shared pool is split: the rule and, for `weights`, customer id -> weight."""

    rule: SharedCostRule = SharedCostRule.UNBILLED
    weights: Mapping[int, Decimal] = field(default_factory=dict)


@dataclass(frozen=True)
class SharedAllocation:
    """One month's split of the shared pool; `shares_minor` is customer id -> cents of
    `currency` (the cost currency), `pool` the pool at full precision."""

    rule: SharedCostRule
    pool: Decimal
    shares_minor: Mapping[int, int] = field(default_factory=dict)
    currency: str = "USD"

    def share(self, customer_id: int) -> Decimal:
        """A customer's share in `currency` (exact cents; 0 when it has none)."""
        return minor_to_decimal(self.shares_minor.get(customer_id, 0), self.currency)

    @property
    def allocated(self) -> Decimal:
        return minor_to_decimal(sum(self.shares_minor.values()), self.currency)

    @property
    def left_over(self) -> Decimal:
        """What no invoice carries: pool minus allocated, exactly."""
        return self.pool - self.allocated


def largest_remainder(total_minor: int, weights: Mapping[int, Decimal]) -> dict[int, int]:
    """Split `total_minor` (integer) by non-negative `weights`; the parts add up to it exactly.

    Integer arithmetic only: the weights are scaled to integers by their common number of
    decimals. {} when the weights add up to 0 (nothing can be split)."""
    sign = -1 if total_minor < 0 else 1
    amount = abs(total_minor)
    positive = {k: w for k, w in weights.items() if w > 0}
    if not positive:
        return {}
    places = max(-int(w.as_tuple().exponent) for w in positive.values())
    scaled = {k: int(w.scaleb(max(places, 0))) for k, w in positive.items()}
    whole = sum(scaled.values())
    floors = {k: amount * w // whole for k, w in scaled.items()}
    remainders = {k: amount * w % whole for k, w in scaled.items()}
    missing = amount - sum(floors.values())
    for k in sorted(scaled, key=lambda k: (-remainders[k], k))[:missing]:
        floors[k] += 1
    return {k: sign * v for k, v in floors.items() if v}


def basis(
    policy: SharedCostPolicy,
    participants: Iterable[int],
    charges: Mapping[int, Decimal],
) -> dict[int, Decimal]:
    """Each participant's weight under the policy's rule (see the module docstring)."""
    people = sorted(set(participants))
    if policy.rule == SharedCostRule.PROPORTIONAL:
        return {c: max(ZERO, charges.get(c, ZERO)) for c in people}
    if policy.rule == SharedCostRule.EVEN:
        return dict.fromkeys(people, Decimal(1))
    if policy.rule == SharedCostRule.WEIGHTS:
        return {c: max(ZERO, policy.weights.get(c, ZERO)) for c in people}
    return {}


def allocate(
    pool: Decimal,
    policy: SharedCostPolicy,
    participants: Iterable[int],
    charges: Mapping[int, Decimal],
    *,
    currency: str = "USD",
) -> SharedAllocation:
    """Split the month's shared pool (full precision, `currency`) among the participants.

    `charges`: customer id -> its attributed AWS charges (the proportional rule's weights)."""
    weights = basis(policy, participants, charges)
    shares = largest_remainder(round_minor(pool, currency), weights)
    return SharedAllocation(policy.rule, pool, shares, currency)
