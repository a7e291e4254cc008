"""AWS costs: snapshots of Cost Explorer data, customer attribution, page and report figures.

Pages and reports read only the database. Cost Explorer is called by `refresh_period` (cron's
`fetch-costs`, or the page's explicit refresh button), which stores each fetch as one
snapshot in one transaction: a failed fetch stores no lines, only a failed-attempt record
with the number of requests it spent.

Which snapshot counts ("latest complete snapshot"): for a period, the complete snapshot with
the newest `fetched_at` (ties: highest id) for the configured metric and grouping. A closed
month is usually fetched DAILY while it runs and MONTHLY after it closes; both hold the same
kind of figures (daily rows add up to the month), so the newest one wins whatever its
granularity. Daily charts need daily rows, so they use the latest complete DAILY snapshot,
which may be older than the one the totals come from (the page says so).

Attribution: a line belongs to the customer owning its linked account (LINKED_ACCOUNT
snapshots) or whose `cost_tag_value` equals its tag value (TAG snapshots; an empty tag value
is untagged spend). Anything else is **unattributed**, never dropped, so the customers'
totals plus unattributed equal the snapshot total exactly.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import time
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from decimal import Decimal
from typing import Any, Literal

import pandas as pd
from sqlalchemy import delete, insert
from sqlalchemy import select as sa_select
from sqlalchemy.sql.elements import ColumnElement
from sqlmodel import Session, col, func, select

from billing_core import cost_explorer as ce
from billing_core import money
from billing_core.config import Settings
from billing_core.errors import CostSourceError
from billing_core.models import CostLine, CostSnapshot, Customer, CustomerAccount, SyncState
from billing_core.periods import Period, as_utc

log = logging.getLogger(__name__)

UNATTRIBUTED = "unattributed"
UNATTRIBUTED_LABEL = "Unattributed"
#: Complete snapshots kept with their lines per period and kind; older ones keep only a summary.
KEEP_SNAPSHOTS = 3
_ERROR_STATE = "costs.last_error"
ZERO = Decimal(0)
CustomerFilter = int | Literal["unattributed"] | None
ReportBy = Literal["customer", "service", "day"]


# --- snapshots -----------------------------------------------------------------------------


@dataclass(frozen=True)
class SnapshotInfo:
    """What a page says about the figures it shows."""

    id: int
    period: Period
    granularity: str
    group_by: str
    metric: str
    currency: str
    estimated: bool
    source: str
    fetched_at: datetime
    request_count: int
    forecast: Decimal | None

    @classmethod
    def of(cls, snap: CostSnapshot) -> SnapshotInfo:
        return cls(
            id=snap.id or 0,
            period=Period.parse(snap.period),
            granularity=snap.granularity,
            group_by=snap.group_by,
            metric=snap.metric,
            currency=snap.currency,
            estimated=snap.estimated,
            source=snap.source,
            fetched_at=as_utc(snap.fetched_at),
            request_count=snap.request_count,
            forecast=snap.forecast_amount,
        )

    def age(self, now: datetime) -> timedelta:
        return as_utc(now) - self.fetched_at

    @property
    def running(self) -> bool:
        """Fetched while its month was still running (figures are month to date)."""
        return self.granularity == "DAILY" and self.fetched_at < self.period.end_at

    @property
    def final(self) -> bool:
        """Fetched after the month closed and no longer estimated: AWS will not change it."""
        return not self.estimated and self.fetched_at >= self.period.end_at

    def stale(self, now: datetime, ttl_seconds: int) -> bool:
        """Older than the TTL and not final: due for a refresh."""
        return not self.final and self.age(now) > timedelta(seconds=ttl_seconds)

    @property
    def covered_days(self) -> int:
        """Days of the month the figures cover (today counts: Cost Explorer shows it partly)."""
        if not self.running:
            return self.period.days
        return max(0, (self.fetched_at.date() - self.period.start).days + 1)


def group_label(settings: Settings) -> str:
    """The grouping snapshots are stored under for these settings."""
    return (
        "LINKED_ACCOUNT"
        if settings.cost_group_by == "LINKED_ACCOUNT"
        else (f"TAG:{settings.cost_tag_key}")
    )


def latest_snapshot(
    session: Session,
    period: Period,
    *,
    granularity: str | None = None,
    metric: str | None = None,
    group_by: str | None = None,
) -> CostSnapshot | None:
    """The latest complete snapshot of a period (see the module docstring for the rule)."""
    query = select(CostSnapshot).where(
        CostSnapshot.period == str(period), CostSnapshot.status == "complete"
    )
    if granularity:
        query = query.where(CostSnapshot.granularity == granularity)
    if metric:
        query = query.where(CostSnapshot.metric == metric)
    if group_by:
        query = query.where(CostSnapshot.group_by == group_by)
    query = query.order_by(col(CostSnapshot.fetched_at).desc(), col(CostSnapshot.id).desc())
    return session.exec(query.limit(1)).first()


def snapshot_periods(session: Session, *, metric: str, group_by: str) -> list[Period]:
    """Periods that have a complete snapshot, newest first (for the month filter)."""
    rows = session.exec(
        select(CostSnapshot.period)
        .where(
            CostSnapshot.status == "complete",
            CostSnapshot.metric == metric,
            CostSnapshot.group_by == group_by,
        )
        .distinct()
    ).all()
    return sorted((Period.parse(p) for p in rows), reverse=True)


def store_snapshot(
    session: Session, result: ce.FetchResult, *, fetched_at: datetime, source: str
) -> CostSnapshot:
    """Store one fetch: the snapshot row and all its lines, in the caller's transaction."""
    query = result.query
    snap = CostSnapshot(
        period=str(query.period),
        granularity=query.granularity,
        group_by=query.group_label,
        metric=query.metric,
        currency=result.currency,
        estimated=result.estimated,
        request_count=result.request_count,
        source=source,
        status="complete",
        fetched_at=fetched_at,
        forecast_amount=result.forecast,
    )
    session.add(snap)
    session.flush()
    if result.rows:
        # Core executemany on the session's connection: far faster than ORM bulk inserts
        # for hundreds of thousands of lines, and the column types still apply.
        table = CostLine.__table__  # type: ignore[attr-defined]
        session.connection().execute(
            insert(table),
            [
                {
                    "snapshot_id": snap.id,
                    "period": str(query.period),
                    "day": row.day.isoformat(),
                    "account_id": row.account_id,
                    "tag_value": row.tag_value,
                    "service": row.service,
                    "record_type": row.record_type,
                    "amount": row.amount,
                    "currency": row.currency,
                    "estimated": row.estimated,
                    "fetched_at": fetched_at,
                }
                for row in result.rows
            ],
        )
    _prune(session, snap)
    return snap


