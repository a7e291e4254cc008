"""Scoped AWS pricing rules and what the plan does with AWS adjustments. Pure: no I/O, no clock.

**Rules.** A rule is a markup (positive percent) or a discount (negative percent) on AWS costs,
scoped to all costs, an AWS service, a linked account, a usage type, or a combination. A plan
holds rules and a customer may override them (effective-dated by the caller). As in AWS Billing
Conductor, the most specific rule that matches a cost prices it. Specificity, highest first:

    usage type > service > linked account > all AWS costs (weights 4, 2, 1, 0, added up)

so account + service (3) beats service (2) beats account (1) beats all (0), and a usage-type
rule beats every rule without one. At equal scope the customer's rule replaces the plan's.
The plan's own `markup_pct` is its rule for all AWS costs. A usage type applies only where the
cost source carries one (Cost Explorer snapshots grouped by account or tag do not); an account
only where costs are grouped by linked account.

**Adjustments.** Credits, refunds, tax, support fees and savings-plan or reserved-instance fees
(AWS record types other than `Usage`) are treated per record type:

- `pass_through` (default, the behaviour before rules): billed as a line, priced by the
  account's and the plan's rules like the charges it adjusts;
- `at_cost`: billed as a line at the AWS amount, no markup, no discount;
- `keep`: not billed; the amount stays with us and shows in the margin.

Service- and usage-type-scoped rules never price an adjustment (AWS reports adjustments by
record type, not by service); account and all-costs rules do.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from enum import StrEnum
from functools import lru_cache
from typing import NamedTuple

USAGE = "Usage"
#: AWS record types (Cost Explorer's RECORD_TYPE) a plan can decide about.
ADJUSTMENT_TYPES: tuple[str, ...] = (
    "Credit",
    "Refund",
    "Tax",
    "Support",
    "SavingsPlanRecurringFee",
    "SavingsPlanUpfrontFee",
    "RIFee",
)
_HUNDRED = Decimal(100)
_ONE = Decimal(1)


class Treatment(StrEnum):
    """What a plan does with one AWS record type (see the module docstring)."""

    PASS_THROUGH = "pass_through"  # noqa: S105 (a treatment, not a password)
    AT_COST = "at_cost"
    KEEP = "keep"


@dataclass(frozen=True, slots=True)
class AwsRule:
    """A markup (`pct` > 0) or discount (`pct` < 0) on the AWS costs in its scope.

    `source` is "plan" or "customer" (an override); None scope fields match anything.
    """

    pct: Decimal
    service: str | None = None
    account_id: str | None = None
    usage_type: str | None = None
    source: str = "plan"

    @property
    def specificity(self) -> int:
        return (
            (4 if self.usage_type is not None else 0)
            + (2 if self.service is not None else 0)
            + (1 if self.account_id is not None else 0)
        )

    @property
    def scope(self) -> str:
        """'all AWS costs', 'AWS Lambda in account 111111111111', 'usage type X'."""
        parts = []
        if self.service is not None:
            parts.append(self.service)
        if self.account_id is not None:
            parts.append(f"account {self.account_id}")
        if self.usage_type is not None:
            parts.append(f"usage type {self.usage_type}")
        return ", ".join(parts) if parts else "all AWS costs"

    @property
    def effect(self) -> str:
        """'+10% markup', '-5% discount', 'no markup'."""
        pct = self.pct
        if pct > 0:
            return f"+{_pct(pct)}% markup"
        if pct < 0:
            return f"-{_pct(-pct)}% discount"
        return "no markup"

    @property
    def label(self) -> str:
        """For the preview: "plan rule for AWS Lambda: +10% markup"."""
        who = "customer override" if self.source == "customer" else "plan rule"
        return f"{who} for {self.scope}: {self.effect}"

    @property
    def note(self) -> str:
        """What the customer reads after a line's name ("incl. 10% service fee")."""
        pct = self.pct
        if pct > 0:
            return f"incl. {_pct(pct)}% service fee"
        if pct < 0:
            return f"less {_pct(-pct)}% discount"
        return ""


AT_COST = AwsRule(Decimal(0), source="at_cost")


@dataclass(frozen=True, slots=True)
class RuleTexts:
    """What a rule does to an amount and says about it, computed once per rule."""

    factor: Decimal  # 1 + pct / 100
    suffix: str  # after a line's name: " (account 1111..., incl. 10% service fee)"
    label: str  # the preview's "rule applied"


@lru_cache(maxsize=4096)
def rule_texts(rule: AwsRule) -> RuleTexts:
    """A rule's factor and texts (cached: a run prices many lines with the same few rules)."""
    notes = []
    if rule.account_id is not None:
        notes.append(f"account {rule.account_id}")
    if rule.usage_type is not None:
        notes.append(rule.usage_type)
    if rule.source == "at_cost":
        notes.append("at cost")
        label = "at cost (the plan bills this record type at cost)"
    else:
        label = rule.label
        if rule.note:
            notes.append(rule.note)
    suffix = f" ({', '.join(notes)})" if notes else ""
    return RuleTexts(_ONE + rule.pct / _HUNDRED, suffix, label)


