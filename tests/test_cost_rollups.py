"""Cost rollups: kept in step with each snapshot's lines (stored, restated, pruned, migrated),
and the pages' figures read from them equal the figures summed from the lines."""

from __future__ import annotations

import random
from collections import defaultdict
from dataclasses import replace
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal

import pytest
from alembic import command
from sqlalchemy import event, text
from sqlmodel import Session, func, select

from billing_core.costs import cost_explorer as ce
from billing_core.costs import rollups, snapshots
from billing_core.costs.attribution import Attribution, SharedScope, attributed_costs
from billing_core.costs.snapshots import UNATTRIBUTED, UNATTRIBUTED_LABEL, CostSource
from billing_core.db import _alembic_config, make_engine, migrate
from billing_core.models import (
    CostAccountDailyRollup,
    CostAccountRollup,
    CostDailyRollup,
    CostLine,
    CostRollup,
    CostSnapshot,
    Customer,
    CustomerAccount,
)
from billing_core.periods import Period
from billing_core.views import aws_costs
from tests.support.aws import settings

SOURCE = CostSource("UnblendedCost", "LINKED_ACCOUNT")
NOW = datetime(2026, 11, 21, 9, 0, tzinfo=UTC)
OCT, NOV = Period(2026, 10), Period(2026, 11)
ACCOUNTS = [f"{111111111111 + i}" for i in range(6)]  # the last two belong to nobody
SERVICES = ["Amazon EC2", "Amazon S3", "AWS Lambda", "Amazon RDS"]
ZERO = Decimal(0)


def add_customers(session: Session) -> dict[str, int]:
    """Acme owns accounts 0 and 1, Birch 2 and 3; 4 and 5 are unattributed."""
    ids = {}
    for name, accounts in (("Acme", ACCOUNTS[:2]), ("Birch", ACCOUNTS[2:4])):
        c = Customer(name=name, email=f"{name.lower()}@x.example", currency="USD")
        session.add(c)
        session.flush()
        for account in accounts:
            session.add(CustomerAccount(customer_id=c.id, account_id=account))
        ids[name] = c.id or 0
    session.flush()
    return ids


def rows_for(period: Period, seed: int, days: int) -> list[ce.CostRow]:
    """Daily usage of 10 decimals, credits and refunds (negative), tax, and a second currency."""
    rng = random.Random(seed)
    out = []
    for d in range(days):
        day = period.start + timedelta(days=d)
        for account in ACCOUNTS:
            for service in rng.sample(SERVICES, 3):
                amount = Decimal(rng.randint(1, 10**12)) / 10**10
                out.append(ce.CostRow(day, account, None, service, "Usage", amount, "USD", True))
            if d % 7 == 0:
                credit = -Decimal(rng.randint(1, 10**11)) / 10**10
                out.append(ce.CostRow(day, account, None, "Credit", "Credit", credit, "USD", True))
        out.append(
            ce.CostRow(day, ACCOUNTS[0], None, "Refund", "Refund", Decimal("-1.5"), "USD", True)
        )
        out.append(
            ce.CostRow(day, ACCOUNTS[2], None, "Tax", "Tax", Decimal("0.0000000001"), "USD", True)
        )
        out.append(
            ce.CostRow(day, ACCOUNTS[3], None, "Amazon S3", "Usage", Decimal("2.25"), "EUR", True)
        )
    return out


def store(session: Session, period: Period, seed: int, at: datetime, days: int = 20) -> int:
    # DAILY even for a closed month: 13 months of daily costs, as the scale issue has them.
    query = replace(ce.build_query(period, at), granularity="DAILY")
    fetched = ce.FetchResult(query=query, rows=rows_for(period, seed, days), estimated=True)
    snap = snapshots.store_snapshot(session, fetched, fetched_at=at, source="test")
    return snap.id or 0


def line_sums(session: Session, snapshot_id: int) -> Decimal:
    return Decimal(
        session.exec(
            select(func.sum(CostLine.amount)).where(CostLine.snapshot_id == snapshot_id)
        ).one()
        or 0
    )


def rollup_sum(session: Session, table: rollups.RollupTable, sid: int) -> Decimal:
    return Decimal(
        session.exec(select(func.sum(table.amount)).where(table.snapshot_id == sid)).one() or 0
    )


def rollup_rows(session: Session, sid: int) -> int:
    return sum(
        session.exec(select(func.count()).select_from(table).where(table.snapshot_id == sid)).one()
        for table, _keys in rollups.ROLLUPS
    )


