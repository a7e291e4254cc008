"""Shared fixtures: real SQLite files (migrated once, copied per test) and app settings."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlalchemy.engine import Engine
from sqlmodel import Session

from billing_core.db import make_engine, migrate, session_scope
from billing_core.demo import seed_demo

# Cost Explorer peers (moto server, local stub) as fixtures: moto_ce, ce_stub.
pytest_plugins = ["tests.support.aws"]

ROOT = Path(__file__).resolve().parents[1]
# The demo world is seeded as of this moment in tests, so figures never depend on the clock.
DEMO_NOW = datetime(2026, 11, 21, 9, 0, tzinfo=UTC)


@pytest.fixture(scope="session")
def _template_dbs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("templates")
    empty = root / "empty.db"
    engine = make_engine(f"sqlite:///{empty}")
    migrate(engine)
    engine.dispose()
    demo = root / "demo.db"
    shutil.copy(empty, demo)
    engine = make_engine(f"sqlite:///{demo}")
    with session_scope(engine) as session:
        seed_demo(session, now=DEMO_NOW)
    engine.dispose()
    return {"empty": empty, "demo": demo}


def _copy_db(template: Path, tmp_path: Path) -> str:
    target = tmp_path / f"{template.stem}-copy.db"
    shutil.copy(template, target)
    return f"sqlite:///{target}"


@pytest.fixture
def db_url(_template_dbs: dict[str, Path], tmp_path: Path) -> str:
    """URL of a fresh, migrated, empty SQLite database file."""
    return _copy_db(_template_dbs["empty"], tmp_path)


@pytest.fixture
def demo_db_url(_template_dbs: dict[str, Path], tmp_path: Path) -> str:
    """URL of a fresh SQLite database holding the demo world (seeded at DEMO_NOW)."""
    return _copy_db(_template_dbs["demo"], tmp_path)


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
