from __future__ import annotations

from datetime import UTC, date, datetime
from decimal import Decimal
from pathlib import Path

import pytest
from alembic import command
from hypothesis import given
from hypothesis import strategies as st
from sqlalchemy import text
from sqlmodel import Session, func, select

from billing_core.cli import main
from billing_core.costs.rollups import write_rollups
from billing_core.costs.snapshots import CostSource
from billing_core.db import _alembic_config, make_engine, session_scope
from billing_core.errors import ValidationError
from billing_core.exchange_rates.rates import load_rates
from billing_core.invoicing.pricing import overage_amount
from billing_core.models import (
    CostLine,
    CostSnapshot,
    Customer,
    CustomerAccount,
    ExchangeRate,
    Invoice,
    UsageRecord,
)
from billing_core.money import Money
from billing_core.periods import Period
from billing_core.usage import limits, projections
from billing_core.usage import totals as usage_totals
from billing_core.usage.import_checks import (
    UsageInput,
    _parse_quantity,
    _parse_quantity_exactly,
)
from billing_core.usage.import_csv import import_usage_csv, record_usage
from billing_core.views import usage as views_usage
from tests.conftest import DEMO_NOW
from tests.support.usage_world import NOW, make_world

# The cost figures these tests bill from (the settings' defaults).
SOURCE = CostSource("UnblendedCost", "LINKED_ACCOUNT")

NOV = Period(2026, 11)
OCT = Period(2026, 10)
HEADER = "customer,metric,quantity,timestamp\n"


def count(session: Session) -> int:
    return session.exec(select(func.count()).select_from(UsageRecord)).one()


# --- pure arithmetic ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("aggregation", "billable", "now", "last_day", "expected"),
    [
        # 20 whole days elapsed of 30: 600 + 600/20 * 10
        ("sum", "600", datetime(2026, 11, 21, 9, tzinfo=UTC), date(2026, 11, 20), "900"),
        # data for today counts as a day: 21 days
        ("sum", "630", datetime(2026, 11, 21, 9, tzinfo=UTC), date(2026, 11, 21), "900"),
        # first day of the month, data for today only
        ("sum", "10", datetime(2026, 11, 1, 9, tzinfo=UTC), date(2026, 11, 1), "300"),
        ("sum", "0", datetime(2026, 11, 21, 9, tzinfo=UTC), None, "0"),
        # levels project their peak
        ("max", "7", datetime(2026, 11, 21, 9, tzinfo=UTC), date(2026, 11, 20), "7"),
        # a closed month is final
        ("sum", "600", datetime(2026, 12, 3, tzinfo=UTC), date(2026, 11, 20), "600"),
        # a stale feed: the elapsed days count, not the last data day
        ("sum", "100", datetime(2026, 11, 11, tzinfo=UTC), date(2026, 11, 2), "300"),
    ],
)
def test_projection_table(
    aggregation: str, billable: str, now: datetime, last_day: date | None, expected: str
) -> None:
    got = projections.project_month_end(
        aggregation, Decimal(billable), period=NOV, now=now, last_day=last_day
    )
    assert got == Decimal(expected)


# --- ingestion ----------------------------------------------------------------------------


def test_import_then_reimport_adds_nothing(session: Session) -> None:
    make_world(session)
    data = (
        HEADER + "a@alpha.example,api_calls,700,2026-11-02\n"
        "a@alpha.example,api_calls,600,2026-11-03T10:00:00Z\n"
        "A@Alpha.example,seats,4,2026-11-03\n"
        "a@alpha.example,seats,6,2026-11-10T00:00:00+02:00\n"
    ).encode()
    first = import_usage_csv(session, data, now=NOW, actor="t")
    assert (first.rows, first.imported, first.already_present) == (4, 4, 0)
    assert first.periods == ["2026-11"]
    again = import_usage_csv(session, data, now=NOW, actor="t")
    assert (again.rows, again.imported, again.already_present) == (4, 0, 4)
    assert count(session) == 4
    totals = usage_totals.totals_by_metric(session, NOV)
    cid = session.exec(select(Customer.id).where(Customer.email == "a@alpha.example")).one()
    assert totals == {(cid, "api_calls"): Decimal(1300), (cid, "seats"): Decimal(6)}
    # the +02:00 timestamp was stored in UTC
    stored = session.exec(select(UsageRecord).where(UsageRecord.quantity == 6)).one()
    assert stored.occurred_at == datetime(2026, 11, 9, 22, tzinfo=UTC)


