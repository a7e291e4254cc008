"""AWS costs: Cost Explorer requests per page view and per fetch, and page build time.

Cost Explorer is played by the local stub (tests/support/ce_stub.py) over real boto3. AWS does
not document its page size, so the stub pages every PAGE_GROUPS groups; the figure to watch is
that requests follow the data's pages only, never the number of customers.
"""

from __future__ import annotations

import os
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

from sqlalchemy import Column, Index, MetaData, Numeric, Table, insert
from sqlmodel import Session

from bench import compare
from bench.run import Figure
from billing_core.config import load_settings
from billing_core.costs import cost_explorer as ce
from billing_core.costs import refresh
from billing_core.costs.snapshots import KEEP_SNAPSHOTS, store_snapshot
from billing_core.db import make_engine, migrate, session_scope
from billing_core.demo import seed_demo
from billing_core.demo.guard import DEMO_MARKER
from billing_core.models import CostLine, Customer, CustomerAccount, SyncState
from billing_core.periods import Period
from billing_core.views import aws_costs
from billing_core.views.customer import build_customer_view
from billing_core.views.overview import build_cockpit, build_overview
from billing_core.views.receivables import receivables_summary
from tests.support.ce_stub import CostExplorerStub

PAGE_GROUPS = 5000
NOW = datetime(2026, 12, 31, 12, 0, tzinfo=UTC)  # the last day of a 31-day month
SERVICES = [f"Service {i:02d}" for i in range(30)]


def _account(i: int) -> str:
    return f"{100000000000 + i:012d}"