def by_customer_from_lines(
    session: Session, sid: int, who: Attribution
) -> dict[int | None, Decimal]:
    """What the pages showed before rollups: every line attributed on its own."""
    out: dict[int | None, Decimal] = defaultdict(lambda: ZERO)
    for line in session.exec(select(CostLine).where(CostLine.snapshot_id == sid)).all():
        owner = who.customer_for("LINKED_ACCOUNT", line.account_id, line.tag_value, line.service)
        out[owner] += line.amount
    return dict(out)


def test_rollups_equal_the_lines_for_every_snapshot(session: Session) -> None:
    add_customers(session)
    ids = [
        store(session, OCT, 1, OCT.end_at + timedelta(days=2), days=31),
        store(session, NOV, 2, NOW - timedelta(days=1)),
        store(session, NOV, 3, NOW),
    ]
    for sid in ids:
        assert rollups.check_rollups(session, sid) == []
        total = line_sums(session, sid)
        assert total != 0
        assert rollup_sum(session, CostRollup, sid) == total
        assert rollup_sum(session, CostDailyRollup, sid) == total
        assert rollup_sum(session, CostAccountDailyRollup, sid) == total
        assert rollup_sum(session, CostAccountRollup, sid) == total
    # Several currencies stay apart in the rollups, and each keeps the count of its lines.
    currencies = session.exec(
        select(CostRollup.currency).where(CostRollup.snapshot_id == ids[0]).distinct()
    ).all()
    assert sorted(currencies) == ["EUR", "USD"]
    lines = session.exec(
        select(func.count()).select_from(CostLine).where(CostLine.snapshot_id == ids[0])
    ).one()
    assert (
        session.exec(
            select(func.sum(CostRollup.lines)).where(CostRollup.snapshot_id == ids[0])
        ).one()
        == lines
    )
    # Fewer rows than lines: summed over 31 days (by account) and over accounts (by day).
    assert (
        session.exec(
            select(func.count()).select_from(CostRollup).where(CostRollup.snapshot_id == ids[0])
        ).one()
        < lines / 10
    )


def test_restated_and_pruned_snapshots_keep_the_rollups_in_step(session: Session) -> None:
    ids = add_customers(session)
    first = store(session, NOV, 10, NOW - timedelta(hours=10))
    view = aws_costs.build_costs_view(session, settings(), NOV)
    assert view.total == line_sums(session, first)
    # Refreshed (restated figures): the page follows the newest snapshot, to the digit.
    later = [
        store(session, NOV, 11 + i, NOW - timedelta(hours=9 - i))
        for i in range(snapshots.KEEP_SNAPSHOTS)
    ]
    newest = later[-1]
    view = aws_costs.build_costs_view(session, settings(), NOV)
    assert view.snapshot is not None and view.snapshot.id == newest
    assert view.total == line_sums(session, newest) != line_sums(session, first)
    # The oldest was pruned: its lines and its rollups are gone together.
    pruned = session.get(CostSnapshot, first)
    assert pruned is not None and pruned.status == "pruned"
    assert line_sums(session, first) == 0 and rollup_rows(session, first) == 0
    for sid in later:
        assert rollup_rows(session, sid) > 0 and rollups.check_rollups(session, sid) == []
    # Per customer, the rollups give what attributing every line gave.
    who = Attribution.load(session, NOV, SharedScope())
    expected = by_customer_from_lines(session, newest, who)
    got = attributed_costs(session, NOV, SOURCE, who=who)
    for cid in ids.values():
        assert got.customer_total(cid) == expected[cid]
    assert got.unattributed_total == expected[None]
    # Totals only (the Overview's months: the rollup by account alone), and one customer's.
    totals = attributed_costs(session, NOV, SOURCE, who=who, by_service=False)
    birch = attributed_costs(session, NOV, SOURCE, who=who, customer_ids=[ids["Birch"]])
    birch_totals = attributed_costs(
        session, NOV, SOURCE, who=who, customer_ids=[ids["Birch"]], by_service=False
    )
    for cid in ids.values():
        assert totals.customer_total(cid) == expected[cid]
    assert totals.unattributed_total == expected[None]
    assert birch.customer_total(ids["Birch"]) == expected[ids["Birch"]]
    assert birch_totals.customer_total(ids["Birch"]) == expected[ids["Birch"]]
    assert birch.customer_total(ids["Acme"]) == 0
    shown = dict(zip(view.by_customer["customer"], view.by_customer["amount"], strict=True))
    assert shown["Acme"] == expected[ids["Acme"]]
    assert shown[UNATTRIBUTED_LABEL] == expected[None]


