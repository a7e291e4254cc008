"""Database access: engine with safe SQLite settings, migrations on start, sessions."""

from __future__ import annotations

import logging
import os
import weakref
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import event, text
from sqlalchemy.engine import URL, Connection, Engine, make_url
from sqlalchemy.exc import ArgumentError, NoSuchModuleError, OperationalError, SQLAlchemyError
from sqlalchemy.exc import DatabaseError as SADatabaseError
from sqlmodel import Session, create_engine

from billing_core.errors import ConfigError, DatabaseError

log = logging.getLogger(__name__)

MIGRATIONS_DIR = Path(__file__).resolve().parent / "migrations"
# Writers wait this long for a lock before failing (cron and the dashboard share the file);
# the DATABASE_LOCK_TIMEOUT_SECONDS setting overrides it.
SQLITE_BUSY_TIMEOUT_MS = 15_000
# PostgreSQL waits forever for a lock by default; a cron job stuck behind another writer
# should fail with a sentence instead, after the same wait as on SQLite (same setting).
POSTGRES_LOCK_TIMEOUT_MS = SQLITE_BUSY_TIMEOUT_MS
# The lock wait of each engine, for the "stayed locked for N s" sentence.
_LOCK_WAIT_MS: weakref.WeakKeyDictionary[Engine, int] = weakref.WeakKeyDictionary()
# Key of the PostgreSQL advisory lock held while migrating (any fixed 64-bit number).
MIGRATION_LOCK_KEY = 0x62696C6C696E67  # "billing" in ASCII
# Replicas queue behind one another's upgrade, which may take longer than a normal lock wait.
MIGRATION_LOCK_TIMEOUT_S = 300


def parse_database_url(url: str) -> URL:
    """Parse DATABASE_URL or raise one clear sentence (the password never appears in it)."""
    try:
        parsed = make_url(url)
    except (ArgumentError, ValueError):
        raise ConfigError(
            "DATABASE_URL is not a valid database URL; expected e.g. sqlite:///data/billing.db "
            "or postgresql+psycopg://user:pass@host/db."
        ) from None
    return parsed


def _prepare_sqlite_path(url: URL, *, create_folder: bool) -> None:
    database = url.database
    if not database or database == ":memory:" or database.startswith("file:"):
        return
    path = Path(database)
    if not create_folder and not path.parent.is_dir():
        # In live mode a mistyped path must not quietly start an empty set of books.
        raise DatabaseError(
            f"The folder {path.parent} of the database {path.name} does not exist. Set "
            "DATABASE_URL to where the database really is, or create the folder first if "
            "this is a new installation."
        )
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise DatabaseError(
            f"Cannot create the folder for the database {path}: {exc.strerror}. "
            "Set DATABASE_URL to a writable location."
        ) from None
    target = path if path.exists() else path.parent
    if not os.access(target, os.W_OK):
        raise DatabaseError(
            f"The database {path} is not writable by this user. "
            "Fix its permissions or set DATABASE_URL to a writable location."
        )


def _sqlite_pragmas(busy_timeout_ms: int) -> Any:
    def on_connect(dbapi_conn: Any, _record: Any) -> None:
        cursor = dbapi_conn.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute(f"PRAGMA busy_timeout={busy_timeout_ms}")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.close()

    return on_connect


def make_engine(
    database_url: str, *, lock_timeout_seconds: float | None = None, create_folder: bool = True
) -> Engine:
    """An engine for DATABASE_URL; SQLite gets WAL, foreign keys and a busy timeout.

    `lock_timeout_seconds` (the DATABASE_LOCK_TIMEOUT_SECONDS setting) is how long a write
    waits for another writer before failing; default SQLITE_BUSY_TIMEOUT_MS. Without
    `create_folder` (live mode), a SQLite file whose folder does not exist raises DatabaseError
    instead of creating an empty database there.
    """
    url = parse_database_url(database_url)
    wait_ms = (
        SQLITE_BUSY_TIMEOUT_MS
        if lock_timeout_seconds is None
        else max(1, round(lock_timeout_seconds * 1000))
    )
    try:
        if url.get_backend_name() == "sqlite":
            _prepare_sqlite_path(url, create_folder=create_folder)
            engine = create_engine(
                url,
                connect_args={"timeout": wait_ms / 1000, "check_same_thread": False},
            )
            event.listen(engine, "connect", _sqlite_pragmas(wait_ms))
        elif url.get_backend_name() == "postgresql":
            if lock_timeout_seconds is None:
                wait_ms = POSTGRES_LOCK_TIMEOUT_MS
            engine = create_engine(
                url,
                pool_pre_ping=True,
                connect_args={"options": f"-c lock_timeout={wait_ms}"},
            )
        else:
            engine = create_engine(url, pool_pre_ping=True)
    except (NoSuchModuleError, ImportError):
        raise ConfigError(
            f"DATABASE_URL names the driver {url.drivername!r}, which is not installed; "
            "use sqlite:/// or postgresql+psycopg://."
        ) from None
    except ArgumentError as exc:
        raise ConfigError(f"DATABASE_URL is not usable: {exc}.") from None
    _LOCK_WAIT_MS[engine] = wait_ms
    return engine


