"""Alembic environment: runs against the engine handed over by billing_core.db.migrate()."""

from __future__ import annotations

from typing import Any, Literal

from alembic import context
from sqlalchemy import engine_from_config, pool
from sqlalchemy.types import TypeDecorator
from sqlmodel import SQLModel
from sqlmodel.sql.sqltypes import AutoString

import billing_core.models  # noqa: F401  (registers the tables)
from billing_core.db import lock_for_migrations

target_metadata = SQLModel.metadata


def render_item(type_: str, obj: Any, autogen_context: Any) -> str | Literal[False]:
    # Migrations store the plain column types, so they never import project code that may
    # change later.
    if type_ == "type" and isinstance(obj, TypeDecorator):
        return f"sa.{obj.impl_instance!r}"
    if type_ == "type" and isinstance(obj, AutoString):
        return f"sa.String(length={obj.length})" if obj.length else "sa.String()"
    return False


def run_migrations() -> None:
    engine = context.config.attributes.get("engine")
    if engine is None:
        url = context.config.get_main_option("sqlalchemy.url")
        engine = engine_from_config({"sqlalchemy.url": url}, poolclass=pool.NullPool)
    with engine.begin() as connection:
        lock_for_migrations(connection)
        context.configure(
            connection=connection,
            target_metadata=target_metadata,
            render_item=render_item,
            render_as_batch=True,  # SQLite needs batch mode to alter tables
            compare_type=True,
        )
        context.run_migrations()


run_migrations()
