"""Attribution of AWS spend to customers, by linked account or by cost-allocation tag.

Who owns a cost line, first rule that applies (owners as in force for the period,
customers/terms.py: an account moved later stays with its old owner):

1. its service is a configured shared service (SHARED_SERVICES): **shared**, whoever's it is;
2. TAG snapshots: its tag value is a customer's `cost_tag_value`: that customer;
3. its linked account is a configured shared account (SHARED_ACCOUNTS): **shared**;
4. it is untagged (or the snapshot is by LINKED_ACCOUNT) and its linked account belongs to
   exactly one customer: that account's owner. This is how untagged spend, and AWS tax and
   credits (which AWS never tags), reach the customer owning the account in TAG mode; the
   fetch asks Cost Explorer for untagged spend by LINKED_ACCOUNT for exactly this;
5. anything else (a tag value nobody has, an account nobody or several customers own,
   untagged lines of old snapshots that carry no account) is **unattributed**.

Shared and unattributed spend is one pool, never dropped: the customers' totals plus the pool
equal the snapshot total exactly. Invoicing allocates the pool by the configured rule
(invoicing/shared_costs.py)."""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import and_, event, false, literal, not_, or_
from sqlalchemy import func as sa_func
from sqlalchemy import select as sa_select
from sqlalchemy.sql.elements import ColumnElement
from sqlmodel import Session, col, func

from billing_core.config import Settings
from billing_core.costs import cost_explorer as ce
from billing_core.costs.snapshots import (
    UNATTRIBUTED_LABEL,
    ZERO,
    CostSource,
    CustomerFilter,
    SnapshotInfo,
    latest_snapshot,
)
from billing_core.customers.terms import Terms, terms_by_period
from billing_core.models import (
    CostAccountDailyRollup,
    CostAccountRollup,
    CostLine,
    CostRollup,
    Customer,
)
from billing_core.periods import Period, as_utc, utcnow

log = logging.getLogger(__name__)


#: A table attribution conditions apply to: each has account_id and tag_value (the rollups by
#: account alone have no service, so they take no shared services).
CostTable = (
    type[CostRollup] | type[CostLine] | type[CostAccountDailyRollup] | type[CostAccountRollup]
)


@dataclass(frozen=True)
class SharedScope:
    """Linked accounts and services whose spend no customer owns (SHARED_ACCOUNTS,
    SHARED_SERVICES): it goes to the shared pool like unattributed spend."""

    accounts: frozenset[str] = frozenset()
    services: frozenset[str] = frozenset()

    @classmethod
    def of(cls, settings: Settings) -> SharedScope:
        return cls(frozenset(settings.shared_accounts), frozenset(settings.shared_services))


_CACHE = "billing_core.costs.attribution"


def _session_cache(session: Session) -> dict[tuple[Period, SharedScope | None], Attribution]:
    """Owners already read in this session's transaction, keyed by month and shared scope;
    emptied when the session flushes, commits or rolls back, so a change is never missed."""
    cache: dict[tuple[Period, SharedScope | None], Attribution] | None = session.info.get(_CACHE)
    if cache is None:
        cache = session.info[_CACHE] = {}

        def forget(*_args: Any) -> None:
            cache.clear()

        for name in ("after_flush", "after_commit", "after_rollback", "after_soft_rollback"):
            event.listen(session, name, forget)
    return cache


