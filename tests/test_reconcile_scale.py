"""Reconciliation of a month with more invoices than the database takes bound parameters in
one statement: local invoices, lines and credit notes are selected by period, never by a list
of ids, and the findings are the same as for a small month (amounts, lines, credit notes of
that month only)."""

from __future__ import annotations

import sqlite3
from typing import Any

from sqlalchemy import event, insert
from sqlalchemy.engine import Engine

from billing_core.corrections.models import CreditNote
from billing_core.db import session_scope
from billing_core.models import Customer, Invoice, InvoiceLine
from billing_core.reconciliation.runs import reconcile_period
from billing_core.states import CreditNoteReason, CreditNoteStatus, InvoiceStatus, LineKind
from tests.support.stripe_server import StripeTestServer
from tests.test_reconcile import (  # noqa: F401
    PERIOD,
    SOURCE,
    diffs_of,
    reader_for,
    server,
    stripe_world,
)

N = 600
LIMIT = 500  # bound parameters per statement, below N (SQLite's default is far higher)


def _limit_parameters(engine: Engine) -> None:
    """Every new SQLite connection of `engine` takes at most LIMIT bound parameters."""
    if engine.dialect.name != "sqlite":
        return  # PostgreSQL's limit (65,535) cannot be lowered: the run is still checked

    @event.listens_for(engine, "connect")
    def _connect(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.setlimit(sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER, LIMIT)

    engine.dispose()  # connections made before the listener are not reused


def _credit_note(
    invoice_id: int, amount: int, status: CreditNoteStatus, customer_id: int | None = None
) -> dict[str, Any]:
    return {
        "invoice_id": invoice_id,
        "customer_id": customer_id or invoice_id,
        "currency": "EUR",
        "status": status,
        "reason": CreditNoteReason.ORDER_CHANGE,
        "amount_minor": amount,
        "pre_payment_minor": amount,
        "request_key": f"test-{invoice_id}-{status}",
        "created_by": "test",
    }


def test_a_month_of_more_invoices_than_bound_parameters_is_reconciled(
    engine: Engine,
    stripe_world: StripeTestServer,  # noqa: F811
) -> None:
    srv = stripe_world
    customers = [srv.create_customer_directly(email=f"s{i}@example.com") for i in range(N)]
    remote = []
    for i, cus in enumerate(customers):
        differs = 500 if i % 100 == 0 else 0  # 6 invoices differ in amount (and line)
        remote.append(
            srv.create_invoice_directly(
                cus["id"],
                1000 + i + differs,
                "eur",
                {"local_invoice_id": str(i + 1), "period": str(PERIOD)},
                description="Fee",
            )["id"]
        )
    # Invoice 6 is credited 300 both here and in Stripe: no difference.
    reader = reader_for(srv)
    reader.request(
        "post",
        "/v1/credit_notes",
        {"invoice": remote[5], "amount": 300},
        key="scale-cn-6",
        doing="crediting invoice 6 in Stripe",
    )
    with session_scope(engine) as s:
        s.execute(
            insert(Customer),
            [
                {
                    "id": i + 1,
                    "name": f"S{i}",
                    "email": f"s{i}@example.com",
                    "currency": "EUR",
                    "stripe_customer_id": c["id"],
                }
                for i, c in enumerate(customers)
            ],
        )
        rows = [
            {
                "id": i + 1,
                "customer_id": i + 1,
                "period": str(PERIOD),
                "currency": "EUR",
                "status": InvoiceStatus.OPEN,
                "total_minor": 1000 + i,
                "push_step": "finalized",
                "stripe_invoice_id": remote[i],
            }
            for i in range(N)
        ]
        # Another month's invoice with an issued credit note: not this month's difference.
        rows.append(
            {
                "id": N + 1,
                "customer_id": 1,
                "period": str(PERIOD.previous()),
                "currency": "EUR",
                "status": InvoiceStatus.OPEN,
                "total_minor": 999,
                "push_step": "finalized",
            }
        )
        s.execute(insert(Invoice), rows)
        s.execute(
            insert(InvoiceLine),
            [
                {
                    "invoice_id": i + 1,
                    "kind": LineKind.BASE_FEE,
                    "description": "Fee",
                    "amount_minor": 1000 + i,
                }
                for i in range(N + 1)
            ],
        )
        s.execute(
            insert(CreditNote),
            [
                _credit_note(6, 300, CreditNoteStatus.ISSUED),  # also in Stripe
                _credit_note(8, 200, CreditNoteStatus.ISSUED),  # only here: a difference
                _credit_note(10, 400, CreditNoteStatus.VOID),  # voided: no longer counts
                # The previous month's invoice: not this month's credit.
                _credit_note(N + 1, 100, CreditNoteStatus.ISSUED, customer_id=1),
            ],
        )
    _limit_parameters(engine)

    result = reconcile_period(engine, PERIOD, source=SOURCE, reader=reader)

    assert result.status == "complete", result.error
    assert result.counts["invoices_local"] == result.counts["invoices_stripe"] == N
    assert result.stripe_requests == 1 + N // 100  # the credit note, then the pages
    found = {(d.kind, d.subject, d.delta_minor) for d in diffs_of(engine)}
    differing = range(1, N + 1, 100)
    assert found == (
        {("amount", f"invoice:{i}", 500) for i in differing}
        | {("line", f"invoice:{i}:line:Fee", 500) for i in differing}
        | {("credit_notes", "invoice:8", -200)}
    )
