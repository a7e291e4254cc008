"""The demo world never becomes live books (issue 13, item 2).

`make run` seeds the demo into its own file; configuring credentials later (live mode) must not
turn it into real books: live mode refuses a database that holds the demo world, whatever the
command or page, and a demo database seeded before the marker existed is recognised too.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from alembic import command
from sqlalchemy import text
from sqlmodel import Session

from billing_core.db import _alembic_config, make_engine, migrate, session_scope
from billing_core.demo.guard import holds_demo_data
from billing_core.models import SyncState
from billing_core.periods import utcnow
from tests.conftest import ROOT


def _cli(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "billing_core", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


def test_live_mode_refuses_the_database_make_run_seeded(blank_db_url: str, tmp_path: Path) -> None:
    env = {
        "PATH": "/usr/bin:/bin",
        "DATABASE_URL": blank_db_url,
        "BILLING_SECRETS_FILE": str(tmp_path / "none.toml"),
        "BILLING_MODE": "demo",
    }
    assert _cli("seed-demo", env=env).returncode == 0
    live = {**env, "BILLING_MODE": "live"}
    for args in (["fetch-costs"], ["invoice-run", "--period", "2026-10"], ["costs-report"]):
        done = _cli(*args, env=live)
        assert done.returncode == 2, (args, done.stderr)
        assert "holds the demo world" in done.stderr
        assert "BILLING_MODE=demo" in done.stderr
    # Demo mode goes on working on it.
    assert _cli("costs-report", env=env).returncode == 0


def test_a_demo_database_from_before_the_marker_is_recognised(blank_db_url: str) -> None:
    # As a database seeded by an older release: schema before demo_1, a demo customer, no marker.
    engine = make_engine(blank_db_url)
    command.upgrade(_alembic_config(engine), "states_1")
    with engine.begin() as conn:
        conn.execute(
            text(
                "INSERT INTO customer (name, email, currency, collection_method, "
                "days_until_due, active, is_demo, created_at, updated_at) VALUES "
                "('Acme', 'acme@example.com', 'USD', 'charge_automatically', 30, true, true, "
                "'2026-01-01 00:00:00', '2026-01-01 00:00:00')"
            )
        )
    migrate(engine)
    with Session(engine) as session:
        assert holds_demo_data(session)
    engine.dispose()


def test_live_books_are_not_marked(db_url: str) -> None:
    engine = make_engine(db_url)
    with session_scope(engine) as session:
        assert not holds_demo_data(session)
        session.add(SyncState(name="install_id", value="abcd", updated_at=utcnow()))
    with Session(engine) as session:
        assert not holds_demo_data(session)
    engine.dispose()