def _prune(session: Session, newest: CostSnapshot) -> None:
    """Drop the lines of superseded snapshots beyond KEEP_SNAPSHOTS; keep their summary rows."""
    old = session.exec(
        select(CostSnapshot.id)
        .where(
            CostSnapshot.period == newest.period,
            CostSnapshot.granularity == newest.granularity,
            CostSnapshot.metric == newest.metric,
            CostSnapshot.group_by == newest.group_by,
            CostSnapshot.status == "complete",
        )
        .order_by(col(CostSnapshot.fetched_at).desc(), col(CostSnapshot.id).desc())
        .offset(KEEP_SNAPSHOTS)
    ).all()
    if not old:
        return
    session.execute(delete(CostLine).where(col(CostLine.snapshot_id).in_(old)))
    for snap in session.exec(select(CostSnapshot).where(col(CostSnapshot.id).in_(old))).all():
        snap.status = "pruned"


def needs_refresh(snap: CostSnapshot | None, now: datetime, ttl_seconds: int) -> bool:
    """No snapshot, or older than the TTL; a final closed month is never stale."""
    return snap is None or SnapshotInfo.of(snap).stale(now, ttl_seconds)


@dataclass
class RefreshOutcome:
    """What one refresh did; `error` is set (and nothing stored) when the fetch failed."""

    period: Period
    fetched: bool
    request_count: int = 0
    snapshot: SnapshotInfo | None = None
    error: str | None = None
    forecast_note: str | None = None
    lines: int = 0

    @property
    def request_cost(self) -> Decimal:
        return ce.USD_PER_REQUEST * self.request_count

    def describe(self) -> str:
        cost = f"{self.request_count} Cost Explorer request(s), USD {self.request_cost:.2f}"
        if self.error:
            return f"{self.period}: refresh failed ({cost}): {self.error}"
        if not self.fetched:
            return f"{self.period}: snapshot is fresh, nothing fetched ({cost})"
        assert self.snapshot is not None
        flag = " (estimated)" if self.snapshot.estimated else ""
        return (
            f"{self.period}: stored {self.lines} {self.snapshot.granularity} lines{flag} ({cost})"
        )


