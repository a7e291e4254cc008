"""Cost snapshots, TTL, attribution and report figures, against moto, the stub and the demo."""

from __future__ import annotations

from collections import defaultdict
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from sqlmodel import Session, func, select

from billing_core.cli import main
from billing_core.costs import attribution, refresh, snapshots
from billing_core.costs.snapshots import CostSource
from billing_core.demo.catalog import CUSTOMERS, monthly_service_costs
from billing_core.models import CostLine, CostSnapshot, Customer, CustomerAccount
from billing_core.periods import Period
from billing_core.views import aws_costs
from billing_core.views import aws_costs_report as costs_report
from tests.conftest import DEMO_NOW
from tests.support.aws import group, page, result, settings
from tests.support.csv_rows import CRLF, LF, LONE_CR, as_dicts, both_readers, read_back

# The cost figures these tests bill from (the settings' defaults).
SOURCE = CostSource("UnblendedCost", "LINKED_ACCOUNT")

NOW = datetime(2026, 11, 21, 9, 0, tzinfo=UTC)
OCT, NOV = Period(2026, 10), Period(2026, 11)
NO_WAIT = {"sleep": lambda _s: None, "backoff": (0.0,)}


def add_customers(session: Session) -> dict[str, int]:
    ids = {}
    for name, accounts, tag in (
        ("Acme", ["111111111111"], "acme"),
        ("Birch", ["222222222222", "222222222223"], "birch"),
    ):
        c = Customer(
            name=name, email=f"{name.lower()}@x.example", currency="USD", cost_tag_value=tag
        )
        session.add(c)
        session.flush()
        for a in accounts:
            session.add(CustomerAccount(customer_id=c.id, account_id=a))
        ids[name] = c.id
    session.flush()
    return ids


def october_by_account() -> list[dict]:
    month = ("2026-10-01", "2026-11-01")
    return [
        page(
            result(
                *month,
                [
                    group("111111111111", "AWS Lambda", "100.0000000001"),
                    group("111111111111", "Amazon S3", "20.5"),
                ],
            ),
            token="t2",
        ),
        page(
            result(
                *month,
                [
                    group("222222222222", "AWS Lambda", "7.25"),
                    group("222222222223", "Amazon S3", "0.75"),
                    group("999999999999", "AWS Lambda", "3.3333333333"),
                ],
            )
        ),
        page(
            result(
                *month,
                [
                    group("111111111111", "Credit", "-50"),
                    group("222222222222", "Refund", "-1.25"),
                    group("999999999999", "Tax", "0.5"),
                ],
            )
        ),
    ]


def test_refresh_stores_a_snapshot_and_attributes_by_account(session, moto_ce) -> None:
    ids = add_customers(session)
    moto_ce.queue(*october_by_account())
    outcome = refresh.refresh_period(session, settings(), OCT, now=NOW, **NO_WAIT)
    assert outcome.error is None and outcome.fetched and outcome.request_count == 3
    assert outcome.snapshot.granularity == "MONTHLY" and outcome.lines == 8
    got = attribution.attributed_costs(session, OCT, SOURCE)
    assert got.usage[ids["Acme"]] == {
        "AWS Lambda": Decimal("100.0000000001"),
        "Amazon S3": Decimal("20.5"),
    }
    assert got.adjustments[ids["Acme"]] == {"Credit": Decimal(-50)}
    assert got.customer_total(ids["Birch"]) == Decimal("6.75")  # 7.25 + 0.75 - 1.25 refund
    assert got.unattributed_usage == {"AWS Lambda": Decimal("3.3333333333")}
    assert got.unattributed_adjustments == {"Tax": Decimal("0.5")}
    stored = session.exec(select(func.sum(CostLine.amount))).one()
    assert got.total == stored == Decimal("81.0833333334")
    assert (
        got.customer_total(ids["Acme"]) + got.customer_total(ids["Birch"]) + got.unattributed_total
        == got.total
    )


