"""Gross margin (invoicing/margin.py) and `margin-report`: hand-computed figures on a small
world, and agreement to the cent with `export-invoices` and `costs-report` on the demo."""

from __future__ import annotations

import csv
import io
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import pytest
from sqlmodel import Session

from billing_core.cli import main
from billing_core.costs.rollups import write_rollups
from billing_core.costs.snapshots import CostSource
from billing_core.invoicing.figures import BILLED_STATUSES
from billing_core.invoicing.margin import grouped, margin_facts, totals
from billing_core.invoicing.margin_report import margin_csv, report_periods
from billing_core.models import (
    CostLine,
    CostSnapshot,
    Customer,
    CustomerAccount,
    Invoice,
    InvoiceLine,
)
from billing_core.periods import Period
from billing_core.states import InvoiceOutcome, InvoiceStatus, LineKind
from tests.support.csv_rows import CRLF, LF, LONE_CR, as_dicts, both_readers, read_back

SOURCE = CostSource("UnblendedCost", "LINKED_ACCOUNT")
SEP = Period(2026, 9)
OCT = Period(2026, 10)


def add_snapshot(session: Session, period: Period, rows: list[tuple[str, str, str, str]]) -> int:
    """rows: (account, service, record type, USD amount)."""
    snap = CostSnapshot(
        period=str(period),
        granularity="MONTHLY",
        group_by="LINKED_ACCOUNT",
        metric="UnblendedCost",
        fetched_at=period.end_at.replace(day=5),
    )
    session.add(snap)
    session.flush()
    for account, service, record_type, amount in rows:
        session.add(
            CostLine(
                snapshot_id=snap.id or 0,
                period=str(period),
                day=period.start.isoformat(),
                account_id=account,
                service=service,
                record_type=record_type,
                amount=Decimal(amount),
            )
        )
    session.flush()
    write_rollups(session, [snap.id or 0])
    return snap.id or 0


def add_customer(session: Session, name: str, currency: str, account: str) -> int:
    c = Customer(name=name, email=f"{name.lower()}@example.com", currency=currency)
    session.add(c)
    session.flush()
    session.add(CustomerAccount(customer_id=c.id or 0, account_id=account))
    return c.id or 0


def add_invoice(
    session: Session,
    customer_id: int,
    period: Period,
    currency: str,
    lines: list[tuple[LineKind, str | None, int]],
    *,
    status: InvoiceStatus = InvoiceStatus.PAID,
    outcome: InvoiceOutcome | None = None,
    fx_rate: str | None = None,
) -> int:
    total = sum(amount for _k, _s, amount in lines)
    inv = Invoice(
        customer_id=customer_id,
        period=str(period),
        currency=currency,
        status=status,
        outcome=outcome,
        total_minor=total,
        subtotal_minor=total,
        amount_paid_minor=total if status == InvoiceStatus.PAID else 0,
        fx_rate=Decimal(fx_rate) if fx_rate else None,
        issued_at=datetime(2026, 10, 3, tzinfo=UTC),
    )
    session.add(inv)
    session.flush()
    for pos, (kind, service, amount) in enumerate(lines):
        session.add(
            InvoiceLine(
                invoice_id=inv.id or 0,
                position=pos,
                kind=kind,
                description=str(kind),
                service=service,
                amount_minor=amount,
            )
        )
    session.flush()
    return inv.id or 0


@pytest.fixture
def world(session: Session) -> dict[str, int]:
    """September: Aster (EUR at 0.9, paid), Basalt (USD, open), Cedar (USD, void: not billed),
    and the company's own account (unattributed)."""
    aster = add_customer(session, "Aster", "EUR", "111111111111")
    basalt = add_customer(session, "Basalt", "USD", "222222222222")
    cedar = add_customer(session, "Cedar", "USD", "333333333333")
    add_snapshot(
        session,
        SEP,
        [
            ("111111111111", "Amazon EC2", "Usage", "100.00"),
            ("111111111111", "Amazon S3", "Usage", "20.00"),
            ("111111111111", "Amazon EC2", "Credit", "-10.00"),
            ("222222222222", "Amazon EC2", "Usage", "200.50"),
            ("333333333333", "Amazon EC2", "Usage", "50.00"),
            ("999999999999", "Amazon EC2", "Usage", "30.00"),
        ],
    )
    add_invoice(
        session,
        aster,
        SEP,
        "EUR",
        [
            (LineKind.BASE_FEE, None, 5000),
            (LineKind.AWS, "Amazon EC2", 11880),
            (LineKind.AWS, "Amazon S3", 2376),
            (LineKind.AWS, "Credit", -990),
            (LineKind.OVERAGE, None, 1500),
            (LineKind.TRUE_UP, None, 250),
            (LineKind.CREDIT, None, -100),
        ],
        fx_rate="0.9",
    )
    add_invoice(
        session,
        basalt,
        SEP,
        "USD",
        [(LineKind.BASE_FEE, None, 10000), (LineKind.AWS, "Amazon EC2", 22055)],
        status=InvoiceStatus.OPEN,
    )
    add_invoice(
        session,
        cedar,
        SEP,
        "USD",
        [(LineKind.BASE_FEE, None, 10000), (LineKind.AWS, "Amazon EC2", 5500)],
        status=InvoiceStatus.VOID,
    )
    return {"aster": aster, "basalt": basalt, "cedar": cedar}