def refresh_period(
    session: Session,
    settings: Settings,
    period: Period,
    *,
    now: datetime,
    force: bool = False,
    client: Any = None,
    sleep: ce.Sleep = time.sleep,
    backoff: Sequence[float] = ce.BACKOFF_SECONDS,
) -> RefreshOutcome:
    """Fetch a period from Cost Explorer if stale (or forced) and store it as a snapshot.

    Never raises for Cost Explorer trouble: the outcome carries the message, the failed
    attempt is recorded (with its request count) and the last good snapshot stays current.
    """
    label = group_label(settings)
    current = latest_snapshot(session, period, metric=settings.cost_metric, group_by=label)
    if not force and not needs_refresh(current, now, settings.cost_snapshot_ttl_seconds):
        return RefreshOutcome(period, fetched=False, snapshot=SnapshotInfo.of(current))  # type: ignore[arg-type]
    try:
        query = ce.build_query(
            period,
            now,
            metric=settings.cost_metric,
            group_by=settings.cost_group_by,
            tag_key=settings.cost_tag_key,
        )
        if client is None:
            client = ce.make_client(settings)
        result = ce.fetch_costs(
            client, query, now=now, currency=settings.cost_currency, sleep=sleep, backoff=backoff
        )
    except CostSourceError as exc:
        spent = getattr(exc, "request_count", 0)
        _record_failure(session, settings, period, now=now, message=str(exc), requests=spent)
        log.warning(
            "Cost Explorer fetch for %s failed after %d request(s) (USD %s): %s",
            period,
            spent,
            ce.USD_PER_REQUEST * spent,
            exc,
        )
        return RefreshOutcome(period, fetched=False, request_count=spent, error=str(exc))
    snap = store_snapshot(session, result, fetched_at=as_utc(now), source="cost_explorer")
    _clear_failure(session)
    log.info(
        "Cost Explorer: %d request(s) (USD %s) for %s, %d lines",
        result.request_count,
        result.request_cost,
        period,
        len(result.rows),
    )
    return RefreshOutcome(
        period,
        fetched=True,
        request_count=result.request_count,
        snapshot=SnapshotInfo.of(snap),
        forecast_note=result.forecast_note,
        lines=len(result.rows),
    )


def refresh_for_page(
    session: Session, settings: Settings, period: Period, *, now: datetime, client: Any = None
) -> list[RefreshOutcome]:
    """The page's refresh button: the shown month always, last month too if it is stale.

    Last month matters to a running month's comparison, so it is fetched when missing or
    older than the TTL (a final closed month never is); otherwise it costs nothing.
    """
    outcomes = [refresh_period(session, settings, period, now=now, force=True, client=client)]
    if not period.is_closed(now) and not outcomes[0].error:
        outcomes.append(
            refresh_period(session, settings, period.previous(), now=now, client=client)
        )
    return outcomes


