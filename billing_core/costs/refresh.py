"""Cost refresh: the only code that calls Cost Explorer for snapshots (cron and the Refresh button).

`refresh_period` fetches a period when its snapshot is older than the TTL (or when forced) and
stores it in one transaction: a failed fetch stores no lines, only a failed-attempt record with
the number of requests it spent (each costs USD 0.01), shown on the page until a fetch succeeds."""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any

from sqlmodel import Session, func, select

from billing_core.config import Settings
from billing_core.costs import cost_explorer as ce
from billing_core.costs.snapshots import (
    _ERROR_STATE,
    CostSource,
    SnapshotInfo,
    group_label,
    latest_snapshot,
    needs_refresh,
    store_snapshot,
)
from billing_core.errors import CostSourceError
from billing_core.models import CostSnapshot, SyncState
from billing_core.periods import Period, as_utc

log = logging.getLogger(__name__)


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
    current = latest_snapshot(session, period, CostSource.of(settings))
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


def refresh_for_billing(
    session: Session, settings: Settings, period: Period, *, now: datetime, client: Any = None
) -> str | None:
    """Before a closed month is invoiced: fetch it again unless its snapshot of the configured
    metric and grouping was taken after the month ended (i.e. covers every day of it).

    Returns None when the snapshot is fit to bill (already, or after the refresh), else why it
    could not be refreshed (AWS not configured, or Cost Explorer's error); never raises.
    """
    current = latest_snapshot(session, period, CostSource.of(settings))
    if current is not None and SnapshotInfo.of(current).covers_month:
        return None
    if not settings.aws_configured and client is None:
        return "AWS is not configured here, so the run could not refresh it"
    outcome = refresh_period(session, settings, period, now=now, force=True, client=client)
    if outcome.error:
        return f"refreshing it from Cost Explorer failed: {outcome.error}"
    return None


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
