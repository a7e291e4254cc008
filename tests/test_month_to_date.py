"""The running month against last month compares complete days only.

Cost Explorer shows the day of the fetch only partly, so counting it made every comparison and
run rate read low, worst on the 1st: a few hours of today against a whole day of last month
showed as a fall of most of the month's cost.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta
from decimal import Decimal

from sqlmodel import Session

from billing_core.costs import cost_explorer as ce
from billing_core.costs import snapshots
from billing_core.periods import Period
from billing_core.views import aws_costs
from billing_core.views.aws_costs_report import format_report
from billing_core.views.overview import month_to_date
from tests.support.aws import settings

OCT, NOV = Period(2026, 10), Period(2026, 11)
ACCOUNT = "111111111111"


def store_daily(session: Session, period: Period, at: datetime, amounts: list[str]) -> None:
    """A daily snapshot of `period` fetched `at`: one EC2 line per day, these USD amounts."""
    rows = [
        ce.CostRow(
            period.start + timedelta(days=n),
            ACCOUNT,
            None,
            "Amazon EC2",
            "Usage",
            Decimal(amount),
            "USD",
            True,
        )
        for n, amount in enumerate(amounts)
    ]
    query = replace(ce.build_query(period, at), granularity="DAILY")
    result = ce.FetchResult(query=query, rows=rows, estimated=True)
    snapshots.store_snapshot(session, result, fetched_at=at, source="test")


def october(session: Session) -> None:
    store_daily(session, OCT, datetime(2026, 11, 2, 6, 0, tzinfo=UTC), ["10.00"] * 31)


def test_on_the_first_there_is_nothing_to_compare_yet(session: Session) -> None:
    october(session)
    # 09:00 on the 1st: the day's first hours only.
    store_daily(session, NOV, datetime(2026, 11, 1, 9, 0, tzinfo=UTC), ["4.00"])
    view = aws_costs.build_costs_view(session, settings(), NOV)
    assert view.running and view.total == Decimal("4.00")
    assert view.snapshot is not None and view.snapshot.covered_days == 1
    assert view.compared_days == 0 and view.compared_total is None
    # Not "-6.00 (-60 %)": a partial day against a whole one says nothing.
    assert view.change is None and view.change_pct is None
    assert "nothing yet" in view.compared_what
    # No Cost Explorer forecast stored and no complete day: no run rate either (not 124.00).
    assert view.forecast is None
    mtd = month_to_date(session, settings(), NOV)
    assert mtd.total == Decimal("4.00") and mtd.change is None and mtd.forecast is None
    report = format_report(
        session, settings(), NOV, "service", now=datetime(2026, 11, 1, 9, 5, tzinfo=UTC)
    )
    assert "change: none yet" in report


def test_later_days_compare_the_complete_days_with_the_same_days_of_last_month(
    session: Session,
) -> None:
    october(session)
    # 09:00 on the 3rd: the 1st and 2nd are complete, the 3rd has a few hours.
    store_daily(session, NOV, datetime(2026, 11, 3, 9, 0, tzinfo=UTC), ["10.00", "10.00", "4.00"])
    view = aws_costs.build_costs_view(session, settings(), NOV)
    assert view.total == Decimal("24.00")  # the month so far, today's hours included
    assert view.compared_days == 2
    assert (view.compared_total, view.previous_same_days) == (Decimal("20.00"), Decimal("20.00"))
    assert view.change == 0 and view.change_pct == 0  # not -6.00 (-20 %)
    assert "first 2 days" in view.compared_what
    # The run rate of the complete days: 20.00 / 2 x 30, not 24.00 / 3 x 30 = 240.00.
    assert view.forecast == Decimal(300) and view.forecast_source == "run rate of the first 2 days"
    mtd = month_to_date(session, settings(), NOV)
    assert mtd.change == 0 and mtd.forecast == Decimal(300)
    report = format_report(
        session, settings(), NOV, "service", now=datetime(2026, 11, 3, 9, 5, tzinfo=UTC)
    )
    assert "2026-11 first 2 days: " in report and "2026-10 first 2 days: " in report


def test_a_customer_filter_compares_its_own_complete_days(session: Session) -> None:
    october(session)
    store_daily(session, NOV, datetime(2026, 11, 3, 9, 0, tzinfo=UTC), ["12.00", "11.00", "1.00"])
    only_ec2 = aws_costs.CostFilter(service="Amazon EC2")
    view = aws_costs.build_costs_view(session, settings(), NOV, only_ec2)
    assert view.compared_total == Decimal("23.00") and view.previous_same_days == Decimal("20.00")
    assert view.change == Decimal("3.00")
    assert view.forecast == Decimal("23.00") / 2 * 30  # a filtered view: always the run rate
    assert view.total == Decimal("24.00")


def test_the_report_reads_a_fall_like_a_rise(session: Session) -> None:
    october(session)
    store_daily(session, NOV, datetime(2026, 11, 3, 9, 0, tzinfo=UTC), ["4.00", "5.00", "1.00"])
    now = datetime(2026, 11, 3, 9, 5, tzinfo=UTC)
    report = format_report(session, settings(), NOV, "service", now=now)
    assert "change: -USD 11.00 (-55.0 %)" in report  # 9.00 against 20.00; not "USD -11.00"


def test_a_closed_month_compares_whole_months(session: Session) -> None:
    october(session)
    store_daily(session, NOV, datetime(2026, 12, 2, 6, 0, tzinfo=UTC), ["11.00"] * 30)
    view = aws_costs.build_costs_view(session, settings(), NOV)
    assert not view.running and view.total == Decimal("330.00")
    assert view.change == Decimal("20.00")  # 330.00 against October's 310.00
    assert view.compared_what == "all of 2026-11 with all of 2026-10"