def available_services(session: Session, settings: Settings, period: Period) -> list[str]:
    """Service names (and adjustment types) in the period's latest snapshot, for the filter."""
    snap = latest_snapshot(
        session, period, metric=settings.cost_metric, group_by=group_label(settings)
    )
    if snap is None:
        return []
    rows = session.exec(
        select(CostLine.service).where(CostLine.snapshot_id == snap.id).distinct()
    ).all()
    return sorted(rows)


def default_fetch_periods(now: datetime) -> list[Period]:
    """What cron refreshes: the running month and the last closed one (AWS restates it)."""
    current = Period.containing(now)
    return [current.previous(), current]


def _record_failure(
    session: Session,
    settings: Settings,
    period: Period,
    *,
    now: datetime,
    message: str,
    requests: int,
) -> None:
    closed = period.is_closed(now)
    session.add(
        CostSnapshot(
            period=str(period),
            granularity="MONTHLY" if closed else "DAILY",
            group_by=group_label(settings),
            metric=settings.cost_metric,
            currency=settings.cost_currency,
            request_count=requests,
            status="failed",
            fetched_at=as_utc(now),
        )
    )
    value = json.dumps({"period": str(period), "at": as_utc(now).isoformat(), "message": message})
    state = session.get(SyncState, _ERROR_STATE)
    if state is None:
        session.add(SyncState(name=_ERROR_STATE, value=value, updated_at=as_utc(now)))
    else:
        state.value = value
        state.updated_at = as_utc(now)
    session.flush()


def _clear_failure(session: Session) -> None:
    state = session.get(SyncState, _ERROR_STATE)
    if state is not None:
        session.delete(state)
        session.flush()


@dataclass(frozen=True)
class FetchFailure:
    period: str
    at: datetime
    message: str


def last_failure(session: Session) -> FetchFailure | None:
    """The last failed refresh since the last successful one, if any."""
    state = session.get(SyncState, _ERROR_STATE)
    if state is None:
        return None
    data = json.loads(state.value)
    return FetchFailure(data["period"], datetime.fromisoformat(data["at"]), data["message"])


def requests_since(session: Session, since: datetime) -> int:
    """Cost Explorer requests recorded by fetches (failed ones too) since a moment."""
    total = session.exec(
        select(func.sum(CostSnapshot.request_count)).where(
            CostSnapshot.fetched_at >= as_utc(since), CostSnapshot.source == "cost_explorer"
        )
    ).one()
    return int(total or 0)