def test_attribution_by_tag_falls_back_to_the_account_owner(session, moto_ce) -> None:
    """Tag first; untagged spend, tax and credits go to the one owner of their account; a tag
    value nobody has, or an account nobody owns, stays unattributed."""
    ids = add_customers(session)
    month = ("2026-10-01", "2026-11-01")
    moto_ce.queue(
        # by tag: the untagged group ("customer$") is replaced by the untagged questions below
        page(
            result(
                *month,
                [
                    group("customer$acme", "AWS Lambda", "10"),
                    group("customer$", "AWS Lambda", "4"),
                    group("customer$nobody", "Amazon S3", "1"),
                ],
            )
        ),
        page(
            result(
                *month, [group("customer$birch", "Credit", "-2"), group("customer$", "Tax", "0.75")]
            )
        ),
        # untagged charges by linked account
        page(result(*month, [group("222222222223", "AWS Lambda", "4")])),
        # untagged credits, refunds and tax by linked account (AWS never tags them)
        page(
            result(
                *month, [group("111111111111", "Tax", "0.5"), group("999999999999", "Tax", "0.25")]
            )
        ),
    )
    cfg = settings(cost_group_by="TAG", cost_tag_key="customer")
    outcome = refresh.refresh_period(session, cfg, OCT, now=NOW)
    assert outcome.error is None and outcome.request_count == 4
    got = attribution.attributed_costs(session, OCT, CostSource("UnblendedCost", "TAG:customer"))
    assert got.usage == {
        ids["Acme"]: {"AWS Lambda": Decimal(10)},
        ids["Birch"]: {"AWS Lambda": Decimal(4)},  # untagged, in Birch's account
    }
    assert got.adjustments == {
        ids["Acme"]: {"Tax": Decimal("0.5")},
        ids["Birch"]: {"Credit": Decimal(-2)},
    }
    assert got.unattributed_usage == {"Amazon S3": Decimal(1)}  # tag value nobody has
    assert got.unattributed_adjustments == {"Tax": Decimal("0.25")}  # account nobody owns
    assert got.total == Decimal("13.75")
    view = aws_costs.build_costs_view(session, cfg, OCT)
    assert view.unattributed == Decimal("1.25")
    assert sum(view.by_customer["amount"], Decimal(0)) == view.total == Decimal("13.75")
    # The page's SQL filter (daily chart, last month) agrees with the attribution in Python.
    who = attribution.Attribution.load(session, OCT)
    for customer, expect in (
        (ids["Acme"], Decimal("10.5")),
        (ids["Birch"], Decimal(2)),
        (snapshots.UNATTRIBUTED, Decimal("1.25")),
    ):
        condition = who.condition("TAG:customer", customer)
        assert condition is not None
        summed = session.exec(select(func.sum(CostLine.amount)).where(condition)).one()
        assert summed == expect


def test_snapshot_is_reused_within_ttl_and_refetched_after(session, moto_ce) -> None:
    add_customers(session)
    month = ("2026-11-01", "2026-11-02")
    moto_ce.queue(page(result(*month, [group("111111111111", "S", "1")], True)), page())
    cfg = settings(cost_snapshot_ttl_seconds="3600")
    first = refresh.refresh_period(session, cfg, NOV, now=NOW, **NO_WAIT)
    assert first.fetched and first.request_count == 3  # 2 pages + forecast attempt
    again = refresh.refresh_period(session, cfg, NOV, now=NOW + timedelta(minutes=59))
    assert not again.fetched and again.request_count == 0
    later = refresh.refresh_period(session, cfg, NOV, now=NOW + timedelta(minutes=61), **NO_WAIT)
    assert later.fetched
    forced = refresh.refresh_period(
        session, cfg, NOV, now=NOW + timedelta(minutes=62), force=True, **NO_WAIT
    )
    assert forced.fetched
    assert (
        refresh.requests_since(session, NOW)
        == first.request_count + later.request_count + forced.request_count
    )


def test_final_closed_month_is_not_refetched(session) -> None:
    snap = CostSnapshot(
        period="2026-10",
        granularity="MONTHLY",
        group_by="LINKED_ACCOUNT",
        metric="UnblendedCost",
        estimated=False,
        fetched_at=datetime(2026, 11, 5, tzinfo=UTC),
    )
    assert not snapshots.needs_refresh(snap, NOW + timedelta(days=30), 60)
    snap.estimated = True
    assert snapshots.needs_refresh(snap, NOW, 60)
    assert snapshots.needs_refresh(None, NOW, 60)