def test_page_figures_equal_the_lines_whatever_the_filter(session: Session) -> None:
    ids = add_customers(session)
    store(session, OCT, 20, OCT.end_at + timedelta(days=2), days=31)
    sid = store(session, NOV, 21, NOW)
    who = Attribution.load(session, NOV, SharedScope())
    lines = session.exec(select(CostLine).where(CostLine.snapshot_id == sid)).all()
    cases: list[aws_costs.CostFilter] = [
        aws_costs.CostFilter(),
        aws_costs.CostFilter(service="Amazon S3"),
        aws_costs.CostFilter(customer=ids["Birch"]),
        aws_costs.CostFilter(customer=UNATTRIBUTED, service="Amazon EC2"),
    ]
    for filters in cases:
        view = aws_costs.build_costs_view(session, settings(), NOV, filters)
        mine = [
            line
            for line in lines
            if aws_costs._matches(
                filters,
                who.customer_for("LINKED_ACCOUNT", line.account_id, None, line.service),
                line.service,
            )
        ]
        assert view.total == sum((line.amount for line in mine), ZERO), filters
        per_day: dict[date, Decimal] = defaultdict(lambda: ZERO)
        for line in mine:
            per_day[date.fromisoformat(line.day)] += line.amount
        daily: dict[date, Decimal] = defaultdict(lambda: ZERO)
        for day, amount in zip(view.daily["day"], view.daily["amount"], strict=True):
            daily[day] += amount
        assert dict(daily) == dict(per_day), filters
        # Last month's same complete days, from October's daily rollup (or lines for a
        # customer), and this month's, against which the change is taken.
        october = snapshots.latest_snapshot(session, OCT, SOURCE)
        assert october is not None
        assert view.snapshot is not None and view.compared_days == view.snapshot.complete_days
        cutoff = OCT.start + timedelta(days=view.compared_days)
        so_far = [
            line for line in mine if line.day < (NOV.start + (cutoff - OCT.start)).isoformat()
        ]
        assert view.compared_total == sum((line.amount for line in so_far), ZERO), filters
        before = [
            line
            for line in session.exec(
                select(CostLine).where(CostLine.snapshot_id == october.id)
            ).all()
            if line.day < cutoff.isoformat()
            and aws_costs._matches(
                filters,
                who.customer_for("LINKED_ACCOUNT", line.account_id, None, line.service),
                line.service,
            )
        ]
        assert view.previous_same_days == sum((line.amount for line in before), ZERO), filters


def test_lines_stored_by_hand_count_only_once_their_rollups_are_written(session: Session) -> None:
    """The rollups are what the pages read: lines without them show nothing, which is why every
    writer of lines writes them (store_snapshot, the demo, rebuild_all_rollups)."""
    add_customers(session)
    snap = CostSnapshot(
        period=str(OCT),
        granularity="MONTHLY",
        group_by="LINKED_ACCOUNT",
        metric="UnblendedCost",
        fetched_at=NOW,
    )
    session.add(snap)
    session.flush()
    session.add(
        CostLine(
            snapshot_id=snap.id or 0,
            period=str(OCT),
            day=OCT.start.isoformat(),
            account_id=ACCOUNTS[0],
            service="Amazon EC2",
            amount=Decimal("12.3456789012"),
        )
    )
    session.flush()
    assert attributed_costs(session, OCT, SOURCE).total == 0
    assert rollups.rebuild_all_rollups(session) == 1
    assert attributed_costs(session, OCT, SOURCE).total == Decimal("12.3456789012")
    assert rollups.rebuild_all_rollups(session) == 1  # again: the same figures, not doubled
    assert attributed_costs(session, OCT, SOURCE).total == Decimal("12.3456789012")


def test_migration_builds_the_rollups_of_stored_snapshots(blank_db_url: str) -> None:
    engine = make_engine(blank_db_url)
    cfg = _alembic_config(engine)
    command.upgrade(cfg, "0005")
    with engine.begin() as conn:
        conn.execute(
            text(
                "INSERT INTO costsnapshot (id, period, granularity, group_by, metric, currency, "
                "estimated, request_count, source, status, fetched_at) VALUES "
                "(1, '2026-10', 'DAILY', 'LINKED_ACCOUNT', 'UnblendedCost', 'USD', false, 1, "
                "'test', 'complete', '2026-11-02 00:00:00')"
            )
        )
        for day, service, record_type, amount in (
            ("2026-10-01", "Amazon EC2", "Usage", 15_000_000_000_1),
            ("2026-10-02", "Amazon EC2", "Usage", 25_000_000_000),
            ("2026-10-02", "Credit", "Credit", -5_000_000_000),
        ):
            conn.execute(
                text(
                    "INSERT INTO costline (snapshot_id, period, day, account_id, service, "
                    "record_type, amount, currency, estimated, fetched_at) VALUES (1, '2026-10', "
                    ":day, '111111111111', :service, :rt, :amount, 'USD', false, "
                    "'2026-11-02 00:00:00')"
                ),
                {"day": day, "service": service, "rt": record_type, "amount": amount},
            )
    migrate(engine)
    with Session(engine) as session:
        assert rollups.check_rollups(session, 1) == []
        assert rollup_sum(session, CostRollup, 1) == Decimal("17.0000000001")
        assert rollup_sum(session, CostDailyRollup, 1) == Decimal("17.0000000001")
        # (EC2, Credit) by account; 3 (day, service); 2 (day, account); (Usage, Credit)
        assert rollup_rows(session, 1) == 2 + 3 + 2 + 2
        assert rollup_sum(session, CostAccountRollup, 1) == Decimal("17.0000000001")
    command.downgrade(cfg, "0005")
    engine.dispose()


