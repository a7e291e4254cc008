"""The audit trail: who did what, when, to what, with before and after values."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from decimal import Decimal
from typing import Any

from sqlmodel import Session, col, select

from billing_core.models import AuditEntry
from billing_core.periods import utcnow

# Never written to the audit log, whatever a caller passes in.
_SECRET_KEYS = frozenset({"api_key", "stripe_api_key", "secret", "password", "token", "card"})


def _plain(value: Any) -> Any:
    """JSON-safe copy: Decimals and datetimes as strings, secrets masked."""
    if isinstance(value, dict):
        return {
            str(k): ("***" if str(k).lower() in _SECRET_KEYS else _plain(v))
            for k, v in value.items()
        }
    if isinstance(value, (list, tuple, set)):
        return [_plain(v) for v in value]
    if isinstance(value, (Decimal, datetime)):
        return str(value)
    return value


def record(
    session: Session,
    *,
    actor: str,
    action: str,
    target: str,
    before: dict[str, Any] | None = None,
    after: dict[str, Any] | None = None,
    at: datetime | None = None,
) -> AuditEntry:
    """Add an audit entry to the caller's transaction, so it commits with the change itself."""
    entry = AuditEntry(
        actor=actor or "unknown",
        action=action,
        target=target,
        before=_plain(before) if before is not None else None,
        after=_plain(after) if after is not None else None,
        at=at or utcnow(),
    )
    session.add(entry)
    return entry


def entries(
    session: Session,
    *,
    actor: str | None = None,
    action: str | None = None,
    since: datetime | None = None,
    limit: int = 1000,
) -> Sequence[AuditEntry]:
    """Newest first, optionally filtered."""
    query = select(AuditEntry)
    if actor:
        query = query.where(AuditEntry.actor == actor)
    if action:
        query = query.where(AuditEntry.action == action)
    if since:
        query = query.where(col(AuditEntry.at) >= since)
    query = query.order_by(col(AuditEntry.at).desc(), col(AuditEntry.id).desc()).limit(limit)
    return session.exec(query).all()