# --- attribution ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Attribution:
    """Who owns which linked account and tag value."""

    by_account: dict[str, int]
    by_tag: dict[str, int]
    names: dict[int, str]

    @classmethod
    def load(cls, session: Session) -> Attribution:
        accounts = session.exec(select(CustomerAccount.account_id, CustomerAccount.customer_id))
        customers = session.exec(select(Customer.id, Customer.name, Customer.cost_tag_value))
        by_tag: dict[str, int] = {}
        names: dict[int, str] = {}
        for cid, name, tag in customers.all():
            names[cid or 0] = name
            if tag:
                by_tag[tag] = cid or 0
        return cls(dict(accounts.all()), by_tag, names)

    def customer_for(self, group_by: str, account_id: str | None, tag: str | None) -> int | None:
        if group_by == "LINKED_ACCOUNT":
            return self.by_account.get(account_id or "")
        return self.by_tag.get(tag) if tag else None

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
    for unattributed spend. `snapshot_id` is None when the period has no snapshot at all.
    """

    period: Period
    currency: str = "USD"
    snapshot_id: int | None = None
    fetched_at: datetime | None = None
    granularity: str | None = None
    estimated: bool = False
    usage: dict[int, dict[str, Decimal]] = field(default_factory=dict)
    adjustments: dict[int, dict[str, Decimal]] = field(default_factory=dict)
    unattributed_usage: dict[str, Decimal] = field(default_factory=dict)
    unattributed_adjustments: dict[str, Decimal] = field(default_factory=dict)

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


def attributed_costs(
    session: Session,
    period: Period,
    *,
    metric: str | None = None,
    group_by: str | None = None,
) -> AttributedCosts:
    """Attributed cost per customer and service for a period (the invoicing/reconcile input)."""
    snap = latest_snapshot(session, period, metric=metric, group_by=group_by)
    out = AttributedCosts(period=period)
    if snap is None or snap.id is None:
        return out
    out.snapshot_id, out.fetched_at = snap.id, as_utc(snap.fetched_at)
    out.currency, out.estimated, out.granularity = snap.currency, snap.estimated, snap.granularity
    who = Attribution.load(session)
    for account, tag, service, record_type, amount in _grouped_lines(session, snap.id):
        customer = who.customer_for(snap.group_by, account, tag)
        adjustment = record_type != ce.USAGE
        key = record_type if adjustment else service
        if customer is None:
            bucket = out.unattributed_adjustments if adjustment else out.unattributed_usage
        else:
            table = out.adjustments if adjustment else out.usage
            bucket = table.setdefault(customer, {})
        bucket[key] = bucket.get(key, ZERO) + amount
    return out


# --- page and report figures ---------------------------------------------------------------


@dataclass(frozen=True)
class CostFilter:
    customer: CustomerFilter = None
    service: str | None = None

    @property
    def any(self) -> bool:
        return self.customer is not None or self.service is not None


@dataclass
class CostsView:
    """Everything the AWS costs page and `costs-report` show for one month and filter."""

    period: Period
    filters: CostFilter
    snapshot: SnapshotInfo | None = None
    daily_snapshot: SnapshotInfo | None = None
    currency: str = "USD"
    total: Decimal = ZERO  # net: charges + credits, refunds, tax
    adjustments: dict[str, Decimal] = field(default_factory=dict)
    unattributed: Decimal = ZERO
    account_total: Decimal = ZERO  # unfiltered, for the unattributed share
    previous_period: Period | None = None
    previous_total: Decimal | None = None
    previous_same_days: Decimal | None = None
    forecast: Decimal | None = None
    forecast_source: str | None = None  # "Cost Explorer" or "run rate"
    by_service: pd.DataFrame = field(default_factory=pd.DataFrame)
    by_customer: pd.DataFrame = field(default_factory=pd.DataFrame)
    daily: pd.DataFrame = field(default_factory=pd.DataFrame)
    breakdown: pd.DataFrame = field(default_factory=pd.DataFrame)
    customers: list[tuple[int, str]] = field(default_factory=list)
    services: list[str] = field(default_factory=list)

    @property
    def has_data(self) -> bool:
        return self.snapshot is not None

    @property
    def running(self) -> bool:
        return self.snapshot is not None and self.snapshot.running

    @property
    def change(self) -> Decimal | None:
        """Against the same days of last month (running month) or last month's total."""
        base = self.previous_same_days if self.running else self.previous_total
        return None if base is None else self.total - base

    @property
    def change_pct(self) -> Decimal | None:
        base = self.previous_same_days if self.running else self.previous_total
        if base is None or base == 0:
            return None
        return (self.total - base) / base * 100

    @property
    def unattributed_share(self) -> Decimal | None:
        """Unattributed spend as a percentage of the whole account (never filtered)."""
        if self.account_total == 0:
            return None
        return self.unattributed / self.account_total * 100


def build_costs_view(
    session: Session,
    settings: Settings,
    period: Period,
    filters: CostFilter | None = None,
) -> CostsView:
    """Page/report figures for a month from the stored snapshots only (no Cost Explorer)."""
    filters = filters or CostFilter()
    label = group_label(settings)
    view = CostsView(period=period, filters=filters, currency=settings.cost_currency)
    who = Attribution.load(session)
    view.customers = sorted(who.names.items(), key=lambda item: item[1])
    snap = latest_snapshot(session, period, metric=settings.cost_metric, group_by=label)
    if snap is None or snap.id is None:
        return view
    info = SnapshotInfo.of(snap)
    view.snapshot, view.currency = info, info.currency
    _fill_totals(session, view, info, who)
    daily = latest_snapshot(
        session, period, granularity="DAILY", metric=settings.cost_metric, group_by=label
    )
    if daily is not None:
        view.daily_snapshot = SnapshotInfo.of(daily)
        view.daily = _daily(session, view.daily_snapshot, who, filters)
    _fill_previous(session, settings, view, who)
    _fill_forecast(view)
    return view


