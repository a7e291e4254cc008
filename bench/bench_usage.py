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
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

from sqlalchemy import insert
from sqlmodel import SQLModel

from bench.run import Figure
from billing_core.costs.snapshots import CostSource
from billing_core.db import open_database, session_scope
from billing_core.models import Customer, Plan, PlanMetric
from billing_core.periods import Period, utcnow
from billing_core.usage.limits import build_usage_report
from billing_core.views.usage import report_frame

ROOT = Path(__file__).resolve().parents[1]
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
            # Every (customer, metric) pair reports every 6 hours from the month's start.
            moment = period.start_at + timedelta(hours=6 * (i // pairs))
            out.writerow(
                [
                    emails[i % len(emails)],
                    METRICS[(i // len(emails)) % len(METRICS)],
                    f"{(i * 7919) % 1000}.25",
                    moment.strftime("%Y-%m-%dT%H:%M:%SZ"),
                ]
            )


def _cli_import(url: str, path: Path) -> tuple[float, int, str]:
    env = {
        **os.environ,
        "DATABASE_URL": url,
        "BILLING_SECRETS_FILE": str(path.parent / "none.toml"),
        "PYTHONPATH": str(ROOT),
    }
    # The child reports its own peak RSS from /proc (VmHWM starts afresh at exec). getrusage
    # would not do: Linux carries ru_maxrss across fork and exec, so a child of this (large)
    # benchmark process would report the parent's peak, and RUSAGE_CHILDREN is the largest
    # of every child any benchmark started.
    runner = (
        "import re, sys\n"
        "from billing_core.cli import main\n"
        "code = main(['import-usage', sys.argv[1]])\n"
        "status = open('/proc/self/status').read()\n"
        "print('peak_kb', re.search(r'VmHWM:\\s+(\\d+)', status).group(1), file=sys.stderr)\n"
        "sys.exit(code)\n"
    )
    started = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-c", runner, str(path)],
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    elapsed = time.perf_counter() - started
    if done.returncode != 0:
        raise RuntimeError(f"import-usage failed: {done.stderr.strip()}")
    peak_kb = int(done.stderr.rsplit("peak_kb", 1)[1].split()[0])
    return elapsed, peak_kb, done.stdout.strip()


def bench_import(quick: bool) -> list[Figure]:
    rows, customers = (20_000, 50) if quick else (1_000_000, 1_000)
    period = Period.containing(utcnow()).previous()  # a closed month: no timestamp in the future
    dataset = f"{rows:,} rows, {customers} customers x 10 metrics"
    with tempfile.TemporaryDirectory() as tmp:
        url = f"sqlite:///{tmp}/bench.db"
        emails = _world(url, customers)
        path = Path(tmp) / "usage.csv"
        _write_csv(path, emails, rows, period)
        size_mb = path.stat().st_size / 1e6
        first, peak_kb, _ = _cli_import(url, path)
        again, _, second_out = _cli_import(url, path)
    assert "0 imported" in second_out, second_out
    return [
        Figure(
            "usage",
            "CSV import rate (CLI, incl. start-up)",
            f"{rows / first:,.0f} rows/s",
            "",
            f"{dataset}, {size_mb:.0f} MB",
        ),
        Figure("usage", "CSV import wall time", f"{first:.1f} s", "", dataset),
        Figure(
            "usage",
            "CSV import peak memory (RSS of the import process)",
            f"{peak_kb / 1024:.0f} MiB",
            "",
            dataset,
        ),
        Figure(
            "usage",
            "re-import of the same file (adds nothing)",
            f"{rows / again:,.0f} rows/s",
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
    customers = 50 if quick else 1_000
    period = Period(2026, 10)  # 31 days
    now = datetime(2026, 10, 31, 20, tzinfo=UTC)
    with tempfile.TemporaryDirectory() as tmp:
        url = f"sqlite:///{tmp}/page.db"
        _world(url, customers)
        records = _fill_month(url, customers, period)
        engine = open_database(url)
        timings = []
        for _ in range(3):
            started = time.perf_counter()
            with session_scope(engine) as session:
                report = build_usage_report(
                    session, period, now, source=CostSource("UnblendedCost", "LINKED_ACCOUNT")
                )
                frame = report_frame(report.rows)
            timings.append(time.perf_counter() - started)
        engine.dispose()
    dataset = f"{customers} customers x 10 metrics x 31 days ({records:,} records)"
    assert len(frame) == customers * len(METRICS)
    return [
        Figure(
            "usage",
            "usage page data + table build (best of 3)",
            f"{min(timings):.2f} s",
            "",
            dataset,
        ),
    ]


def run(quick: bool) -> list[Figure]:
    return bench_import(quick) + bench_page(quick)
