"""Effective-dated customer terms: the values that price a customer's month, and from when.

A customer's plan, invoice currency, AWS linked accounts and cost-allocation tag value are kept
as `CustomerTerms` rows, each in force from its `effective_from` month until the customer's next
row. Every month is priced with the values in force for it (`terms_in_force`), whoever reads
them (drafts, attribution, usage limits, reconciliation) and whenever. A change applies from the
month after the running one (`first_changeable`) at the earliest: the running month has started
and the last closed one may not be invoiced yet, so a change from either is refused.

A customer without rows (written before this table, or by code that fills `Customer` directly)
is read from its columns; its first change gives it a row from the start of time holding those
values. The `Customer` columns and `CustomerAccount` rows mirror the running month's values (and
the next pending plan) for screens and the audit log; nothing that prices reads them.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any

from sqlalchemy import select as sa_select
from sqlmodel import Session, col, select

from billing_core.errors import ValidationError
from billing_core.models import Customer, CustomerAccount, CustomerTerms
from billing_core.periods import Period

#: Rows migrated from the old columns start here: "from the start of time".
EARLIEST = Period(2000, 1)
FIELDS = ("plan_id", "currency", "cost_tag_value", "account_ids")


@dataclass(frozen=True)
class Terms:
    """The values in force for one customer in one month; `account_ids` sorted."""

    customer_id: int
    plan_id: int | None
    currency: str
    cost_tag_value: str | None
    account_ids: tuple[str, ...]


def first_changeable(now: datetime) -> Period:
    """The earliest month a change made at `now` may apply from: the one after the running one."""
    return Period.containing(now).next()


def legacy_plan_id(customer: Customer, period: Period) -> int | None:
    """The plan of `period` from the customer's columns (the pending plan once it starts)."""
    pending = customer.next_plan_from
    if customer.next_plan_id is not None and pending and period >= Period.parse(pending):
        return customer.next_plan_id
    return customer.plan_id


def _history(
    session: Session, customer_ids: Iterable[int] | None = None
) -> dict[int, list[CustomerTerms]]:
    query = select(CustomerTerms).order_by(
        col(CustomerTerms.customer_id), col(CustomerTerms.effective_from)
    )
    if customer_ids is not None:
        query = query.where(col(CustomerTerms.customer_id).in_(list(customer_ids)))
    out: dict[int, list[CustomerTerms]] = defaultdict(list)
    for row in session.exec(query).all():
        out[row.customer_id].append(row)
    return out


def _pick(rows: list[CustomerTerms], period: Period) -> CustomerTerms | None:
    found = None
    for row in rows:  # sorted by effective_from; "YYYY-MM" strings sort as months
        if row.effective_from <= str(period):
            found = row
    return found


def _of_row(row: CustomerTerms) -> Terms:
    return Terms(
        row.customer_id,
        row.plan_id,
        row.currency,
        row.cost_tag_value,
        tuple(sorted(row.account_ids)),
    )


def terms_in_force(
    session: Session, period: Period, *, customer_ids: Iterable[int] | None = None
) -> dict[int, Terms]:
    """Customer id -> the values in force for `period`, for every customer (or those given).

    A customer whose rows all start after `period` was not a customer then and is left out.
    """
    return terms_by_period(session, [period], customer_ids=customer_ids)[period]


def terms_by_period(
    session: Session, periods: Iterable[Period], *, customer_ids: Iterable[int] | None = None
) -> dict[Period, dict[int, Terms]]:
    """Period -> `terms_in_force` of that period, for several months from one read of the
    customers, their terms rows and linked accounts (plain columns, no ORM objects: this is
    what makes a 13-month cockpit fast)."""
    ids = None if customer_ids is None else list(customer_ids)
    customers = sa_select(
        col(Customer.id),
        col(Customer.plan_id),
        col(Customer.next_plan_id),
        col(Customer.next_plan_from),
        col(Customer.currency),
        col(Customer.cost_tag_value),
    )
    rows = sa_select(
        col(CustomerTerms.customer_id),
        col(CustomerTerms.effective_from),
        col(CustomerTerms.plan_id),
        col(CustomerTerms.currency),
        col(CustomerTerms.cost_tag_value),
        col(CustomerTerms.account_ids),
    ).order_by(col(CustomerTerms.customer_id), col(CustomerTerms.effective_from))
    links = sa_select(col(CustomerAccount.customer_id), col(CustomerAccount.account_id))
    if ids is not None:
        customers = customers.where(col(Customer.id).in_(ids))
        rows = rows.where(col(CustomerTerms.customer_id).in_(ids))
        links = links.where(col(CustomerAccount.customer_id).in_(ids))
    # customer -> [(effective_from, Terms)], sorted by effective_from ("YYYY-MM" sorts as months)
    history: dict[int, list[tuple[str, Terms]]] = defaultdict(list)
    for cid, starts, plan_id, currency, tag, accounts in session.execute(rows):
        history[int(cid)].append(
            (starts, Terms(int(cid), plan_id, currency, tag, tuple(sorted(accounts))))
        )
    legacy_accounts: dict[int, list[str]] = defaultdict(list)
    for cid, account in session.execute(links):
        legacy_accounts[int(cid)].append(account)
    # customer -> (terms without a pending plan, (pending plan's first month, its terms) | None)
    legacy: dict[int, tuple[Terms, tuple[Period, Terms] | None]] = {}
    order: list[int] = []
    for raw_id, plan_id, next_plan_id, next_from, currency, tag in session.execute(customers):
        cid = raw_id or 0
        order.append(cid)
        if cid in history:
            continue
        base = Terms(cid, plan_id, currency, tag, tuple(sorted(legacy_accounts.get(cid, []))))
        pending = None
        if next_plan_id is not None and next_from:  # the pending plan once it starts
            pending = (Period.parse(next_from), replace(base, plan_id=next_plan_id))
        legacy[cid] = (base, pending)
    out: dict[Period, dict[int, Terms]] = {}
    for period in periods:
        month = str(period)
        in_force: dict[int, Terms] = {}
        for cid in order:
            if cid in history:
                found = None
                for starts, terms in history[cid]:
                    if starts <= month:
                        found = terms
                if found is not None:
                    in_force[cid] = found
                continue
            base, pending = legacy[cid]
            in_force[cid] = pending[1] if pending and period >= pending[0] else base
        out[period] = in_force
    return out


