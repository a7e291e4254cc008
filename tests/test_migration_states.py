"""The states_1 revision: old-style invoice rows (status failed / credit) move to the outcome."""

from typing import Any

from alembic import command
from sqlalchemy import text
from sqlalchemy.engine import Engine
from sqlmodel import col, select

from billing_core.db import (
    _alembic_config,
    make_engine,
    migrate,
    session_scope,
)
from billing_core.models import Invoice

# (status before, push step) -> (status, outcome) after the upgrade.
OLD_ROWS = [
    ("paid", "paid", "paid", None),
    ("open", "finalized", "open", None),
    ("failed", "finalized", "open", "payment_failed"),
    ("failed", "none", "draft", "payment_failed"),
    ("credit", "none", "draft", "credit_carried"),
    ("void", "finalized", "void", None),
    ("draft", "none", "draft", None),
]


def _insert_old_rows(engine: Engine) -> None:
    with engine.begin() as conn:
        conn.execute(
            text(
                "INSERT INTO customer (name, email, currency, collection_method, "
                "days_until_due, active, is_demo, created_at, updated_at) VALUES "
                "('Old', 'old@example.com', 'USD', 'charge_automatically', 30, true, false, "
                "'2026-01-01 00:00:00', '2026-01-01 00:00:00')"
            )
        )
        cid = conn.execute(text("SELECT id FROM customer")).scalar_one()
        for n, (status, step, _, _) in enumerate(OLD_ROWS, 1):
            conn.execute(
                text(
                    "INSERT INTO invoice (customer_id, period, currency, status, subtotal_minor, "
                    "tax_minor, total_minor, amount_paid_minor, amount_refunded_minor, "
                    "cost_currency, costs_estimated, collection_method, push_step, "
                    "attempt_count, pay_attempt, is_demo, created_at, updated_at) VALUES "
                    "(:cid, :period, 'USD', :status, 100, 0, 100, 0, 0, 'USD', false, "
                    "'charge_automatically', :step, 0, 0, false, "
                    "'2026-01-01 00:00:00', '2026-01-01 00:00:00')"
                ),
                {"cid": cid, "period": f"2025-{n:02d}", "status": status, "step": step},
            )


def _rows(engine: Engine, *columns: str) -> list[tuple[Any, ...]]:
    with engine.connect() as conn:
        query = f"SELECT {', '.join(columns)} FROM invoice ORDER BY period"
        return [tuple(r) for r in conn.execute(text(query)).all()]


def test_old_rows_upgrade_to_status_and_outcome_and_back(blank_db_url: str) -> None:
    engine = make_engine(blank_db_url)
    cfg = _alembic_config(engine)
    command.upgrade(cfg, "0002")
    _insert_old_rows(engine)

    migrate(engine)
    assert _rows(engine, "status", "outcome") == [(s, o) for _, _, s, o in OLD_ROWS]
    with session_scope(engine) as session:
        shown = [
            i.display_status for i in session.exec(select(Invoice).order_by(col(Invoice.period)))
        ]
    assert shown == [old for old, _, _, _ in OLD_ROWS]  # people see the same words as before

    command.downgrade(cfg, "0002")
    assert _rows(engine, "status") == [(old,) for old, _, _, _ in OLD_ROWS]
    engine.dispose()
