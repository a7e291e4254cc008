"""Usage benchmarks: CSV import rate and peak memory, and building the usage page.

The import runs as the real CLI (`python -m billing_core import-usage FILE`) in a child
process, so its peak RSS is the import's own; the page build runs in-process on a database
filled directly with one month of daily usage.
"""

from __future__ import annotations

import csv
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

from sqlalchemy import Column, MetaData, String, Table, UniqueConstraint, insert
from sqlalchemy.engine import Engine
from sqlmodel import SQLModel

from bench import compare
from bench.run import Figure
from billing_core.costs.snapshots import CostSource
from billing_core.db import make_engine, open_database, session_scope
from billing_core.models import Customer, Plan, PlanMetric
from billing_core.periods import Period, utcnow
from billing_core.usage.limits import build_usage_report
from billing_core.views.usage import report_frame

ROOT = Path(__file__).resolve().parents[1]
MEMORY_GOAL = (
    "flat in the file size (the import gives SQLite a 64 MiB page cache, filled by a large file)"
)
METRICS = [f"metric_{i}" for i in range(10)]


def _world(url: str, customers: int) -> list[str]:
    engine = open_database(url)
    with session_scope(engine) as session:
        plan = Plan(name="bench", currency="EUR", base_fee_minor=1000)
        session.add(plan)
        session.flush()
        for i, metric in enumerate(METRICS):
            session.add(
                PlanMetric(
                    plan_id=plan.id or 0,
                    metric=metric,
                    included_quantity=Decimal(1000 * (i + 1)),
                    overage_unit_price=Decimal("0.001"),
                )
            )
        emails = [f"c{i:05d}@bench.example" for i in range(customers)]
        session.add_all(
            Customer(name=f"Customer {i:05d}", email=e, currency="EUR", plan_id=plan.id)
            for i, e in enumerate(emails)
        )
    engine.dispose()
    return emails


