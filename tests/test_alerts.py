from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import boto3
import pytest
from moto.server import ThreadedMotoServer
from sqlalchemy.engine import Engine
from sqlmodel import Session, col, func, select

from billing_core.cli import main
from billing_core.config import load_settings
from billing_core.costs.snapshots import CostSource
from billing_core.db import make_engine
from billing_core.models import Alert, Invoice, UsageRecord
from billing_core.periods import Period
from billing_core.usage.alerts import check_alerts, crossed, publish_pending, sns_client
from billing_core.usage.import_checks import UsageInput
from billing_core.usage.import_csv import record_usage
from tests.support.usage_world import NOW, make_world

# The cost figures these tests bill from (the settings' defaults).
SOURCE = CostSource("UnblendedCost", "LINKED_ACCOUNT")

NOV = Period(2026, 11)


@pytest.mark.parametrize(
    ("used", "limit", "thresholds", "expected"),
    [
        ("0", "100", [80, 100], []),
        ("79.99", "100", [80, 100], []),
        ("80", "100", [80, 100], [80]),
        ("100", "100", [100, 80], [80, 100]),
        ("250", "100", [80, 100, 200], [80, 100, 200]),
        ("5", "0", [80, 100], []),  # no limit, no alert
        ("4", "5", [50, 50, 75], [50, 75]),
    ],
)
def test_crossed_table(used: str, limit: str, thresholds: list[int], expected: list[int]) -> None:
    assert crossed(Decimal(used), Decimal(limit), thresholds) == expected


def alerts(session: Session) -> list[tuple[str, str, int]]:
    rows = session.exec(select(Alert).order_by(col(Alert.id))).all()
    return [(str(a.customer_id), a.metric, a.threshold_pct) for a in rows]


def test_alerts_once_per_threshold(session: Session) -> None:
    _, a, _ = make_world(session)
    record_usage(
        session, [UsageInput(a.email, "api_calls", "850", "2026-11-02")], now=NOW, actor="t"
    )
    first = check_alerts(session, now=NOW, source=SOURCE, thresholds=[80, 100])
    assert [(x.metric, x.threshold_pct) for x in first] == [("api_calls", 80)]
    assert "Alpha reached 85% of its basic plan's api_calls limit in 2026-11" in first[0].message
    assert check_alerts(session, now=NOW, source=SOURCE, thresholds=[80, 100]) == []
    record_usage(
        session,
        [
            UsageInput(a.email, "api_calls", "300", "2026-11-03"),
            UsageInput(a.email, "seats", "6", "2026-11-03"),
        ],
        now=NOW,
        actor="t",
    )
    second = check_alerts(session, now=NOW, source=SOURCE, thresholds=[80, 100])
    assert sorted((x.metric, x.threshold_pct) for x in second) == [
        ("api_calls", 100),
        ("seats", 80),
        ("seats", 100),
    ]
    assert check_alerts(session, now=NOW, source=SOURCE, thresholds=[80, 100]) == []
    assert len(alerts(session)) == 4
    # A new threshold in the settings raises only that one.
    third = check_alerts(session, now=NOW, source=SOURCE, thresholds=[50, 80, 100])
    assert sorted((x.metric, x.threshold_pct) for x in third) == [("api_calls", 50), ("seats", 50)]


def test_alert_inserted_concurrently_is_not_duplicated(session: Session) -> None:
    _, a, _ = make_world(session)
    record_usage(session, [UsageInput(a.email, "seats", "9", "2026-11-02")], now=NOW, actor="t")
    # Another checker already stored the 100 % alert: ours skips it without failing.
    session.add(
        Alert(
            customer_id=a.id or 0,
            metric="seats",
            threshold_pct=100,
            period="2026-11",
            value=Decimal(9),
            limit=Decimal(5),
            message="earlier",
        )
    )
    session.flush()
    new = check_alerts(session, now=NOW, source=SOURCE, thresholds=[80, 100])
    assert [x.threshold_pct for x in new] == [80]
    assert session.exec(select(func.count()).select_from(Alert)).one() == 2


def test_insert_once_keeps_the_rest_of_the_transaction(session: Session) -> None:
    from billing_core.usage.alerts import insert_once

    _, a, _ = make_world(session)

    def alert(threshold: int) -> Alert:
        return Alert(
            customer_id=a.id or 0,
            metric="seats",
            threshold_pct=threshold,
            period="2026-11",
            value=Decimal(9),
            limit=Decimal(5),
            message="m",
        )

    assert insert_once(session, alert(80))
    assert insert_once(session, alert(100))
    assert not insert_once(session, alert(100))  # duplicate: refused by the unique key
    assert insert_once(session, alert(120))
    session.commit()
    assert sorted(x.threshold_pct for x in session.exec(select(Alert)).all()) == [80, 100, 120]


