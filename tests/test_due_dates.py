"""Invoices carry a due date: Stripe's `due_date` when sent for payment, the attempt date when
charged automatically; older rows are backfilled by the migration."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from alembic import command
from sqlalchemy import text

from billing_core.db import _alembic_config, make_engine, migrate
from billing_core.models import Invoice
from billing_core.stripe.mapping import mirror_invoice, parse_invoice
from tests.test_migration_states import _rows

FINALIZED = datetime(2026, 11, 3, 6, 0, tzinfo=UTC)
DUE = datetime(2026, 12, 3, 6, 0, tzinfo=UTC)


def _remote(method: str, due: datetime | None) -> dict[str, object]:
    return {
        "id": "in_due",
        "object": "invoice",
        "status": "open",
        "currency": "usd",
        "total": 1000,
        "collection_method": method,
        "due_date": int(due.timestamp()) if due else None,
        "status_transitions": {"finalized_at": int(FINALIZED.timestamp())},
        "metadata": {},
        "lines": {"data": [], "has_more": False},
    }


def test_send_invoice_is_due_on_stripes_due_date() -> None:
    invoice = Invoice(customer_id=1, period="2026-10", currency="USD")
    mirror_invoice(invoice, parse_invoice(_remote("send_invoice", DUE)), FINALIZED)
    assert invoice.issued_at == FINALIZED
    assert invoice.due_at == DUE


def test_charged_automatically_is_due_when_attempted() -> None:
    invoice = Invoice(customer_id=1, period="2026-10", currency="USD")
    mirror_invoice(invoice, parse_invoice(_remote("charge_automatically", None)), FINALIZED)
    assert invoice.due_at == FINALIZED


def test_a_draft_has_no_due_date_yet() -> None:
    invoice = Invoice(customer_id=1, period="2026-10", currency="USD")
    draft = {**_remote("charge_automatically", None), "status": "draft", "status_transitions": {}}
    mirror_invoice(invoice, parse_invoice(draft), FINALIZED)
    assert invoice.due_at is None


def test_migration_backfills_due_dates(blank_db_url: str) -> None:
    engine = make_engine(blank_db_url)
    cfg = _alembic_config(engine)
    command.upgrade(cfg, "0003")
    with engine.begin() as conn:
        for email, method in (
            ("a@example.com", "charge_automatically"),
            ("b@example.com", "send_invoice"),
        ):
            conn.execute(
                text(
                    "INSERT INTO customer (name, email, currency, collection_method, "
                    "days_until_due, active, is_demo, version, created_at, updated_at) VALUES "
                    "(:email, :email, 'USD', :method, 14, true, false, 1, "
                    "'2026-01-01 00:00:00', '2026-01-01 00:00:00')"
                ),
                {"email": email, "method": method},
            )
            cid = conn.execute(
                text("SELECT id FROM customer WHERE email = :email"), {"email": email}
            ).scalar_one()
            for period, issued in (("2026-09", "2026-10-03 06:00:00"), ("2026-10", None)):
                conn.execute(
                    text(
                        "INSERT INTO invoice (customer_id, period, currency, status, "
                        "subtotal_minor, tax_minor, total_minor, amount_paid_minor, "
                        "amount_refunded_minor, cost_currency, costs_estimated, "
                        "collection_method, push_step, attempt_count, pay_attempt, "
                        "key_generation, is_demo, issued_at, created_at, updated_at) VALUES "
                        "(:cid, :period, 'USD', 'open', 100, 0, 100, 0, 0, 'USD', false, "
                        ":method, 'finalized', 0, 0, 0, false, :issued, "
                        "'2026-01-01 00:00:00', '2026-01-01 00:00:00')"
                    ),
                    {"cid": cid, "period": period, "method": method, "issued": issued},
                )
    migrate(engine)
    due = {
        (method, period): value
        for method, period, value in _rows(engine, "collection_method", "period", "due_at")
    }
    issued = datetime(2026, 10, 3, 6, 0)

    def as_naive(value: object) -> object:
        return datetime.fromisoformat(value) if isinstance(value, str) else value

    assert as_naive(due[("charge_automatically", "2026-09")]) == issued
    assert as_naive(due[("send_invoice", "2026-09")]) == issued + timedelta(days=14)
    assert due[("charge_automatically", "2026-10")] is None  # not issued: not due
    assert due[("send_invoice", "2026-10")] is None
    command.downgrade(cfg, "0003")
    engine.dispose()