@pytest.mark.parametrize(
    ("fault", "expect"),
    [
        (("AccessDeniedException", "not authorized"), "ce:GetCostAndUsage"),
        (("AccessDeniedException", "User not enabled for cost explorer access"), "not enabled"),
        (("DataUnavailableException", "no data"), "no data yet"),
        (("LimitExceededException", "slow down"), "throttling"),
        ("bad-unit", "unknown currency unit"),
        ("bad-amount", "is not a number"),
    ],
)
def test_a_failed_refresh_stores_nothing_and_keeps_the_last_good(
    session, ce_stub, fault, expect
) -> None:
    add_customers(session)
    month = ("2026-10-01", "2026-11-01")
    ce_stub.add("GetCostAndUsage", page(result(*month, [group("111111111111", "S", "5")])))
    ce_stub.add("GetCostAndUsage", page())
    good = refresh.refresh_period(session, settings(), OCT, now=NOW)
    lines_before = session.exec(select(func.count()).select_from(CostLine)).one()
    if fault == "bad-unit":
        ce_stub.add(
            "GetCostAndUsage", page(result(*month, [group("111111111111", "S", "6")]), token="p2")
        )
        ce_stub.add("GetCostAndUsage", page(result(*month, [group("1", "S", "1", unit="XYZ")])))
    elif fault == "bad-amount":
        ce_stub.add("GetCostAndUsage", page(result(*month, [group("1", "S", "12,50")])))
    else:
        ce_stub.fail("GetCostAndUsage", *fault, times=10)
    later = NOW + timedelta(hours=1)
    bad = refresh.refresh_period(session, settings(), OCT, now=later, force=True, **NO_WAIT)
    assert bad.error and expect in bad.error and not bad.fetched
    assert session.exec(select(func.count()).select_from(CostLine)).one() == lines_before
    latest = snapshots.latest_snapshot(session, OCT, SOURCE)
    assert latest.id == good.snapshot.id
    failure = refresh.last_failure(session)
    assert failure and expect in failure.message
    failed = session.exec(select(CostSnapshot).where(CostSnapshot.status == "failed")).one()
    assert failed.request_count == bad.request_count > 0
    view = aws_costs.build_costs_view(session, settings(), OCT)
    assert view.total == Decimal(5)
    assert expect in costs_report.format_report(session, settings(), OCT, "customer", now=later)
    # The next good refresh clears the failure note.
    ce_stub.queues.clear()
    refresh.refresh_period(session, settings(), OCT, now=later, force=True)
    assert refresh.last_failure(session) is None


def test_latest_complete_snapshot_rule_and_pruning(demo_session) -> None:
    cfg = settings()
    view = aws_costs.build_costs_view(demo_session, cfg, OCT)
    # October was fetched DAILY at month end, then MONTHLY (final) later: totals from MONTHLY.
    assert view.snapshot.granularity == "MONTHLY" and not view.snapshot.estimated
    assert view.daily_snapshot.granularity == "DAILY"
    assert sum(view.daily["amount"], Decimal(0)) == view.total
    first = snapshots.latest_snapshot(demo_session, NOV, SOURCE)
    result_copy = snapshots.latest_snapshot(demo_session, NOV, SOURCE)
    assert first.id == result_copy.id
    from billing_core.costs import cost_explorer as ce

    for i in range(snapshots.KEEP_SNAPSHOTS + 1):
        fetched = ce.FetchResult(query=ce.build_query(NOV, DEMO_NOW), estimated=True)
        snapshots.store_snapshot(
            demo_session, fetched, fetched_at=DEMO_NOW + timedelta(hours=i + 1), source="test"
        )
    demo_session.refresh(first)
    assert first.status == "pruned"
    assert (
        demo_session.exec(
            select(func.count()).select_from(CostLine).where(CostLine.snapshot_id == first.id)
        ).one()
        == 0
    )


def test_demo_costs_match_the_catalog_to_the_cent(demo_session) -> None:
    names = {c.name: c for c in CUSTOMERS}
    customers = {c.id: names[c.name] for c in demo_session.exec(select(Customer)).all()}
    # 2026-09 is left out: the demo restates it (reconciliation's discrepancies).
    for period in (Period(2025, 10), Period(2026, 8), OCT):
        got = attribution.attributed_costs(demo_session, period, SOURCE)
        assert got.granularity == "MONTHLY" and not got.estimated
        for cid, spec in customers.items():
            assert got.usage[cid] == monthly_service_costs(spec, period)
        assert got.unattributed_total > 0
    october = attribution.attributed_costs(demo_session, OCT, SOURCE)
    kinds = {k for adj in october.adjustments.values() for k in adj}
    assert kinds == {"Credit", "Refund"}
    running = attribution.attributed_costs(demo_session, NOV, SOURCE)
    assert running.estimated and running.granularity == "DAILY"
    periods = snapshots.snapshot_periods(
        demo_session, metric="UnblendedCost", group_by="LINKED_ACCOUNT"
    )
    assert len(periods) == 14 and periods[0] == NOV


