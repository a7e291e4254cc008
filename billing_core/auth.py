"""Sign-in and roles: who may see data (viewer) and who may move money (admin).

The dashboard gathers the raw facts (is an `[auth]` section configured, which address the
server listens on, the proxy header, what the OIDC provider said) and these pure functions
decide. Keeping the decision here makes every identity testable without a browser.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from email_validator import EmailNotValidError, validate_email

from billing_core.config import Settings
from billing_core.errors import ConfigError, PermissionDenied

Role = Literal["admin", "viewer"]
Method = Literal["oidc", "proxy", "local", "anonymous", "cli"]
_RANK: dict[str, int] = {"viewer": 1, "admin": 2}


@dataclass(frozen=True)
class Identity:
    """The person behind a page view or an action, as recorded in the audit log."""

    email: str | None
    role: Role | None
    # local: no sign-in configured, the server listens on localhost only.
    method: Method = "anonymous"

    @property
    def actor(self) -> str:
        return self.email or self.method

    @property
    def is_anonymous(self) -> bool:
        """Nobody signed in yet (the sign-in screen is all they get)."""
        return self.method == "anonymous"

    def can(self, needed: Role) -> bool:
        return self.role is not None and _RANK[self.role] >= _RANK[needed]


LOCAL_ADMIN = Identity(email="local-admin", role="admin", method="local")
ANONYMOUS = Identity(email=None, role=None, method="anonymous")


def cli_identity(name: str = "cli") -> Identity:
    """The command line runs on the server itself, for whoever may log in there: an admin."""
    return Identity(email=name, role="admin", method="cli")


def parse_address(text: str | None) -> str | None:
    """`text` as one well-formed email address, lower-cased; None when it is anything else.

    Parsed by email-validator (no deliverability check, no DNS): a list (`a@x, b@y`), a second
    `@`, a display name, a quoted local part or a domain literal is not one address, so it can
    never be read as the address after its last `@`.
    """
    if not text or not text.strip():
        return None
    try:
        parsed = validate_email(
            text.strip(),
            check_deliverability=False,
            allow_quoted_local=False,
            allow_domain_literal=False,
            allow_display_name=False,
        )
    except EmailNotValidError:
        return None
    return parsed.normalized.lower()


def _matches(email: str, entries: list[str]) -> bool:
    domain = "@" + email.partition("@")[2]  # a parsed address has exactly one @
    return any(entry in (email, domain) for entry in entries)


def role_for(email: str | None, settings: Settings) -> Role | None:
    """The role configured for an email (exact address or @domain); None for unknown users and
    for anything that is not exactly one well-formed address."""
    email = parse_address(email)
    if email is None:
        return None
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


# --- how people sign in on this server -------------------------------------------------------


def is_loopback(address: str | None) -> bool:
    """True when a listen address only accepts connections from this machine."""
    if not address:
        # Streamlit listens on every interface when server.address is unset.
        return False
    host = address.strip().strip("[]").lower()
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


@dataclass(frozen=True)
class SignIn:
    """The sign-in methods this server honours; neither means local use only."""

    oidc: bool
    proxy_header: str | None = None

    @property
    def local(self) -> bool:
        return not self.oidc and self.proxy_header is None


_SETUP_HINT = (
    'For local use set server.address = "localhost" in .streamlit/config.toml; to serve '
    "others configure sign-in (an [auth] section in .streamlit/secrets.toml, see README, Sign-in)."
)


def sign_in_mode(
    settings: Settings, *, oidc_configured: bool, server_address: str | None
) -> SignIn:
    """Decide how people sign in; raise ConfigError when this server must not serve data."""
    loopback = is_loopback(server_address)
    header = settings.auth_proxy_header or None
    shown = server_address or "every interface"
    if header and not loopback:
        if not oidc_configured:
            raise ConfigError(
                f"AUTH_PROXY_HEADER is set but the server listens on {shown}: anyone who can "
                "reach it could send that header. A proxy header is trusted only when the "
                "server listens on localhost behind the proxy; set server.address = "
                '"localhost" or configure OIDC sign-in instead.'
            )
        # OIDC still protects the server; a header anyone could forge is simply ignored.
        header = None
    if not oidc_configured and not header and not loopback:
        raise ConfigError(
            f"No sign-in is configured and the server listens on {shown}, so anyone who can "
            f"reach it would see invoices and payment status. {_SETUP_HINT}"
        )
    return SignIn(oidc=oidc_configured, proxy_header=header)


def proxy_address(header: str, values: Sequence[str]) -> str | None:
    """The signed-in address from the proxy header's values (each line the header arrived in).

    None when the header is absent or empty (nobody signed in at the proxy). Raises
    PermissionDenied when it arrived more than once (a proxy that appends to what the browser
    sent, instead of replacing it) or does not hold exactly one well-formed address: the
    request is refused rather than guessed at.
    """
    present = [value for value in values if value.strip()]
    if len(values) > 1:
        raise PermissionDenied(
            f"Sign-in refused: the {header} header arrived {len(values)} times. The sign-in "
            "proxy must set this header, replacing any value the browser sent, not append to "
            "it (README, Sign-in)."
        )
    if not present:
        return None
    address = parse_address(present[0])
    if address is None:
        raise PermissionDenied(
            f"Sign-in refused: the {header} header does not hold exactly one well-formed email "
            "address. The sign-in proxy must set it to the signed-in person's address alone, "
            "replacing any value the browser sent (README, Sign-in)."
        )
    return address


def identify(
    settings: Settings,
    sign_in: SignIn,
    *,
    proxy_values: Sequence[str] = (),
    oidc_user: Mapping[str, Any] | None = None,
) -> Identity:
    """Who is looking, from the proxy header or the OIDC claims (st.user) of this session.

    `proxy_values` are the proxy header's values as received, one per header line. Raises
    PermissionDenied for a proxy header that is repeated or not exactly one address.
    """
    if sign_in.local:
        return LOCAL_ADMIN
    if sign_in.proxy_header:
        forwarded = proxy_address(sign_in.proxy_header, proxy_values)
        if forwarded is not None:
            return Identity(email=forwarded, role=role_for(forwarded, settings), method="proxy")
    if sign_in.oidc and oidc_user and oidc_user.get("is_logged_in") is True:
        claimed = str(oidc_user.get("email") or "").strip()
        email = parse_address(claimed) or claimed.lower() or None
        # A provider that says the address is unverified gives no role: anyone could claim it.
        verified = oidc_user.get("email_verified") is not False
        role = role_for(email, settings) if verified else None
        return Identity(email=email, role=role, method="oidc")
    return ANONYMOUS


def oidc_providers(auth_section: Mapping[str, Any]) -> list[str]:
    """Providers st.login() can use: "default" for a flat [auth], else the [auth.<name>] tables."""
    if "client_id" in auth_section:
        return ["default"]
    return sorted(k for k, v in auth_section.items() if isinstance(v, Mapping))


def oidc_problems(auth_section: Mapping[str, Any]) -> list[str]:
    """What is missing from an [auth] section for st.login() to work (empty when complete)."""
    problems = [
        f"[auth] lacks {key}"
        for key in ("redirect_uri", "cookie_secret")
        if key not in auth_section
    ]
    providers = oidc_providers(auth_section)
    if not providers:
        problems.append("[auth] names no provider (client_id, or an [auth.<provider>] table)")
    for name in providers:
        table = auth_section if name == "default" else auth_section[name]
        label = "[auth]" if name == "default" else f"[auth.{name}]"
        for key in ("client_id", "client_secret", "server_metadata_url"):
            if key not in table:
                problems.append(f"{label} lacks {key}")
    return problems
