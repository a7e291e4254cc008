"""The Cost Explorer adapter, driven through real boto3 against moto and a local stub."""

from __future__ import annotations

from datetime import UTC, date, datetime
from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from billing_core.costs import cost_explorer as ce
from billing_core.errors import CostSourceError
from billing_core.periods import Period
from tests.support.aws import group, page, result, settings

NOW = datetime(2026, 11, 21, 9, 0, tzinfo=UTC)
OCT = Period(2026, 10)
NOV = Period(2026, 11)


def closed_query(**kw: str) -> ce.CostQuery:
    return ce.build_query(OCT, NOW, **kw)


# --- pure parts ------------------------------------------------------------------------------


def test_build_query_daily_for_running_month_monthly_for_closed() -> None:
    running = ce.build_query(NOV, NOW)
    assert (running.granularity, running.start, running.end) == (
        "DAILY",
        date(2026, 11, 1),
        date(2026, 11, 22),
    )
    closed = ce.build_query(OCT, NOW)
    assert (closed.granularity, closed.end) == ("MONTHLY", date(2026, 11, 1))
    with pytest.raises(CostSourceError, match="has not started"):
        ce.build_query(Period(2026, 12), NOW)


def test_request_params_split_charges_from_credits_refunds_tax() -> None:
    q = closed_query(group_by="TAG", tag_key="customer", metric="AmortizedCost")
    usage = ce.request_params(q, "usage")
    assert usage["GroupBy"] == [
        {"Type": "TAG", "Key": "customer"},
        {"Type": "DIMENSION", "Key": "SERVICE"},
    ]
    assert usage["Filter"] == {
        "Not": {"Dimensions": {"Key": "RECORD_TYPE", "Values": ["Credit", "Refund", "Tax"]}}
    }
    assert usage["Metrics"] == ["AmortizedCost"]
    adjustments = ce.request_params(q, "adjustments", "tok")
    assert adjustments["GroupBy"][1] == {"Type": "DIMENSION", "Key": "RECORD_TYPE"}
    assert adjustments["NextPageToken"] == "tok"
    assert usage["TimePeriod"] == {"Start": "2026-10-01", "End": "2026-11-01"}


def test_tag_fetch_asks_whose_account_the_untagged_spend_is() -> None:
    q = closed_query(group_by="TAG", tag_key="team")
    untagged = {"Tags": {"Key": "team", "MatchOptions": ["ABSENT"]}}
    records = {"Dimensions": {"Key": "RECORD_TYPE", "Values": ["Credit", "Refund", "Tax"]}}
    usage = ce.request_params(q, "untagged_usage")
    assert usage["GroupBy"] == [
        {"Type": "DIMENSION", "Key": "LINKED_ACCOUNT"},
        {"Type": "DIMENSION", "Key": "SERVICE"},
    ]
    assert usage["Filter"] == {"And": [{"Not": records}, untagged]}
    adjustments = ce.request_params(q, "untagged_adjustments")
    assert adjustments["GroupBy"][1] == {"Type": "DIMENSION", "Key": "RECORD_TYPE"}
    assert adjustments["Filter"] == {"And": [records, untagged]}
    month = ("2026-10-01", "2026-11-01")
    got = ce.parse_responses(
        q,
        [page(result(*month, [group("team$a", "S3", "2"), group("team$", "S3", "3")]))],
        [page(result(*month, [group("team$", "Tax", "1")]))],
        currency="USD",
        untagged_pages=(
            [page(result(*month, [group("111111111111", "S3", "3")]))],
            [page(result(*month, [group("111111111111", "Tax", "1")]))],
        ),
    )
    # The tag questions' untagged groups are replaced by the same spend with its account.
    assert [(r.account_id, r.tag_value, r.service, r.record_type, r.amount) for r in got.rows] == [
        (None, "a", "S3", "Usage", Decimal(2)),
        ("111111111111", "", "S3", "Usage", Decimal(3)),
        ("111111111111", "", "Tax", "Tax", Decimal(1)),
    ]
    # What the accounts do not add up to stays untagged without an account: nothing is lost.
    partial = ce.parse_responses(
        q,
        [page(result(*month, [group("team$", "S3", "3.0000000001")]))],
        [page(result(*month, [group("team$", "Tax", "1")]))],
        currency="USD",
        untagged_pages=([page(result(*month, [group("111111111111", "S3", "3")]))], [page()]),
    )
    assert [(r.account_id, r.service, r.amount) for r in partial.rows] == [
        ("111111111111", "S3", Decimal(3)),
        (None, "S3", Decimal("1E-10")),
        (None, "Tax", Decimal(1)),
    ]
    assert sum(r.amount for r in partial.rows) == Decimal("4.0000000001")