class Dataset:
    """Cost Explorer answers for N accounts x 30 services x every day, paged like AWS."""

    def __init__(self, accounts: int) -> None:
        self.accounts = accounts

    def __call__(self, operation: str, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        if operation == "GetCostForecast":
            return 200, {"Total": {"Amount": "12345.67", "Unit": "USD"}}
        if body["GroupBy"][1]["Key"] == "RECORD_TYPE":  # adjustments: one credit per 100 accounts
            start = body["TimePeriod"]["Start"]
            groups = [
                self._group(_account(i), "Credit", "-1.5") for i in range(0, self.accounts, 100)
            ]
            return 200, {"ResultsByTime": [self._result(start, groups)]}
        days = self._days(body)
        per_day = self.accounts * len(SERVICES)
        first = int(body.get("NextPageToken") or 0)
        last = min(first + PAGE_GROUPS, per_day * len(days))
        results: dict[str, list[dict[str, Any]]] = {}
        for n in range(first, last):
            day, rest = divmod(n, per_day)
            account, service = divmod(rest, len(SERVICES))
            amount = str((Decimal(account % 97 + service + 1) / 7).quantize(Decimal("1E-10")))
            results.setdefault(days[day], []).append(
                self._group(_account(account), SERVICES[service], amount)
            )
        page: dict[str, Any] = {"ResultsByTime": [self._result(d, g) for d, g in results.items()]}
        if last < per_day * len(days):
            page["NextPageToken"] = str(last)
        return 200, page

    @staticmethod
    def _days(body: dict[str, Any]) -> list[str]:
        start = datetime.fromisoformat(body["TimePeriod"]["Start"])
        end = datetime.fromisoformat(body["TimePeriod"]["End"])
        if body["Granularity"] == "MONTHLY":
            return [start.date().isoformat()]
        return [(start + timedelta(days=i)).date().isoformat() for i in range((end - start).days)]

    @staticmethod
    def _group(key: str, second: str, amount: str) -> dict[str, Any]:
        return {
            "Keys": [key, second],
            "Metrics": {"UnblendedCost": {"Amount": amount, "Unit": "USD"}},
        }

    @staticmethod
    def _result(start: str, groups: list[dict[str, Any]]) -> dict[str, Any]:
        return {
            "TimePeriod": {"Start": start, "End": start},
            "Groups": groups,
            "Total": {},
            "Estimated": True,
        }


@contextmanager
def _environment(db_url: str, endpoint: str) -> Iterator[None]:
    saved = dict(os.environ)
    os.environ.update(
        {
            "DATABASE_URL": db_url,
            "BILLING_MODE": "live",
            "BILLING_SECRETS_FILE": "/nonexistent/secrets.toml",
            "AWS_ACCESS_KEY_ID": "bench",
            "AWS_SECRET_ACCESS_KEY": "bench",
            "AWS_EC2_METADATA_DISABLED": "true",
            "AWS_ENDPOINT_URL_COST_EXPLORER": endpoint,
        }
    )
    try:
        yield
    finally:
        os.environ.clear()
        os.environ.update(saved)


def _seed_customers(engine: Any, accounts: int, customers: int) -> None:
    with session_scope(engine) as session:
        ids = []
        for c in range(customers):
            customer = Customer(
                name=f"Customer {c:04d}", email=f"c{c}@bench.example", currency="USD"
            )
            session.add(customer)
            session.flush()
            ids.append(customer.id or 0)
        for i in range(accounts - accounts // 20):  # 5 % of accounts belong to nobody
            session.add(CustomerAccount(customer_id=ids[i % customers], account_id=_account(i)))


def _fetch(engine: Any, period: Period, accounts: int) -> tuple[int, float, int]:
    stub = CostExplorerStub(Dataset(accounts)).start()
    try:
        cfg = load_settings({"BILLING_MODE": "live"}, Path("/nonexistent"))
        started = time.perf_counter()
        with _environment(str(engine.url), stub.url), session_scope(engine) as session:
            client = ce.make_client(cfg)
            outcome = refresh.refresh_period(
                session, cfg, period, now=NOW, force=True, client=client
            )
        assert outcome.error is None, outcome.error
        return stub.request_count, time.perf_counter() - started, outcome.lines
    finally:
        stub.stop()


def _reference_fetch(db_url: str, period: Period, accounts: int) -> tuple[int, compare.Timing]:
    """The plainest correct fetch and store: the boto3 client alone receiving the same pages
    (same questions, same paging), their groups inserted by one executemany of the raw texts
    into a table with CostLine's columns and indexes, in one transaction. (lines, timing)"""
    stub = CostExplorerStub(Dataset(accounts)).start()
    engine = make_engine(db_url)
    source = CostLine.__table__  # type: ignore[attr-defined]
    sqlite = engine.dialect.name == "sqlite"
    table = Table(
        "cost_reference",
        MetaData(),
        *(
            # PostgreSQL refuses decimal text in a BIGINT column: there the amount column is
            # NUMERIC, so the server parses the raw text (SQLite takes it as it is).
            Column(
                c.name,
                c.type if sqlite or c.name != "amount" else Numeric(20, 10),
                primary_key=c.primary_key,
            )
            for c in source.columns
        ),
    )
    Index("ix_reference_snapshot_day", table.c.snapshot_id, table.c.day)
    Index("ix_reference_period", table.c.period)
    table.metadata.create_all(engine)
    columns = [c.name for c in table.columns if c.name != "id"]
    mark = "?" if engine.dialect.paramstyle == "qmark" else "%s"  # positional on both drivers
    marks = ", ".join([mark] * len(columns))
    sql = f"INSERT INTO cost_reference ({', '.join(columns)}) VALUES ({marks})"
    try:
        cfg = load_settings({"BILLING_MODE": "live"}, Path("/nonexistent"))
        query = ce.build_query(period, NOW, metric=cfg.cost_metric, group_by=cfg.cost_group_by)
        fetched = datetime.now(UTC).replace(tzinfo=None).isoformat(" ")

        def job() -> int:
            with _environment(str(engine.url), stub.url):
                client = ce.make_client(cfg)
            rows: list[tuple[Any, ...]] = []
            tail = ("USD", True, fetched)
            for kind in ("usage", "adjustments"):
                token = None
                while True:
                    page = client.get_cost_and_usage(**ce.request_params(query, kind, token))
                    for result in page["ResultsByTime"]:
                        day = result["TimePeriod"]["Start"]
                        for group in result["Groups"]:
                            account, second = group["Keys"]
                            amount = group["Metrics"][cfg.cost_metric]["Amount"]
                            rows.append(
                                (0, str(period), day, account, None, second, kind, amount, *tail)
                            )
                    token = page.get("NextPageToken")
                    if not token:
                        break
            with engine.begin() as conn:
                conn.exec_driver_sql(sql, rows)
            return len(rows)

        lines, timing = compare.timed(job)
        return lines, timing
    finally:
        stub.stop()
        engine.dispose()


def _db_bytes(engine: Any) -> int:
    """Bytes the SQLite database uses (pages in use; free pages are reused by later writes);
    on PostgreSQL, the database's size on disk (pg_database_size)."""
    with engine.connect() as conn:
        if engine.dialect.name != "sqlite":
            return int(conn.exec_driver_sql("SELECT pg_database_size(current_database())").scalar())
        size = conn.exec_driver_sql("PRAGMA page_size").scalar()
        count = conn.exec_driver_sql("PRAGMA page_count").scalar()
        free = conn.exec_driver_sql("PRAGMA freelist_count").scalar()
    return int(size) * (int(count) - int(free))


def _storage(tmp: str, accounts: int, refreshes: int) -> list[int]:
    """Database size after each refresh of one running month (pruning bounds it)."""
    engine = make_engine(f"sqlite:///{tmp}/storage.db")
    migrate(engine)
    _seed_customers(engine, accounts, max(1, accounts // 10))
    sizes = [_db_bytes(engine)]
    for _ in range(refreshes):
        _fetch(engine, Period.containing(NOW), accounts)
        sizes.append(_db_bytes(engine))
    engine.dispose()
    return sizes


def _page_requests(db_url: str, reruns: int) -> tuple[int, int, float]:
    import streamlit as st
    from streamlit.testing.v1 import AppTest

    stub = CostExplorerStub().start()
    page = str(Path(__file__).resolve().parents[1] / "pages/aws_costs.py")
    try:
        with _environment(db_url, stub.url):
            st.cache_resource.clear()
            at = AppTest.from_file(page, default_timeout=120).run()
            first = stub.request_count
            started = time.perf_counter()
            for _ in range(reruns):
                at.run()
            per_view = (time.perf_counter() - started) / reruns
            assert not at.exception, at.exception
            assert len(at.metric) == 4 and not at.error, "the page did not show its figures"
            st.cache_resource.clear()
            return first, stub.request_count - first, per_view
    finally:
        stub.stop()


def run(quick: bool) -> list[Figure]:
    accounts = 10 if quick else 1000
    reruns = 5 if quick else 100
    dataset = f"{accounts} accounts x 30 services x 31 days, stub pages of {PAGE_GROUPS} groups"
    figures: list[Figure] = []
    with tempfile.TemporaryDirectory() as tmp:
        db_url = f"sqlite:///{tmp}/bench.db"
        engine = make_engine(db_url)
        migrate(engine)
        _seed_customers(engine, accounts, max(1, accounts // 10))
        period = Period.containing(NOW)
        monthly, _seconds, _ = _fetch(engine, period.previous(), accounts)
        figures.append(
            Figure(
                "costs",
                "CE requests, closed month (MONTHLY)",
                str(monthly),
                "pages the data needs, not per customer",
                dataset,
            )
        )
        before = _db_bytes(engine)
        daily, daily_s, lines = _fetch(engine, period, accounts)
        one_month = _db_bytes(engine) - before
        per_day = accounts * len(SERVICES)
        needed = -(-per_day * NOW.day // PAGE_GROUPS) + 1 + 1  # usage pages, adjustments, forecast
        figures.append(
            Figure(
                "costs",
                "CE requests, running month (DAILY, with forecast)",
                f"{daily} ({needed} pages the data needs: usage, adjustments, forecast)",
                "pages the data needs, not per customer",
                f"{lines} lines; {dataset}",
            )
        )
        figures.append(
            Figure("costs", "fetch + parse + store, running month", f"{daily_s:.1f} s", "", dataset)
        )
        ours: list[compare.Timing] = []
        refs: list[compare.Timing] = []
        for i in range(2):
            ref_lines, ref = _reference_fetch(f"sqlite:///{tmp}/reference{i}.db", period, accounts)
            refs.append(ref)
            ours.append(compare.timed(lambda: _fetch(engine, period, accounts))[1])
        figures.append(
            Figure(
                "costs",
                "fetch + parse + store vs reference (lines/s)",
                compare.rate_vs(lines, "lines", compare.best(ours), compare.best(refs)),
                ">= 50 % of the reference: boto3 alone receiving the same pages + one "
                "executemany of the raw values, one transaction",
                f"{lines} lines ({ref_lines} in the reference); {dataset}",
            )
        )
        figures.append(
            Figure(
                "costs",
                "database size per month of daily costs",
                f"{one_month / 2**20:.0f} MiB ({one_month / lines:.0f} bytes per line)",
                "grows with months, not refreshes (see the refresh figure below)",
                f"{lines} lines; {dataset}",
            )
        )
        engine.dispose()
        figures += _postgres_fetch(tmp, accounts, dataset)
        # Page views on the demo world: the request count does not depend on the data's size,
        # and the page build time is measured above.
        demo_url = f"sqlite:///{tmp}/demo.db"
        demo_engine = make_engine(demo_url)
        migrate(demo_engine)
        with session_scope(demo_engine) as session:
            seed_demo(session, now=datetime.now(UTC))
            # The page is measured in live mode (AWS configured), which refuses a database
            # marked as the demo world: keep the demo's data, drop the marker.
            marker = session.get(SyncState, DEMO_MARKER)
            if marker is not None:
                session.delete(marker)
        demo_engine.dispose()
        first, more, per_view = _page_requests(demo_url, reruns)
        demo = "demo data, snapshot within TTL"
        figures.append(Figure("costs", "CE requests, first page view", str(first), "0", demo))
        figures.append(Figure("costs", f"CE requests, {reruns} reruns", str(more), "0", demo))
        figures.append(Figure("costs", "page rerun (AppTest)", f"{per_view:.2f} s", "", demo))
        small = max(10, accounts // 10)
        sizes = _storage(tmp, small, KEEP_SNAPSHOTS + 2)
        figures += _scale(f"sqlite:///{tmp}/scale.db", "costs", quick)
        for label, url in compare.backends(tmp, "costs_scale")[1:]:  # make bench-postgres
            figures += _scale(url, "costs" + label, quick, postgres=True)
        figures.append(
            Figure(
                "costs",
                "database size after each refresh of one running month",
                ", ".join(f"{b / 2**20:.1f}" for b in sizes[1:]) + " MiB",
                f"flat after {KEEP_SNAPSHOTS} refreshes (older snapshots' lines pruned)",
                f"{small} accounts x 30 services x 31 days",
            )
        )
    return figures


def _postgres_fetch(tmp: str, accounts: int, dataset: str) -> list[Figure]:
    """The running month's fetch + parse + store and its reference on PostgreSQL (make
    bench-postgres), beside SQLite's: the same stub pages, a fresh database for each."""
    figures: list[Figure] = []
    server = os.environ.get(compare.POSTGRES_ENV, "")
    period = Period.containing(NOW)
    for label, url in compare.backends(tmp, "costs")[1:]:
        engine = make_engine(url)
        migrate(engine)
        _seed_customers(engine, accounts, max(1, accounts // 10))
        _, first_s, lines = _fetch(engine, period, accounts)
        ours: list[compare.Timing] = []
        refs: list[compare.Timing] = []
        for i in range(2):
            reference = compare.fresh_postgres_database(server, f"costs_reference{i}")
            ref_lines, ref = _reference_fetch(reference, period, accounts)
            refs.append(ref)
            ours.append(compare.timed(lambda e=engine: _fetch(e, period, accounts))[1])
        engine.dispose()
        area = "costs" + label
        figures += [
            Figure(area, "fetch + parse + store, running month", f"{first_s:.1f} s", "", dataset),
            Figure(
                area,
                "fetch + parse + store vs reference (lines/s)",
                compare.rate_vs(lines, "lines", compare.best(ours), compare.best(refs)),
                ">= 50 % of the reference: boto3 alone receiving the same pages + one "
                "executemany of the raw values, one transaction",
                f"{lines} lines ({ref_lines} in the reference); {dataset}",
            ),
        ]
    return figures


# --- 13 months of daily costs: page data from the rollups, whatever the number of lines -----

SCALE_SERVICES = [f"Service {i:02d}" for i in range(50)]
SERVICES_PER_ACCOUNT = 10  # of the 50: an AWS account uses a handful of services
PAGE_GOAL = "< 0.3 s"
POSTGRES_SCALE_ACCOUNTS = 500  # the scale world on PostgreSQL (see _scale)
CREDIT = ("Credit", "Credit")  # service and record type of a credit line, as AWS names them


def _scale_rows(period: Period, accounts: int, days: int) -> list[ce.CostRow]:
    """Daily usage of each account on its 10 services (10 decimals), and a credit (negative)
    every day for one account in 100: what Cost Explorer's DAILY answer parses into."""
    rows: list[ce.CostRow] = []
    for d in range(days):
        day = period.start + timedelta(days=d)
        for a in range(accounts):
            account = _account(a)
            for k in range(SERVICES_PER_ACCOUNT):
                service = SCALE_SERVICES[(a * 7 + k * 5) % len(SCALE_SERVICES)]
                amount = Decimal((a * 31 + k * 7 + d * 3 + period.month) % 99_991).scaleb(-4)
                rows.append(ce.CostRow(day, account, None, service, "Usage", amount, "USD", False))
            if a % 100 == 0:
                credit = Decimal("-1.2345678901")
                rows.append(
                    ce.CostRow(day, account, None, "Credit", "Credit", credit, "USD", False)
                )
    return rows


def _store_month(engine: Any, period: Period, accounts: int, days: int, at: datetime) -> int:
    """One DAILY snapshot through the real storage code (lines and rollups, one transaction)."""
    query = replace(
        ce.build_query(period, at), granularity="DAILY", start=period.start, end=period.end
    )
    rows = _scale_rows(period, accounts, days)
    result = ce.FetchResult(query=query, rows=rows, estimated=at < period.end_at)
    with session_scope(engine) as session:
        store_snapshot(session, result, fetched_at=at, source="bench")
    return len(rows)


class Took(tuple[float, float]):
    """(wall, CPU) seconds of the best run; shown as '0.21 s (CPU 0.18 s)'. The machine is
    shared, so the CPU time is the figure to judge by."""

    def __str__(self) -> str:
        return f"{self[0]:.2f} s (CPU {self[1]:.2f} s)"


def _best(fn: Any, repeat: int = 3) -> Took:
    best = (float("inf"), float("inf"))
    for _ in range(repeat):
        wall, cpu = time.perf_counter(), time.process_time()
        fn()
        best = min(best, (time.perf_counter() - wall, time.process_time() - cpu))
    return Took(best)


def _page_times(engine: Any, period: Period, customer_id: int) -> dict[str, Took]:
    """Best of 3, each in a fresh session as a page rerun has: the AWS costs page (whole account
    and one customer), the Overview and one Customer page."""
    cfg = load_settings({"BILLING_MODE": "live"}, Path("/nonexistent"))

    def costs(filters: aws_costs.CostFilter | None = None) -> None:
        with Session(engine) as s:
            view = aws_costs.build_costs_view(s, cfg, period, filters)
            assert view.has_data and view.total == sum(view.by_customer["amount"], Decimal(0))

    def overview() -> None:
        with Session(engine) as s:
            build_overview(s, NOW)
            build_cockpit(s, cfg, now=NOW)
            receivables_summary(s, as_of=NOW)

    def customer() -> None:
        with Session(engine) as s:
            build_customer_view(s, cfg, customer_id, now=NOW)

    return {
        "costs": _best(costs),
        "one customer": _best(lambda: costs(aws_costs.CostFilter(customer=customer_id))),
        "overview": _best(overview),
        "customer": _best(customer),
    }


def _scale(url: str, area: str, quick: bool, *, postgres: bool = False) -> list[Figure]:
    """13 months of DAILY snapshots (12 closed, fetched after their month, and the running
    month) for 2,000 linked accounts x 10 of 50 services and 5,000 customers; page data timed
    on day 8 of the running month and again on day 31 (4x the lines, the same rollup rows).

    `postgres`: a quarter of the accounts (500, about 2 M lines instead of 8 M), as storing
    the full world there takes too long for a benchmark run (the first month's 620,620 lines
    took about 2.5 min on the shared 2-core machine: over 30 min for 13 months); the dataset
    cell says so."""
    accounts, customers, months = (40, 100, 3) if quick else (2_000, 5_000, 13)
    if postgres and not quick:
        accounts = POSTGRES_SCALE_ACCOUNTS
    engine = make_engine(url)
    migrate(engine)
    with session_scope(engine) as session:
        session.execute(
            insert(Customer),
            [
                {"id": c + 1, "name": f"Customer {c:04d}", "email": f"c{c}@bench.example"}
                | {"currency": "USD"}
                for c in range(customers)
            ],
        )
        session.execute(
            insert(CustomerAccount),
            [  # 5 % of the accounts belong to nobody: the unattributed spend
                {"customer_id": a % customers + 1, "account_id": _account(a)}
                for a in range(accounts - accounts // 20)
            ],
        )
    running = Period.containing(NOW)
    lines = 0
    started = time.perf_counter()
    for m in range(months - 1, 0, -1):
        closed = running.shift(-m)
        lines += _store_month(engine, closed, accounts, closed.days, closed.end_at + timedelta(3))
    before = _db_bytes(engine)
    early = _store_month(engine, running, accounts, 8, running.start_at + timedelta(days=7.5))
    stored = time.perf_counter() - started
    compare.analyze(engine)  # PostgreSQL: statistics, as autovacuum would take
    at_day_8 = _page_times(engine, running, customer_id=1)
    started = time.perf_counter()
    month = _store_month(engine, running, accounts, NOW.day, NOW)
    stored += time.perf_counter() - started
    one_month = _db_bytes(engine) - before  # day 8's snapshot is kept too (3 kept per month)
    lines += early + month
    compare.analyze(engine)
    times = _page_times(engine, running, customer_id=1)
    engine.dispose()
    full = accounts * len(SCALE_SERVICES) * 395
    note = (
        f"{months} months of daily costs, {lines:,} lines ({month:,} this month); "
        f"{accounts} accounts x {SERVICES_PER_ACCOUNT} of {len(SCALE_SERVICES)} services, "
        f"{customers} customers"
    )
    if postgres and not quick:
        note += " (a quarter of SQLite's 2,000 accounts: the full world stores too slowly)"
    per_line = stored / lines
    sparse = (
        f"every account on all {len(SCALE_SERVICES)} services would be {full / 1e6:.1f} M lines, "
        f"~{full * per_line / 60:.0f} min to store at this rate: accounts use a handful, so 10"
    )
    return [
        Figure(
            area,
            "store the months of daily costs (lines + rollups)",
            f"{stored:.0f} s ({lines / stored:,.0f} lines/s)",
            "",
            f"{note}; {sparse}",
        ),
        Figure(
            area,
            "page data build from the database",
            str(times["costs"]),
            PAGE_GOAL,
            f"AWS costs page, running month; {note}",
        ),
        Figure(
            area,
            "page data build, one customer",
            str(times["one customer"]),
            PAGE_GOAL,
            f"AWS costs page filtered to a customer; {note}",
        ),
        Figure(
            area,
            "Overview data",
            str(times["overview"]),
            PAGE_GOAL,
            f"Overview's figures (no invoices in this world); {note}",
        ),
        Figure(
            area,
            "Customer page data",
            str(times["customer"]),
            PAGE_GOAL,
            f"one customer's page; {note}",
        ),
        Figure(
            area,
            "page data at two line counts (day 8 vs day 31 of the month)",
            ", ".join(
                f"{name} {at_day_8[name]} vs {times[name]}"
                for name in ("costs", "overview", "customer")
            ),
            "flat: pages read rollups, not lines",
            f"{early:,} vs {month:,} lines in the running month's snapshot; {note}",
        ),
        Figure(
            area,
            "database size per month of daily costs (lines + rollups)",
            f"{one_month / 2**20:.0f} MiB ({one_month / (early + month):.0f} bytes per line)",
            "grows with months, not refreshes",
            f"the running month's two snapshots ({early + month:,} lines); {note}",
        ),
    ]
