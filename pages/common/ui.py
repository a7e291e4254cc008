"""Small Streamlit helpers shared by the pages: setup, guard, database, Stripe, money display.

Not a page (no output at import). Pages call `page_setup()` first: it checks the role before
any data is read, because Streamlit serves every file in pages/ by URL.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import streamlit as st
from sqlalchemy.engine import Engine
from sqlmodel import Session
from streamlit import config as st_config
from streamlit.runtime.pages_manager import PagesManager

from billing_core import money
from billing_core.auth import (
    Identity,
    Role,
    SignIn,
    identify,
    oidc_problems,
    oidc_providers,
    sign_in_mode,
)
from billing_core.config import Settings, load_settings
from billing_core.db import open_database, session_scope
from billing_core.demo.guard import refuse_demo_database
from billing_core.errors import BillingError, ConfigError
from billing_core.payments import payment_methods
from billing_core.periods import utcnow
from billing_core.stripe.gateway import Gateway
from pages.common.registry import PAGES

log = logging.getLogger("dashboard")

# The first page's reserved URL name (it is served at "/"; see app_pages).
HOME_URL_NAME = "home"

LOCAL_NOTICE = (
    ":material/lock: **Local use only.** No sign-in is configured, so this dashboard listens "
    "on localhost and whoever opens it acts as admin."
)


@st.cache_resource(show_spinner=False)
def _settings() -> Settings:
    return load_settings()


@st.cache_resource(show_spinner=False)
def _engine(database_url: str, lock_timeout_seconds: float, create_folder: bool) -> Engine:
    # Cached per URL: one connection pool per server process, migrations run once.
    return open_database(
        database_url, lock_timeout_seconds=lock_timeout_seconds, create_folder=create_folder
    )


def settings() -> Settings:
    return _settings()


def engine() -> Engine:
    s = settings()
    engine = _engine(s.database_url, s.database_lock_timeout_seconds, s.mode == "demo")
    # Checked on every use, not cached: a demo seed into a live database must stop the pages.
    refuse_demo_database(engine, mode=s.mode)
    return engine


@contextmanager
def db() -> Iterator[Session]:
    with session_scope(engine()) as session:
        yield session


def _build_gateway(cfg: Settings) -> Gateway:
    return Gateway.from_settings(cfg)


@st.cache_resource(show_spinner=False)
def stripe_gateway() -> Gateway:
    """The process's one Stripe gateway (client, rate limit, retries), or a ConfigError when
    Stripe is not configured."""
    # Built from the cached settings, so it lives as long as they do; the ConfigError is raised
    # again on each call (Streamlit caches no exception).
    return _build_gateway(settings())


def _auth_section() -> Mapping[str, Any] | None:
    """The [auth] table of secrets.toml that st.login() reads, or None when absent."""
    try:
        section = st.secrets.get("auth")
    except Exception:  # no secrets file at all: sign-in is simply not configured
        return None
    return section if isinstance(section, Mapping) and section else None


def _oidc_user() -> dict[str, Any]:
    try:
        return dict(st.user.to_dict())
    except Exception:  # no session context (e.g. bare mode): nobody signed in
        return {}


def _proxy_values(header: str) -> list[str]:
    # Every line the header arrived in: a repeated header is refused, never joined or guessed.
    try:
        return list(st.context.headers.get_all(header))
    except Exception:
        return []


def _server_address() -> str | None:
    # Read through the config module at call time (st.get_option is bound at import).
    address = st_config.get_option("server.address")
    return str(address) if address else None


def access() -> tuple[SignIn, Identity]:
    """How people sign in here and who is looking; ConfigError when data must not be served."""
    cfg = settings()
    section = _auth_section()
    if section is not None and (problems := oidc_problems(section)):
        raise ConfigError(
            "Sign-in is configured but incomplete: " + "; ".join(problems) + ". Fix the [auth] "
            "section of .streamlit/secrets.toml (see README, Sign-in)."
        )
    sign_in = sign_in_mode(
        cfg,
        oidc_configured=section is not None,
        server_address=_server_address(),
    )
    return sign_in, identify(
        cfg,
        sign_in,
        proxy_values=_proxy_values(sign_in.proxy_header) if sign_in.proxy_header else (),
        oidc_user=_oidc_user() if sign_in.oidc else None,
    )


def current_identity() -> Identity:
    """Who is looking (local admin when no sign-in is configured and the server is local)."""
    return access()[1]


def _sign_in_screen(sign_in: SignIn) -> None:
    st.title("AWS billing")
    st.subheader("Sign in")
    st.write("Invoices and customers' payment status are confidential: please sign in first.")
    if sign_in.oidc:
        for provider in oidc_providers(_auth_section() or {}):
            label = "Sign in" if provider == "default" else f"Sign in with {provider}"
            st.button(
                label,
                key=f"sign-in-{provider}",
                on_click=st.login,
                args=(provider,),
                type="primary",
                icon=":material/login:",
            )
    else:
        st.info(
            "Sign in on your company's sign-in page (the proxy in front of this dashboard), "
            "then reload."
        )


def _sidebar(identity: Identity) -> None:
    with st.sidebar:
        if identity.method == "local":
            st.caption("Local admin (no sign-in configured)")
            return
        if identity.is_anonymous:
            return
        role = identity.role or "no access"
        st.caption(f"Signed in as **{identity.email or 'an unnamed user'}** ({role})")
        if identity.method == "oidc":
            st.button("Sign out", key="sign-out", on_click=st.logout, icon=":material/logout:")
        elif identity.method == "proxy":
            st.caption("Sign out on your company's sign-in page.")


def _hand_over_to_dashboard() -> None:
    """Rerun a page that Streamlit ran by its file name through dashboard.py's navigation.

    Streamlit keeps one switch per server process: a `pages/` folder beside the main script
    starts it in its pages-folder mode, where /audit runs pages/audit.py alone and the sidebar
    lists the folder's file names, until st.navigation is first called. So when a page's URL is
    the first request of a fresh server (a link pasted into a new tab), the page runs without
    dashboard.py: no app titles, no role filtering of the navigation. Any st.navigation call
    ends that mode for the process; the rerun then runs dashboard.py with the same page (both
    modes derive a page's id from its URL path) and the same query string.
    Returns when Streamlit is not in that mode (dashboard.py's navigation, or an AppTest).
    """
    if not PagesManager.uses_pages_directory:
        return
    # Every page of the registry, so this one keeps its id (a page missing from the list would
    # be answered with "page not found"); hidden, since the rerun replaces it at once.
    st.navigation(
        app_pages([(path, title, icon) for path, title, icon, _ in PAGES]), position="hidden"
    )
    st.rerun()


def app_pages(shown: list[tuple[str, str, str]]) -> list[st.Page]:
    """The st.navigation pages for these (file, title, icon) rows of the registry, in order.

    st.navigation serves its first page at "/" only, yet "/overview" (the file's name) is what
    people type and what the pages-folder mode links to, and it would answer "Page not found".
    So the first page reserves a URL name nobody uses, and a hidden page under its file's name
    sends such a link home with the same query (its filters and open detail).
    """
    pages = [
        st.Page(path, title=title, icon=icon, url_path=HOME_URL_NAME if number == 0 else None)
        for number, (path, title, icon) in enumerate(shown)
    ]
    if not pages:
        return pages
    home = pages[0]

    def go_home() -> None:
        query = {name: st.query_params.get_all(name) for name in st.query_params}
        st.switch_page(home, query_params=query)

    name = Path(shown[0][0]).stem
    return [*pages, st.Page(go_home, title=home.title, url_path=name, visibility="hidden")]


def page_setup(title: str, needed: Role = "viewer") -> Identity:
    """Guard a page: stop before any data is read unless the role allows it.

    Every page calls this first. A page that Streamlit ran by its file name rather than through
    dashboard.py's navigation (a fresh server's first request) is rerun through it first.
    """
    _hand_over_to_dashboard()
    # Also here, not only in dashboard.py: AppTests run a page file alone.
    st.set_page_config(page_title=f"{title} · AWS billing", layout="wide")
    with stop_on_error():  # whatever went wrong, fail closed: no identity, no data
        sign_in, identity = access()
    _sidebar(identity)
    if sign_in.local:
        cfg = settings()
        roles_ignored = (
            " ADMIN_EMAILS and VIEWER_EMAILS take effect once sign-in is configured."
            if cfg.admin_emails or cfg.viewer_emails
            else ""
        )
        st.caption(LOCAL_NOTICE + roles_ignored)
    if identity.is_anonymous:
        _sign_in_screen(sign_in)
        st.stop()
    if identity.role is None:
        who = identity.email or "This account"
        st.error(
            f"No access: {who} is signed in but has no role in the billing dashboard. "
            "Ask an admin to add you to ADMIN_EMAILS or VIEWER_EMAILS.",
            icon=":material/block:",
        )
        st.stop()
    if not identity.can(needed):
        st.error(
            f"{title} is for the {needed} role; you are signed in as {identity.email} "
            f"({identity.role}).",
            icon=":material/block:",
        )
        st.stop()
    cfg = settings()
    if cfg.mode == "demo":
        why = (
            "BILLING_MODE is set to demo"
            if cfg.billing_mode == "demo"
            else "no AWS or Stripe credentials are configured"
        )
        st.info(
            f"**Demo data.** Figures come from the seeded demo database ({why}).",
            icon=":material/science:",
        )
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


def show_flash(key: str) -> None:
    """Show, once, the message a callback left under `key`: (kind, text or exception), kind
    "success", "error" or "exception" (callbacks run before the rerun that shows it)."""
    flash = st.session_state.pop(key, None)
    if flash is None:
        return
    kind, payload = flash
    if kind == "exception":
        show_error(payload)
    elif kind == "success":
        st.success(payload)
    else:
        st.error(payload)


def retry_payment(
    flash_key: str, who: Identity, invoice_id: int, payment_method: str | None = None
) -> None:
    """Button callback: retry an invoice's payment (payments/payment_methods.py, audited) and
    leave the outcome under `flash_key` for `show_flash`."""
    try:
        with db() as session:
            result = payment_methods.retry_payment(
                session,
                stripe_gateway(),
                who,
                invoice_id=invoice_id,
                now=utcnow(),
                payment_method=payment_method,
            )
        st.session_state[flash_key] = ("success" if result.paid else "error", result.message)
    except Exception as exc:
        st.session_state[flash_key] = ("exception", exc)


def show_setup_link(who: Identity, customer_id: int) -> None:
    """Create a Stripe card setup link for the customer (payments/payment_methods.py, audited)
    and show it to hand over, or the error as a sentence."""
    try:
        with db() as session:
            url = payment_methods.create_setup_link(
                session,
                stripe_gateway(),
                who,
                customer_id=customer_id,
                return_url=st.context.url or "http://localhost:8501",
                now=utcnow(),
            )
        st.success("Send this link to the customer (it expires in 24 hours):")
        st.code(url, language=None)
    except Exception as exc:
        show_error(exc)


@contextmanager
def stop_on_error() -> Iterator[None]:
    """Run the block; on any error show it as one sentence (`show_error`) and stop the page.

    `with ui.stop_on_error(), ui.db() as session:` loads a page's data or ends the script there.
    """
    try:
        yield
    except Exception as exc:
        show_error(exc)
        st.stop()


def fmt(minor: int, currency: str) -> str:
    return money.display(minor, currency)


def fmt_by_currency(amounts: dict[str, int]) -> str:
    """'EUR 1,200.00 · USD 300.00' (never summed across currencies)."""
    if not amounts:
        return "0"
    return " · ".join(fmt(v, c) for c, v in sorted(amounts.items()))


def headers(columns: Iterable[str], **config: Any) -> dict[str, Any]:
    """A dataframe's column_config with every header in one style, sentence case
    ('paid_at' -> 'Paid at'); `config` overrides a column (a label or a column config)."""
    out: dict[str, Any] = {c: c.replace("_", " ").strip().capitalize() for c in columns}
    out.update(config)
    return out