def _pct(value: Decimal) -> str:
    return f"{value.normalize():f}"


_Key = tuple[str | None, str | None, str | None]  # (account, service, usage type)
# Candidate keys of a cost, most specific first (see the module docstring's weights).
_MASKS = sorted(
    ((u, s, a) for u in (True, False) for s in (True, False) for a in (True, False)),
    key=lambda m: -(4 * m[0] + 2 * m[1] + m[2]),
)


@dataclass
class RuleSet:
    """A plan's rules with a customer's overrides, resolved for one customer.

    `match` is memoised per (account, service, usage type): a plan's rule set is shared by
    all its customers without overrides, so each cost key is resolved once per run.
    """

    rules: dict[_Key, AwsRule]
    _memo: dict[_Key, AwsRule] = field(default_factory=dict)

    @classmethod
    def of(
        cls,
        markup_pct: Decimal,
        plan_rules: Iterable[AwsRule] = (),
        overrides: Iterable[AwsRule] = (),
    ) -> RuleSet:
        table: dict[_Key, AwsRule] = {(None, None, None): AwsRule(markup_pct)}
        for rule in (*plan_rules, *overrides):  # overrides last: they replace at equal scope
            table[(rule.account_id, rule.service, rule.usage_type)] = rule
        return cls(table)

    def match(self, account: str | None, service: str | None, usage_type: str | None) -> AwsRule:
        key = (account, service, usage_type)
        found = self._memo.get(key)
        if found is not None:
            return found
        rules = self.rules
        for use_u, use_s, use_a in _MASKS:
            if (use_u and usage_type is None) or (use_s and service is None):
                continue
            if use_a and account is None:
                continue
            rule = rules.get(
                (
                    account if use_a else None,
                    service if use_s else None,
                    usage_type if use_u else None,
                )
            )
            if rule is not None:
                self._memo[key] = rule
                return rule
        raise AssertionError("a rule set always has a rule for all AWS costs")


@dataclass(frozen=True, slots=True)
class CostItem:
    """One AWS cost of a customer's month in USD at AWS rates (full precision).

    `service` is the AWS service, or the record type for adjustments (as Cost Explorer lists
    tax under the service "Tax"); `record_type` is "Usage" for charges.
    """

    service: str
    usd: Decimal
    account_id: str | None = None
    usage_type: str | None = None
    record_type: str = USAGE


class PricedGroup(NamedTuple):
    """AWS costs priced by one rule into one line: `usd` at AWS rates, `factor` the rule's."""

    service: str
    rule: AwsRule
    usd: Decimal

    @property
    def factor(self) -> Decimal:
        return _ONE + self.rule.pct / _HUNDRED


@dataclass(frozen=True, slots=True)
class KeptItem:
    """An adjustment the plan keeps: not billed, in the margin (USD at AWS rates)."""

    record_type: str
    usd: Decimal


def items_from_mapping(costs: Mapping[str, Decimal]) -> tuple[CostItem, ...]:
    """Costs keyed by service, with adjustments keyed by their record type (the shape drafts
    had before accounts were kept), as cost items without an account."""
    return tuple(
        CostItem(key, usd, record_type=key if key in ADJUSTMENT_TYPES else USAGE)
        for key, usd in costs.items()
    )


def group_costs(
    items: Iterable[CostItem],
    rules: RuleSet,
    treatments: Mapping[str, Treatment] | None = None,
) -> tuple[list[PricedGroup], list[KeptItem]]:
    """Group costs by (line, rule): one invoice line per service and rule that priced it,
    sorted by service then most specific rule first; plus the adjustments the plan keeps."""
    # Keyed by the rule's identity: a rule set hands out the same rule objects, and hashing
    # a rule's fields for every cost was a tenth of pricing's time.
    sums: dict[tuple[str, int], Decimal] = {}
    by_id: dict[int, AwsRule] = {}
    kept: dict[str, Decimal] = {}
    memo, match = rules._memo, rules.match
    for item in items:
        if item.record_type == USAGE:
            rule = memo.get((item.account_id, item.service, item.usage_type)) or match(
                item.account_id, item.service, item.usage_type
            )
        else:
            treatment = treatments.get(item.record_type) if treatments else None
            if treatment is Treatment.KEEP:
                kept[item.record_type] = kept.get(item.record_type, Decimal(0)) + item.usd
                continue
            if treatment is Treatment.AT_COST:
                rule = AT_COST
            else:
                rule = rules.match(item.account_id, None, None)
        rid = id(rule)
        by_id[rid] = rule
        key = (item.service, rid)
        found = sums.get(key)
        sums[key] = item.usd if found is None else found + item.usd
    ordered = sorted(
        (service, -by_id[rid].specificity, by_id[rid].account_id or "", rid, usd)
        for (service, rid), usd in sums.items()
        if usd
    )
    groups = [PricedGroup(service, by_id[rid], usd) for service, _s, _a, rid, usd in ordered]
    return groups, [KeptItem(t, usd) for t, usd in sorted(kept.items()) if usd]
