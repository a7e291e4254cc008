"""Shared fixtures: real databases (migrated once, copied per test) and app settings.

SQLite files by default. With TEST_DATABASE_URL=postgresql+psycopg://user@host:port/postgres
(`make test-postgres` starts a throwaway server) every database fixture is a fresh PostgreSQL
database copied from a template instead, and tests marked `sqlite_only` are skipped.
"""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import NullPool, create_engine, text
from sqlalchemy.engine import Engine, make_url
from sqlmodel import Session

from billing_core.db import make_engine, migrate, session_scope
from billing_core.demo import seed_demo
from billing_core.demo.guard import DEMO_MARKER
from billing_core.models import SyncState

# Cost Explorer peers (moto server, local stub) as fixtures: moto_ce, ce_stub.
pytest_plugins = ["tests.support.aws"]

ROOT = Path(__file__).resolve().parents[1]
# The demo world is seeded as of this moment in tests, so figures never depend on the clock.
DEMO_NOW = datetime(2026, 11, 21, 9, 0, tzinfo=UTC)


def _unmark_demo(session: Session) -> None:
    # The shared test world is the demo world without its demo marker, so that tests can run
    # live-mode code on it (live mode refuses a marked database; tests/test_demo_guard.py
    # checks that refusal on databases seeded the way `make run` seeds them).
    marker = session.get(SyncState, DEMO_MARKER)
    if marker is not None:
        session.delete(marker)


class _SQLiteDatabases:
    """Templates are files migrated (and seeded) once; each test gets a copy."""

    backend = "sqlite"

    def __init__(self, root: Path) -> None:
        self.root = root
        self.templates: dict[str, Path] = {}

    def make_template(self, kind: str, seed: bool) -> None:
        path = self.root / f"{kind}.db"
        engine = make_engine(f"sqlite:///{path}")
        migrate(engine)
        if seed:
            with session_scope(engine) as session:
                seed_demo(session, now=DEMO_NOW)
                _unmark_demo(session)
        engine.dispose()
        self.templates[kind] = path

    def fresh(self, kind: str, tmp_path: Path) -> str:
        target = tmp_path / f"{kind}-copy.db"
        shutil.copy(self.templates[kind], target)
        return f"sqlite:///{target}"

    def blank(self, tmp_path: Path) -> str:
        return f"sqlite:///{tmp_path / 'blank.db'}"

    def drop(self, url: str) -> None:
        """Files live in tmp_path; pytest removes them."""

    def close(self) -> None:
        """Nothing to release."""