def _write_csv(path: Path, emails: list[str], rows: int, period: Period) -> None:
    pairs = len(emails) * len(METRICS)
    with path.open("w", newline="") as fh:
        out = csv.writer(fh)
        out.writerow(["customer", "metric", "quantity", "timestamp"])
        for i in range(rows):
            # Every (customer, metric) pair reports once a day from the month's start: a whole
            # month is pairs x days rows (5,000 customers x 10 metrics x 31 days: 1.55 M).
            moment = period.start_at + timedelta(days=i // pairs, hours=12)
            out.writerow(
                [
                    emails[i % len(emails)],
                    METRICS[(i // len(emails)) % len(METRICS)],
                    f"{(i * 7919) % 1000}.25",
                    moment.strftime("%Y-%m-%dT%H:%M:%SZ"),
                ]
            )


# The child reports its own peak RSS from /proc (VmHWM starts afresh at exec). getrusage would
# not do: Linux carries ru_maxrss across fork and exec, so a child of this (large) benchmark
# process would report the parent's peak, and RUSAGE_CHILDREN is the largest of every child
# any benchmark started. It also reports the wall and CPU seconds of the job itself (no
# interpreter start-up), so ours and the reference compare like for like.
_CHILD = (
    "import re, sys, time\n"
    "{setup}\n"
    "wall, cpu = time.perf_counter(), time.process_time()\n"
    "code = {job}\n"
    "wall, cpu = time.perf_counter() - wall, time.process_time() - cpu\n"
    "status = open('/proc/self/status').read()\n"
    "peak = re.search(r'VmHWM:\\s+(\\d+)', status).group(1)\n"
    "print('measured', peak, wall, cpu, file=sys.stderr)\n"
    "sys.exit(code)\n"
)


@dataclass
class _ChildRun:
    elapsed: float  # wall seconds of the child process, start-up included
    job: compare.Timing  # the import alone
    peak_kb: int
    out: str


def _child(url: str, path: Path, setup: str, job: str) -> _ChildRun:
    env = {
        **os.environ,
        "DATABASE_URL": url,
        "BILLING_SECRETS_FILE": str(path.parent / "none.toml"),
        "PYTHONPATH": str(ROOT),
    }
    started = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-c", _CHILD.format(setup=setup, job=job), str(path), url],
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    elapsed = time.perf_counter() - started
    if done.returncode != 0:
        raise RuntimeError(f"{job} failed: {done.stderr.strip()}")
    peak, wall, cpu = done.stderr.rsplit("measured", 1)[1].split()[:3]
    return _ChildRun(elapsed, compare.Timing(float(wall), float(cpu)), int(peak), done.stdout)


def run_import(path: str, url: str) -> int:
    """What `import-usage FILE` does once the database is open (timed by the child)."""
    from billing_core.usage.import_csv import import_usage_csv

    with session_scope(_ENGINES[url]) as session:
        result = import_usage_csv(session, Path(path), now=utcnow(), actor="bench")
    print(result.describe())
    return 0


_ENGINES: dict[str, Engine] = {}


def open_for_import(url: str) -> None:
    """Open (and migrate) the database before the clock starts, as the CLI does."""
    _ENGINES[url] = open_database(url)


def _import(url: str, path: Path) -> _ChildRun:
    return _child(
        url,
        path,
        "from bench.bench_usage import open_for_import, run_import\nopen_for_import(sys.argv[2])",
        "run_import(sys.argv[1], sys.argv[2])",
    )


def _cli_import(url: str, path: Path) -> _ChildRun:
    return _child(
        url, path, "from billing_core.cli import main", "main(['import-usage', sys.argv[1]])"
    )


def reference_import(path: str, url: str) -> int:
    """The plainest correct bulk load: the csv module reading the file and one executemany
    into a table with the same unique key (customer, metric, timestamp), one transaction."""
    engine = make_engine(url)
    table = Table(
        "usage_reference",
        MetaData(),
        Column("customer", String, nullable=False),
        Column("metric", String, nullable=False),
        Column("quantity", String, nullable=False),
        Column("timestamp", String, nullable=False),
        UniqueConstraint("customer", "metric", "timestamp"),
    )
    table.metadata.create_all(engine)
    mark = "?" if engine.dialect.paramstyle == "qmark" else "%s"  # positional on both drivers
    sql = f"INSERT INTO usage_reference VALUES ({', '.join([mark] * 4)})"
    with engine.begin() as conn, open(path, newline="", encoding="utf-8-sig") as handle:
        reader = csv.reader(handle)
        next(reader)
        conn.exec_driver_sql(sql, [tuple(row) for row in reader])
    engine.dispose()
    return 0


def _reference_import(url: str, path: Path) -> _ChildRun:
    return _child(
        url,
        path,
        "from bench.bench_usage import reference_import",
        "reference_import(sys.argv[1], sys.argv[2])",
    )


def _import_size(quick: bool) -> tuple[int, int, Period]:
    """(rows, customers, month): a whole closed month of daily usage, 10 metrics a customer
    (a closed month: no timestamp in the future)."""
    customers = 50 if quick else 5_000
    period = Period(2026, 10)  # 31 days
    return customers * len(METRICS) * period.days, customers, period


def bench_import(quick: bool) -> list[Figure]:
    rows, customers, period = _import_size(quick)
    small = rows // 10
    dataset = f"{rows:,} rows, {customers:,} customers x 10 metrics x {period.days} days"
    with tempfile.TemporaryDirectory() as tmp:
        url = f"sqlite:///{tmp}/bench.db"
        emails = _world(url, customers)
        path = Path(tmp) / "usage.csv"
        _write_csv(path, emails, rows, period)
        size_mb = path.stat().st_size / 1e6
        references = [_reference_import(f"sqlite:///{tmp}/ref1.db", path)]
        first = _import(url, path)
        references.append(_reference_import(f"sqlite:///{tmp}/ref2.db", path))
        again = _cli_import(url, path)
        # The same import of a file a tenth the size, for the peak memory beside it.
        small_url = f"sqlite:///{tmp}/small.db"
        _world(small_url, customers)
        small_path = Path(tmp) / "small.csv"
        _write_csv(small_path, emails, small, period)
        small_run = _import(small_url, small_path)
    assert "0 imported" in again.out, again.out
    ref = compare.best([r.job for r in references])
    return [
        Figure(
            "usage",
            "CSV import rate (CLI, incl. start-up)",  # a child process opening the database
            f"{rows / first.elapsed:,.0f} rows/s",
            "",
            f"{dataset}, {size_mb:.0f} MB",
        ),
        Figure(
            "usage",
            "CSV import rate (validated, idempotent) vs reference",
            compare.rate_vs(rows, "rows", first.job, ref),
            ">= 50 % of the reference: the csv module + one executemany into a table with "
            "the same unique key, one transaction",
            f"{dataset}, {size_mb:.0f} MB",
        ),
        Figure("usage", "CSV import wall time", f"{first.elapsed:.1f} s", "", dataset),
        Figure(
            "usage",
            "CSV import peak memory (RSS of the import process)",
            f"{first.peak_kb / 1024:.0f} MiB ({small:,} rows: {small_run.peak_kb / 1024:.0f} "
            f"MiB; reference {max(r.peak_kb for r in references) / 1024:.0f} MiB)",
            MEMORY_GOAL,
            dataset,
        ),
        Figure(
            "usage",
            "re-import of the same file (adds nothing)",
            f"{rows / again.elapsed:,.0f} rows/s",
            "",
            dataset,
        ),
        Figure(
            "usage",
            "re-import (adds nothing) vs reference",
            compare.rate_vs(rows, "rows", again.job, ref),
            "",
            dataset,
        ),
    ]


def _fill_month(url: str, customers: int, period: Period) -> int:
    engine = open_database(url)
    table = SQLModel.metadata.tables["usagerecord"]
    created = datetime(2026, 1, 1, tzinfo=UTC)
    count = 0
    with engine.begin() as conn:
        batch: list[dict[str, object]] = []
        for cid in range(1, customers + 1):
            for m, metric in enumerate(METRICS):
                for day in range(period.days):
                    at = period.start_at + timedelta(days=day, hours=12)
                    batch.append(
                        {
                            "customer_id": cid,
                            "metric": metric,
                            "quantity": Decimal(30 + (cid * 13 + m * 7 + day) % 60),
                            "occurred_at": at,
                            "period": str(period),
                            "source": "bench",
                            "idempotency_key": f"b:{cid}:{metric}:{day}",
                            "created_at": created,
                        }
                    )
                    count += 1
            if len(batch) >= 20_000:
                conn.execute(insert(table), batch)
                batch = []
        if batch:
            conn.execute(insert(table), batch)
    engine.dispose()
    return count


def bench_page(quick: bool) -> list[Figure]:
    customers = 50 if quick else 5_000
    period = Period(2026, 10)  # 31 days
    now = datetime(2026, 10, 31, 20, tzinfo=UTC)
    with tempfile.TemporaryDirectory() as tmp:
        url = f"sqlite:///{tmp}/page.db"
        _world(url, customers)
        records = _fill_month(url, customers, period)
        engine = open_database(url)
        timings = []
        for _ in range(3):
            started, cpu = time.perf_counter(), time.process_time()
            with session_scope(engine) as session:
                report = build_usage_report(
                    session, period, now, source=CostSource("UnblendedCost", "LINKED_ACCOUNT")
                )
                frame = report_frame(report.rows)
            timings.append(compare.Timing(time.perf_counter() - started, time.process_time() - cpu))
        engine.dispose()
    dataset = f"{customers:,} customers x 10 metrics x 31 days ({records:,} records)"
    assert len(frame) == customers * len(METRICS)
    return [
        Figure(
            "usage",
            "usage page data + table build (best of 3)",
            f"{compare.best(timings).wall:.2f} s ({compare.best(timings).cpu:.2f} s CPU)",
            "",
            dataset,
        ),
    ]


def bench_import_postgres(quick: bool) -> list[Figure]:
    """The import and its reference on PostgreSQL (make bench-postgres), beside SQLite's."""
    rows, customers, period = _import_size(quick)
    dataset = f"{rows:,} rows, {customers:,} customers x 10 metrics x {period.days} days"
    figures: list[Figure] = []
    with tempfile.TemporaryDirectory() as tmp:
        for label, url in compare.backends(tmp, "usage")[1:]:
            emails = _world(url, customers)
            path = Path(tmp) / "usage.csv"
            _write_csv(path, emails, rows, period)
            reference_url = compare.fresh_postgres_database(
                os.environ[compare.POSTGRES_ENV], "usage_reference"
            )
            ref = _reference_import(reference_url, path)
            first = _import(url, path)
            again = _cli_import(url, path)
            assert "0 imported" in again.out, again.out
            figures.append(
                Figure(
                    "usage" + label,
                    "CSV import rate (validated, idempotent) vs reference",
                    compare.rate_vs(rows, "rows", first.job, ref.job),
                    ">= 50 % of the reference",
                    dataset,
                )
            )
            figures.append(
                Figure(
                    "usage" + label,
                    "CSV import peak memory (RSS of the import process)",
                    f"{first.peak_kb / 1024:.0f} MiB (reference {ref.peak_kb / 1024:.0f} MiB)",
                    MEMORY_GOAL,
                    dataset,
                )
            )
    return figures


def run(quick: bool) -> list[Figure]:
    return bench_import(quick) + bench_import_postgres(quick) + bench_page(quick)
