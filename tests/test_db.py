import os
import sqlite3
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import pytest
from sqlalchemy import inspect, text
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, select

from billing_core.db import current_revisions, make_engine, migrate, open_database, session_scope
from billing_core.errors import ConfigError, DatabaseError
from billing_core.models import Customer, Invoice, StripeEvent, UsageRecord


def test_migrations_from_empty_and_rerun(blank_db_url: str) -> None:
    engine = make_engine(blank_db_url)
    migrate(engine)
    first = current_revisions(engine)
    tables = set(inspect(engine).get_table_names())
    migrate(engine)  # idempotent
    assert current_revisions(engine) == first and first
    expected = {
        "customer",
        "plan",
        "planmetric",
        "costline",
        "costsnapshot",
        "usagerecord",
        "invoice",
        "invoiceline",
        "invoicerun",
        "stripeevent",
        "reconciliationrun",
        "reconciliationdiff",
        "alert",
        "auditentry",
        "runlock",
        "exchangerate",
        "trueup",
    }
    assert expected <= tables
    engine.dispose()


@pytest.mark.sqlite_only
def test_sqlite_pragmas(engine) -> None:
    with engine.connect() as conn:
        assert conn.execute(text("PRAGMA journal_mode")).scalar() == "wal"
        assert conn.execute(text("PRAGMA foreign_keys")).scalar() == 1
        assert conn.execute(text("PRAGMA busy_timeout")).scalar() >= 5000


def _customer(session: Session, email: str = "a@x.example") -> Customer:
    c = Customer(name="A", email=email, currency="EUR")
    session.add(c)
    session.commit()
    return c


def test_one_invoice_per_customer_and_period(engine) -> None:
    with Session(engine) as s:
        c = _customer(s)
        s.add(Invoice(customer_id=c.id, period="2026-10", currency="EUR"))
        s.commit()
        s.add(Invoice(customer_id=c.id, period="2026-10", currency="EUR"))
        with pytest.raises(IntegrityError):
            s.commit()


def test_one_usage_record_per_idempotency_key(engine) -> None:
    with Session(engine) as s:
        c = _customer(s)
        now = datetime(2026, 10, 5, tzinfo=UTC)
        for _ in range(2):
            s.add(
                UsageRecord(
                    customer_id=c.id,
                    metric="seats",
                    quantity=Decimal(3),
                    occurred_at=now,
                    period="2026-10",
                    idempotency_key="k1",
                )
            )
        with pytest.raises(IntegrityError):
            s.commit()


def test_one_stored_event_per_stripe_event_id(engine) -> None:
    with Session(engine) as s:
        now = datetime(2026, 10, 5, tzinfo=UTC)
        s.add(StripeEvent(id="evt_1", type="invoice.paid", created=now, payload={}))
        s.commit()
    with Session(engine) as s:
        s.add(StripeEvent(id="evt_1", type="invoice.paid", created=now, payload={}))
        with pytest.raises(IntegrityError):
            s.commit()


def test_foreign_keys_enforced(engine) -> None:
    with Session(engine) as s:
        s.add(Invoice(customer_id=999, period="2026-10", currency="EUR"))
        with pytest.raises(IntegrityError):
            s.commit()


def test_exact_decimals_and_utc_round_trip(engine) -> None:
    with Session(engine) as s:
        c = _customer(s)
        when = datetime(2026, 10, 5, 12, 30, tzinfo=UTC)
        s.add(
            UsageRecord(
                customer_id=c.id,
                metric="gb",
                quantity=Decimal("0.000001"),
                occurred_at=when,
                period="2026-10",
                idempotency_key="k",
            )
        )
        s.commit()
    with Session(engine) as s:
        rec = s.exec(select(UsageRecord)).one()
        assert rec.quantity == Decimal("0.000001")
        assert rec.occurred_at == when and rec.occurred_at.tzinfo is not None