@dataclass(frozen=True)
class Attribution:
    """Who owns which linked account and tag value (see the module docstring for precedence).

    `by_account` holds accounts with exactly one owner; `ambiguous` those several customers
    list (their untagged spend is unattributed rather than guessed)."""

    by_account: dict[str, int]
    by_tag: dict[str, int]
    names: dict[int, str]
    shared: SharedScope = SharedScope()
    ambiguous: frozenset[str] = frozenset()

    @classmethod
    def load(
        cls, session: Session, period: Period | None = None, shared: SharedScope | None = None
    ) -> Attribution:
        """The owners in force in `period` (default: the running month; customers/terms.py)."""
        month = period or Period.containing(utcnow())
        return cls.load_many(session, [month], shared)[month]

    @classmethod
    def load_many(
        cls, session: Session, periods: Iterable[Period], shared: SharedScope | None = None
    ) -> dict[Period, Attribution]:
        """`load` for several months, reading customers and their terms once.

        Kept for the session's current transaction (`_session_cache`): one page build asks for
        the same months' owners several times (totals, drafts, margin, usage), and reads them
        once; anything flushed, committed or rolled back in the session forgets them."""
        cache = _session_cache(session)
        wanted = list(periods)
        missing = [p for p in wanted if (p, shared) not in cache]
        if missing:
            names = {
                int(cid): name
                for cid, name in session.execute(sa_select(col(Customer.id), col(Customer.name)))
            }
            last: tuple[dict[int, Terms], Attribution] | None = None
            for period, in_force in terms_by_period(session, missing).items():
                # Terms rarely change from one month to the next: the same terms, the same owners.
                if last is None or last[0] != in_force:
                    last = (in_force, cls.of_terms(in_force, names, shared))
                cache[(period, shared)] = last[1]
        return {p: cache[(p, shared)] for p in wanted}

    @classmethod
    def of_terms(
        cls, in_force: dict[int, Terms], names: dict[int, str], shared: SharedScope | None = None
    ) -> Attribution:
        """The owners given by one month's terms (`terms_in_force`)."""
        owners: dict[str, set[int]] = defaultdict(set)
        by_tag: dict[str, int] = {}
        for cid, terms in in_force.items():
            for account in terms.account_ids:
                owners[account].add(cid)
            if terms.cost_tag_value:
                by_tag[terms.cost_tag_value] = cid
        by_account = {a: next(iter(c)) for a, c in owners.items() if len(c) == 1}
        ambiguous = frozenset(a for a, c in owners.items() if len(c) > 1)
        return cls(by_account, by_tag, names, shared or SharedScope(), ambiguous)

    def customer_for(
        self, group_by: str, account_id: str | None, tag: str | None, service: str | None = None
    ) -> int | None:
        """The owner of one cost line, None for the shared/unattributed pool."""
        if service is not None and service in self.shared.services:
            return None
        if group_by != "LINKED_ACCOUNT" and tag:
            return self.by_tag.get(tag)
        if not account_id or account_id in self.shared.accounts:
            return None
        return self.by_account.get(account_id)

    def owns_costs(self, group_by: str, customer_id: int) -> bool:
        """Whether an account (or, for TAG groupings, a tag value) is the customer's."""
        if customer_id in self.by_account.values():
            return True
        return group_by != "LINKED_ACCOUNT" and customer_id in self.by_tag.values()

    def name(self, customer_id: int | None) -> str:
        if customer_id is None:
            return UNATTRIBUTED_LABEL
        return self.names.get(customer_id, f"customer {customer_id}")

    def _owned(
        self, group_by: str, customer: int | set[int] | None, table: CostTable = CostLine
    ) -> ColumnElement[bool]:
        """SQL: the rows of `table` (a rollup by account, or the lines) `customer` (or any of a
        set) owns (None: the rows any customer owns)."""
        account = sa_func.coalesce(col(table.account_id), "")
        tag = sa_func.coalesce(col(table.tag_value), "")

        def keys(mapping: dict[str, int]) -> list[str]:
            wanted = {customer} if isinstance(customer, int) else customer
            return [k for k, owner in mapping.items() if wanted is None or owner in wanted]

        accounts = [a for a in keys(self.by_account) if a not in self.shared.accounts]
        by_account = account.in_(accounts) if accounts else false()
        if accounts and customer is not None and "" not in accounts:
            # The same rows, and the form an index on (snapshot_id, account_id) serves: one
            # customer's lines are read, not the snapshot's. (Not for None: it is negated for
            # the unattributed spend, where NULL accounts must count, hence the coalesce.)
            by_account = col(table.account_id).in_(accounts)
        if group_by == "LINKED_ACCOUNT":
            owned: ColumnElement[bool] = by_account
        else:
            tags = keys(self.by_tag)
            by_tag = tag.in_(tags) if tags else false()
            owned = or_(by_tag, and_(tag == "", by_account))
        if self.shared.services:
            if not hasattr(table, "service"):
                raise ValueError("shared services need a table with the service")
            service = col(table.service)  # type: ignore[union-attr]
            owned = and_(owned, service.not_in(sorted(self.shared.services)))
        return owned

    def condition(
        self, group_by: str, customer: CustomerFilter, table: CostTable = CostLine
    ) -> ColumnElement[bool] | None:
        """A SQL condition selecting one customer's (or the unattributed) rows of `table`."""
        if customer is None:
            return None
        if isinstance(customer, int):
            return self._owned(group_by, customer, table)
        return not_(self._owned(group_by, None, table))


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


