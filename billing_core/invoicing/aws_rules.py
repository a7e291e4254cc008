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
_ZERO = Decimal(0)


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


@dataclass(eq=False, slots=True)
class LineSlot:
    """The invoice line a cost lands on: its service and the rule that priced it (or, for an
    adjustment the plan keeps, its record type in `kept` and no line). One object per
    (service, rule) in a rule set, so costs of several accounts priced by one rule share it.

    `order` sorts lines by service, then most specific rule first; `texts` is the caller's
    cache of what the line says, per month and currency (pricing.py `aws_lines`)."""

    service: str
    rule: AwsRule | None
    kept: str | None = None
    order: tuple[str, int, str, str] = ("", 0, "", "")
    texts: dict[object, tuple[Decimal, str, str]] = field(default_factory=dict)


_CostKey = tuple[str | None, str, str | None, str]  # (account, service, usage type, record type)


@dataclass
class RuleSet:
    """A plan's rules with a customer's overrides, resolved for one customer.

    `match` is memoised per (account, service, usage type), and `slot` per cost key and
    treatments: a plan's rule set is shared by all its customers without overrides (and
    `PlanTerms.rules_for` shares one per set of overrides), so each cost key is resolved once
    per run rather than once per customer.
    """

    rules: dict[_Key, AwsRule]
    _memo: dict[_Key, AwsRule] = field(default_factory=dict)
    # Per treatments mapping (held, so its id is not reused): cost key -> line slot.
    _slots: dict[int, tuple[object, dict[_CostKey, LineSlot]]] = field(default_factory=dict)
    _lines: dict[tuple[str, int], LineSlot] = field(default_factory=dict)

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

    def slots(self, treatments: Mapping[str, Treatment] | None) -> dict[_CostKey, LineSlot]:
        """The memo of `slot` for these treatments (cost key -> slot); fill misses by `slot`."""
        entry = self._slots.get(id(treatments))
        if entry is None or entry[0] is not treatments:
            entry = self._slots[id(treatments)] = (treatments, {})
        return entry[1]

    def slot(self, key: _CostKey, treatments: Mapping[str, Treatment] | None) -> LineSlot:
        """Where a cost with this (account, service, usage type, record type) goes: the line of
        its service and the most specific rule, or kept (see the module docstring)."""
        account, service, usage_type, record_type = key
        if record_type == USAGE:
            rule = self.match(account, service, usage_type)
        else:
            treatment = treatments.get(record_type) if treatments else None
            if treatment is Treatment.KEEP:
                kept = self.slots(treatments)[key] = LineSlot(service, None, record_type)
                return kept
            rule = AT_COST if treatment is Treatment.AT_COST else self.match(account, None, None)
        line_key = (service, id(rule))  # rules are this set's objects (or AT_COST): stable ids
        found = self._lines.get(line_key)
        if found is None:
            order = (service, -rule.specificity, rule.account_id or "", rule.usage_type or "")
            # setdefault (atomic): two threads pricing with one plan still share one slot,
            # so costs on one line are never split into two lines rounded apart.
            found = self._lines.setdefault(line_key, LineSlot(service, rule, None, order))
        self.slots(treatments)[key] = found
        return found


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
        _cost_item(key, usd, key if key in ADJUSTMENT_TYPES else USAGE)
        for key, usd in costs.items()
    )


# CostItem's slot setters: items_from_mapping builds one item per cost of every customer, and
# the frozen dataclass's __init__ (object.__setattr__ per field) was most of its time.
_new_object = object.__new__
_item_setters = tuple(
    CostItem.__dict__[name].__set__
    for name in ("service", "usd", "account_id", "usage_type", "record_type")
)


def _cost_item(service: str, usd: Decimal, record_type: str) -> CostItem:
    """CostItem(service, usd, record_type=record_type), without an account or usage type."""
    item = _new_object(CostItem)
    set_service, set_usd, set_account, set_usage_type, set_record_type = _item_setters
    set_service(item, service)
    set_usd(item, usd)
    set_account(item, None)
    set_usage_type(item, None)
    set_record_type(item, record_type)
    return item


def sum_by_line(
    items: Iterable[CostItem],
    rules: RuleSet,
    treatments: Mapping[str, Treatment] | None = None,
) -> tuple[list[tuple[LineSlot, Decimal]], list[KeptItem]]:
    """The costs summed per line (service and rule that priced it) in line order, lines that
    sum to zero left out; plus the adjustments the plan keeps, by record type."""
    memo = rules.slots(treatments)
    sums: dict[LineSlot, Decimal] = {}
    for item in items:
        key = (item.account_id, item.service, item.usage_type, item.record_type)
        slot = memo.get(key) or rules.slot(key, treatments)
        found = sums.get(slot)
        sums[slot] = item.usd if found is None else found + item.usd
    lines: list[tuple[LineSlot, Decimal]] = []
    kept: dict[str, Decimal] = {}
    for slot, usd in sums.items():
        if slot.kept is not None:
            kept[slot.kept] = kept.get(slot.kept, _ZERO) + usd
        elif usd:
            lines.append((slot, usd))
    if len(lines) > 1:
        lines.sort(key=_line_order)
    return lines, [KeptItem(t, usd) for t, usd in sorted(kept.items()) if usd]


def _line_order(entry: tuple[LineSlot, Decimal]) -> tuple[str, int, str, str]:
    return entry[0].order


def group_costs(
    items: Iterable[CostItem],
    rules: RuleSet,
    treatments: Mapping[str, Treatment] | None = None,
) -> tuple[list[PricedGroup], list[KeptItem]]:
    """Group costs by (line, rule): one invoice line per service and rule that priced it,
    sorted by service then most specific rule first; plus the adjustments the plan keeps."""
    lines, kept = sum_by_line(items, rules, treatments)
    return [PricedGroup(slot.service, slot.rule, usd) for slot, usd in lines if slot.rule], kept