def _fill_totals(session: Session, view: CostsView, info: SnapshotInfo, who: Attribution) -> None:
    rows = []
    services: set[str] = set()
    for account, tag, service, record_type, amount in _grouped_lines(session, info.id):
        customer = who.customer_for(info.group_by, account, tag)
        view.account_total += amount
        if customer is None:
            view.unattributed += amount
        if record_type == ce.USAGE:
            services.add(service)
        rows.append((customer, who.name(customer), service, record_type, amount))
    view.services = sorted(services)
    wanted = [r for r in rows if _matches(view.filters, r[0], r[2])]
    frame = pd.DataFrame(
        wanted, columns=["customer_id", "customer", "service", "record_type", "amount"]
    )
    frame["customer_id"] = frame["customer_id"].astype("Int64")
    view.total = sum(frame["amount"], ZERO)
    for record_type, amount in _sum_by(frame, "record_type").items():
        if record_type != ce.USAGE:
            view.adjustments[str(record_type)] = amount
    view.by_service = _frame(_sum_by(frame, "service"), "service")
    customer_sums: dict[tuple[Any, str], Decimal] = defaultdict(lambda: ZERO)
    for cid, name, amount in zip(
        frame["customer_id"], frame["customer"], frame["amount"], strict=True
    ):
        customer_sums[(None if pd.isna(cid) else int(cid), name)] += amount
    view.by_customer = pd.DataFrame(
        [(cid, name, amount) for (cid, name), amount in customer_sums.items()],
        columns=["customer_id", "customer", "amount"],
    )
    view.by_customer["customer_id"] = view.by_customer["customer_id"].astype("Int64")
    view.by_customer = _sort(view.by_customer)
    detail: dict[tuple[str, str, str], Decimal] = defaultdict(lambda: ZERO)
    for _cid, name, service, record_type, amount in wanted:
        detail[(name, service, record_type)] += amount
    view.breakdown = _sort(
        pd.DataFrame(
            [(*key, amount) for key, amount in sorted(detail.items())],
            columns=["customer", "service", "record_type", "amount"],
        )
    )


def _matches(filters: CostFilter, customer: int | None, service: str) -> bool:
    if filters.service is not None and service != filters.service:
        return False
    if filters.customer is None:
        return True
    if filters.customer == UNATTRIBUTED:
        return customer is None
    return customer == filters.customer


def _sum_by(frame: pd.DataFrame, column: str) -> dict[str, Decimal]:
    sums: dict[str, Decimal] = defaultdict(lambda: ZERO)
    for key, amount in zip(frame[column], frame["amount"], strict=True):
        sums[str(key)] += amount
    return dict(sums)


def _frame(sums: dict[str, Decimal], key: str) -> pd.DataFrame:
    return _sort(pd.DataFrame(list(sums.items()), columns=[key, "amount"]))


def _sort(frame: pd.DataFrame) -> pd.DataFrame:
    """Largest amounts first (Decimal-safe: sorts on the exact values)."""
    if frame.empty:
        return frame.reset_index(drop=True)
    order = sorted(range(len(frame)), key=lambda i: frame["amount"].iloc[i], reverse=True)
    return frame.iloc[order].reset_index(drop=True)


def _sql_conditions(
    info: SnapshotInfo, who: Attribution, filters: CostFilter
) -> list[ColumnElement[bool]]:
    conditions: list[ColumnElement[bool]] = []
    if filters.service is not None:
        conditions.append(col(CostLine.service) == filters.service)
    condition = who.condition(info.group_by, filters.customer)
    if condition is not None:
        conditions.append(condition)
    return conditions


