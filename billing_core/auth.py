"""Roles: who may see data (viewer) and who may move money (admin)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from billing_core.config import Settings
from billing_core.errors import PermissionDenied

Role = Literal["admin", "viewer"]
_RANK: dict[str, int] = {"viewer": 1, "admin": 2}


@dataclass(frozen=True)
class Identity:
    """The person behind a page view or an action, as recorded in the audit log."""

    email: str | None
    role: Role | None
    # local: no sign-in configured, the server listens on localhost only.
    method: Literal["oidc", "proxy", "local", "anonymous", "cli"] = "anonymous"

    @property
    def actor(self) -> str:
        return self.email or self.method

    def can(self, needed: Role) -> bool:
        return self.role is not None and _RANK[self.role] >= _RANK[needed]


LOCAL_ADMIN = Identity(email="local-admin", role="admin", method="local")


def _matches(email: str, entries: list[str]) -> bool:
    domain = "@" + email.rsplit("@", 1)[-1]
    return any(entry == email or (entry.startswith("@") and entry == domain) for entry in entries)


def role_for(email: str | None, settings: Settings) -> Role | None:
    """The role configured for an email (exact address or @domain); None for unknown users."""
    if not email:
        return None
    email = email.strip().lower()
    if _matches(email, settings.admin_emails):
        return "admin"
    if _matches(email, settings.viewer_emails):
        return "viewer"
    return None


def require(identity: Identity, needed: Role, action: str) -> None:
    """Refuse an action the identity's role does not allow (checked where the action runs)."""
    if not identity.can(needed):
        who = identity.email or "an anonymous user"
        raise PermissionDenied(f"{who} may not {action}: the {needed} role is required.")