def test_bar_charts_draw_the_top_rows_and_one_other_bar() -> None:
    import pandas as pd

    names = [f"Customer {i:04d}" for i in range(500)] + [UNATTRIBUTED_LABEL]
    amounts = [Decimal(1000 - i) / 7 for i in range(500)] + [Decimal("0.01")]
    frame = pd.DataFrame({"customer": names, "amount": amounts})
    top = aws_costs.top_rows(frame, "customer", 20, "Other customers", keep=UNATTRIBUTED_LABEL)
    assert len(top) == 20
    assert UNATTRIBUTED_LABEL in list(top["customer"])
    assert list(top["customer"])[-1] == "Other customers (482)"
    assert sum(top["amount"], ZERO) == sum(amounts, ZERO)  # exact: nothing lost in "Other"


def test_owners_are_read_once_per_session_and_never_stale(session: Session) -> None:
    ids = add_customers(session)
    first = Attribution.load(session, NOV)
    assert Attribution.load(session, NOV) is first  # one page build reads the owners once
    assert first.by_account.get(ACCOUNTS[4]) is None
    session.add(CustomerAccount(customer_id=ids["Acme"], account_id=ACCOUNTS[4]))
    session.flush()  # a change in the session: the owners are read again
    again = Attribution.load(session, NOV)
    assert again is not first and again.by_account[ACCOUNTS[4]] == ids["Acme"]
    session.commit()
    assert Attribution.load(session, NOV) is not again  # a new transaction reads them afresh


def test_one_customers_lines_are_read_through_the_account_index(session: Session) -> None:
    """A customer's drill-down reads its own lines, not the whole snapshot: after each stored
    snapshot SQLite has statistics, and its plan for every cost-line query of the page uses the
    (snapshot, account) index. Without them it walked the (snapshot, day) index (1 s at 600,000
    lines)."""
    if session.get_bind().dialect.name != "sqlite":
        pytest.skip("PostgreSQL keeps its own statistics (autovacuum)")
    many = [f"{222222222222 + i}" for i in range(60)]
    owner = Customer(name="Wide", email="wide@x.example", currency="USD")
    session.add(owner)
    session.flush()
    session.add(CustomerAccount(customer_id=owner.id, account_id=many[0]))
    session.add(CustomerAccount(customer_id=owner.id, account_id=many[1]))
    rows = [
        ce.CostRow(NOV.start + timedelta(days=d), a, None, s, "Usage", Decimal("1.25"), "USD", True)
        for d in range(20)
        for a in many
        for s in SERVICES[:2]
    ]
    query = replace(ce.build_query(NOV, NOW), granularity="DAILY")
    snapshots.store_snapshot(
        session, ce.FetchResult(query=query, rows=rows, estimated=True), fetched_at=NOW, source="t"
    )
    seen: list[tuple[str, object]] = []

    def capture(_conn: object, _cursor: object, statement: str, params: object, *_: object) -> None:
        if "FROM costline" in statement:
            seen.append((statement, params))

    engine = session.get_bind()
    event.listen(engine, "before_cursor_execute", capture)
    try:
        view = aws_costs.build_costs_view(
            session, settings(), NOV, aws_costs.CostFilter(customer=owner.id)
        )
    finally:
        event.remove(engine, "before_cursor_execute", capture)
    assert view.total == Decimal("1.25") * 2 * 2 * 20
    assert seen, "the customer's daily chart reads its lines"
    for statement, params in seen:
        plan = " ".join(
            str(row[-1])
            for row in session.connection().exec_driver_sql(
                "EXPLAIN QUERY PLAN " + statement,
                params,  # type: ignore[arg-type]
            )
        )
        assert "ix_costline_snapshot_account" in plan, (statement, plan)