def _daily(
    session: Session, info: SnapshotInfo, who: Attribution, filters: CostFilter
) -> pd.DataFrame:
    """Amount per day and service (adjustments under their record type), filtered in SQL."""
    rows = session.exec(
        select(CostLine.day, CostLine.service, func.sum(CostLine.amount))
        .where(CostLine.snapshot_id == info.id, *_sql_conditions(info, who, filters))
        .group_by(col(CostLine.day), col(CostLine.service))
        .order_by(col(CostLine.day), col(CostLine.service))
    ).all()
    frame = pd.DataFrame(
        [(date.fromisoformat(d), s, Decimal(v or 0)) for d, s, v in rows],
        columns=["day", "service", "amount"],
    )
    return frame


def _sum_lines(
    session: Session,
    info: SnapshotInfo,
    who: Attribution,
    filters: CostFilter,
    *,
    before: date | None = None,
) -> Decimal:
    query = select(func.sum(CostLine.amount)).where(
        CostLine.snapshot_id == info.id, *_sql_conditions(info, who, filters)
    )
    if before is not None:
        query = query.where(col(CostLine.day) < before.isoformat())
    return Decimal(session.exec(query).one() or 0)


def _fill_previous(session: Session, settings: Settings, view: CostsView, who: Attribution) -> None:
    previous = view.period.previous()
    view.previous_period = previous
    label = group_label(settings)
    snap = latest_snapshot(session, previous, metric=settings.cost_metric, group_by=label)
    if snap is not None:
        view.previous_total = _sum_lines(session, SnapshotInfo.of(snap), who, view.filters)
    if view.snapshot is None or not view.snapshot.running:
        return
    daily = latest_snapshot(
        session, previous, granularity="DAILY", metric=settings.cost_metric, group_by=label
    )
    if daily is not None:
        days = min(view.snapshot.covered_days, previous.days)
        cutoff = previous.start + timedelta(days=days)
        view.previous_same_days = _sum_lines(
            session, SnapshotInfo.of(daily), who, view.filters, before=cutoff
        )


def _fill_forecast(view: CostsView) -> None:
    info = view.snapshot
    if info is None or not info.running:
        return
    if info.forecast is not None and not view.filters.any:
        view.forecast, view.forecast_source = info.forecast, "Cost Explorer"
    elif info.covered_days > 0:
        # No forecast for a filtered view (or none from AWS): the month's run rate so far.
        view.forecast = view.total / info.covered_days * info.period.days
        view.forecast_source = "run rate"


def chart_values(amounts: Iterable[Decimal]) -> list[float]:
    """Floats for plotting only; every figure shown as text comes from the exact Decimals."""
    return [float(a) for a in amounts]


# --- report --------------------------------------------------------------------------------


@dataclass
class ReportRow:
    key: str
    amount: Decimal


def report_rows(view: CostsView, by: ReportBy) -> list[ReportRow]:
    """The breakdown the page shows, as rows for `costs-report` (sums equal `view.total`)."""
    if by == "customer":
        return [
            ReportRow(str(n), a)
            for n, a in zip(view.by_customer["customer"], view.by_customer["amount"], strict=True)
        ]
    if by == "service":
        return [
            ReportRow(str(s), a)
            for s, a in zip(view.by_service["service"], view.by_service["amount"], strict=True)
        ]
    sums: dict[date, Decimal] = defaultdict(lambda: ZERO)
    if not view.daily.empty:
        for day, amount in zip(view.daily["day"], view.daily["amount"], strict=True):
            sums[day] += amount
    return [ReportRow(d.isoformat(), a) for d, a in sorted(sums.items())]


