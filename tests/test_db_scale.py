"""The database under several processes at once: replicas starting together, any backend."""

from __future__ import annotations

import subprocess
import sys

import pytest
from sqlalchemy import inspect, text

from billing_core.db import current_revisions, make_engine
from billing_core.errors import DatabaseError
from billing_core.models import Customer
from tests.conftest import ROOT

MIGRATE = "import sys; from billing_core.db import open_database; open_database(sys.argv[1])"


def test_replicas_starting_together_migrate_once(blank_db_url: str) -> None:
    # Three dashboards/cron jobs starting at the same moment on an empty database: each runs
    # migrations on start, and none may fail on a table another one just created.
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", MIGRATE, blank_db_url],
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(3)
    ]
    results = [(p.wait(timeout=120), p.stderr.read() if p.stderr else "") for p in procs]
    assert [code for code, _ in results] == [0, 0, 0], "\n".join(err for _, err in results)
    engine = make_engine(blank_db_url)
    assert current_revisions(engine)
    assert "invoice" in inspect(engine).get_table_names()
    engine.dispose()


@pytest.mark.postgres
def test_postgres_lock_wait_is_bounded_and_explained(
    db_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Another writer holds the customer table; a job must give up with a sentence, not hang.
    import billing_core.db as db

    monkeypatch.setattr(db, "POSTGRES_LOCK_TIMEOUT_MS", 300)
    holder = make_engine(db_url).connect()
    holder.execute(text("LOCK TABLE customer IN ACCESS EXCLUSIVE MODE"))
    fast = db.make_engine(db_url)
    try:
        locked = pytest.raises(DatabaseError, match=r"locked by another writer for 0.3 s")
        with locked, db.session_scope(fast) as session:
            session.add(Customer(name="B", email="b@x.example", currency="USD"))
    finally:
        holder.rollback()
        holder.close()
        fast.dispose()
    with db.session_scope(fast) as session:  # released: the same write now succeeds
        session.add(Customer(name="B", email="b@x.example", currency="USD"))
    fast.dispose()
