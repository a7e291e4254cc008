"""Which cost figures are billed: the configured metric and grouping only (issue 13 item 6),
and for a closed month only a snapshot that covers it whole (issue 13 item 1).

Readers are driven on two stored snapshots of different metrics; the run's refresh talks to
moto (and to the local Cost Explorer stub for a failing refresh) over HTTP, and pushes to the
local Stripe test server.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import pytest
from sqlalchemy.engine import Engine
from sqlmodel import Session, select

from billing_core.config import Settings, load_settings
from billing_core.costs import cost_explorer as ce
from billing_core.costs.attribution import attributed_costs
from billing_core.costs.snapshots import CostSource, store_snapshot
from billing_core.db import session_scope
from billing_core.errors import CostSourceError
from billing_core.invoicing import runs
from billing_core.invoicing.drafts import build_drafts, save_drafts
from billing_core.models import (
    Alert,
    CostSnapshot,
    Customer,
    CustomerAccount,
    Invoice,
    InvoiceLine,
    InvoiceRun,
    Plan,
)
from billing_core.periods import Period
from billing_core.reconciliation.diffing import Tolerance
from billing_core.reconciliation.findings import aws_findings
from billing_core.reconciliation.runs import reconcile_period
from billing_core.states import InvoiceStatus, LineKind
from billing_core.usage.alerts import check_alerts
from billing_core.usage.limits import build_usage_report
from billing_core.views import aws_costs
from billing_core.views import aws_costs_report as costs_report
from billing_core.views import invoice_run as run_view
from tests.support.aws import FAKE_AWS, group, page, result
from tests.support.stripe_server import StripeTestServer

OCT = Period(2026, 10)
NOW = datetime(2026, 11, 3, 6, 0, tzinfo=UTC)
ACCOUNT = "111111111111"
UNBLENDED = CostSource("UnblendedCost", "LINKED_ACCOUNT")
NET = CostSource("NetUnblendedCost", "LINKED_ACCOUNT")
KEY = "sk_test_cost_source"


def _settings(**env: str) -> Settings:
    values = {"BILLING_MODE": "live", **{k.upper(): v for k, v in env.items()}}
    return load_settings(values, secrets_path=Path("/nonexistent/secrets.toml"))


def _snapshot(
    session: Session,
    source: CostSource,
    amount: str,
    *,
    fetched_at: datetime,
    granularity: ce.Granularity = "MONTHLY",
) -> CostSnapshot:
    """A snapshot of October holding one EC2 figure for ACCOUNT (MONTHLY, or DAILY so far)."""
    group_by, _, tag_key = source.group_by.partition(":")
    end = OCT.end if granularity == "MONTHLY" else fetched_at.date() + timedelta(days=1)
    query = ce.CostQuery(
        OCT, granularity, OCT.start, end, source.metric, group_by, tag_key or "customer"
    )
    row = ce.CostRow(
        date(2026, 10, 1), ACCOUNT, None, "Amazon EC2", ce.USAGE, Decimal(amount), "USD", False
    )
    fetched = ce.FetchResult(query, rows=[row], request_count=2)
    return store_snapshot(session, fetched, fetched_at=fetched_at, source="test")


def _world(session: Session, *, spend_limit_minor: int | None = None) -> tuple[int, int]:
    """Acme owns ACCOUNT; Zed owns no AWS account. Both on a USD plan without markup."""
    plan = Plan(
        name="standard",
        currency="USD",
        base_fee_minor=10_000,
        aws_spend_limit_minor=spend_limit_minor,
    )
    session.add(plan)
    session.flush()
    ids = []
    for name in ("Acme", "Zed"):
        customer = Customer(
            name=name,
            email=f"{name.lower()}@x.example",
            currency="USD",
            plan_id=plan.id,
            default_payment_method="card visa 4242",
        )
        session.add(customer)
        session.flush()
        ids.append(customer.id or 0)
    session.add(CustomerAccount(customer_id=ids[0], account_id=ACCOUNT))
    session.flush()
    return ids[0], ids[1]


def _aws_minor(session: Session, invoice_id: int) -> int:
    lines = session.exec(
        select(InvoiceLine).where(
            InvoiceLine.invoice_id == invoice_id, InvoiceLine.kind == LineKind.AWS
        )
    ).all()
    return sum(line.amount_minor for line in lines)


# ------------------------------------------------------------------ item 6: the configured one


@pytest.fixture
def two_metrics(session: Session) -> tuple[int, int]:
    """UnblendedCost USD 1,000.00, then a newer NetUnblendedCost fetch of USD 250.00."""
    ids = _world(session, spend_limit_minor=100_000)
    _snapshot(session, UNBLENDED, "1000", fetched_at=datetime(2026, 11, 2, tzinfo=UTC))
    _snapshot(session, NET, "250", fetched_at=datetime(2026, 11, 2, 12, tzinfo=UTC))
    session.flush()
    return ids


@pytest.mark.parametrize(("source", "usd"), [(UNBLENDED, 1000), (NET, 250)])
def test_drafts_and_attribution_use_the_configured_metric(
    session: Session, two_metrics: tuple[int, int], source: CostSource, usd: int
) -> None:
    acme, _ = two_metrics
    assert attributed_costs(session, OCT, source).customer_total(acme) == usd
    drafts = build_drafts(session, OCT, source=source)
    [draft] = [d for d in drafts.drafts if d.customer_id == acme]
    assert sum(x.amount_minor for x in draft.lines if x.kind == LineKind.AWS) == usd * 100
    [invoice_id] = save_drafts(session, drafts, run_id=None)[:1]
    invoice = session.get(Invoice, invoice_id)
    assert invoice is not None and invoice.customer_id == acme
    assert (invoice.cost_metric, invoice.cost_group_by) == (source.metric, source.group_by)
    snapshot = session.get(CostSnapshot, invoice.cost_snapshot_id)
    assert snapshot is not None and snapshot.metric == source.metric


def test_reconciliation_compares_with_the_configured_metric(
    session: Session, two_metrics: tuple[int, int]
) -> None:
    acme, _ = two_metrics
    save_drafts(session, build_drafts(session, OCT, source=UNBLENDED), run_id=None)
    for invoice in session.exec(select(Invoice)).all():
        invoice.status = InvoiceStatus.PAID
        session.add(invoice)
    session.flush()
    found = aws_findings(session, OCT, Tolerance(), UNBLENDED)
    assert found is not None and found[0] == []  # billed on UnblendedCost, compared with it
    # Invoiced from UnblendedCost: comparing with NetUnblendedCost figures would report the
    # change of metric as a restatement, so the invoice is skipped with a note instead.
    other = aws_findings(session, OCT, Tolerance(), NET)
    assert other is not None and other[0] == []
    assert other[1]["skipped"] == [
        f"{name}: invoiced from UnblendedCost by LINKED_ACCOUNT, not the configured "
        "NetUnblendedCost by LINKED_ACCOUNT"
        for name in ("Acme", "Zed")
    ]
    # An invoice from before the cost source was recorded is compared with the configured one.
    for invoice in session.exec(select(Invoice)).all():
        invoice.cost_metric = invoice.cost_group_by = None
        session.add(invoice)
    session.flush()
    legacy = aws_findings(session, OCT, Tolerance(), NET)
    assert legacy is not None and [f.customer_id for f in legacy[0]] == [acme]


def test_spend_alert_reads_the_configured_metric(
    session: Session, two_metrics: tuple[int, int]
) -> None:
    acme, _ = two_metrics
    now = datetime(2026, 11, 2, 13, tzinfo=UTC)
    report = build_usage_report(session, OCT, now, source=UNBLENDED)
    [spend] = [r for r in report.rows if r.customer_id == acme and r.metric == "aws_spend"]
    assert spend.used == Decimal(1000)
    new = check_alerts(session, now=now, period=OCT, thresholds=[80, 100], source=UNBLENDED)
    assert sorted(a.threshold_pct for a in new if a.metric == "aws_spend") == [80, 100]
    assert session.exec(select(Alert)).all()


def test_costs_page_and_report_read_the_configured_metric(
    session: Session, two_metrics: tuple[int, int]
) -> None:
    for metric, usd in (("UnblendedCost", 1000), ("NetUnblendedCost", 250)):
        cfg = _settings(cost_metric=metric)
        view = aws_costs.build_costs_view(session, cfg, OCT)
        assert view.snapshot is not None and view.snapshot.metric == metric
        assert view.total == usd
        text = costs_report.format_report(session, cfg, OCT, "customer", now=NOW)
        assert f"{usd:,}.00" in text


def test_no_snapshot_of_the_configured_grouping_is_said(
    session: Session, engine: Engine, two_metrics: tuple[int, int]
) -> None:
    cfg = _settings(cost_group_by="TAG", cost_tag_key="team")
    source = CostSource.of(cfg)
    sentence = "no UnblendedCost snapshot by TAG:team for 2026-10: run"
    drafts = build_drafts(session, OCT, source=source)
    assert not drafts.costs_found and drafts.cost_coverage.startswith(sentence)
    report = build_usage_report(session, OCT, NOW, source=source)
    assert report.cost_note is not None and report.cost_note.startswith(sentence)
    with pytest.raises(CostSourceError, match=sentence):
        costs_report.format_report(session, cfg, OCT, "customer", now=NOW)
    session.commit()
    done = reconcile_period(engine, OCT, source=source, now=NOW)
    assert any(note.startswith(sentence) for note in done.counts["notes"])


# ------------------------------------------------------- item 1: a closed month is billed whole


@pytest.fixture(scope="module")
def server() -> Iterator[StripeTestServer]:
    with StripeTestServer() as srv:
        yield srv


def _run_settings(db_url: str, server: StripeTestServer, *, aws: bool) -> Settings:
    env = {
        "DATABASE_URL": db_url,
        "STRIPE_API_BASE": server.url,
        "STRIPE_API_KEY": KEY,
        "STRIPE_REQUESTS_PER_SECOND": "1000",
        **(FAKE_AWS if aws else {}),
    }
    return load_settings(env, secrets_path=Path("/nonexistent/secrets.toml"))


def _stripe_customers(engine: Engine, server: StripeTestServer) -> None:
    server.reset()
    with session_scope(engine) as s:
        for cus in s.exec(select(Customer)).all():
            remote = server.create_customer_directly(email=cus.email, name=cus.name)
            server.attach_card(remote["id"], "pm_card_visa")
            cus.stripe_customer_id = remote["id"]
            s.add(cus)


def _partial_october(engine: Engine, server: StripeTestServer) -> tuple[int, int]:
    """October fetched on October 20th (DAILY, USD 600 so far), nothing after."""
    with session_scope(engine) as s:
        ids = _world(s)
        _snapshot(
            s,
            UNBLENDED,
            "600",
            fetched_at=datetime(2026, 10, 20, 14, tzinfo=UTC),
            granularity="DAILY",
        )
    _stripe_customers(engine, server)
    return ids


def _run(engine: Engine, settings: Settings) -> runs.RunResult:
    return runs.run_invoices(engine, settings, runs.RunOptions(OCT), now=NOW)


def test_partial_snapshot_is_shown_in_the_preview(engine: Engine, server: StripeTestServer) -> None:
    _partial_october(engine, server)
    with Session(engine) as s:
        drafts = runs.preview(s, OCT, source=UNBLENDED)
    assert drafts.cost_coverage == (
        "UnblendedCost by LINKED_ACCOUNT, as of 2026-10-20 14:00 UTC, 20 of 31 days"
    )
    frame = run_view.preview_frame(drafts)
    assert set(frame["days covered"]) == {"20 of 31"}
    assert set(frame["costs as of"]) == {datetime(2026, 10, 20, 14, tzinfo=UTC)}
    [refused] = [p for p in drafts.problems]
    assert refused.customer == "Acme" and "fetch-costs --period 2026-10 --force" in refused.message
    assert [d.customer_name for d in drafts.drafts] == ["Zed"]


def test_partial_snapshot_is_refreshed_before_billing(
    engine: Engine, db_url: str, server: StripeTestServer, moto_ce
) -> None:
    acme, _ = _partial_october(engine, server)
    month = ("2026-10-01", "2026-11-01")
    moto_ce.queue(
        page(result(*month, [group(ACCOUNT, "Amazon EC2", "900")])),
        page(result(*month, [])),
    )
    got = _run(engine, _run_settings(db_url, server, aws=True))
    assert got.exit_code == 0 and not got.problems
    with Session(engine) as s:
        invoice = s.exec(select(Invoice).where(Invoice.customer_id == acme)).one()
        assert _aws_minor(s, invoice.id or 0) == 90_000  # the whole month, not the 20 days
        run = s.exec(select(InvoiceRun)).one()
        snap = s.get(CostSnapshot, run.cost_snapshot_id)
        assert snap is not None and snap.granularity == "MONTHLY"
        assert snap.fetched_at.replace(tzinfo=UTC) >= OCT.end_at
        assert (run.cost_metric, run.cost_group_by) == ("UnblendedCost", "LINKED_ACCOUNT")
        assert invoice.cost_snapshot_id == snap.id


def test_refresh_impossible_refuses_the_customers_with_aws_costs(
    engine: Engine, db_url: str, server: StripeTestServer
) -> None:
    acme, zed = _partial_october(engine, server)
    got = _run(engine, _run_settings(db_url, server, aws=False))
    assert got.exit_code == 1
    [refused] = got.problems
    assert refused.customer_id == acme and refused.step == "costs"
    assert "covers 20 of its 31 days" in refused.message
    assert "Run `python -m billing_core fetch-costs --period 2026-10 --force`" in refused.message
    with Session(engine) as s:
        billed = s.exec(select(Invoice.customer_id)).all()
        assert billed == [zed]  # no AWS costs of its own: billed as usual
        run = s.exec(select(InvoiceRun)).one()
        assert run.errors[0] == {
            "step": "costs",
            "message": "AWS is not configured here, so the run could not refresh it",
        }


def test_failed_refresh_refuses_with_the_reason(
    engine: Engine, db_url: str, server: StripeTestServer, ce_stub
) -> None:
    acme, _ = _partial_october(engine, server)
    ce_stub.fail("GetCostAndUsage", "AccessDeniedException", "not authorized", times=3)
    got = _run(engine, _run_settings(db_url, server, aws=True))
    assert got.exit_code == 1 and [p.customer_id for p in got.problems] == [acme]
    with Session(engine) as s:
        run = s.exec(select(InvoiceRun)).one()
        assert "refreshing it from Cost Explorer failed" in run.errors[0]["message"]
        assert s.exec(select(Invoice).where(Invoice.customer_id == acme)).first() is None


def test_complete_snapshot_is_billed_without_asking_aws(
    engine: Engine, db_url: str, server: StripeTestServer, ce_stub
) -> None:
    with session_scope(engine) as s:
        acme, _ = _world(s)
        snap = _snapshot(s, UNBLENDED, "1000", fetched_at=datetime(2026, 11, 2, tzinfo=UTC))
        snap_id = snap.id
    _stripe_customers(engine, server)
    got = _run(engine, _run_settings(db_url, server, aws=True))
    assert got.exit_code == 0 and ce_stub.request_count == 0
    with Session(engine) as s:
        invoice = s.exec(select(Invoice).where(Invoice.customer_id == acme)).one()
        assert _aws_minor(s, invoice.id or 0) == 100_000
        assert s.exec(select(InvoiceRun)).one().cost_snapshot_id == snap_id


def test_cli_says_what_to_run(
    engine: Engine,
    db_url: str,
    server: StripeTestServer,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    from billing_core.cli import main

    _partial_october(engine, server)
    for key in FAKE_AWS:
        monkeypatch.delenv(key, raising=False)
    env = {"DATABASE_URL": db_url, "STRIPE_API_BASE": server.url, "STRIPE_API_KEY": KEY}
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    assert main(["invoice-run", "--period", "2026-10", "--dry-run"]) == 1
    out = capsys.readouterr().out
    assert "AWS costs: UnblendedCost by LINKED_ACCOUNT, as of 2026-10-20 14:00 UTC, 20" in out
    assert main(["invoice-run", "--period", "2026-10"]) == 1
    out = capsys.readouterr().out
    assert "REFUSED Acme: not invoiced: the UnblendedCost snapshot of 2026-10 was taken" in out
    assert "fetch-costs --period 2026-10 --force" in out