def _rollup_for(by_service: bool) -> type[CostRollup] | type[CostAccountRollup]:
    """The rollup `_grouped_lines` reads: by account and service, or by account alone."""
    return CostRollup if by_service else CostAccountRollup


def _grouped_lines(
    session: Session,
    snapshot_id: int,
    *,
    conditions: Iterable[ColumnElement[bool]] = (),
    by_service: bool = True,
) -> list[tuple[str | None, str | None, str, str, Decimal]]:
    """(account, tag, service, record type, amount) summed over every day: read from the
    snapshot's CostRollup (the lines already summed by day), never from the lines
    (`by_service=False`: summed over every service too, service ""; exact, amounts are
    integers; from CostAccountRollup, the same sums over services). `conditions` are on that
    table's columns (`Attribution.condition(..., table=_rollup_for(by_service))`)."""
    table = _rollup_for(by_service)
    service: Any = col(CostRollup.service) if by_service else literal("")
    keys: list[Any] = [col(table.account_id), col(table.tag_value), col(table.record_type)]
    query = (
        sa_select(keys[0], keys[1], service, keys[2], func.sum(table.amount))
        .where(col(table.snapshot_id) == snapshot_id, *conditions)
        .group_by(*keys, *([service] if by_service else []))
    )
    return [(a, t, s, r, Decimal(v or 0)) for a, t, s, r, v in session.execute(query).all()]


def attributed_costs(
    session: Session,
    period: Period,
    source: CostSource,
    shared: SharedScope | None = None,
    *,
    who: Attribution | None = None,
    customer_ids: Iterable[int] | None = None,
    by_service: bool = True,
) -> AttributedCosts:
    """Attributed cost per customer and service for a period (the invoicing/reconcile input),
    from the latest snapshot of `source` only; `shared` names the shared accounts/services.

    `who` (the owners in force in `period`, `Attribution.load`) saves reading them again when
    the caller already has them. `customer_ids`: only those customers' lines are read (their
    costs are the same as in the full result; unattributed spend is then left empty).
    `by_service=False`: charges are not split by service (each customer's under service "",
    summed in SQL: quicker when only totals are read); totals are the same to the digit."""
    snap = latest_snapshot(session, period, source)
    out = AttributedCosts(period=period, source=source)
    if snap is None or snap.id is None:
        return out
    out.snapshot_id, out.fetched_at = snap.id, as_utc(snap.fetched_at)
    out.snapshot = SnapshotInfo.of(snap)
    out.currency, out.estimated, out.granularity = snap.currency, snap.estimated, snap.granularity
    if who is None:
        who = Attribution.load(session, period, shared)
    conditions: list[ColumnElement[bool]] = []
    only = None if customer_ids is None else set(customer_ids)
    # Shared services are recognised by their name, so they need the split by service.
    split = by_service or bool(who.shared.services)
    if only is not None:
        conditions.append(who._owned(snap.group_by, only, _rollup_for(split)))
    for account, tag, service, record_type, amount in _grouped_lines(
        session, snap.id, conditions=conditions, by_service=split
    ):
        customer = who.customer_for(snap.group_by, account, tag, service)
        if only is not None and customer not in only:
            continue  # the SQL condition already keeps only theirs; this keeps it exact
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