def test_explicit_keys_customer_by_id_and_duplicates_in_file(session: Session) -> None:
    _, a, _ = make_world(session)
    data = (
        "customer_id,metric,quantity,occurred_at,idempotency_key\n"
        f"{a.id},api_calls,5,2026-11-02,evt-1\n"
        f"{a.id},api_calls,5,2026-11-02,evt-2\n"
        f"{a.id},api_calls,5,2026-11-02,evt-1\n"
    ).encode()
    result = import_usage_csv(session, data, now=NOW, actor="t")
    assert (result.imported, result.already_present) == (2, 1)
    assert usage_totals.totals_by_metric(session, NOV) == {(a.id, "api_calls"): Decimal(10)}


@pytest.mark.parametrize(
    ("rows", "reason"),
    [
        ("nobody@x.example,api_calls,1,2026-11-02", "not a known customer"),
        (
            "a@alpha.example,widgets,1,2026-11-02",
            "metric 'widgets' is not in a@alpha.example's plan",
        ),
        ("a@alpha.example,api_calls,-1,2026-11-02", "negative"),
        ("a@alpha.example,api_calls,lots,2026-11-02", "quantity 'lots' is not a number"),
        ("a@alpha.example,api_calls,NaN,2026-11-02", "not a number"),
        # A spreadsheet's rounding, refused like a thousands separator (issue 13, item 14).
        ("a@alpha.example,api_calls,1.23457E+11,2026-11-02", "exponent notation"),
        ("a@alpha.example,api_calls,2e3,2026-11-02", "exponent notation"),
        ('a@alpha.example,api_calls,"1,000",2026-11-02', "quantity '1,000' is not a number"),
        ("a@alpha.example,api_calls,1.0000001,2026-11-02", "more than 6 decimals"),
        ("a@alpha.example,api_calls,1,2026-12-01", "in the future"),
        ("a@alpha.example,api_calls,1,1999-12-31", "outside any billing period"),
        ("a@alpha.example,api_calls,1,yesterday", "not an ISO 8601"),
        ("a@alpha.example,api_calls,1", "has 3 fields, the header has 4"),
        ("a@alpha.example,,1,2026-11-02", "metric is empty"),
    ],
)
def test_bad_row_imports_nothing(session: Session, rows: str, reason: str) -> None:
    make_world(session)
    good = "a@alpha.example,api_calls,5,2026-11-02\n"
    data = (HEADER + good + rows + "\n" + good.replace("11-02", "11-03")).encode()
    with pytest.raises(ValidationError) as err:
        import_usage_csv(session, data, now=NOW, actor="t")
    assert "nothing was imported" in str(err.value)
    assert any(p.startswith("line 3: ") and reason in p for p in err.value.problems), (
        err.value.problems
    )
    assert count(session) == 0


def test_duplicate_key_with_other_quantity(session: Session) -> None:
    make_world(session)
    import_usage_csv(
        session, (HEADER + "a@alpha.example,api_calls,5,2026-11-02\n").encode(), now=NOW, actor="t"
    )
    changed = (
        HEADER + "a@alpha.example,api_calls,7,2026-11-03\na@alpha.example,api_calls,6,2026-11-02\n"
    ).encode()
    with pytest.raises(ValidationError) as err:
        import_usage_csv(session, changed, now=NOW, actor="t")
    assert err.value.problems == [
        "line 3: a reading for the same customer, metric and timestamp was already imported "
        "with quantity 5, not 6; correct it in the source instead"
    ]
    in_file = (
        HEADER + "a@alpha.example,api_calls,1,2026-11-04\na@alpha.example,api_calls,2,2026-11-04\n"
    ).encode()
    with pytest.raises(ValidationError, match=r"line 3: .* also on line 2 with a different"):
        import_usage_csv(session, in_file, now=NOW, actor="t")
    assert count(session) == 1


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"", "is empty"),
        (b"  \n", "is empty"),
        (HEADER.encode(), "has no usage rows"),
        (b"customer,metric,amount,timestamp\nx,y,1,2026-11-01\n", "missing column(s) quantity"),
        (b"customer,metric,quantity,timestamp,colour\n", "unknown column(s) colour"),
        ((HEADER + "a@alpha.example,api_calls,5,2026-11-02\n").encode("utf-16"), "not UTF-8"),
        (
            HEADER.encode() + b"a@alpha.example,api_calls,5,2026-11-02\n\xff\xfe,x,1,2\n",
            "not UTF-8",
        ),
    ],
)
def test_unusable_files(session: Session, data: bytes, message: str) -> None:
    make_world(session)
    with pytest.raises(ValidationError, match=message.replace("(", r"\(").replace(")", r"\)")):
        import_usage_csv(session, data, now=NOW, actor="t")
    assert count(session) == 0