def breakdown_csv(view: CostsView) -> str:
    """CSV of the breakdown shown: exact amounts (10 places) and the cost currency."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(["period", "customer", "service", "record_type", "amount", "currency"])
    for row in view.breakdown.itertuples(index=False):
        writer.writerow(
            [
                str(view.period),
                _no_formula(str(row.customer)),
                _no_formula(str(row.service)),
                row.record_type,
                str(row.amount),
                view.currency,
            ]
        )
    return out.getvalue()


def _no_formula(text: str) -> str:
    # A customer name starting with = or @ must not run as a spreadsheet formula.
    return "'" + text if text[:1] in ("=", "+", "-", "@") else text


def describe_age(age: timedelta) -> str:
    """'3 min', '5 h 10 min', '2 days' (for 'last refreshed' notes)."""
    minutes = max(0, int(age.total_seconds() // 60))
    if minutes < 60:
        return f"{minutes} min"
    if minutes < 48 * 60:
        hours, rest = divmod(minutes, 60)
        return f"{hours} h {rest} min" if rest else f"{hours} h"
    return f"{minutes // (24 * 60)} days"


def format_report(
    session: Session,
    settings: Settings,
    period: Period,
    by: ReportBy,
    *,
    now: datetime,
    as_csv: bool = False,
) -> str:
    """The page's figures as text (or CSV with exact amounts) for `costs-report`."""
    view = build_costs_view(session, settings, period)
    info = view.snapshot
    if info is None:
        raise CostSourceError(
            f"No cost snapshot for {period} ({settings.cost_metric}, {group_label(settings)}): "
            f"run `python -m billing_core fetch-costs --period {period}` first."
        )
    rows = report_rows(view, by)
    if as_csv:
        out = io.StringIO()
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow([by, "amount", "currency", "estimated", "fetched_at"])
        for row in rows:
            writer.writerow(
                [
                    _no_formula(row.key),
                    str(row.amount),
                    view.currency,
                    info.estimated,
                    info.fetched_at.isoformat(),
                ]
            )
        return out.getvalue()
    cur = view.currency

    def show(amount: Decimal) -> str:
        return money.display(money.round_minor(amount, cur), cur)

    scope = f"month to date, {info.covered_days} day(s)" if view.running else "whole month"
    lines = [
        f"AWS costs {period} ({info.metric}, {info.group_by}), {scope}"
        + (", ESTIMATED" if info.estimated else ""),
        f"snapshot {info.id} ({info.granularity}) fetched {info.fetched_at:%Y-%m-%d %H:%M} UTC, "
        f"{describe_age(info.age(now))} ago",
    ]
    failure = last_failure(session)
    if failure is not None:
        lines.append(
            f"note: the last refresh failed ({failure.at:%Y-%m-%d %H:%M} UTC): {failure.message}"
        )
    if by == "day" and view.daily_snapshot is None:
        lines.append("note: no daily figures stored for this month")
    width = max([len(r.key) for r in rows] + [24])
    lines += [f"{by:<{width}}  {'amount':>18}"]
    lines += [f"{r.key:<{width}}  {show(r.amount):>18}" for r in rows]
    lines.append(f"{'total':<{width}}  {show(view.total):>18}")
    for record_type, amount in sorted(view.adjustments.items()):
        lines.append(f"  of which {record_type.lower()}: {show(amount)}")
    share = view.unattributed_share
    lines.append(
        f"unattributed: {show(view.unattributed)}"
        + (f" ({share:.1f} % of the account)" if share is not None else "")
    )
    if view.previous_same_days is not None:
        lines.append(f"{view.previous_period} same days: {show(view.previous_same_days)}")
    if view.previous_total is not None:
        lines.append(f"{view.previous_period} total: {show(view.previous_total)}")
    if view.change is not None:
        pct = f" ({view.change_pct:+.1f} %)" if view.change_pct is not None else ""
        lines.append(f"change: {'+' if view.change >= 0 else ''}{show(view.change)}{pct}")
    if view.forecast is not None:
        lines.append(f"forecast month end ({view.forecast_source}): {show(view.forecast)}")
    return "\n".join(lines) + "\n"
