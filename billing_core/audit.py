"""The audit trail: who did what, when, to what, with before and after values."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal
from typing import Any

from sqlmodel import Session, col, func, select

from billing_core.csv_cells import cell_text
from billing_core.file_names import export_file_name
from billing_core.models import AuditEntry
from billing_core.periods import utcnow, when_text

# Never written to the audit log, whatever a caller passes in.
_SECRET_KEYS = frozenset({"api_key", "stripe_api_key", "secret", "password", "token", "card"})
# ... nor any key containing one of these (client_secret, webhook_secret, access_token, ...).
_SECRET_PARTS = ("secret", "password", "token", "api_key")


def _is_secret(key: str) -> bool:
    key = key.lower()
    return key in _SECRET_KEYS or any(part in key for part in _SECRET_PARTS)


def _plain(value: Any) -> Any:
    """JSON-safe copy: Decimals and datetimes as strings, secrets masked."""
    if isinstance(value, dict):
        return {str(k): ("***" if _is_secret(str(k)) else _plain(v)) for k, v in value.items()}
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
    until: datetime | None = None,
    target_contains: str | None = None,
    limit: int | None = 1000,
) -> Sequence[AuditEntry]:
    """Newest first, optionally filtered; `until` is exclusive, target text ignores case."""
    query = select(AuditEntry)
    if actor:
        query = query.where(AuditEntry.actor == actor)
    if action:
        query = query.where(AuditEntry.action == action)
    if since:
        query = query.where(col(AuditEntry.at) >= since)
    if until:
        query = query.where(col(AuditEntry.at) < until)
    if target_contains and target_contains.strip():
        # Bound parameter with LIKE wildcards escaped: the text is matched literally.
        needle = target_contains.strip().lower()
        needle = needle.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
        query = query.where(func.lower(col(AuditEntry.target)).like(f"%{needle}%", escape="\\"))
    query = query.order_by(col(AuditEntry.at).desc(), col(AuditEntry.id).desc())
    if limit is not None:
        query = query.limit(limit)
    return session.exec(query).all()


@dataclass(frozen=True)
class AuditFilter:
    """The audit page's filters: days are UTC calendar days, both ends included."""

    actor: str | None = None
    action: str | None = None
    first_day: date | None = None
    last_day: date | None = None
    target_contains: str | None = None

    def file_name(self) -> str:
        """'audit-log_2026-10-01-to-2026-10-31_invoice_run.request.csv': the filters in the name."""
        days = None
        if self.first_day and self.last_day:
            days = (
                str(self.first_day)
                if self.first_day == self.last_day
                else f"{self.first_day}-to-{self.last_day}"
            )
        target = f"target-{self.target_contains}" if self.target_contains else None
        return export_file_name("audit-log", days, self.actor, self.action, target)

    def search(self, session: Session, *, limit: int | None = 1000) -> Sequence[AuditEntry]:
        since = datetime.combine(self.first_day, time(), UTC) if self.first_day else None
        until = (
            datetime.combine(self.last_day + timedelta(days=1), time(), UTC)
            if self.last_day
            else None
        )
        return entries(
            session,
            actor=self.actor,
            action=self.action,
            since=since,
            until=until,
            target_contains=self.target_contains,
            limit=limit,
        )


@dataclass(frozen=True)
class FilterChoices:
    """What the audit page offers in its filters: the actors and actions recorded so far."""

    actors: list[str]
    actions: list[str]
    first: datetime | None
    last: datetime | None


def filter_choices(session: Session) -> FilterChoices:
    actors = session.exec(select(AuditEntry.actor).distinct().order_by(col(AuditEntry.actor)))
    actions = session.exec(select(AuditEntry.action).distinct().order_by(col(AuditEntry.action)))
    first, last = session.exec(select(func.min(AuditEntry.at), func.max(AuditEntry.at))).one()
    return FilterChoices(list(actors.all()), list(actions.all()), first, last)


CSV_COLUMNS = ("id", "at", "actor", "action", "target", "before", "after")


def _text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    # JSON for everything else (true, 1.5, {...}); masked again on the way out, for entries
    # written before a key joined the secret list.
    return json.dumps(_plain(value), sort_keys=True, ensure_ascii=False, default=str)


def rows(items: Iterable[AuditEntry]) -> list[dict[str, str]]:
    """Entries as flat text rows (JSON for before/after), as the table and the CSV show them."""
    return [
        {
            "id": str(e.id),
            "at": e.at.isoformat(timespec="seconds"),
            "actor": e.actor,
            "action": e.action,
            "target": e.target,
            "before": _text(e.before),
            "after": _text(e.after),
        }
        for e in items
    ]


def table_rows(items: Iterable[AuditEntry]) -> list[dict[str, str]]:
    """`rows` as the Audit log page shows them: the time as '2026-11-30 14:05 UTC' (the CSV
    keeps the exact ISO time with seconds)."""
    entries = list(items)
    return [{**row, "at": when_text(e.at)} for e, row in zip(entries, rows(entries), strict=True)]


def to_csv(items: Iterable[AuditEntry]) -> bytes:
    """CSV export of entries (UTF-8 with BOM so spreadsheets read accents), secrets masked."""
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=CSV_COLUMNS, lineterminator="\n")
    writer.writeheader()
    for row in rows(items):
        # Targets can hold customer input: no formula, and one entry stays one row.
        writer.writerow({k: cell_text(v) for k, v in row.items()})
    return out.getvalue().encode("utf-8-sig")


def changes(entry: AuditEntry) -> list[tuple[str, str, str]]:
    """(field, before, after) for every field an entry changed, for the detail view."""
    before = entry.before or {}
    after = entry.after or {}
    out = []
    for key in sorted(set(before) | set(after)):
        old, new = before.get(key), after.get(key)
        if old != new:
            out.append(
                (key, _text(old) if key in before else "—", _text(new) if key in after else "—")
            )
    return out
