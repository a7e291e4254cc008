"""An invoice keeps the bill-to details it was issued with: renaming a customer rewrites no
history (pages, CSV exports, reconciliation text), while new drafts carry the new name."""

from __future__ import annotations

import csv
import io

from alembic import command
from sqlalchemy import text
from sqlmodel import Session, col, select

from billing_core.db import _alembic_config, make_engine, migrate
from billing_core.demo.costs import DEMO_COST_SOURCE
from billing_core.invoicing.drafts import build_drafts, save_drafts
from billing_core.invoicing.export_csv import write_invoices_csv, write_lines_csv
from billing_core.models import Customer, Invoice, ReconciliationDiff
from billing_core.periods import Period, previous_period
from billing_core.reconciliation.runs import open_diff_lines
from billing_core.stripe.mapping import mirror_invoice, parse_invoice
from billing_core.views import invoice_run as invoice_run_view
from billing_core.views import invoices as inv
from billing_core.views import reconciliation as recon_view
from tests.conftest import DEMO_NOW
from tests.test_migration_states import _insert_old_rows, _rows


def _csv(session: Session, writer, f: inv.InvoiceFilter) -> list[dict[str, str]]:
    buffer = io.StringIO()
    writer(session, f, buffer)
    return list(csv.DictReader(io.StringIO(buffer.getvalue())))


def test_renaming_a_customer_keeps_the_name_on_past_invoices(demo_session: Session) -> None:
    s = demo_session
    past = s.exec(select(Invoice).order_by(col(Invoice.id))).first()
    assert past is not None
    customer = s.get(Customer, past.customer_id)
    old_name, old_email = customer.name, customer.email
    assert past.customer_name == old_name and past.customer_email == old_email
    s.add(
        ReconciliationDiff(
            period=past.period,
            kind="amount",
            subject=f"invoice:{past.id}",
            customer_id=customer.id,
            invoice_id=past.id,
            currency=past.currency,
            local_value="1.00",
            remote_value="2.00",
            delta_minor=100,
        )
    )
    customer.name, customer.email = "Renamed Holdings Ltd", "ap@renamed.example"
    s.add(customer)
    s.flush()

    mine = inv.InvoiceFilter(customer_ids=(customer.id,))
    table = inv.invoice_table(s, mine)
    assert set(table["customer"]) == {old_name}
    assert inv.invoice_detail(s, past.id).customer == old_name
    assert {r["customer"] for r in _csv(s, write_invoices_csv, mine)} == {old_name}
    assert {r["customer"] for r in _csv(s, write_lines_csv, mine)} == {old_name}
    lines = [t for t in open_diff_lines(s, past.period) if past.number in t]
    assert lines and all(old_name in t and "Renamed" not in t for t in lines)
    shown = recon_view.diff_frame(s, DEMO_NOW, period=past.period)
    assert shown[shown["key"] == f"invoice:{past.id}"]["customer"].tolist() == [old_name]
    labels = [d.label for d in recon_view.resolvable(s, past.period)]
    assert any(f"amount {old_name}" in label for label in labels)
    assert past.customer_email == old_email

    # The next month's draft is issued to the customer as it is now.
    period = previous_period(DEMO_NOW)
    drafts = build_drafts(s, period, source=DEMO_COST_SOURCE, customer_id=customer.id)
    [new_id] = save_drafts(s, drafts, run_id=None)
    new = s.get(Invoice, new_id)
    assert (new.customer_name, new.customer_email) == ("Renamed Holdings Ltd", "ap@renamed.example")
    names = set(inv.invoice_table(s, mine)["customer"])
    assert names == {old_name, "Renamed Holdings Ltd"}
    run_results = invoice_run_view.results_frame(s, Period.parse(past.period))
    assert old_name in set(run_results["customer"])


def test_address_and_tax_ids_are_kept_from_stripe_once(demo_session: Session) -> None:
    invoice = demo_session.exec(select(Invoice)).first()
    remote = {
        "id": "in_1",
        "status": "open",
        "customer_address": {
            "line1": "1 Quay St",
            "city": "Dublin",
            "country": "IE",
            "state": None,
        },
        "customer_tax_ids": [{"type": "eu_vat", "value": "IE1234567T"}],
    }
    mirror_invoice(invoice, parse_invoice(remote), DEMO_NOW)
    assert invoice.customer_address == {"line1": "1 Quay St", "city": "Dublin", "country": "IE"}
    assert invoice.customer_tax_ids == [{"type": "eu_vat", "value": "IE1234567T"}]
    later = {**remote, "customer_address": {"line1": "elsewhere"}, "customer_tax_ids": []}
    mirror_invoice(invoice, parse_invoice(later), DEMO_NOW)
    assert invoice.customer_address["line1"] == "1 Quay St"  # history is not rewritten
    assert invoice.customer_tax_ids == [{"type": "eu_vat", "value": "IE1234567T"}]


def test_migration_backfills_bill_to_from_the_customer(blank_db_url: str) -> None:
    engine = make_engine(blank_db_url)
    cfg = _alembic_config(engine)
    command.upgrade(cfg, "demo_1")
    _insert_old_rows(engine)
    migrate(engine)
    assert set(_rows(engine, "customer_name", "customer_email")) == {("Old", "old@example.com")}
    with engine.begin() as conn:
        conn.execute(text("UPDATE customer SET name = 'New'"))
    assert set(_rows(engine, "customer_name")) == {("Old",)}
    command.downgrade(cfg, "demo_1")
    engine.dispose()
