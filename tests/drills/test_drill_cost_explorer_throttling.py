"""Drill: Cost Explorer throttles a multi-page fetch (LimitExceededException, ThrottlingException).

Real boto3 over the wire against the local Cost Explorer stub (tests/support/ce_stub.py), which
answers a seeded schedule: several pages of the demo month's costs with throttling errors
between them. Scenarios:
- `recovers`: every request is throttled at most as often as the adapter retries: the fetch
  backs off on its schedule, succeeds, and stores one complete snapshot holding every page
  exactly once (line count and exact sum), with the true request count;
- `gives-up`: one request mid-paging stays throttled past the last retry: the refresh fails with
  a clear sentence, stores not one line of the pages it had already read, records the failed
  attempt with its request count, and the previous snapshot stays the one in use; a refresh
  once the throttling is over succeeds;
- `cli`: `python -m billing_core fetch-costs --force` as a subprocess, throttled once (a real
  1 s back-off): exit 0, and the output states how many requests (and dollars) it spent.

The in-process scenarios record the back-off waits instead of sleeping them (the adapter's
`sleep` parameter), so the drill shows the schedule without waiting 15 s.
"""

from __future__ import annotations

import random
from decimal import Decimal
from typing import Any

import pytest
from sqlalchemy import func
from sqlalchemy.engine import Engine
from sqlmodel import Session, col, select

from billing_core.costs import cost_explorer as ce
from billing_core.costs import refresh, snapshots
from billing_core.costs.snapshots import CostSource
from billing_core.db import session_scope
from billing_core.demo.catalog import SERVICES, UNATTRIBUTED_ACCOUNTS
from billing_core.models import CostLine, CostSnapshot, CustomerAccount
from tests.conftest import DEMO_NOW
from tests.drills.conftest import PERIOD, Cli, DrillReport, cli_env, drill_seeds
from tests.support.aws import FAKE_AWS, group, page, result, settings
from tests.support.ce_stub import CostExplorerStub
from tests.support.stripe_server import StripeTestServer

# The cost figures these tests bill from (the settings' defaults).
SOURCE = CostSource("UnblendedCost", "LINKED_ACCOUNT")

pytestmark = pytest.mark.drill

OP = "GetCostAndUsage"
CODES = ("LimitExceededException", "ThrottlingException")
MONTH = (PERIOD.start.isoformat(), PERIOD.end.isoformat())


def _pages(engine: Engine, rng: random.Random) -> tuple[list[dict[str, Any]], int, Decimal]:
    """Usage pages (linked by NextPageToken) then one adjustments page: (pages, lines, sum)."""
    with Session(engine) as s:
        owned = {a.account_id for a in s.exec(select(CustomerAccount)).all()}
    # Plus accounts that match no customer (they stay unattributed).
    accounts = sorted(owned | set(UNATTRIBUTED_ACCOUNTS))
    usage_pages = rng.randint(2, 5)
    # Each account and service once in the month (Cost Explorer never repeats a group).
    pairs = rng.sample([(a, svc) for a in accounts for svc in SERVICES], usage_pages * 25)
    pages: list[dict[str, Any]] = []
    lines, total = 0, Decimal(0)
    for n in range(usage_pages):
        groups = []
        for account, service in pairs[n * 25 : (n + 1) * 25]:
            amount = Decimal(rng.randint(1, 10**9)) / Decimal(10**5)
            groups.append(group(account, service, amount))
            total += amount
        lines += len(groups)
        token = f"page-{n + 2}" if n < usage_pages - 1 else None
        pages.append(page(result(*MONTH, groups), token=token))
    credit = Decimal("-12.5")
    pages.append(page(result(*MONTH, [group(accounts[0], "Credit", credit)])))
    return pages, lines + 1, total + credit


def _schedule(
    stub: CostExplorerStub, pages: list[dict[str, Any]], throttles: list[int], rng: random.Random
) -> None:
    for body, times in zip(pages, throttles, strict=True):
        stub.fail(OP, rng.choice(CODES), "Rate exceeded", times=times)
        stub.add(OP, body)


def _counts(engine: Engine) -> tuple[int, int]:
    with Session(engine) as s:
        lines = s.exec(select(func.count()).select_from(CostLine)).one()
        snaps = s.exec(
            select(func.count()).select_from(CostSnapshot).where(CostSnapshot.status == "complete")
        ).one()
    return lines, snaps


def _stored(engine: Engine, snapshot_id: int) -> tuple[int, Decimal]:
    with Session(engine) as s:
        rows = s.exec(select(CostLine).where(CostLine.snapshot_id == snapshot_id)).all()
    return len(rows), sum((r.amount for r in rows), start=Decimal(0))


def _latest_id(engine: Engine) -> int | None:
    with Session(engine) as s:
        snap = snapshots.latest_snapshot(s, PERIOD, SOURCE)
        return snap.id if snap else None