def _alembic_config(engine: Engine) -> Any:
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    cfg.attributes["engine"] = engine
    return cfg


def lock_for_migrations(connection: Connection) -> None:
    """Serialize schema upgrades in the migration transaction (called by migrations/env.py).

    Dashboard replicas and cron jobs all migrate on start; started together on an empty
    database they would race to create the same tables. Whoever gets the lock first upgrades;
    the others wait, then find the schema current. The lock ends with the transaction.
    """
    backend = connection.dialect.name
    if backend == "postgresql":
        connection.exec_driver_sql(f"SET LOCAL lock_timeout = '{MIGRATION_LOCK_TIMEOUT_S}s'")
        connection.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": MIGRATION_LOCK_KEY})
    elif backend == "sqlite":
        # Take the write lock before alembic reads its version table (waits up to the busy
        # timeout); the DDL that follows then runs inside this one transaction.
        connection.exec_driver_sql("BEGIN IMMEDIATE")


def migrate(engine: Engine) -> None:
    """Create or upgrade the schema to the newest revision (safe to run every start)."""
    from alembic import command

    try:
        command.upgrade(_alembic_config(engine), "heads")
    except SADatabaseError as exc:
        raise DatabaseError(_describe_operational(engine, exc)) from None
    except SQLAlchemyError as exc:
        raise DatabaseError(
            f"Upgrading the database schema failed: {exc.__class__.__name__}: "
            f"{str(exc).splitlines()[0]}"
        ) from None


def current_revisions(engine: Engine) -> set[str]:
    from alembic.runtime.migration import MigrationContext

    with engine.connect() as conn:
        return set(MigrationContext.configure(conn).get_current_heads())


def _describe_operational(engine: Engine, exc: SADatabaseError) -> str:
    where = engine.url.render_as_string(hide_password=True)
    first = str(exc.orig).splitlines()[0] if exc.orig is not None else str(exc)
    if "readonly" in first or "read-only" in first:
        return f"The database {where} is read-only: {first}. Fix permissions or DATABASE_URL."
    if "locked" in first or "lock timeout" in first:
        waited = _LOCK_WAIT_MS.get(engine, SQLITE_BUSY_TIMEOUT_MS) / 1000
        return (
            f"The database {where} stayed locked by another writer for {waited:g} s; "
            "try again when the other job finishes (DATABASE_LOCK_TIMEOUT_SECONDS sets the wait)."
        )
    return f"Cannot use the database {where}: {first}. Check DATABASE_URL and that it is reachable."


def open_database(
    database_url: str, *, lock_timeout_seconds: float | None = None, create_folder: bool = True
) -> Engine:
    """Engine plus migrations: what the dashboard and every CLI command start with."""
    engine = make_engine(
        database_url, lock_timeout_seconds=lock_timeout_seconds, create_folder=create_folder
    )
    migrate(engine)
    return engine


@contextmanager
def session_scope(engine: Engine) -> Iterator[Session]:
    """A session that commits on success and rolls back on error."""
    session = Session(engine, expire_on_commit=False)
    try:
        yield session
        session.commit()
    except OperationalError as exc:
        session.rollback()
        raise DatabaseError(_describe_operational(engine, exc)) from None
    except BaseException:
        session.rollback()
        raise
    finally:
        session.close()


def new_revision(message: str) -> None:
    """Autogenerate a migration from the models against a scratch database (for `make`)."""
    import tempfile

    from alembic import command

    if not message.strip():
        raise ConfigError('Give the migration a message: make migration MSG="what changed"')
    with tempfile.TemporaryDirectory() as tmp:
        engine = make_engine(f"sqlite:///{tmp}/scratch.db")
        migrate(engine)
        command.revision(_alembic_config(engine), message=message, autogenerate=True)
