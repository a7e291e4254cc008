"""Optimistic concurrency for admin actions: compare-and-set on a row's `version`.

A page shows an object at some version; the action it sends back names the object's id and that
version. `claim` moves the row to the next version with one `UPDATE ... WHERE id = :id AND
version = :seen`: its row count decides, in the database, so of two admins (on two servers, or a
stale tab) acting on what they both saw, exactly one goes through and the other is refused with a
sentence saying who changed it and when. The UPDATE also holds the row (PostgreSQL row lock,
SQLite write lock) until the caller's transaction ends, so the change it guards is not
interleaved with another. Writers that change these rows without an admin's seen version
(imports, cron, reconciliation runs) call `bump`, so a page that showed the old values is refused
as well.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, TypeVar

from sqlalchemy import update
from sqlmodel import Session, SQLModel

from billing_core.errors import StaleVersion, ValidationError

Row = TypeVar("Row", bound=SQLModel)


def claim(
    session: Session,
    model: type[Row],
    object_id: int,
    seen_version: int,
    *,
    actor: str,
    now: datetime,
    what: str,
) -> Row:
    """Move row `object_id` from `seen_version` to the next one, or refuse.

    `what` names the object in the refusal ("This plan", "Difference #12"). Returns the row,
    re-read after the update. Raises ValidationError when the row does not exist and StaleVersion
    when its version is no longer `seen_version`; nothing is written then.
    """
    table: Any = model
    result: Any = session.execute(
        update(model)
        .where(table.id == object_id, table.version == seen_version)
        .values(version=table.version + 1, updated_by=actor, updated_at=now)
        .execution_options(synchronize_session=False)
    )
    row = session.get(model, object_id, populate_existing=True)
    if row is None:
        raise ValidationError(f"{what} no longer exists; reload the page.")
    if result.rowcount != 1:
        raise StaleVersion(changed_since(what, row, now=now))
    return row


def bump(row: Any, *, actor: str, now: datetime) -> None:
    """Count a change made without an admin's seen version (import, cron, a run).

    The increment is SQL (`version = version + 1`), so it never loses another writer's.
    """
    row.version = type(row).version + 1
    row.updated_by = actor
    row.updated_at = now


def changed_since(what: str, row: Any, *, now: datetime) -> str:
    """'This plan was changed by ana@example.com at 14:05 UTC since you opened it; ...'."""
    who = f" by {row.updated_by}" if row.updated_by else ""
    when = ""
    at: datetime | None = row.updated_at
    if at is not None:
        day = "" if at.date() == now.date() else f" on {at:%Y-%m-%d}"
        when = f"{day} at {at:%H:%M} UTC"
    return f"{what} was changed{who}{when} since you opened it; reload to see their change."
