"""Usage and spend alerts: raised once per customer, metric, threshold and period.

`check_alerts` compares each customer's billable usage (and AWS spend, when the plan has a
limit) with the plan's limits and inserts the alerts not raised yet; the unique key on the
Alert table makes a second run, or a run racing the first, add nothing. `publish_pending` then
sends the unpublished ones to an SNS topic, when one is configured, and marks them published,
so a failed publish is retried by the next run instead of being lost.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from decimal import ROUND_HALF_UP, Decimal
from typing import Any

from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, col, select

from billing_core.config import Settings
from billing_core.costs.snapshots import CostSource
from billing_core.errors import BillingError
from billing_core.models import Alert
from billing_core.periods import Period
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
    return f"{value.normalize():,f} {row.unit}".strip()


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
    """Insert the alerts reached and not raised yet for `period` (default: now's month).

    AWS spend is read from the latest snapshot of `source`, the configured metric and grouping.
    """
    period = period or Period.containing(now)
    report = build_usage_report(session, period, now, source=source)
    raised = {
        (a.customer_id, a.metric, a.threshold_pct)
        for a in session.exec(select(Alert).where(Alert.period == str(period))).all()
    }
    new: list[Alert] = []
    for row in report.rows:
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
    session: Session,
    *,
    topic_arn: str,
    client: Any,
    now: datetime,
    limit: int = 500,
) -> PublishResult:
    """Publish alerts not published yet to the SNS topic; failures stay pending."""
    from botocore.exceptions import BotoCoreError, ClientError

    result = PublishResult()
    pending = session.exec(
        select(Alert).where(col(Alert.published_at).is_(None)).order_by(col(Alert.id)).limit(limit)
    ).all()
    for alert in pending:
        subject = f"Usage alert {alert.threshold_pct}%: {alert.metric} ({alert.period})"
        try:
            client.publish(
                TopicArn=topic_arn,
                Subject=subject[:_SNS_SUBJECT_MAX],
                Message=alert.message,
                MessageAttributes={
                    "customer_id": {"DataType": "Number", "StringValue": str(alert.customer_id)},
                    "metric": {"DataType": "String", "StringValue": alert.metric},
                    "threshold_pct": {
                        "DataType": "Number",
                        "StringValue": str(alert.threshold_pct),
                    },
                    "period": {"DataType": "String", "StringValue": alert.period},
                },
            )
        except (ClientError, BotoCoreError) as exc:
            reason = _describe(exc)
            log.warning("alert %s not published: %s", alert.id, reason)
            result.failed.append(f"alert {alert.id}: {reason}")
            continue
        alert.published_at = now
        session.add(alert)
        result.published += 1
    session.flush()
    return result