def test_late_usage_for_a_closed_uninvoiced_month_alerts(session: Session) -> None:
    _, a, b = make_world(session)
    # October is closed: Beta's October invoice is out, Alpha's is only a draft.
    session.add(Invoice(customer_id=b.id or 0, period="2026-10", currency="USD", status="open"))
    session.add(Invoice(customer_id=a.id or 0, period="2026-10", currency="EUR"))
    # Beta's reading arrived before its invoice went out (import refuses it now).
    session.add(
        UsageRecord(
            customer_id=b.id or 0,
            metric="seats",
            quantity=Decimal(6),
            occurred_at=datetime(2026, 10, 20, tzinfo=UTC),
            period="2026-10",
            idempotency_key="beta-october",
        )
    )
    session.flush()
    rows = [
        UsageInput(a.email, "seats", "6", "2026-10-20T00:00:00Z"),  # late, October still open
        UsageInput(b.email, "api_calls", "800", "2026-11-02"),
    ]
    record_usage(session, rows, now=NOW, actor="t")
    new = check_alerts(session, now=NOW, source=SOURCE, thresholds=[80, 100])
    assert sorted((x.customer_id, x.period, x.metric, x.threshold_pct) for x in new) == [
        (a.id, "2026-10", "seats", 80),
        (a.id, "2026-10", "seats", 100),
        (b.id, "2026-11", "api_calls", 80),
    ]
    assert "Alpha reached 120% of its basic plan's seats limit in 2026-10" in new[0].message
    assert check_alerts(session, now=NOW, source=SOURCE, thresholds=[80, 100]) == []


# --- SNS through moto's server (real HTTP) -------------------------------------------------


@pytest.fixture(scope="module")
def moto_url() -> Iterator[str]:
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    yield f"http://{host}:{port}"
    server.stop()


@pytest.fixture
def aws_env(monkeypatch: pytest.MonkeyPatch, moto_url: str) -> dict[str, str]:
    env = {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_ENDPOINT_URL_SNS": moto_url,
        "AWS_ENDPOINT_URL_SQS": moto_url,
    }
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    monkeypatch.delenv("AWS_PROFILE", raising=False)
    return env


def topic_with_queue(name: str) -> tuple[str, Any, str]:
    sns = boto3.client("sns", region_name="us-east-1")
    sqs = boto3.client("sqs", region_name="us-east-1")
    topic = sns.create_topic(Name=name)["TopicArn"]
    queue_url = sqs.create_queue(QueueName=f"{name}-q")["QueueUrl"]
    queue_arn = sqs.get_queue_attributes(QueueUrl=queue_url, AttributeNames=["QueueArn"])[
        "Attributes"
    ]["QueueArn"]
    sns.subscribe(TopicArn=topic, Protocol="sqs", Endpoint=queue_arn)
    return topic, sqs, queue_url


def received(sqs: Any, queue_url: str) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    while True:
        batch = sqs.receive_message(QueueUrl=queue_url, MaxNumberOfMessages=10).get("Messages", [])
        if not batch:
            return out
        out += [json.loads(m["Body"]) for m in batch]
        for m in batch:
            sqs.delete_message(QueueUrl=queue_url, ReceiptHandle=m["ReceiptHandle"])


def test_publish_to_sns(
    engine: Engine, session: Session, aws_env: dict[str, str], tmp_path: Path
) -> None:
    _, a, _ = make_world(session)
    record_usage(session, [UsageInput(a.email, "seats", "6", "2026-11-02")], now=NOW, actor="t")
    new = check_alerts(session, now=NOW, source=SOURCE, thresholds=[80, 100])
    session.commit()
    topic, sqs, queue_url = topic_with_queue("billing-alerts")
    client = sns_client(load_settings({}, tmp_path / "none.toml"))
    result = publish_pending(engine, topic_arn=topic, client=client, now=NOW)
    assert (result.published, result.failed) == (2, [])
    assert all(session.get(Alert, x.id, populate_existing=True).published_at == NOW for x in new)
    messages = received(sqs, queue_url)
    assert sorted(m["Subject"] for m in messages) == [
        "Usage alert 100%: seats (2026-11)",
        "Usage alert 80%: seats (2026-11)",
    ]
    assert all("Alpha reached 120%" in m["Message"] for m in messages)
    assert messages[0]["MessageAttributes"]["metric"]["Value"] == "seats"
    # Published once: a second run sends nothing.
    again = publish_pending(engine, topic_arn=topic, client=client, now=NOW)
    assert again.published == 0 and received(sqs, queue_url) == []


def test_publish_failure_keeps_alerts_pending(
    engine: Engine, session: Session, aws_env: dict[str, str], tmp_path: Path
) -> None:
    _, a, _ = make_world(session)
    record_usage(session, [UsageInput(a.email, "seats", "6", "2026-11-02")], now=NOW, actor="t")
    check_alerts(session, now=NOW, source=SOURCE, thresholds=[80])
    session.commit()
    client = sns_client(load_settings({}, tmp_path / "none.toml"))
    missing = "arn:aws:sns:us-east-1:123456789012:no-such-topic"
    result = publish_pending(engine, topic_arn=missing, client=client, now=NOW)
    assert result.published == 0 and len(result.failed) == 1
    assert "NotFound" in result.failed[0]
    assert session.exec(select(Alert)).one().published_at is None