def test_float_and_excess_precision_refused(engine) -> None:
    with Session(engine) as s:
        c = _customer(s)
        s.add(
            UsageRecord(
                customer_id=c.id,
                metric="gb",
                quantity=0.1,  # type: ignore[arg-type]
                occurred_at=datetime(2026, 10, 5, tzinfo=UTC),
                period="2026-10",
                idempotency_key="k",
            )
        )
        with pytest.raises(Exception, match="float"):
            s.commit()


@pytest.mark.parametrize("url", ["not a url", "foo://x", "mysql+nodriver://u@h/db"])
def test_broken_database_url(url: str) -> None:
    with pytest.raises(ConfigError):
        open_database(url)


@pytest.mark.sqlite_only
@pytest.mark.skipif(os.geteuid() == 0, reason="root can write anywhere")
def test_unwritable_path(tmp_path: Path) -> None:
    locked = tmp_path / "ro"
    locked.mkdir()
    locked.chmod(0o500)
    with pytest.raises(DatabaseError, match="not writable"):
        open_database(f"sqlite:///{locked / 'billing.db'}")


@pytest.mark.sqlite_only
def test_uncreatable_path_is_clear() -> None:
    with pytest.raises(DatabaseError, match="Set DATABASE_URL"):
        open_database("sqlite:////proc/no/such/dir/billing.db")


@pytest.mark.sqlite_only
def test_not_a_database_file(tmp_path: Path) -> None:
    junk = tmp_path / "junk.db"
    junk.write_bytes(b"this is not sqlite" * 100)
    with pytest.raises(DatabaseError, match="Cannot use the database"):
        open_database(f"sqlite:///{junk}")


@pytest.mark.sqlite_only
def test_locked_database_is_explained(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import billing_core.db as db

    path = tmp_path / "busy.db"
    engine = open_database(f"sqlite:///{path}")
    monkeypatch.setattr(db, "SQLITE_BUSY_TIMEOUT_MS", 200)
    holder = sqlite3.connect(path)
    holder.execute("BEGIN EXCLUSIVE")
    try:
        fast = db.make_engine(f"sqlite:///{path}")
        with pytest.raises(DatabaseError, match="locked"), db.session_scope(fast) as s:
            s.add(Customer(name="B", email="b@x.example", currency="USD"))
    finally:
        holder.rollback()
        holder.close()
    engine.dispose()


@pytest.mark.sqlite_only
def test_lock_timeout_setting_sets_the_wait_and_the_sentence(tmp_path: Path) -> None:
    import time

    from billing_core.config import load_settings

    settings = load_settings(
        {"DATABASE_LOCK_TIMEOUT_SECONDS": "0.3"}, secrets_path=tmp_path / "none.toml"
    )
    assert settings.database_lock_timeout_seconds == 0.3
    path = tmp_path / "wait.db"
    engine = open_database(
        f"sqlite:///{path}", lock_timeout_seconds=settings.database_lock_timeout_seconds
    )
    with engine.connect() as conn:
        assert conn.execute(text("PRAGMA busy_timeout")).scalar() == 300
    holder = sqlite3.connect(path)
    holder.execute("BEGIN EXCLUSIVE")
    started = time.monotonic()
    try:
        with (
            pytest.raises(DatabaseError, match=r"locked by another writer for 0\.3 s"),
            session_scope(engine) as s,
        ):
            s.add(Customer(name="C", email="c@x.example", currency="USD"))
    finally:
        holder.rollback()
        holder.close()
    assert 0.25 <= time.monotonic() - started < 5
    engine.dispose()


def test_models_and_migrations_agree(engine) -> None:
    """A model change without a migration would break databases that hold real invoices."""
    from alembic.autogenerate import compare_metadata
    from alembic.runtime.migration import MigrationContext
    from sqlmodel import SQLModel

    with engine.connect() as conn:
        context = MigrationContext.configure(conn, opts={"compare_type": False})
        assert compare_metadata(context, SQLModel.metadata) == []
    assert current_revisions(engine) == {"rollup_1"}