def test_margin_by_customer_hand_computed(session: Session, world: dict[str, int]) -> None:
    facts = margin_facts(session, [SEP], SOURCE)
    rows = grouped(facts, "customer")
    assert set(rows) == {"EUR", "USD"}  # never summed across currencies
    (aster,) = rows["EUR"]
    assert aster.key == "Aster" and aster.ref == str(world["aster"])
    assert aster.revenue_parts == {
        "base_fees": 5000,
        "aws_resale": 11880 + 2376 - 990,
        "usage_overage": 1500,
        "adjustments": 250 - 100,
        "credit_notes": 0,
    }
    assert aster.revenue == Decimal("199.16")
    assert aster.cost_usd == Decimal("110.00")  # 100 + 20 - 10, at cost
    assert aster.cost == Decimal("99.0000")  # at the invoice's own rate 0.9
    assert aster.margin == Decimal("100.16")
    assert aster.margin_pct == Decimal("100.16") / Decimal("199.16") * 100
    (basalt,) = rows["USD"]  # Cedar's void invoice is not billed
    assert basalt.revenue_minor == 32055
    assert basalt.cost_usd == basalt.cost == Decimal("200.50")
    assert basalt.margin == Decimal("120.05")
    assert basalt.invoices == 1


def test_month_cost_adds_up_to_the_snapshot(session: Session, world: dict[str, int]) -> None:
    facts = margin_facts(session, [SEP], SOURCE)
    month = facts.months[str(SEP)]
    assert month.billed_usd == {"EUR": Decimal("110.00"), "USD": Decimal("200.50")}
    assert month.not_billed_usd == Decimal("50.00")  # Cedar: void
    assert month.unattributed_usd == Decimal("30.00")
    assert month.total_usd == Decimal("390.50")
    assert sum(month.billed_usd.values()) + month.not_billed_usd + month.unattributed_usd == (
        month.total_usd
    )


def test_by_service_and_by_month_sum_to_the_same_totals(
    session: Session, world: dict[str, int]
) -> None:
    facts = margin_facts(session, [SEP], SOURCE)
    by_customer = totals(grouped(facts, "customer"))
    for by in ("month", "service"):
        other = totals(grouped(facts, by))  # type: ignore[arg-type]
        for cur in ("EUR", "USD"):
            assert other[cur].revenue_minor == by_customer[cur].revenue_minor
            assert other[cur].cost == by_customer[cur].cost
            assert other[cur].invoices == by_customer[cur].invoices
    services = {m.key: m for m in grouped(facts, "service")["EUR"]}
    ec2 = services["Amazon EC2"]
    assert ec2.revenue_minor == 11880 and ec2.cost_usd == Decimal("100.00")
    assert services["Credit"].cost_usd == Decimal("-10.00")
    assert services["Base fees"].revenue_minor == 5000 and services["Base fees"].cost == 0
    assert services["Usage overage"].revenue_minor == 1500
    assert services["Adjustments"].revenue_minor == 150


def test_one_customer_only(session: Session, world: dict[str, int]) -> None:
    facts = margin_facts(session, [SEP], SOURCE, customer_ids=[world["aster"]])
    assert list(grouped(facts, "month")) == ["EUR"]
    assert facts.months[str(SEP)].total_usd == Decimal("110.00")


def test_csv_is_exact(session: Session, world: dict[str, int]) -> None:
    rows = list(
        csv.DictReader(io.StringIO(margin_csv(margin_facts(session, [SEP], SOURCE), "customer")))
    )
    aster = next(r for r in rows if r["customer"] == "Aster")
    assert aster["revenue"] == "199.16"
    assert aster["aws_cost_usd"] == "110.00"
    assert aster["aws_cost"] == "99.00"
    assert aster["gross_margin"] == "100.16"
    assert aster["customer_id"] == str(world["aster"])


def test_report_periods() -> None:
    last = OCT
    assert report_periods(None, None, None, last=last) == [OCT]
    assert report_periods(SEP, None, None, last=last) == [SEP]
    assert report_periods(None, Period(2026, 8), None, last=last) == [Period(2026, 8), SEP, OCT]
    assert report_periods(None, None, SEP, last=last) == [SEP]


