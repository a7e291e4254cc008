"""One definition of each total: the invoices page, the CSV export and the overview agree;
refunds, credits carried forward and past retry dates are shown for what they are."""

from __future__ import annotations

import csv
import io
from datetime import timedelta
from decimal import Decimal
from pathlib import Path

import pytest
from sqlmodel import Session, col, select

from billing_core.cli import main
from billing_core.invoicing.export_csv import write_invoices_csv
from billing_core.invoicing.figures import BILLED_STATUSES, OUTSTANDING_STATUSES, Figures
from billing_core.models import Customer, Invoice, display_status_in
from billing_core.money import display, minor_to_decimal
from billing_core.states import DisplayStatus, InvoiceOutcome, InvoiceStatus
from billing_core.views import invoices as inv
from billing_core.views.overview import build_overview
from tests.conftest import DEMO_NOW

FILTERS = [
    inv.InvoiceFilter(),
    inv.InvoiceFilter(period_from="2026-01", period_to="2026-06"),
    inv.InvoiceFilter(statuses=("void", "failed")),
    inv.InvoiceFilter(currencies=("EUR",), statuses=("paid", "refunded", "partially_refunded")),
    inv.InvoiceFilter(statuses=("credit",)),
]


def _csv(session: Session, f: inv.InvoiceFilter) -> tuple[list[dict[str, str]], object]:
    buffer = io.StringIO()
    summary = write_invoices_csv(session, f, buffer)
    return list(csv.DictReader(io.StringIO(buffer.getvalue()))), summary


def _sums_from_csv(rows: list[dict[str, str]]) -> dict[str, dict[str, Decimal]]:
    """The figures a spreadsheet gets from the exported columns, by the documented rules."""
    out: dict[str, dict[str, Decimal]] = {}
    for r in rows:
        s = out.setdefault(
            r["currency"], dict.fromkeys(("billed", "paid", "out", "ref"), Decimal(0))
        )
        total, paid = Decimal(r["total"]), Decimal(r["amount_paid"])
        s["billed"] += total if r["status"] in BILLED_STATUSES else 0
        s["out"] += total - paid if r["status"] in OUTSTANDING_STATUSES else 0
        s["paid"] += paid
        s["ref"] += Decimal(r["amount_refunded"])
    return out


def _refund_and_credit(session: Session) -> tuple[int, int]:
    """One fully and one partly refunded invoice, one credit carried forward (EUR)."""
    paid = session.exec(
        select(Invoice)
        .where(Invoice.currency == "EUR", display_status_in(["paid"]))
        .order_by(col(Invoice.id))
    ).all()
    paid[0].amount_refunded_minor = paid[0].amount_paid_minor
    paid[1].amount_refunded_minor = 1000
    customer = session.exec(select(Customer).where(Customer.currency == "EUR")).first()
    session.add_all([paid[0], paid[1]])
    session.add(
        Invoice(
            customer_id=customer.id,
            period="2026-11",
            currency="EUR",
            status=InvoiceStatus.DRAFT,
            outcome=InvoiceOutcome.CREDIT_CARRIED,
            subtotal_minor=-12_345,
            total_minor=-12_345,
        )
    )
    session.flush()
    return paid[0].id or 0, paid[1].id or 0


@pytest.mark.parametrize("selection", FILTERS, ids=lambda f: f.file_name("x"))
def test_page_figures_equal_the_csv_sums(demo_session: Session, selection) -> None:
    _refund_and_credit(demo_session)
    page = {h.currency: h for h in inv.headline_figures(demo_session, selection)}
    rows, summary = _csv(demo_session, selection)
    assert rows, "the filter selects something"
    sums = _sums_from_csv(rows)
    assert set(page) == set(sums) == set(summary.figures)
    for cur, h in page.items():
        money = {
            "billed": h.billed,
            "paid": h.paid,
            "out": h.outstanding,
            "ref": h.refunded,
        }
        assert {k: minor_to_decimal(v, cur) for k, v in money.items()} == sums[cur]
        assert summary.figures[cur] == h  # the CLI's summary is the page's figures