@pytest.mark.parametrize(
    ("key", "amount", "unit", "expect"),
    [
        ("customer$acme", "12.3456789012", "USD", ("acme", Decimal("12.3456789012"))),
        ("customer$", "1", "USD", ("", Decimal(1))),  # untagged
        ("customer$acme", "-0.5", "usd", ("acme", Decimal("-0.5"))),
        ("customer$acme", "1E-3", "USD", ("acme", Decimal("0.001"))),
        ("customer$acme", "0.123456789012345", "USD", ("acme", Decimal("0.1234567890"))),
    ],
)
def test_parse_tag_groups(key: str, amount: str, unit: str, expect: tuple[str, Decimal]) -> None:
    q = closed_query(group_by="TAG", tag_key="customer")
    rows = ce.parse_page(
        page(result("2026-10-01", "2026-11-01", [group(key, "AWS Lambda", amount, unit)])),
        q,
        "usage",
        "USD",
    )
    assert (rows[0].tag_value, rows[0].amount) == expect
    assert rows[0].account_id is None and rows[0].record_type == "Usage"


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (page(result("2026-10-01", "2026-11-01", [group("1", "S", "abc")])), "not a number"),
        (page(result("2026-10-01", "2026-11-01", [group("1", "S", "NaN")])), "not a finite"),
        (
            page(result("2026-10-01", "2026-11-01", [group("1", "S", "1", unit="Hrs")])),
            "unknown currency unit",
        ),
        (
            page(result("2026-10-01", "2026-11-01", [group("1", "S", "1", unit="")])),
            "unknown currency unit",
        ),
        (
            page(result("2026-10-01", "2026-11-01", [group("1", "S", "1", metric="Blended")])),
            "metric UnblendedCost missing",
        ),
        (page(result("2026-09-01", "2026-10-01", [group("1", "S", "1")])), "outside 2026-10"),
        ({"Oops": []}, "ResultsByTime missing"),
        (
            page(result("2026-10-01", "2026-11-01", [{"Keys": ["1"], "Metrics": {}}])),
            "not two values",
        ),
    ],
)
def test_malformed_pages_are_refused(body: dict, message: str) -> None:
    with pytest.raises(CostSourceError, match=message) as err:
        ce.parse_page(body, closed_query(), "usage", "USD")
    assert "nothing was" in str(err.value)


def test_other_currency_names_the_setting() -> None:
    body = page(result("2026-10-01", "2026-11-01", [group("1", "S", "1", unit="EUR")]))
    with pytest.raises(CostSourceError, match="COST_CURRENCY=EUR"):
        ce.parse_page(body, closed_query(), "usage", "USD")


def test_a_group_repeated_across_pages_is_refused_not_summed() -> None:
    one = page(result("2026-10-01", "2026-11-01", [group("111111111111", "S", "1")]))
    with pytest.raises(CostSourceError, match="twice"):
        ce.parse_responses(closed_query(), [one, one], [], currency="USD")


# --- against moto (real boto3 over the wire) ---------------------------------------------------


def test_fetch_follows_every_page_and_keeps_estimated(moto_ce) -> None:
    moto_ce.queue(
        page(
            result(
                "2026-11-01",
                "2026-11-02",
                [group("111111111111", "AWS Lambda", "1.25")],
                estimated=True,
            ),
            token="page-2",
        ),
        page(
            result(
                "2026-11-01",
                "2026-11-02",
                [group("222222222222", "AWS Lambda", "2.5")],
                estimated=True,
            ),
            result(
                "2026-11-02",
                "2026-11-03",
                [group("111111111111", "Amazon S3", "0.0000000001")],
                estimated=True,
            ),
        ),
        page(
            result(
                "2026-11-01", "2026-11-02", [group("111111111111", "Credit", "-1")], estimated=True
            )
        ),
    )
    client = ce.make_client(settings())  # endpoint from AWS_ENDPOINT_URL_COST_EXPLORER
    got = ce.fetch_costs(client, ce.build_query(NOV, NOW), now=NOW, currency="USD")
    # 2 usage pages + 1 adjustments page + 1 forecast attempt (moto has no forecast).
    assert got.request_count == 4
    assert got.forecast is None and got.forecast_note
    assert got.estimated is True
    assert [(r.account_id, r.service, r.record_type, r.amount) for r in got.rows] == [
        ("111111111111", "AWS Lambda", "Usage", Decimal("1.25")),
        ("222222222222", "AWS Lambda", "Usage", Decimal("2.5")),
        ("111111111111", "Amazon S3", "Usage", Decimal("0.0000000001")),
        ("111111111111", "Credit", "Credit", Decimal(-1)),
    ]
    assert got.request_cost == Decimal("0.04")


def test_empty_month_is_an_empty_result(moto_ce) -> None:
    moto_ce.queue(page(result("2026-10-01", "2026-11-01", [])), page())
    got = ce.fetch_costs(ce.make_client(settings()), closed_query(), now=NOW, currency="USD")
    assert got.rows == [] and got.request_count == 2 and not got.estimated


# --- against the stub: faults moto cannot produce ---------------------------------------------


def test_throttling_is_retried_on_the_explicit_schedule(ce_stub) -> None:
    ce_stub.fail("GetCostAndUsage", "LimitExceededException", "Rate exceeded", times=2)
    slept: list[float] = []
    got = ce.fetch_costs(
        ce.make_client(settings()),
        closed_query(),
        now=NOW,
        currency="USD",
        sleep=slept.append,
        backoff=(0.5, 1.0, 2.0),
    )
    assert slept == [0.5, 1.0]
    # botocore retried nothing itself: 2 throttled + 2 good requests reached the server.
    assert ce_stub.request_count == 4 == got.request_count