class _PostgresDatabases:
    """Templates are databases; each test gets `CREATE DATABASE ... TEMPLATE` (a fast copy)."""

    backend = "postgresql"

    def __init__(self, server_url: str) -> None:
        self.server = make_url(server_url)
        # One namespace per process so parallel runs (xdist workers, CI jobs) never collide.
        self.prefix = f"bt{os.getpid()}_{uuid.uuid4().hex[:6]}"
        self.admin = create_engine(self.server, isolation_level="AUTOCOMMIT", poolclass=NullPool)
        self.templates: dict[str, str] = {}
        self.created: list[str] = []
        self.counter = 0
        with self.admin.connect() as conn:
            version = int(conn.execute(text("SHOW server_version_num")).scalar_one())
        # FILE_COPY (PostgreSQL 15+) copies a small template about 3x faster than WAL_LOG.
        self.strategy = " STRATEGY FILE_COPY" if version >= 150000 else ""

    def _url(self, database: str) -> str:
        return self.server.set(database=database).render_as_string(hide_password=False)

    def _create(self, name: str, template: str | None = None) -> str:
        clause = f" TEMPLATE {template}{self.strategy}" if template else ""
        with self.admin.connect() as conn:
            conn.execute(text(f"CREATE DATABASE {name}{clause}"))
        self.created.append(name)
        return self._url(name)

    def make_template(self, kind: str, seed: bool) -> None:
        name = f"{self.prefix}_tmpl_{kind}"
        engine = make_engine(self._create(name))
        migrate(engine)
        if seed:
            with session_scope(engine) as session:
                seed_demo(session, now=DEMO_NOW)
                _unmark_demo(session)
        engine.dispose()  # a template must have no open connections to be copied
        self.templates[kind] = name

    def _next_name(self, kind: str) -> str:
        self.counter += 1
        return f"{self.prefix}_{kind}_{self.counter}"

    def fresh(self, kind: str, tmp_path: Path) -> str:
        return self._create(self._next_name(kind), template=self.templates[kind])

    def blank(self, tmp_path: Path) -> str:
        return self._create(self._next_name("blank"))

    def drop(self, url: str) -> None:
        name = make_url(url).database
        # FORCE: engines cached by Streamlit or left open by a failed test still hold sessions.
        with self.admin.connect() as conn:
            conn.execute(text(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
        if name in self.created:
            self.created.remove(name)

    def close(self) -> None:
        for name in list(self.created):
            self.drop(self._url(name))
        self.admin.dispose()


def _test_server_url() -> str:
    url = os.environ.get("TEST_DATABASE_URL", "").strip()
    if url and not url.startswith("postgresql"):
        raise pytest.UsageError(
            f"TEST_DATABASE_URL must be a postgresql+psycopg:// URL, not {url.split(':')[0]}:"
        )
    return url


# The backend the database fixtures use: "postgresql" when TEST_DATABASE_URL is set.
DB_BACKEND = "postgresql" if _test_server_url() else "sqlite"


@pytest.fixture(scope="session")
def _databases(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    server_url = _test_server_url()
    dbs: _SQLiteDatabases | _PostgresDatabases
    if server_url:
        dbs = _PostgresDatabases(server_url)
    else:
        dbs = _SQLiteDatabases(tmp_path_factory.mktemp("templates"))
    try:
        dbs.make_template("empty", seed=False)
        dbs.make_template("demo", seed=True)
        yield dbs
    finally:
        dbs.close()


@pytest.fixture
def db_backend() -> str:
    """ "sqlite" or "postgresql": which server the database fixtures point at."""
    return DB_BACKEND


@pytest.fixture
def db_url(_databases: Any, tmp_path: Path) -> Iterator[str]:
    """URL of a fresh, migrated, empty database (SQLite file, or PostgreSQL database)."""
    url = _databases.fresh("empty", tmp_path)
    yield url
    _databases.drop(url)


@pytest.fixture
def demo_db_url(_databases: Any, tmp_path: Path) -> Iterator[str]:
    """URL of a fresh database holding the demo world (seeded at DEMO_NOW)."""
    url = _databases.fresh("demo", tmp_path)
    yield url
    _databases.drop(url)


@pytest.fixture
def blank_db_url(_databases: Any, tmp_path: Path) -> Iterator[str]:
    """URL of a fresh database with no schema at all (for migration tests)."""
    url = _databases.blank(tmp_path)
    yield url
    _databases.drop(url)


@pytest.fixture
def engine(db_url: str) -> Iterator[Engine]:
    eng = make_engine(db_url)
    yield eng
    eng.dispose()


@pytest.fixture
def demo_engine(demo_db_url: str) -> Iterator[Engine]:
    eng = make_engine(demo_db_url)
    yield eng
    eng.dispose()


@pytest.fixture
def session(engine: Engine) -> Iterator[Session]:
    with session_scope(engine) as s:
        yield s


@pytest.fixture
def demo_session(demo_engine: Engine) -> Iterator[Session]:
    with session_scope(demo_engine) as s:
        yield s


@pytest.fixture
def app_env(monkeypatch: pytest.MonkeyPatch, demo_db_url: str, tmp_path: Path) -> dict[str, str]:
    """Environment for AppTest and CLI runs: demo database, no secrets file, demo mode.

    Streamlit caches settings and engines per process, so the caches are cleared here.
    """
    import streamlit as st

    env = {
        "DATABASE_URL": demo_db_url,
        "BILLING_MODE": "demo",
        "BILLING_SECRETS_FILE": str(tmp_path / "no-secrets.toml"),
    }
    for var in (
        "STRIPE_API_KEY",
        "STRIPE_API_BASE",
        "ADMIN_EMAILS",
        "VIEWER_EMAILS",
        "AUTH_PROXY_HEADER",
        "AWS_PROFILE",
        "AWS_ACCESS_KEY_ID",
    ):
        monkeypatch.delenv(var, raising=False)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    st.cache_resource.clear()
    st.cache_data.clear()
    return env


# --- markers: which tests run where ---------------------------------------------------------

CHROMIUM = Path(os.environ.get("CHROMIUM_PATH", "/usr/bin/chromium"))
BROWSER_DIR = ROOT / "tests" / "browser"


def pytest_report_header(config: pytest.Config) -> list[str]:
    where = _test_server_url()
    shown = make_url(where).render_as_string(hide_password=True) if where else "files in tmp"
    chromium = str(CHROMIUM) if CHROMIUM.exists() else "missing"
    return [f"database fixtures: {DB_BACKEND} ({shown}); chromium: {chromium}"]


def pytest_itemcollected(item: pytest.Item) -> None:
    # Marked as collected, so `-m "not browser"` deselects them too.
    if BROWSER_DIR in item.path.parents:
        item.add_marker(pytest.mark.browser)


@pytest.hookimpl(trylast=True)  # after `-m` deselection, so `-m "not browser"` needs no chromium
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if DB_BACKEND == "postgresql" and item.get_closest_marker("sqlite_only"):
            item.add_marker(pytest.mark.skip(reason="SQLite-specific; running on PostgreSQL"))
        if DB_BACKEND != "postgresql" and item.get_closest_marker("postgres"):
            item.add_marker(
                pytest.mark.skip(
                    reason="needs PostgreSQL: run `make test-postgres` or set TEST_DATABASE_URL"
                )
            )
    if CHROMIUM.exists() or not any(i.get_closest_marker("browser") for i in items):
        return
    if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
        # CI must never pass by skipping the browser tests.
        raise pytest.UsageError(
            f"Browser tests need chromium at {CHROMIUM} and it is missing on CI: "
            "install it with `apt-get install chromium` (.ci/run does)."
        )
    skip = pytest.mark.skip(reason=f"no chromium at {CHROMIUM} (apt-get install chromium)")
    for item in items:
        if item.get_closest_marker("browser"):
            item.add_marker(skip)