def test_errors_are_capped_with_a_count(session: Session) -> None:
    make_world(session)
    data = HEADER + "".join(f"nobody{i}@x.example,api_calls,1,2026-11-02\n" for i in range(150))
    with pytest.raises(ValidationError) as err:
        import_usage_csv(session, data.encode(), now=NOW, actor="t")
    assert len(err.value.problems) == 101
    assert err.value.problems[-1] == "... and 50 more problem(s)"
    assert "150 problem(s)" in str(err.value)


def test_invoiced_period_is_refused(session: Session) -> None:
    _, a, _ = make_world(session)
    session.add(Invoice(customer_id=a.id or 0, period="2026-10", currency="EUR", status="open"))
    session.flush()
    with pytest.raises(ValidationError, match="2026-10 is already invoiced"):
        import_usage_csv(
            session,
            (HEADER + "a@alpha.example,api_calls,5,2026-10-30\n").encode(),
            now=NOW,
            actor="t",
        )


def test_record_usage_for_programs(session: Session) -> None:
    _, a, _ = make_world(session)
    result = record_usage(
        session,
        [
            UsageInput(
                "a@alpha.example", "api_calls", Decimal("2.5"), datetime(2026, 11, 2, tzinfo=UTC)
            ),
            {"customer": a.id or 0, "metric": "seats", "quantity": "3", "timestamp": "2026-11-02"},
        ],
        now=NOW,
        actor="job",
    )
    assert result.imported == 2
    with pytest.raises(ValidationError) as err:
        record_usage(
            session,
            [
                UsageInput(
                    "a@alpha.example",
                    "api_calls",
                    2.5,  # type: ignore[arg-type]
                    "2026-11-03",
                )
            ],
            now=NOW,
            actor="job",
        )
    assert err.value.problems == [
        "item 1: quantity 2.5 must be given exactly (a string or Decimal), not a float"
    ]
    assert count(session) == 2