def six_alerts(session: Session) -> None:
    """Six alerts: 80 % and 100 % of Alpha's seats and API calls, and of Beta's seats."""
    _, a, b = make_world(session)
    rows = [UsageInput(c.email, "seats", "9", "2026-11-02") for c in (a, b)]
    rows += [UsageInput(a.email, "api_calls", "1000", "2026-11-02")]
    record_usage(session, rows, now=NOW, actor="t")
    assert len(check_alerts(session, now=NOW, source=SOURCE, thresholds=[80, 100])) == 6
    session.commit()


class Killed(BaseException):
    """Stands in for SIGKILL: nothing after it runs, no `except Exception` catches it."""


def test_run_killed_after_three_publishes_sends_each_alert_once(
    engine: Engine, session: Session, aws_env: dict[str, str], tmp_path: Path
) -> None:
    six_alerts(session)
    topic, sqs, queue_url = topic_with_queue("killed-run")
    client = sns_client(load_settings({}, tmp_path / "none.toml"))
    calls = 0

    def kill_after_third(**_: Any) -> None:
        # botocore's public event hooks: SNS has taken the 3rd message when the process dies.
        nonlocal calls
        calls += 1
        if calls == 3:
            raise Killed

    client.meta.events.register("after-call.sns.Publish", kill_after_third)
    with pytest.raises(Killed):
        publish_pending(engine, topic_arn=topic, client=client, now=NOW)
    assert len(received(sqs, queue_url)) == 3
    rerun = sns_client(load_settings({}, tmp_path / "none.toml"))
    result = publish_pending(engine, topic_arn=topic, client=rerun, now=NOW)
    assert (result.published, result.failed) == (3, [])
    assert len(received(sqs, queue_url)) == 3  # 6 in all: each alert exactly once
    with Session(engine) as fresh:
        assert all(x.published_at for x in fresh.exec(select(Alert)).all())


def test_publish_failing_mid_batch_then_rerun_sends_each_alert_once(
    engine: Engine, session: Session, aws_env: dict[str, str], tmp_path: Path
) -> None:
    six_alerts(session)
    topic, sqs, queue_url = topic_with_queue("flaky-topic")
    sns = boto3.client("sns", region_name="us-east-1")
    client = sns_client(load_settings({}, tmp_path / "none.toml"))
    calls = 0

    def topic_gone_after_second(**_: Any) -> None:
        nonlocal calls
        calls += 1
        if calls == 2:  # the topic disappears: SNS refuses the rest (NotFound)
            sns.delete_topic(TopicArn=topic)

    client.meta.events.register("after-call.sns.Publish", topic_gone_after_second)
    first = publish_pending(engine, topic_arn=topic, client=client, now=NOW)
    assert first.published == 2 and len(first.failed) == 4
    assert len(received(sqs, queue_url)) == 2
    again, _, _ = topic_with_queue("flaky-topic")  # recreated: the same ARN
    assert again == topic
    second = publish_pending(engine, topic_arn=topic, client=client, now=NOW)
    assert (second.published, second.failed) == (4, [])
    assert len(received(sqs, queue_url)) == 4
    assert publish_pending(engine, topic_arn=topic, client=client, now=NOW).published == 0
    assert received(sqs, queue_url) == []


def test_check_alerts_cli(
    demo_db_url: str,
    aws_env: dict[str, str],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv("DATABASE_URL", demo_db_url)
    monkeypatch.setenv("BILLING_SECRETS_FILE", str(tmp_path / "none.toml"))
    monkeypatch.setenv("BILLING_MODE", "demo")
    topic, sqs, queue_url = topic_with_queue("cli-alerts")
    with Session(make_engine(demo_db_url)) as s:
        pending = s.exec(
            select(func.count()).select_from(Alert).where(col(Alert.published_at).is_(None))
        ).one()
    assert pending > 0  # the demo raised alerts through check_alerts
    # A topic that does not exist: partial failure, exit 1, nothing marked published.
    monkeypatch.setenv("SNS_TOPIC_ARN", "arn:aws:sns:us-east-1:123456789012:nope")
    assert main(["check-alerts", "--period", "2026-10"]) == 1
    assert "retried on the next run" in capsys.readouterr().err
    monkeypatch.setenv("SNS_TOPIC_ARN", topic)
    assert main(["check-alerts", "--period", "2026-10"]) == 0
    out = capsys.readouterr().out
    assert "alerts: 0 new" in out and f"sns: {pending} published, 0 failed" in out
    assert len(received(sqs, queue_url)) == pending
    assert main(["check-alerts", "--period", "2026-10"]) == 0
    assert "sns: 0 published" in capsys.readouterr().out
