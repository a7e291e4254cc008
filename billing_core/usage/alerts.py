"""Usage and spend alerts: raised once per customer, metric, threshold and period.

`check_alerts` compares each customer's billable usage (and AWS spend, when the plan has a
limit) with the plan's limits, in every month that can still be invoiced (the running month and
closed months without an issued invoice for the customer, so usage imported late still alerts),
and inserts the alerts not raised yet; the unique key on the Alert table makes a second run, or
a run racing the first, add nothing. `publish_pending` then sends the unpublished ones to an SNS
topic, when one is configured, claiming each alert in its own transaction before the publish
(at most once: see `publish_pending`), so a run killed half way never re-sends what it sent.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from decimal import ROUND_HALF_UP, Decimal
from typing import Any

from sqlalchemy import update
from sqlalchemy.engine import Engine
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, col, select

from billing_core.config import Settings
from billing_core.costs.snapshots import CostSource
from billing_core.db import session_scope
from billing_core.errors import BillingError
from billing_core.invoicing.line_text import with_unit
from billing_core.models import Alert, Customer, Invoice, UsageRecord, display_status_in
from billing_core.periods import Period
from billing_core.states import DisplayStatus
from billing_core.usage.limits import MetricUsage, build_usage_report

log = logging.getLogger(__name__)
_PLACES = Decimal("0.000001")
_SNS_SUBJECT_MAX = 100


class AlertPublishError(BillingError):
    """An alert could not be published to SNS (it stays pending and is retried next run)."""


def crossed(used: Decimal, limit: Decimal, thresholds: Iterable[int]) -> list[int]:
    """The thresholds (percent of `limit`) that `used` has reached; none without a limit."""
    if limit <= 0:
        return []
    return sorted(t for t in set(thresholds) if used * 100 >= limit * t)


def _figure(value: Decimal, row: MetricUsage) -> str:
    if row.is_spend:
        return f"{row.plan_currency} {value.quantize(Decimal('0.01')):,}"
    return with_unit(f"{value.normalize():,f}", value, row.unit)


def alert_message(row: MetricUsage, threshold: int, period: Period) -> str:
    what = "AWS spend" if row.is_spend else row.metric
    pct = (row.used_pct or Decimal(0)).quantize(Decimal(1), rounding=ROUND_HALF_UP)
    return (
        f"{row.customer} reached {pct}% of its {row.plan} plan's {what} limit in {period}: "
        f"{_figure(row.used, row)} of {_figure(row.included, row)} "
        f"(threshold {threshold}%, projected {_figure(row.projected, row)} at month end)."
    )


def check_alerts(
    session: Session,
    *,
    now: datetime,
    thresholds: Sequence[int],
    source: CostSource,
    period: Period | None = None,
) -> list[Alert]:
    """Insert the alerts reached and not raised yet; returns the new ones. AWS spend is read
    from the latest snapshot of `source`, the configured metric and grouping.

    `period` checks that month for every active customer. Without it, every month that can still
    be invoiced is checked (`open_periods`): the running month, and each closed month for the
    customers not invoiced for it yet.
    """
    if period is not None:
        return _check_period(session, period, now=now, thresholds=thresholds, source=source)
    new: list[Alert] = []
    for month, customer_ids in open_periods(session, now=now).items():
        new += _check_period(
            session, month, now=now, thresholds=thresholds, source=source, only=customer_ids
        )
    return new


def open_periods(session: Session, *, now: datetime) -> dict[Period, frozenset[int] | None]:
    """Months still open to invoicing -> the customers to check in each (None: all of them).

    The running month for everyone; the last closed month (about to be invoiced) and every
    closed month holding usage, each for the customers without an issued (non-draft) invoice
    for it. Months with neither usage nor a pending run are left out, so an old AWS
    restatement does not raise spend alerts for months long gone (reconciliation handles it).
    """
    running = Period.containing(now)
    last_closed = running.previous()
    issued = set(
        session.exec(
            select(Invoice.customer_id, Invoice.period).where(
                ~display_status_in([DisplayStatus.DRAFT])  # a credit is not a draft
            )
        ).all()
    )
    active = session.exec(select(Customer.id).where(col(Customer.active).is_(True))).all()
    candidates = {(cid or 0, str(last_closed)) for cid in active}
    candidates |= set(
        session.exec(
            select(UsageRecord.customer_id, UsageRecord.period)
            .where(col(UsageRecord.period) < str(running))
            .distinct()
        ).all()
    )
    closed: dict[str, set[int]] = {}
    for cid, month in candidates - issued:
        closed.setdefault(month, set()).add(cid)
    out: dict[Period, frozenset[int] | None] = {
        Period.parse(month): frozenset(ids) for month, ids in sorted(closed.items())
    }
    out[running] = None
    return out


def _check_period(
    session: Session,
    period: Period,
    *,
    now: datetime,
    thresholds: Sequence[int],
    source: CostSource,
    only: frozenset[int] | None = None,
) -> list[Alert]:
    report = build_usage_report(session, period, now, source=source)
    raised = {
        (a.customer_id, a.metric, a.threshold_pct)
        for a in session.exec(select(Alert).where(Alert.period == str(period))).all()
    }
    new: list[Alert] = []
    for row in report.rows:
        if only is not None and row.customer_id not in only:
            continue
        for threshold in crossed(row.used, row.included, thresholds):
            if (row.customer_id, row.metric, threshold) in raised:
                continue
            alert = Alert(
                customer_id=row.customer_id,
                metric=row.metric,
                threshold_pct=threshold,
                period=str(period),
                value=row.used.quantize(_PLACES, rounding=ROUND_HALF_UP),
                limit=row.included.quantize(_PLACES, rounding=ROUND_HALF_UP),
                message=alert_message(row, threshold, period),
                created_at=now,
            )
            if insert_once(session, alert):
                new.append(alert)
    return new


def insert_once(session: Session, alert: Alert) -> bool:
    """Insert unless the same alert exists (e.g. a concurrent check raised it first)."""
    try:
        with session.begin_nested():
            session.add(alert)
    except IntegrityError:
        return False
    return True


def alerts_for_period(session: Session, period: Period) -> list[Alert]:
    return list(
        session.exec(
            select(Alert)
            .where(Alert.period == str(period))
            .order_by(col(Alert.created_at).desc(), col(Alert.id).desc())
        ).all()
    )


# --- SNS ----------------------------------------------------------------------------------


def sns_client(settings: Settings, *, endpoint_url: str | None = None) -> Any:
    """A boto3 SNS client from the standard AWS chain (AWS_ENDPOINT_URL_SNS is honoured)."""
    import boto3

    return boto3.client("sns", region_name=settings.aws_region, endpoint_url=endpoint_url)


@dataclass
class PublishResult:
    published: int = 0
    failed: list[str] = field(default_factory=list)


def _describe(exc: Exception) -> str:
    from botocore.exceptions import ClientError

    if isinstance(exc, ClientError):
        err = exc.response.get("Error", {})
        return f"{err.get('Code', 'error')}: {err.get('Message', '')}".strip()
    return f"{type(exc).__name__}: {exc}"


def publish_pending(
    engine: Engine,
    *,
    topic_arn: str,
    client: Any,
    now: datetime,
    limit: int = 500,
) -> PublishResult:
    """Publish alerts not published yet to the SNS topic, each at most once.

    SNS (a standard topic) has no idempotency key, so the database is the only record of what
    was sent. Each alert is claimed in its own committed transaction before its publish (a
    compare-and-set on `published_at`, so two overlapping runs never both send it), and the
    claim is released, again in its own transaction, only when SNS or the connection says the
    message was not taken (`ClientError`, `BotoCoreError`): those are retried by the next run.
    A run killed during a publish leaves that one alert claimed and counted as published: at
    most once rather than twice. Nothing is held across alerts, so a kill after three of six
    publishes leaves three published and three pending.
    """
    from botocore.exceptions import BotoCoreError, ClientError

    result = PublishResult()
    with session_scope(engine) as session:
        pending = session.exec(
            select(Alert.id)
            .where(col(Alert.published_at).is_(None))
            .order_by(col(Alert.id))
            .limit(limit)
        ).all()
    for alert_id in pending:
        alert = _claim(engine, alert_id or 0, now)
        if alert is None:  # another run claimed it first
            continue
        try:
            client.publish(TopicArn=topic_arn, **_sns_message(alert))
        except (ClientError, BotoCoreError) as exc:
            reason = _describe(exc)
            log.warning("alert %s not published: %s", alert.id, reason)
            _release(engine, alert.id or 0)
            result.failed.append(f"alert {alert.id}: {reason}")
            continue
        result.published += 1
    return result


def _claim(engine: Engine, alert_id: int, now: datetime) -> Alert | None:
    """Mark the alert published (committed) if nobody has; the alert, or None if taken."""
    with session_scope(engine) as session:
        claimed = session.execute(
            update(Alert)
            .where(col(Alert.id) == alert_id, col(Alert.published_at).is_(None))
            .values(published_at=now)
        )
        if claimed.rowcount != 1:  # type: ignore[attr-defined]
            return None
        return session.get(Alert, alert_id)


def _release(engine: Engine, alert_id: int) -> None:
    """Undo our claim after a publish SNS refused, so the next run retries it."""
    with session_scope(engine) as session:
        session.execute(update(Alert).where(col(Alert.id) == alert_id).values(published_at=None))


def _sns_message(alert: Alert) -> dict[str, Any]:
    subject = f"Usage alert {alert.threshold_pct}%: {alert.metric} ({alert.period})"
    return {
        "Subject": subject[:_SNS_SUBJECT_MAX],
        "Message": alert.message,
        "MessageAttributes": {
            "customer_id": {"DataType": "Number", "StringValue": str(alert.customer_id)},
            "metric": {"DataType": "String", "StringValue": alert.metric},
            "threshold_pct": {"DataType": "Number", "StringValue": str(alert.threshold_pct)},
            "period": {"DataType": "String", "StringValue": alert.period},
        },
    }