def test_import_usage_cli(
    demo_db_url: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv("DATABASE_URL", demo_db_url)
    monkeypatch.setenv("BILLING_SECRETS_FILE", str(tmp_path / "none.toml"))
    good = tmp_path / "usage.csv"
    good.write_text(HEADER + "billing@acme-analytics.example,api_calls,5,2026-11-01T01:02:03Z\n")
    assert main(["import-usage", str(good)]) == 0
    assert "1 imported" in capsys.readouterr().out
    assert main(["import-usage", str(good)]) == 0
    assert "0 imported, 1 already present" in capsys.readouterr().out
    bad = tmp_path / "bad.csv"
    bad.write_text(HEADER + "billing@acme-analytics.example,api_calls,-5,2026-11-01\n")
    assert main(["import-usage", str(bad)]) == 2
    assert "line 2: quantity -5 is negative" in capsys.readouterr().err


# --- totals, report -----------------------------------------------------------------------


def test_totals_respect_aggregation(session: Session) -> None:
    _, a, _ = make_world(session)
    record_usage(
        session,
        [
            UsageInput(a.email, "seats", "3", "2026-11-01"),
            UsageInput(a.email, "seats", "7", "2026-11-05"),
            UsageInput(a.email, "seats", "4", "2026-11-09"),
            UsageInput(a.email, "api_calls", "3", "2026-11-01"),
            UsageInput(a.email, "api_calls", "7", "2026-11-05"),
        ],
        now=NOW,
        actor="t",
    )
    assert usage_totals.totals_by_metric(session, NOV, customer_id=a.id) == {
        (a.id, "seats"): Decimal(7),
        (a.id, "api_calls"): Decimal(10),
    }
    daily = views_usage.daily_usage(session, a.id or 0, NOV, {"seats": "max", "api_calls": "sum"})
    assert [p.running for p in daily["seats"]] == [3, 7, 7]
    assert [p.running for p in daily["api_calls"]] == [3, 10]


def test_report_rows_projection_and_estimate(session: Session) -> None:
    _, a, b = make_world(session)
    items = [
        UsageInput(a.email, "api_calls", "60", f"2026-11-{d:02d}T08:00:00Z") for d in range(1, 21)
    ]
    items += [UsageInput(b.email, "api_calls", "100", f"2026-11-{d:02d}") for d in range(1, 21)]
    items += [UsageInput(b.email, "seats", "6", "2026-11-02")]
    record_usage(session, items, now=NOW, actor="t")
    session.add(ExchangeRate(period="2026-10", quote="EUR", rate=Decimal("0.8"), source="t"))
    session.flush()
    report = limits.build_usage_report(session, NOV, NOW, source=SOURCE)
    rows = {(r.customer, r.metric): r for r in report.rows}
    alpha = rows[("Alpha", "api_calls")]
    assert (alpha.used, alpha.projected, alpha.status) == (Decimal(1200), Decimal(1800), "over")
    assert alpha.overage_minor == 200  # 200 calls * 0.01 EUR
    assert alpha.projected_overage_minor == 800
    # Beta pays in USD on a EUR plan: converted with the latest rate while the month is open.
    beta = rows[("Beta", "api_calls")]
    assert beta.overage_minor == 1250  # 1000 over * 0.01 = 10 EUR / 0.8 = USD 12.50
    assert rows[("Beta", "seats")].overage_minor == 313  # 2.5 EUR / 0.8 = 3.125, half up
    assert rows[("Alpha", "seats")].status == "ok"


def test_estimate_at_period_end_equals_invoice_arithmetic(demo_session: Session) -> None:
    """The page's estimate for a closed month is the invoice line's overage_amount over
    totals_by_metric, rounded once."""
    from billing_core.customers.plans import effective_plan, metrics_by_plan

    report = limits.build_usage_report(demo_session, OCT, DEMO_NOW, source=SOURCE)
    totals = usage_totals.totals_by_metric(demo_session, OCT)
    by_plan = metrics_by_plan(demo_session)
    rates = load_rates(demo_session, OCT)
    checked = 0
    assert any(r.is_spend for r in report.rows)  # the demo has a cost snapshot for October
    for row in report.rows:
        if row.is_spend:
            assert row.overage_minor is None  # a spend limit alerts, it has no price
            continue
        customer = demo_session.get(Customer, row.customer_id)
        assert customer is not None
        plan = effective_plan(demo_session, customer, OCT)
        assert plan is not None
        pm = by_plan[plan.id or 0][row.metric]
        expected = overage_amount(
            totals.get((row.customer_id, row.metric), Decimal(0)),
            pm.included_quantity,
            Money(pm.overage_unit_price, plan.currency),
            currency=customer.currency,
            rates=rates,
        ).to_minor()
        assert row.overage_minor == expected == row.projected_overage_minor
        checked += expected > 0
    assert checked >= 4  # the demo has customers over their limits last month
    [dune] = [r for r in report.rows if r.customer == "Dune Media SARL" and r.metric == "api_calls"]
    assert (dune.overage, dune.overage_minor) == (1200000, 36000)


def test_demo_usage_has_near_and_over(demo_session: Session) -> None:
    report = limits.build_usage_report(demo_session, NOV, DEMO_NOW, source=SOURCE)
    statuses = {(r.customer.split()[0], r.metric): r.status for r in report.rows}
    assert statuses[("Dune", "api_calls")] == "over"
    assert statuses[("Acme", "api_calls")] == "near"
    assert statuses[("Harbor", "storage_gb")] == "near"
    assert statuses[("Fjord", "seats")] == "over"
    acme = next(r for r in report.rows if r.customer.startswith("Acme") and r.metric == "api_calls")
    assert acme.projected > acme.included  # near now, projected over by month end


def test_spend_limit_from_cost_snapshot(session: Session) -> None:
    _, a, _ = make_world(session)
    session.add(CustomerAccount(customer_id=a.id or 0, account_id="123456789012"))
    snap = CostSnapshot(
        period="2026-11", granularity="DAILY", group_by="LINKED_ACCOUNT", metric="UnblendedCost"
    )
    session.add(snap)
    session.flush()
    for day in range(1, 21):
        session.add(
            CostLine(
                snapshot_id=snap.id or 0,
                period="2026-11",
                day=f"2026-11-{day:02d}",
                account_id="123456789012",
                service="EC2",
                amount=Decimal("4.5"),
            )
        )
    session.add(ExchangeRate(period="2026-11", quote="EUR", rate=Decimal("0.9"), source="t"))
    session.flush()
    write_rollups(session, [snap.id or 0])
    report = limits.build_usage_report(session, NOV, NOW, source=SOURCE)
    spend = next(r for r in report.rows if r.is_spend and r.customer_id == a.id)
    assert spend.used == Decimal("81.000000")  # 20 * 4.5 USD * 0.9
    assert spend.included == Decimal(100)
    assert spend.projected == Decimal("121.500000")
    assert spend.status == "near"
    assert report.has_cost_data


def test_migration_adds_and_backfills_aggregation(tmp_path: Path) -> None:
    engine = make_engine(f"sqlite:///{tmp_path / 'm.db'}")
    cfg = _alembic_config(engine)
    command.upgrade(cfg, "0001")
    with engine.begin() as conn:
        conn.execute(
            text(
                "INSERT INTO plan (name, currency, base_fee_minor, markup_pct, active,"
                " created_at, updated_at) VALUES ('p', 'EUR', 0, 0, 1, '2026-01-01',"
                " '2026-01-01')"
            )
        )
        for metric in ("seats", "api_calls"):
            conn.execute(
                text(
                    "INSERT INTO planmetric (plan_id, metric, unit, included_quantity,"
                    " overage_unit_price) VALUES (1, :m, '', 0, 0)"
                ),
                {"m": metric},
            )
    command.upgrade(cfg, "heads")
    with engine.connect() as conn:
        got = dict(conn.execute(text("SELECT metric, aggregation FROM planmetric")).all())
    assert got == {"seats": "max", "api_calls": "sum"}
    with session_scope(engine) as s:
        assert s.exec(select(func.count()).select_from(UsageRecord)).one() == 0


# --- import fast paths (bench: usage import near the plain csv + executemany reference) ----


@given(
    st.one_of(
        st.text(alphabet="0123456789.+-eE_ ,٣x", max_size=14),
        st.decimals(allow_nan=True, allow_infinity=True, places=7).map(str),
        st.integers(min_value=0, max_value=10**20).map(str),
        st.tuples(st.integers(0, 10**13), st.integers(0, 10**7)).map(lambda p: f"{p[0]}.{p[1]}"),
    )
)
def test_quantity_fast_path_agrees_with_decimal(text: str) -> None:
    assert _parse_quantity(text) == _parse_quantity_exactly(text)


@pytest.mark.sqlite_only
def test_stored_moments_keep_their_text(session: Session) -> None:
    # Rows stored by earlier imports hold sqlite3's adapter text; a re-import compares equal.
    make_world(session)
    data = (HEADER + "a@alpha.example,api_calls,5,2026-11-02T10:30:00+01:00\n").encode()
    import_usage_csv(session, data, now=NOW, actor="t")
    stored = session.exec(text("SELECT occurred_at FROM usagerecord")).scalar_one()
    assert stored == "2026-11-02 09:30:00"
    again = import_usage_csv(session, data, now=NOW, actor="t")
    assert (again.imported, again.already_present) == (0, 1)