def test_view_figures_for_the_running_month(demo_session) -> None:
    cfg = settings()
    view = aws_costs.build_costs_view(demo_session, cfg, NOV)
    assert view.running and view.snapshot.estimated and view.snapshot.covered_days == 21
    lines = demo_session.exec(select(CostLine).where(CostLine.snapshot_id == view.snapshot.id))
    lines_of_november = lines.all()
    stored = sum((line.amount for line in lines_of_november), Decimal(0))
    assert view.total == stored
    assert sum(view.by_service["amount"], Decimal(0)) == stored
    assert sum(view.by_customer["amount"], Decimal(0)) == stored
    assert sum(view.breakdown["amount"], Decimal(0)) == stored
    # The change compares complete days: November's first 20 (the 21st, the fetch's day, is
    # partial in Cost Explorer) against the first 20 of October's daily snapshot.
    assert view.snapshot.complete_days == view.compared_days == 20
    oct_daily = snapshots.latest_snapshot(demo_session, OCT, SOURCE, granularity="DAILY")
    same = demo_session.exec(
        select(CostLine).where(CostLine.snapshot_id == oct_daily.id, CostLine.day < "2026-10-21")
    ).all()
    assert view.previous_same_days == sum((x.amount for x in same), Decimal(0))
    so_far = [line for line in lines_of_november if line.day < "2026-11-21"]
    assert view.compared_total == sum((x.amount for x in so_far), Decimal(0))
    assert view.change == view.compared_total - view.previous_same_days
    assert view.forecast_source == "Cost Explorer" and view.forecast > view.total
    # A customer filter narrows everything, and the unattributed filter is the rest.
    by_customer = defaultdict(Decimal)
    for cid, amount in zip(
        view.by_customer["customer_id"], view.by_customer["amount"], strict=True
    ):
        by_customer[None if cid is None or str(cid) == "<NA>" else int(cid)] += amount
    one = int(next(c for c in by_customer if c is not None))
    narrowed = aws_costs.build_costs_view(
        demo_session, cfg, NOV, aws_costs.CostFilter(customer=one)
    )
    assert narrowed.total == by_customer[one]
    assert narrowed.forecast_source == "run rate of the first 20 days"
    assert sum(narrowed.daily["amount"], Decimal(0)) == narrowed.total
    rest = aws_costs.build_costs_view(
        demo_session, cfg, NOV, aws_costs.CostFilter(customer=snapshots.UNATTRIBUTED)
    )
    assert rest.total == view.unattributed == by_customer[None]
    lambda_only = aws_costs.build_costs_view(
        demo_session, cfg, NOV, aws_costs.CostFilter(service="AWS Lambda")
    )
    assert list(lambda_only.by_service["service"]) == ["AWS Lambda"]


def test_report_csv_rows_sum_to_the_page_total(demo_session) -> None:
    cfg = settings()
    view = aws_costs.build_costs_view(demo_session, cfg, OCT)
    for by in ("customer", "service", "day"):
        text = costs_report.format_report(demo_session, cfg, OCT, by, now=DEMO_NOW, as_csv=True)
        rows = text.strip().splitlines()[1:]
        amounts = [Decimal(r.rsplit(",", 4)[1]) for r in rows]
        if by != "day":  # daily figures come from the DAILY snapshot (same total in the demo)
            assert sum(amounts, Decimal(0)) == view.total
    text = costs_report.format_report(demo_session, cfg, OCT, "customer", now=DEMO_NOW)
    assert "USD 34,220.04" in text and "of which credit: USD -250.00" in text
    csv_text = costs_report.breakdown_csv(view)
    assert (
        sum((Decimal(r.split(",")[-2]) for r in csv_text.strip().splitlines()[1:]), Decimal(0))
        == view.total
    )
    with pytest.raises(Exception, match="fetch-costs --period 2030-01"):
        costs_report.format_report(demo_session, cfg, Period(2030, 1), "customer", now=DEMO_NOW)
    # The page's download: UTF-8 with a byte-order mark, named after the month and filters.
    assert costs_report.breakdown_csv_bytes(view) == b"\xef\xbb\xbf" + csv_text.encode()
    assert costs_report.breakdown_file_name(view, None) == "aws-costs_2026-10.csv"
    lambda_only = aws_costs.build_costs_view(
        demo_session, cfg, OCT, aws_costs.CostFilter(service="AWS Lambda")
    )
    assert costs_report.breakdown_file_name(lambda_only, "Acme Analytics GmbH") == (
        "aws-costs_2026-10_Acme-Analytics-GmbH_AWS-Lambda.csv"
    )