@pytest.mark.parametrize("code", ["LimitExceededException", "ThrottlingException"])
def test_throttling_gives_up_with_a_sentence(ce_stub, code: str) -> None:
    ce_stub.fail("GetCostAndUsage", code, times=10)
    slept: list[float] = []
    with pytest.raises(ce.FetchFailed, match=r"kept throttling.*try again in a few") as err:
        ce.fetch_costs(
            ce.make_client(settings()),
            closed_query(),
            now=NOW,
            currency="USD",
            sleep=slept.append,
            backoff=(0.1, 0.2),
        )
    assert slept == [0.1, 0.2]
    assert err.value.request_count == 3 == ce_stub.request_count


@pytest.mark.parametrize(
    ("code", "message", "expect"),
    [
        (
            "AccessDeniedException",
            "User: arn:aws:iam::1:user/x is not authorized",
            "ce:GetCostAndUsage",
        ),
        (
            "AccessDeniedException",
            "User not enabled for cost explorer access",
            "Cost Explorer is not enabled",
        ),
        ("DataUnavailableException", "Data is not available", "no data yet"),
        ("UnrecognizedClientException", "The security token is invalid", "did not accept"),
        ("ValidationException", "Start date is after end date", "Start date is after end date"),
    ],
)
def test_errors_become_actionable_messages(ce_stub, code: str, message: str, expect: str) -> None:
    ce_stub.fail("GetCostAndUsage", code, message)
    with pytest.raises(CostSourceError, match=expect):
        ce.fetch_costs(ce.make_client(settings()), closed_query(), now=NOW, currency="USD")
    assert ce_stub.request_count == 1  # no silent retries


def test_no_credentials(monkeypatch, tmp_path) -> None:
    for var in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    monkeypatch.setenv("AWS_ENDPOINT_URL_COST_EXPLORER", "http://127.0.0.1:9")
    with pytest.raises(ce.FetchFailed, match="No AWS credentials") as err:
        ce.fetch_costs(ce.make_client(settings()), closed_query(), now=NOW, currency="USD")
    assert err.value.request_count == 0  # nothing was sent, nothing to pay


def test_forecast_gives_the_month_end_figure(ce_stub) -> None:
    ce_stub.add(
        "GetCostAndUsage",
        page(
            result("2026-11-20", "2026-11-21", [group("111111111111", "S", "10")], True),
            result("2026-11-21", "2026-11-22", [group("111111111111", "S", "3")], True),
        ),
    )
    ce_stub.add("GetCostAndUsage", page())
    ce_stub.add(
        "GetCostForecast",
        {"Total": {"Amount": "100.5", "Unit": "USD"}, "ForecastResultsByTime": []},
    )
    got = ce.fetch_costs(
        ce.make_client(settings()), ce.build_query(NOV, NOW), now=NOW, currency="USD"
    )
    # Actuals before today (10) plus the forecast from today to month end (which covers today).
    assert got.forecast == Decimal("110.5")
    op, body = ce_stub.requests[-1]
    assert op == "GetCostForecast"
    assert body["TimePeriod"] == {"Start": "2026-11-21", "End": "2026-12-01"}
    assert body["Metric"] == "UNBLENDED_COST"


def test_forecast_failure_keeps_the_actuals(ce_stub) -> None:
    ce_stub.add(
        "GetCostAndUsage",
        page(result("2026-11-01", "2026-11-02", [group("111111111111", "S", "1")], True)),
    )
    ce_stub.add("GetCostAndUsage", page())
    ce_stub.fail("GetCostForecast", "AccessDeniedException", "not authorized")
    got = ce.fetch_costs(
        ce.make_client(settings()), ce.build_query(NOV, NOW), now=NOW, currency="USD"
    )
    assert len(got.rows) == 1 and got.forecast is None
    assert "ce:GetCostForecast" in (got.forecast_note or "")


@given(
    st.one_of(
        # Amounts of an AWS bill: well inside Decimal's 28 digits once quantized to 10 places.
        st.decimals(-(10**12), 10**12, allow_nan=False, allow_infinity=False).map(str),
        st.decimals(-(10**12), 10**12, places=12).map(lambda d: f" {d}\n"),
        st.tuples(st.integers(-(10**9), 10**9), st.integers(0, 10**14)).map(
            lambda p: f"{p[0]}.{p[1]:014d}"
        ),
    )
)
def test_amount_fast_path_keeps_ten_places_exactly(raw: str) -> None:
    # Places are counted from the text for plain decimals; the result is the Decimal rule's.
    value = Decimal(raw.strip())
    exponent = value.as_tuple().exponent
    expected = value.quantize(Decimal("1E-10")) if int(exponent) < -10 else value
    got = ce.parse_amount(raw, closed_query())
    assert got == expected and got.as_tuple() == expected.as_tuple()