def test_billed_is_the_same_on_the_page_in_the_export_and_the_overview(
    demo_session: Session, tmp_path: Path, capsys, monkeypatch, demo_db_url: str
) -> None:
    last = str(DEMO_NOW.replace(day=1) - timedelta(days=1))[:7]
    month = inv.InvoiceFilter(period_from=last, period_to=last)
    page = {h.currency: h.billed for h in inv.headline_figures(demo_session, month)}
    assert build_overview(demo_session, DEMO_NOW).billed_last_month == page
    everything = {h.currency: h for h in inv.headline_figures(demo_session, inv.InvoiceFilter())}
    eur = everything["EUR"]
    assert eur.void > 0  # the demo has a void EUR invoice, which billed nothing
    for var in ("STRIPE_API_KEY", "STRIPE_API_BASE"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("BILLING_SECRETS_FILE", str(tmp_path / "none.toml"))
    monkeypatch.setenv("DATABASE_URL", demo_db_url)
    assert main(["export-invoices", "--out", str(tmp_path / "all.csv")]) == 0
    said = capsys.readouterr().out
    assert f"billed {display(eur.billed, 'EUR')}," in said, said
    assert display(eur.billed, "EUR") == "EUR 92,747.01"  # the figure: void left out


def test_refunded_invoices_show_as_refunded(demo_session: Session) -> None:
    whole, part = _refund_and_credit(demo_session)
    table = inv.invoice_table(demo_session, inv.InvoiceFilter())
    status = dict(zip(table["id"], table["status"], strict=True))
    assert (status[whole], status[part]) == ("refunded", "partially refunded")
    shown = inv.invoice_table(demo_session, inv.InvoiceFilter(statuses=("refunded",)))
    assert whole in set(shown["id"]) and set(shown["status"]) == {"refunded"}
    partly = inv.invoice_table(demo_session, inv.InvoiceFilter(statuses=("partially_refunded",)))
    assert part in set(partly["id"]) and set(partly["status"]) == {"partially refunded"}
    paid = inv.invoice_table(demo_session, inv.InvoiceFilter(statuses=("paid",)))
    assert {whole, part}.isdisjoint(set(paid["id"])) and set(paid["status"]) == {"paid"}
    rows, _ = _csv(demo_session, inv.InvoiceFilter(statuses=("refunded", "partially_refunded")))
    by_id = {int(r["invoice_id"]): r["status"] for r in rows}
    assert (by_id[whole], by_id[part]) == ("refunded", "partially_refunded")


def test_credit_can_be_filtered_charted_and_exported(
    demo_session: Session, demo_db_url: str, tmp_path: Path, monkeypatch
) -> None:
    _refund_and_credit(demo_session)
    demo_session.commit()
    credit = inv.InvoiceFilter(statuses=("credit",))
    assert "credit" in inv.STATUSES
    assert list(inv.invoice_table(demo_session, credit)["status"]) == ["credit"]
    [eur] = inv.headline_figures(demo_session, credit)
    assert (eur.credited, eur.billed, eur.outstanding) == (12_345, 0, 0)
    chart = inv.billed_chart(inv.monthly_billed(demo_session, inv.InvoiceFilter()))
    assert "credit" in {t.name for t in chart.data}
    for var in ("STRIPE_API_KEY", "STRIPE_API_BASE"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("BILLING_SECRETS_FILE", str(tmp_path / "none.toml"))
    monkeypatch.setenv("DATABASE_URL", demo_db_url)
    out = tmp_path / "credit.csv"
    assert main(["export-invoices", "--status", "credit", "--out", str(out)]) == 0
    [row] = list(csv.DictReader(out.open(encoding="utf-8-sig")))
    assert (row["status"], row["total"]) == ("credit", "-123.45")


def test_figures_follow_the_definition() -> None:
    f = Figures("EUR")
    f.add(DisplayStatus.PAID, total=100, paid=100)
    f.add(DisplayStatus.REFUNDED, total=50, paid=50, refunded=50)
    f.add(DisplayStatus.OPEN, total=70, paid=20)
    f.add(DisplayStatus.FAILED, total=30)
    f.add(DisplayStatus.UNCOLLECTIBLE, total=40)
    f.add(DisplayStatus.VOID, total=999)
    f.add(DisplayStatus.DRAFT, total=999)
    f.add(DisplayStatus.CREDIT, total=-25)
    assert (f.billed, f.paid, f.outstanding, f.refunded, f.credited) == (290, 170, 80, 50, 25)
    assert (f.open, f.failed, f.uncollectible, f.void, f.count) == (50, 30, 40, 999, 8)


def test_a_retry_date_in_the_past_is_not_shown_as_scheduled(demo_session: Session) -> None:
    failed = inv.InvoiceFilter(statuses=("failed",))
    invoices = demo_session.exec(select(Invoice).where(display_status_in(["failed"]))).all()
    assert all(i.next_payment_attempt < DEMO_NOW for i in invoices)  # the demo's are weeks old
    table = inv.invoice_table(demo_session, failed, now=DEMO_NOW)
    assert table["next_attempt"].isna().all()
    assert inv.retry_text(invoices[0], DEMO_NOW) == "No retry scheduled."
    soon = DEMO_NOW + timedelta(days=2)
    invoices[0].next_payment_attempt = soon
    demo_session.add(invoices[0])
    demo_session.flush()
    table = inv.invoice_table(demo_session, failed, now=DEMO_NOW)
    assert table["next_attempt"].notna().sum() == 1
    assert inv.retry_text(invoices[0], DEMO_NOW) == (
        f"Next automatic attempt: {soon:%Y-%m-%d %H:%M} UTC."
    )


def test_credited_invoices_show_their_credit_beside_stripes_status(demo_session: Session) -> None:
    # Stripe keeps a fully credited invoice `paid`; the list says it was credited, as the
    # invoice detail's credit notes section does, and a filter still matches the Stripe word.
    paid = demo_session.exec(
        select(Invoice)
        .where(Invoice.currency == "EUR", display_status_in(["paid"]))
        .order_by(col(Invoice.id))
    ).all()
    whole, part = paid[0], paid[1]
    whole.post_payment_credit_notes_minor = whole.total_minor
    part.post_payment_credit_notes_minor = 100
    demo_session.add_all([whole, part])
    demo_session.flush()
    table = inv.invoice_table(demo_session, inv.InvoiceFilter(statuses=("paid",)))
    status = dict(zip(table["id"], table["status"], strict=True))
    assert status[whole.id] == "paid · credited"
    assert status[part.id] == "paid · partially credited"
