"""Attribution of AWS spend to customers, by linked account or by cost-allocation tag.

A line belongs to the customer owning its linked account (LINKED_ACCOUNT snapshots) or whose
`cost_tag_value` equals its tag value (TAG snapshots; an empty tag value is untagged spend), as
in force for the period (customers/terms.py: an account moved later stays with its old owner).
Anything else is **unattributed**, never dropped, so the customers' totals plus unattributed
equal the snapshot total exactly."""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal

from sqlalchemy import select as sa_select
from sqlalchemy.sql.elements import ColumnElement
from sqlmodel import Session, col, func, select

from billing_core.costs import cost_explorer as ce
from billing_core.costs.snapshots import (
    UNATTRIBUTED,
    UNATTRIBUTED_LABEL,
    ZERO,
    CostSource,
    CustomerFilter,
    SnapshotInfo,
    latest_snapshot,
)
from billing_core.customers.terms import terms_in_force
from billing_core.models import CostLine, Customer
from billing_core.periods import Period, as_utc, utcnow

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Attribution:
    """Who owns which linked account and tag value."""

    by_account: dict[str, int]
    by_tag: dict[str, int]
    names: dict[int, str]

    @classmethod
    def load(cls, session: Session, period: Period | None = None) -> Attribution:
        """The owners in force in `period` (default: the running month; customers/terms.py)."""
        in_force = terms_in_force(session, period or Period.containing(utcnow()))
        by_account: dict[str, int] = {}
        by_tag: dict[str, int] = {}
        for cid, terms in in_force.items():
            by_account.update(dict.fromkeys(terms.account_ids, cid))
            if terms.cost_tag_value:
                by_tag[terms.cost_tag_value] = cid
        names = {cid or 0: name for cid, name in session.exec(select(Customer.id, Customer.name))}
        return cls(by_account, by_tag, names)

    def customer_for(self, group_by: str, account_id: str | None, tag: str | None) -> int | None:
        if group_by == "LINKED_ACCOUNT":
            return self.by_account.get(account_id or "")
        return self.by_tag.get(tag) if tag else None

    def owns_costs(self, group_by: str, customer_id: int) -> bool:
        """Whether an account (or, for TAG groupings, a tag value) is the customer's."""
        mapping = self.by_account if group_by == "LINKED_ACCOUNT" else self.by_tag
        return customer_id in mapping.values()

    def name(self, customer_id: int | None) -> str:
        if customer_id is None:
            return UNATTRIBUTED_LABEL
        return self.names.get(customer_id, f"customer {customer_id}")

    def condition(self, group_by: str, customer: CustomerFilter) -> ColumnElement[bool] | None:
        """A SQL condition selecting one customer's (or the unattributed) lines."""
        if customer is None:
            return None
        if group_by == "LINKED_ACCOUNT":
            column, mapping = col(CostLine.account_id), self.by_account
        else:
            column, mapping = col(CostLine.tag_value), self.by_tag
        if customer == UNATTRIBUTED:
            return column.is_(None) | column.not_in(list(mapping))
        return column.in_([key for key, owner in mapping.items() if owner == customer])


@dataclass
class AttributedCosts:
    """AWS cost of a period per customer, from its latest complete snapshot (full precision).

    `usage[customer_id][service]` holds charges; `adjustments[customer_id][record_type]`
    holds credits, refunds and tax (credits and refunds are negative). The same split exists
    for unattributed spend. `snapshot_id` (and `snapshot`) is None when the period has no
    snapshot of `source`, the configured metric and grouping.
    """

    period: Period
    source: CostSource
    currency: str = "USD"
    snapshot_id: int | None = None
    snapshot: SnapshotInfo | None = None
    fetched_at: datetime | None = None
    granularity: str | None = None
    estimated: bool = False
    usage: dict[int, dict[str, Decimal]] = field(default_factory=dict)
    adjustments: dict[int, dict[str, Decimal]] = field(default_factory=dict)
    unattributed_usage: dict[str, Decimal] = field(default_factory=dict)
    unattributed_adjustments: dict[str, Decimal] = field(default_factory=dict)
    # customer -> (account, service or record type, record type) -> USD: the same costs with
    # their linked account, for pricing rules scoped to an account (invoicing/aws_rules.py).
    detail: dict[int, dict[tuple[str | None, str, str], Decimal]] = field(default_factory=dict)

    def customer_total(self, customer_id: int) -> Decimal:
        """Net cost of one customer: charges plus adjustments."""
        return sum(self.usage.get(customer_id, {}).values(), ZERO) + sum(
            self.adjustments.get(customer_id, {}).values(), ZERO
        )

    @property
    def unattributed_total(self) -> Decimal:
        return sum(self.unattributed_usage.values(), ZERO) + sum(
            self.unattributed_adjustments.values(), ZERO
        )

    @property
    def total(self) -> Decimal:
        """The account's net total: every customer plus unattributed, exactly."""
        customers = set(self.usage) | set(self.adjustments)
        return sum((self.customer_total(c) for c in customers), ZERO) + self.unattributed_total


def _grouped_lines(
    session: Session,
    snapshot_id: int,
    *,
    conditions: Iterable[ColumnElement[bool]] = (),
) -> list[tuple[str | None, str | None, str, str, Decimal]]:
    """(account, tag, service, record type, amount) summed in SQL over every day."""
    query = (
        sa_select(
            col(CostLine.account_id),
            col(CostLine.tag_value),
            col(CostLine.service),
            col(CostLine.record_type),
            func.sum(CostLine.amount),
        )
        .where(col(CostLine.snapshot_id) == snapshot_id, *conditions)
        .group_by(
            col(CostLine.account_id),
            col(CostLine.tag_value),
            col(CostLine.service),
            col(CostLine.record_type),
        )
    )
    return [(a, t, s, r, Decimal(v or 0)) for a, t, s, r, v in session.execute(query).all()]


def attributed_costs(session: Session, period: Period, source: CostSource) -> AttributedCosts:
    """Attributed cost per customer and service for a period (the invoicing/reconcile input),
    from the latest snapshot of `source` only."""
    snap = latest_snapshot(session, period, source)
    out = AttributedCosts(period=period, source=source)
    if snap is None or snap.id is None:
        return out
    out.snapshot_id, out.fetched_at = snap.id, as_utc(snap.fetched_at)
    out.snapshot = SnapshotInfo.of(snap)
    out.currency, out.estimated, out.granularity = snap.currency, snap.estimated, snap.granularity
    who = Attribution.load(session, period)
    for account, tag, service, record_type, amount in _grouped_lines(session, snap.id):
        customer = who.customer_for(snap.group_by, account, tag)
        adjustment = record_type != ce.USAGE
        key = record_type if adjustment else service
        if customer is None:
            bucket = out.unattributed_adjustments if adjustment else out.unattributed_usage
        else:
            table = out.adjustments if adjustment else out.usage
            bucket = table.setdefault(customer, {})
            detail = out.detail.setdefault(customer, {})
            where = (account, key, record_type)
            detail[where] = detail.get(where, ZERO) + amount
        bucket[key] = bucket.get(key, ZERO) + amount
    return out