# --- agreement with export-invoices and costs-report on the demo -------------------------


def _run(args: list[str], capsys: pytest.CaptureFixture[str]) -> str:
    code = main(args)
    out, err = capsys.readouterr()
    assert code == 0, err
    return out


@pytest.mark.parametrize("period", ["2026-08", "2026-09"])
def test_report_agrees_with_export_invoices_and_costs_report(
    app_env: dict[str, str], tmp_path: Path, capsys: pytest.CaptureFixture[str], period: str
) -> None:
    text = _run(["margin-report", "--period", period, "--by", "customer", "--csv"], capsys)
    rows = list(csv.DictReader(io.StringIO(text)))
    assert rows
    # Revenue per currency equals the billed invoices' totals in the accounting export.
    out = tmp_path / "inv.csv"
    args = ["export-invoices", "--period", period, "--out", str(out)]
    for status in BILLED_STATUSES:
        args += ["--status", str(status)]
    _run(args, capsys)
    exported: dict[str, Decimal] = {}
    with out.open(encoding="utf-8-sig") as handle:
        for inv in csv.DictReader(handle):
            exported[inv["currency"]] = exported.get(inv["currency"], Decimal(0)) + Decimal(
                inv["total"]
            )
    revenue: dict[str, Decimal] = {}
    for row in rows:
        revenue[row["currency"]] = revenue.get(row["currency"], Decimal(0)) + Decimal(
            row["revenue"]
        )
        parts = sum(
            Decimal(row[p])
            for p in ("base_fees", "aws_resale", "usage_overage", "adjustments", "credit_notes")
        )
        assert parts == Decimal(row["revenue"])
    assert revenue == exported
    # AWS cost per customer equals the costs report's, and with the rest the account total.
    costs = _run(["costs-report", "--period", period, "--by", "customer", "--csv"], capsys)
    by_customer = {r["customer"]: Decimal(r["amount"]) for r in csv.DictReader(io.StringIO(costs))}
    for row in rows:
        assert Decimal(row["aws_cost_usd"]) == by_customer[row["customer"]], row["customer"]
    text = _run(["margin-report", "--period", period], capsys)
    total = sum(by_customer.values(), Decimal(0))
    unattributed = by_customer.get("Unattributed", Decimal(0))
    billed = sum((Decimal(r["aws_cost_usd"]) for r in rows), Decimal(0))
    assert billed + unattributed == total  # every demo customer was billed
    assert f"unattributed USD {unattributed:,.2f} = USD {total:,.2f}" in text


def test_report_text_names_the_basis(app_env: dict[str, str], capsys) -> None:
    text = _run(["margin-report", "--from", "2026-08", "--to", "2026-10"], capsys)
    assert "AWS cost at cost (before markup" in text
    assert "2026-10: not billed USD" in text  # the last closed month is not invoiced yet
    assert "EUR" in text and "USD" in text


def test_report_text_has_each_column_once(app_env: dict[str, str], capsys) -> None:
    text = _run(["margin-report", "--from", "2026-08", "--to", "2026-10"], capsys)
    headers = [line.split() for line in text.splitlines() if line.startswith("month ")]
    assert headers, text
    for words in headers:
        joined = " ".join(words)
        assert joined.count("AWS cost USD") == 1, joined


def test_report_defaults_to_the_last_month_with_invoices(
    app_env: dict[str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    # The demo world bills up to 2026-09; the months after it closed are not invoiced yet, so
    # the default report is September's, not an all-"not billed" month.
    text = _run(["margin-report", "--csv", "--by", "month"], capsys)
    months = {r["month"] for r in csv.DictReader(io.StringIO(text))}
    assert months == {"2026-09"}, text


def test_csv_line_breaks_in_names_keep_one_row_per_customer(
    session: Session, world: dict[str, int]
) -> None:
    for key, name in (("aster", LONE_CR), ("basalt", CRLF), ("cedar", LF)):
        customer = session.get(Customer, world[key])
        assert customer is not None
        customer.name = name
    session.flush()
    facts = margin_facts(session, [SEP], SOURCE)
    text = margin_csv(facts, "customer")
    expected = sum(len(rows) for rows in grouped(facts, "customer").values())
    rows = as_dicts(both_readers(text, expected))  # a bare "\r" would split a row for either reader
    assert "\r" not in text
    by_id = {r["customer_id"]: r for r in rows}
    aster, basalt = by_id[str(world["aster"])], by_id[str(world["basalt"])]
    assert (aster["customer"], aster["revenue"], aster["gross_margin"]) == (
        read_back(LONE_CR),
        "199.16",
        "100.16",
    )
    assert (basalt["customer"], basalt["currency"]) == (read_back(CRLF), "USD")
