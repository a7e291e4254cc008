"""Every page in the registry, opened directly by file, for every kind of visitor.

Streamlit serves files in pages/ by URL without running dashboard.py, so each page must refuse
on its own before reading data. New pages join this matrix by being added to
pages/common/registry.py.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import streamlit as st
from streamlit.testing.v1 import AppTest
from streamlit.testing.v1.util import patch_config_options

from billing_core.demo.catalog import CUSTOMERS
from pages.common.registry import PAGES
from tests.conftest import ROOT

ADMIN = "boss@acme.example"
VIEWER = "finance@acme.example"
AUTH = {
    "redirect_uri": "http://localhost:8501/oauth2callback",
    "cookie_secret": "test-cookie-secret-not-a-real-one",
    "client_id": "billing-dashboard",
    "client_secret": "not-a-real-secret",
    "server_metadata_url": "http://127.0.0.1:9/.well-known/openid-configuration",
}
IDENTITIES: dict[str, dict[str, Any]] = {
    "anonymous": {"is_logged_in": False},
    "unknown": {"is_logged_in": True, "email": "stranger@elsewhere.example"},
    "viewer": {"is_logged_in": True, "email": VIEWER},
    "admin": {"is_logged_in": True, "email": ADMIN},
}
# What a refused visitor may be shown: words and buttons, never a table, chart or input.
REFUSAL_ELEMENTS = {
    "root",
    "main",
    "sidebar",
    "event",
    "caption",
    "info",
    "warning",
    "error",
    "title",
    "subheader",
    "markdown",
    "button",
}
PAGE_IDS = [path for path, *_ in PAGES]


@pytest.fixture
def signed_in_env(app_env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    monkeypatch.setenv("ADMIN_EMAILS", ADMIN)
    monkeypatch.setenv("VIEWER_EMAILS", VIEWER + ",@finance.acme.example")
    st.cache_resource.clear()
    return app_env


def walk(node: Any) -> Iterator[Any]:
    yield node
    for child in getattr(node, "children", {}).values():
        yield from walk(child)


def element_types(at: AppTest) -> set[str]:
    return {str(getattr(node, "type", "")) for node in walk(at._tree)}


def page_text(at: AppTest) -> str:
    return "\n".join(str(node.proto) for node in walk(at._tree) if hasattr(node, "proto"))


def open_page(path: str, user: dict[str, Any] | None = None, *, sign_in: bool = True) -> AppTest:
    at = AppTest.from_file(str(ROOT / path), default_timeout=60)
    if sign_in:
        at.secrets["auth"] = dict(AUTH)
    if user is not None:
        at.user = dict(user)
    return at.run()


def assert_shows_no_data(at: AppTest) -> None:
    assert not at.exception, at.exception
    extra = element_types(at) - REFUSAL_ELEMENTS
    assert not extra, f"a refused visitor was shown {extra}"
    text = page_text(at)
    for customer in CUSTOMERS:
        assert customer.name not in text
    assert "EUR " not in text and "USD " not in text


@pytest.mark.parametrize("path", PAGE_IDS)
@pytest.mark.parametrize("who", list(IDENTITIES))
def test_every_page_for_every_identity(signed_in_env: dict[str, str], path: str, who: str) -> None:
    needed = {p: n for p, _title, _icon, n in PAGES}[path]
    title = {p: t for p, t, _icon, _n in PAGES}[path]
    at = open_page(path, IDENTITIES[who])
    assert not at.exception, at.exception
    titles = [t.value for t in at.title]
    if who == "anonymous":
        assert_shows_no_data(at)
        assert [b.label for b in at.button] == ["Sign in"]
        assert titles == ["AWS billing"]
    elif who == "unknown":
        assert_shows_no_data(at)
        assert any("No access" in e.value for e in at.error)
        assert [b.label for b in at.sidebar.button] == ["Sign out"]
    elif who == "viewer" and needed == "admin":
        assert_shows_no_data(at)
        assert any("for the admin role" in e.value for e in at.error)
    else:
        assert titles == [title]
        assert not [e.value for e in at.error if "role" in e.value]
        assert any(
            f"Signed in as **{IDENTITIES[who]['email']}** ({who})" in c.value
            for c in at.sidebar.caption
        )


@pytest.mark.parametrize("path", PAGE_IDS)
def test_local_mode_says_so_on_every_page(app_env: dict[str, str], path: str) -> None:
    at = open_page(path, sign_in=False)
    assert not at.exception
    assert any("Local use only" in c.value for c in at.caption)
    assert at.title[0].value == {p: t for p, t, *_ in PAGES}[path]


@pytest.mark.parametrize("path", ["dashboard.py", *PAGE_IDS])
def test_no_sign_in_and_not_on_localhost_serves_nothing(app_env: dict[str, str], path: str) -> None:
    with patch_config_options({"server.address": "0.0.0.0"}):
        at = open_page(path, sign_in=False)
    assert_shows_no_data(at)
    assert any(
        "No sign-in is configured and the server listens on 0.0.0.0" in e.value for e in at.error
    )


def test_proxy_header_refused_when_the_server_is_reachable(
    app_env: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AUTH_PROXY_HEADER", "X-Forwarded-Email")
    st.cache_resource.clear()
    with patch_config_options({"server.address": ""}):
        at = open_page("pages/overview.py", sign_in=False)
    assert_shows_no_data(at)
    assert any("AUTH_PROXY_HEADER is set" in e.value for e in at.error)


def test_proxy_mode_without_header_asks_to_sign_in_at_the_proxy(
    app_env: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    # AppTest cannot send request headers: the header itself is covered in test_auth and by
    # the browser test; here nobody came through the proxy.
    monkeypatch.setenv("AUTH_PROXY_HEADER", "X-Forwarded-Email")
    st.cache_resource.clear()
    at = open_page("pages/overview.py", sign_in=False)
    assert_shows_no_data(at)
    assert not at.button
    assert any("company's sign-in page" in i.value for i in at.info)


def test_incomplete_auth_section_refuses_with_what_is_missing(
    signed_in_env: dict[str, str],
) -> None:
    at = AppTest.from_file(str(ROOT / "pages/overview.py"), default_timeout=60)
    at.secrets["auth"] = {"client_id": "x"}
    at.user = IDENTITIES["admin"]
    at.run()
    assert_shows_no_data(at)
    assert any("[auth] lacks cookie_secret" in e.value for e in at.error)


def test_unverified_email_gets_no_role(signed_in_env: dict[str, str]) -> None:
    at = open_page("pages/overview.py", {**IDENTITIES["admin"], "email_verified": False})
    assert_shows_no_data(at)
    assert any("No access" in e.value for e in at.error)


def test_domain_entry_grants_the_role(signed_in_env: dict[str, str]) -> None:
    at = open_page("pages/overview.py", {"is_logged_in": True, "email": "ann@finance.acme.example"})
    assert not at.exception and at.title[0].value == "Overview"


def test_sign_out_returns_to_the_sign_in_screen(signed_in_env: dict[str, str]) -> None:
    at = open_page("pages/overview.py", IDENTITIES["viewer"])
    assert len(at.metric) >= 4  # the Overview shows data to a signed-in viewer
    at.sidebar.button[0].click().run()
    assert_shows_no_data(at)
    assert [b.label for b in at.button] == ["Sign in"]


def test_named_providers_get_one_button_each(signed_in_env: dict[str, str]) -> None:
    at = AppTest.from_file(str(ROOT / "pages/overview.py"), default_timeout=60)
    provider = {k: AUTH[k] for k in ("client_id", "client_secret", "server_metadata_url")}
    at.secrets["auth"] = {
        "redirect_uri": AUTH["redirect_uri"],
        "cookie_secret": AUTH["cookie_secret"],
        "google": provider,
        "microsoft": provider,
    }
    at.user = IDENTITIES["anonymous"]
    at.run()
    assert [b.label for b in at.button] == ["Sign in with google", "Sign in with microsoft"]


@pytest.mark.parametrize("who", list(IDENTITIES))
def test_dashboard_navigation_offers_only_allowed_pages(
    signed_in_env: dict[str, str], who: str
) -> None:
    at = open_page("dashboard.py", IDENTITIES[who])
    assert not at.exception
    if who in ("anonymous", "unknown"):
        assert_shows_no_data(at)
        return
    role = "admin" if who == "admin" else "viewer"
    for path, title, _icon, needed in PAGES:
        if role == "admin" or needed == "viewer":
            at.switch_page(path).run()
            assert not at.exception
            assert [t.value for t in at.title] == [title]
        else:
            # Not in this role's navigation, so not a page of this session at all. (Every run
            # goes through dashboard.py: a page run by its file name is handed over to it.)
            with pytest.raises(ValueError, match="Could not find a navigation page"):
                at.switch_page(path)