def terms_for(session: Session, customer_id: int, period: Period) -> Terms | None:
    """The values in force for one customer in `period` (None: not a customer then)."""
    return terms_in_force(session, period, customer_ids=[customer_id]).get(customer_id)


# --- changing terms ---------------------------------------------------------------------


def _ensure_history(session: Session, customer: Customer) -> list[CustomerTerms]:
    rows = _history(session, [customer.id or 0]).get(customer.id or 0)
    if rows:
        return rows
    # First change of a customer read from its columns: keep those values for every month.
    base = _legacy_terms(session, customer, EARLIEST)
    rows = [_new_row(base, EARLIEST)]
    pending = customer.next_plan_from
    if customer.next_plan_id is not None and pending and Period.parse(pending) > EARLIEST:
        rows.append(_new_row(base, Period.parse(pending), plan_id=customer.next_plan_id))
    session.add_all(rows)
    session.flush()
    return rows


def _legacy_terms(session: Session, customer: Customer, period: Period) -> Terms:
    cid = customer.id or 0
    accounts = session.exec(
        select(CustomerAccount.account_id).where(CustomerAccount.customer_id == cid)
    ).all()
    plan_id = legacy_plan_id(customer, period)
    return Terms(cid, plan_id, customer.currency, customer.cost_tag_value, tuple(sorted(accounts)))


def _new_row(terms: Terms, starts: Period, **values: Any) -> CustomerTerms:
    data: dict[str, Any] = {
        "plan_id": terms.plan_id,
        "currency": terms.currency,
        "cost_tag_value": terms.cost_tag_value,
        "account_ids": list(terms.account_ids),
    } | values
    return CustomerTerms(customer_id=terms.customer_id, effective_from=str(starts), **data)


def _normal(values: dict[str, Any]) -> dict[str, Any]:
    unknown = set(values) - set(FIELDS)
    if unknown:
        raise TypeError(f"not a term: {', '.join(sorted(unknown))}")
    if "account_ids" in values:
        values = values | {"account_ids": sorted(set(values["account_ids"]))}
    return values


def set_terms(
    session: Session, customer: Customer, *, starts: Period, now: datetime, **values: Any
) -> bool:
    """Set some terms (`plan_id`, `currency`, `cost_tag_value`, `account_ids`) from `starts` on.

    Later rows get the same values, so from `starts` on they hold. Refuses (ValidationError) a
    `starts` before `first_changeable(now)`: that would reprice a started or closed month.
    Returns whether anything changed; the caller audits.
    """
    earliest = first_changeable(now)
    if starts < earliest:
        raise ValidationError(
            f"{customer.email}: a change from {starts} would reprice {starts}, a month that has "
            f"already started or closed; changes apply from {earliest} at the earliest."
        )
    return _apply(session, customer, starts, now, _normal(values))


def start_terms(session: Session, customer: Customer, *, now: datetime, **values: Any) -> None:
    """The first terms of a new customer, in force from the start of time (nothing billed yet)."""
    terms = Terms(customer.id or 0, None, customer.currency, None, ())
    session.add(_new_row(terms, EARLIEST, **_normal(values)))
    session.flush()
    mirror(session, customer, now)


def first_plan(session: Session, customer: Customer, *, plan_id: int, now: datetime) -> bool:
    """Give a customer that never had a plan `plan_id` for every month; False if it had one.

    Without a plan nothing was ever billed (drafts refuse it), so no priced month changes.
    """
    rows = _history(session, [customer.id or 0]).get(customer.id or 0)
    had = any(r.plan_id is not None for r in rows) if rows else customer.plan_id is not None
    if had or customer.next_plan_id is not None:
        return False
    _apply(session, customer, EARLIEST, now, {"plan_id": plan_id})
    return True