@pytest.mark.parametrize("seed", drill_seeds(1))
@pytest.mark.parametrize("scenario", ["recovers", "gives-up"])
def test_drill_cost_explorer_throttling(
    scenario: str,
    seed: int,
    demo_engine: Engine,
    ce_stub: CostExplorerStub,
    drill_report: DrillReport,
) -> None:
    rng = random.Random(f"{scenario}-{seed}")
    pages, want_lines, want_sum = _pages(demo_engine, rng)
    limit = len(ce.BACKOFF_SECONDS)
    throttles = [rng.choice([0, 0, 1, 2, 3, limit]) for _ in pages]
    stuck = None
    if scenario == "gives-up":
        stuck = rng.randint(1, len(pages) - 1)  # after at least one page was read
        throttles[stuck] = limit + 1
        throttles[stuck + 1 :] = [0] * (len(pages) - stuck - 1)
    _schedule(ce_stub, pages, throttles, rng)
    before_lines, before_snaps = _counts(demo_engine)
    previous = _latest_id(demo_engine)
    slept: list[float] = []
    with session_scope(demo_engine) as s:
        outcome = refresh.refresh_period(
            s, settings(), PERIOD, now=DEMO_NOW, force=True, sleep=slept.append
        )
    after_lines, after_snaps = _counts(demo_engine)
    latest = _latest_id(demo_engine)
    drill_report.tried(
        f"{scenario} seed {seed}: {len(pages)} pages ({want_lines} lines), throttles before "
        f"each request {throttles} (the adapter retries {limit} times)"
    )
    verdict = f"stored {outcome.lines} lines" if outcome.fetched else f"failed: {outcome.error!r}"
    drill_report.found(
        f"{scenario} seed {seed}: {verdict}; {outcome.request_count} requests logged, "
        f"{ce_stub.request_count} reached Cost Explorer; waits {slept}; lines in the database "
        f"{before_lines} -> {after_lines}, complete snapshots {before_snaps} -> {after_snaps}"
    )
    assert outcome.request_count == ce_stub.request_count  # every paid request is counted
    expected_waits = [ce.BACKOFF_SECONDS[i] for t in throttles for i in range(min(t, limit))]
    if scenario == "recovers":
        assert outcome.fetched and outcome.error is None
        assert outcome.request_count == len(pages) + sum(throttles)
        assert slept == expected_waits
        assert latest is not None and latest != previous
        assert _stored(demo_engine, latest) == (want_lines, want_sum)  # each page once
        with Session(demo_engine) as s:
            snap = s.get(CostSnapshot, latest)
            assert snap is not None and snap.request_count == outcome.request_count
        return
    assert stuck is not None
    assert not outcome.fetched and outcome.error
    assert "kept throttling" in outcome.error and "try again in a few minutes" in outcome.error
    assert outcome.request_count == stuck + sum(throttles[:stuck]) + limit + 1
    # Nothing of the pages read before the failure was stored; the old snapshot stays current.
    assert (after_lines, after_snaps) == (before_lines, before_snaps)
    assert latest == previous
    with Session(demo_engine) as s:
        failed = s.exec(
            select(CostSnapshot)
            .where(CostSnapshot.status == "failed")
            .order_by(col(CostSnapshot.id).desc())
        ).first()
        assert failed is not None and failed.request_count == outcome.request_count
        assert refresh.last_failure(s) is not None
    # Once Cost Explorer calms down, the next refresh stores the month and clears the failure.
    ce_stub.queues[OP].clear()  # the answers the failed fetch never asked for
    for body in pages:
        ce_stub.add(OP, body)
    with session_scope(demo_engine) as s:
        again = refresh.refresh_period(s, settings(), PERIOD, now=DEMO_NOW, force=True)
    assert again.fetched, again.error
    newest = _latest_id(demo_engine)
    assert newest is not None and _stored(demo_engine, newest) == (want_lines, want_sum)
    with Session(demo_engine) as s:
        assert refresh.last_failure(s) is None


def test_drill_cost_explorer_throttling_cli(
    demo_engine: Engine,
    demo_db_url: str,
    ce_stub: CostExplorerStub,
    stripe_server: StripeTestServer,
    cli: Cli,
    drill_report: DrillReport,
) -> None:
    rng = random.Random("cli")
    pages, want_lines, want_sum = _pages(demo_engine, rng)
    throttles = [0] * len(pages)
    throttles[rng.randrange(len(pages))] = 1
    _schedule(ce_stub, pages, throttles, rng)
    env = cli_env(
        demo_db_url, stripe_server, **FAKE_AWS, AWS_ENDPOINT_URL_COST_EXPLORER=ce_stub.url
    )
    run = cli.run(env, "fetch-costs", "--period", str(PERIOD), "--force")
    requests = len(pages) + 1
    with Session(demo_engine) as s:
        newest = s.exec(
            select(CostSnapshot)
            .where(CostSnapshot.status == "complete", CostSnapshot.request_count == requests)
            .order_by(col(CostSnapshot.id).desc())
        ).first()
    stored = _stored(demo_engine, newest.id or 0) if newest else (0, Decimal(0))
    drill_report.tried(f"fetch-costs subprocess, {len(pages)} pages, throttled once")
    drill_report.found(
        f"exit {run.code} after {run.seconds:.1f} s; stdout: {run.stdout.strip()[-120:]!r}; "
        f"stored {stored[0]} lines"
    )
    assert run.code == 0, run.output()
    assert f"Cost Explorer requests: {requests} (USD {requests / 100:.2f})" in run.stdout
    assert "throttled" in run.stderr, run.output()
    assert stored == (want_lines, want_sum)
