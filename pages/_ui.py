"""Small Streamlit helpers shared by the pages: setup, guard, database, money display.

Not a page (no output at import). Pages call `page_setup()` first: it checks the role before
any data is read, because Streamlit serves every file in pages/ by URL.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager

import streamlit as st
from sqlalchemy.engine import Engine
from sqlmodel import Session

from billing_core import money
from billing_core.auth import LOCAL_ADMIN, Identity, Role, role_for
from billing_core.config import Settings, load_settings
from billing_core.db import open_database, session_scope
from billing_core.errors import BillingError

log = logging.getLogger("dashboard")


@st.cache_resource(show_spinner=False)
def _settings() -> Settings:
    return load_settings()


@st.cache_resource(show_spinner=False)
def _engine(database_url: str) -> Engine:
    # Cached per URL: one connection pool per server process, migrations run once.
    return open_database(database_url)


def settings() -> Settings:
    return _settings()


def engine() -> Engine:
    return _engine(settings().database_url)


@contextmanager
def db() -> Iterator[Session]:
    with session_scope(engine()) as session:
        yield session


def current_identity() -> Identity:
    """Who is looking: local admin when no sign-in is configured (localhost only)."""
    cfg = settings()
    if not cfg.admin_emails and not cfg.viewer_emails and not cfg.auth_proxy_header:
        return LOCAL_ADMIN
    email = None
    if cfg.auth_proxy_header:
        email = st.context.headers.get(cfg.auth_proxy_header)
        if email:
            return Identity(email=email.lower(), role=role_for(email, cfg), method="proxy")
    try:
        if st.user.is_logged_in:
            email = str(st.user.get("email") or "") or None
    except Exception:  # no [auth] section configured
        email = None
    if email:
        return Identity(email=email.lower(), role=role_for(email, cfg), method="oidc")
    return Identity(email=None, role=None, method="anonymous")


def page_setup(title: str, needed: Role = "viewer") -> Identity:
    """Guard a page: stop before any data is read unless the role allows it."""
    try:
        identity = current_identity()
    except BillingError as exc:
        st.error(str(exc))
        st.stop()
    if not identity.can(needed):
        if identity.role is None and identity.email is None:
            st.warning("Please sign in to see this page.")
        else:
            st.error(f"You do not have access to {title}: the {needed} role is required.")
        st.stop()
    st.title(title)
    return identity


def show_error(exc: BaseException) -> None:
    """One sentence for people; the traceback goes to the server log only."""
    if isinstance(exc, BillingError):
        st.error(str(exc))
    else:
        log.exception("page failed")
        st.error(
            f"Something went wrong ({type(exc).__name__}). The details are in the server log; "
            "reload the page or tell an admin."
        )


def fmt(minor: int, currency: str) -> str:
    return money.display(minor, currency)


def fmt_by_currency(amounts: dict[str, int]) -> str:
    """'EUR 1,200.00 · USD 300.00' (never summed across currencies)."""
    if not amounts:
        return "0"
    return " · ".join(fmt(v, c) for c, v in sorted(amounts.items()))