def _same_as_columns(
    session: Session, customer: Customer, starts: Period, values: dict[str, Any]
) -> bool:
    pending = _pending(customer)
    if customer.next_plan_id is not None and pending is not None and pending > starts:
        return False
    legacy = _legacy_terms(session, customer, starts)
    return all(
        (tuple(v) if k == "account_ids" else v) == getattr(legacy, k) for k, v in values.items()
    )


def _apply(
    session: Session, customer: Customer, starts: Period, now: datetime, values: dict[str, Any]
) -> bool:
    if not _history(session, [customer.id or 0]) and _same_as_columns(
        session, customer, starts, values
    ):
        return False  # re-importing what a customer without rows has writes nothing
    rows = _ensure_history(session, customer)
    in_force = _pick(rows, starts)
    if in_force is None:
        raise ValidationError(f"{customer.email} has no terms in {starts}.")
    changed = False
    if in_force.effective_from != str(starts) and any(
        getattr(in_force, k) != v for k, v in values.items()
    ):
        row = _new_row(_of_row(in_force), starts)
        session.add(row)
        rows = sorted([*rows, row], key=lambda r: r.effective_from)
    for row in rows:
        if row.effective_from < str(starts):
            continue
        for key, value in values.items():
            if getattr(row, key) != value:
                setattr(row, key, value)
                changed = True
        session.add(row)
    _compact(session, rows)
    mirror(session, customer, now)
    return changed


def replace_plan(
    session: Session, customer: Customer, *, old_id: int, new_id: int, starts: Period
) -> bool:
    """Bill `new_id` instead of `old_id` wherever the customer has it from `starts` on.

    A new version of a plan: months before `starts` stay on the old version, other plans the
    customer has pending stay. Returns whether the customer had the old plan from `starts` on.
    """
    rows = _history(session, [customer.id or 0]).get(customer.id or 0)
    if not rows and not any(
        legacy_plan_id(customer, p) == old_id for p in (starts, _pending(customer) or starts)
    ):
        return False
    rows = _ensure_history(session, customer)
    in_force = _pick(rows, starts)
    if (
        in_force is not None
        and in_force.plan_id == old_id
        and in_force.effective_from < str(starts)
    ):
        row = _new_row(_of_row(in_force), starts)
        session.add(row)
        rows = sorted([*rows, row], key=lambda r: r.effective_from)
    moved = False
    for row in rows:
        if row.effective_from >= str(starts) and row.plan_id == old_id:
            row.plan_id = new_id
            session.add(row)
            moved = True
    _compact(session, rows)
    return moved


def _pending(customer: Customer) -> Period | None:
    return Period.parse(customer.next_plan_from) if customer.next_plan_from else None


def _compact(session: Session, rows: list[CustomerTerms]) -> None:
    session.flush()
    # A row equal to the one before it changes nothing (e.g. a change back): drop it.
    kept = rows[:1]
    for row in rows[1:]:
        if all(getattr(kept[-1], k) == getattr(row, k) for k in FIELDS):
            session.delete(row)
        else:
            kept.append(row)
    session.flush()


def mirror(session: Session, customer: Customer, now: datetime) -> None:
    """Copy the running month's values (and the next different plan) to the customer's columns.

    Screens and the audit log read these columns; pricing reads `terms_in_force`.
    """
    cid = customer.id or 0
    rows = _history(session, [cid]).get(cid, [])
    current = Period.containing(now)
    row = _pick(rows, current)
    if row is None:
        return
    customer.plan_id = row.plan_id
    customer.currency = row.currency
    customer.cost_tag_value = row.cost_tag_value
    later = [r for r in rows if r.effective_from > str(current) and r.plan_id != row.plan_id]
    customer.next_plan_id = later[0].plan_id if later else None
    customer.next_plan_from = later[0].effective_from if later else None
    session.add(customer)
    wanted = set(row.account_ids)
    for link in session.exec(
        select(CustomerAccount).where(
            (col(CustomerAccount.customer_id) == cid) | col(CustomerAccount.account_id).in_(wanted)
        )
    ).all():
        # A link of another customer is left over from an earlier month: this month it is ours.
        if link.customer_id != cid or link.account_id not in wanted:
            session.delete(link)
        else:
            wanted.discard(link.account_id)
    session.flush()
    for account in sorted(wanted):
        session.add(CustomerAccount(customer_id=cid, account_id=account))
    session.flush()


def mirror_all(session: Session, now: datetime) -> None:
    """Bring every customer's columns to the running month (run when a month starts)."""
    for cid in _history(session):
        customer = session.get(Customer, cid)
        if customer is not None:
            mirror(session, customer, now)


def owned_before(session: Session, account_ids: Iterable[str], starts: Period) -> set[str]:
    """The accounts among `account_ids` that some customer owns in a month before `starts`."""
    wanted = set(account_ids)
    found: set[str] = set()
    history = _history(session)
    for rows in history.values():
        for row in rows:
            if row.effective_from < str(starts):
                found |= wanted & set(row.account_ids)
    legacy = session.exec(select(CustomerAccount.account_id, CustomerAccount.customer_id)).all()
    found |= {a for a, cid in legacy if a in wanted and cid not in history}
    return found