def test_cli_fetch_costs_logs_requests_and_cost(app_env, moto_ce, monkeypatch, capsys) -> None:
    monkeypatch.setenv("BILLING_MODE", "live")
    moto_ce.queue(*october_by_account())
    assert main(["fetch-costs", "--period", "2026-10", "--force"]) == 0
    out = capsys.readouterr().out
    assert "2026-10: stored 8 MONTHLY lines" in out
    assert "Cost Explorer requests: 3 (USD 0.03)" in out
    assert main(["costs-report", "--period", "2026-10", "--by", "service"]) == 0
    report = capsys.readouterr().out
    assert "AWS Lambda" in report and "USD 81.08" in report


def test_cli_fetch_costs_failure_exits_1(app_env, ce_stub, monkeypatch, capsys) -> None:
    monkeypatch.setenv("BILLING_MODE", "live")
    ce_stub.fail("GetCostAndUsage", "AccessDeniedException", "denied", times=5)
    assert main(["fetch-costs", "--period", "2026-10", "--force"]) == 1
    err = capsys.readouterr().err
    assert "ce:GetCostAndUsage" in err and "Traceback" not in err


def test_pruning_keeps_the_lines_an_invoice_was_priced_from(demo_session) -> None:
    from billing_core.costs import cost_explorer as ce
    from billing_core.models import Invoice

    billed = snapshots.latest_snapshot(demo_session, NOV, SOURCE)
    lines = demo_session.exec(
        select(func.count()).select_from(CostLine).where(CostLine.snapshot_id == billed.id)
    ).one()
    assert lines > 0
    invoice = demo_session.exec(select(Invoice)).first()
    invoice.cost_snapshot_id = billed.id
    demo_session.add(invoice)
    demo_session.flush()
    for i in range(snapshots.KEEP_SNAPSHOTS + 2):
        fetched = ce.FetchResult(query=ce.build_query(NOV, DEMO_NOW), estimated=True)
        snapshots.store_snapshot(
            demo_session, fetched, fetched_at=DEMO_NOW + timedelta(hours=i + 1), source="test"
        )
    demo_session.refresh(billed)
    assert billed.status == "complete"
    assert (
        demo_session.exec(
            select(func.count()).select_from(CostLine).where(CostLine.snapshot_id == billed.id)
        ).one()
        == lines
    )
    # Unreferenced superseded snapshots are still pruned to KEEP_SNAPSHOTS.
    complete = demo_session.exec(
        select(func.count())
        .select_from(CostSnapshot)
        .where(
            CostSnapshot.period == str(NOV),
            CostSnapshot.granularity == billed.granularity,
            CostSnapshot.status == "complete",
        )
    ).one()
    assert complete == snapshots.KEEP_SNAPSHOTS + 1


def test_report_csv_line_breaks_in_names_keep_one_row_each(demo_session) -> None:
    cfg = settings()
    names = (LONE_CR, CRLF, LF)
    customers = demo_session.exec(select(Customer).order_by(Customer.id)).all()[: len(names)]
    for customer, name in zip(customers, names, strict=True):
        customer.name = name
    demo_session.flush()
    view = aws_costs.build_costs_view(demo_session, cfg, OCT)
    expected = {read_back(n) for n in names}
    # The page's breakdown download: each name on its own row, the amounts under `amount`.
    text = costs_report.breakdown_csv(view)
    # A bare "\r" would split a row for either reader.
    rows = as_dicts(both_readers(text, len(view.breakdown)))
    assert "\r" not in text
    assert expected <= {r["customer"] for r in rows}
    assert sum((Decimal(r["amount"]) for r in rows), Decimal(0)) == view.total
    assert {r["currency"] for r in rows} == {view.currency}
    # `costs-report --csv` by customer: the same.
    text = costs_report.format_report(demo_session, cfg, OCT, "customer", now=DEMO_NOW, as_csv=True)
    rows = as_dicts(both_readers(text, len(view.by_customer)))
    assert "\r" not in text
    assert expected <= {r["customer"] for r in rows}
    assert sum((Decimal(r["amount"]) for r in rows), Decimal(0)) == view.total
