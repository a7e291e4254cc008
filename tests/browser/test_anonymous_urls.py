"""Anonymous visitors of a fresh server see the sign-in screen on every URL, and no data.

On a fresh server Streamlit routes /<page> straight to pages/<page>.py (its pages-folder mode)
until st.navigation has been called once (the page guard then hands the run over to
dashboard.py), so the page URLs are opened before "/"; then once more, now routed through
dashboard.py's navigation from the start.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from billing_core.demo.catalog import CUSTOMERS
from pages.common.registry import PAGES
from tests.browser.conftest import ADMIN, VIEWER, StreamlitServer, launch_streamlit
from tests.support.reverse_proxy import USER_COOKIE, ReverseProxy, sign_in_proxy
from tests.support.streamlit_ws import run_page

pytestmark = pytest.mark.browser

DATA_ELEMENTS = (
    "[data-testid=stMetric], [data-testid=stDataFrame], [data-testid=stTable], "
    "[data-testid=stPlotlyChart], [data-testid=stDownloadButton], [data-testid=stJson]"
)
APP_TIMEOUT_MS = 20_000


def page_urls(server: StreamlitServer) -> list[str]:
    return [f"{server.url}/{Path(path).stem}" for path, *_ in PAGES]


def open_and_settle(page: Any, url: str, expect: str) -> str:
    page.goto(url)
    page.get_by_text(expect).first.wait_for(timeout=APP_TIMEOUT_MS)
    # The script has finished once Streamlit stops showing its running indicator.
    page.wait_for_function(
        "() => !document.querySelector('[data-testid=stStatusWidget] button')",
        timeout=APP_TIMEOUT_MS,
    )
    return str(page.inner_text("body"))


def assert_no_data(page: Any, body: str, url: str) -> None:
    assert page.locator(DATA_ELEMENTS).count() == 0, url
    for customer in CUSTOMERS:
        assert customer.name not in body, (url, customer.name)
    assert "Traceback" not in body


def test_every_url_shows_only_the_sign_in_screen(
    signin_server: StreamlitServer, chromium: Any
) -> None:
    page = chromium.new_page()
    urls = page_urls(signin_server)
    for url in [*urls, f"{signin_server.url}/", *urls]:
        body = open_and_settle(page, url, "please sign in first")
        page.get_by_role("button", name="Sign in").wait_for(timeout=APP_TIMEOUT_MS)
        assert_no_data(page, body, url)
    page.close()


def open_as(chromium: Any, proxy: ReverseProxy, user: str | None, **context_args: Any) -> Any:
    """A fresh browser whose proxy session (cookie) belongs to `user`, or to nobody."""
    context = chromium.new_context(**context_args)
    if user is not None:
        context.add_cookies([{"name": USER_COOKIE, "value": user, "url": proxy.url}])
    return context


def test_proxy_header_mode_end_to_end(
    tmp_path: Path, demo_db_url: str, chromium: Any, nginx: None
) -> None:
    # As in production: a reverse proxy signs people in (here: a session cookie) and sets the
    # header on every request it forwards, the websocket handshake included.
    header = "X-Forwarded-Email"
    env = {"AUTH_PROXY_HEADER": header, "VIEWER_EMAILS": VIEWER, "ADMIN_EMAILS": ADMIN}
    with (
        launch_streamlit(tmp_path, demo_db_url, env=env) as server,
        sign_in_proxy(
            tmp_path / "nginx",
            upstream=server.url,
            header=header,
            users={"viewer": VIEWER, "admin": ADMIN},
        ) as proxy,
    ):
        try:
            # No proxy session: the sign-in screen, even when the browser forges the header.
            for context_args in ({}, {"extra_http_headers": {header: ADMIN}}):
                anonymous = open_as(chromium, proxy, None, **context_args)
                page = anonymous.new_page()
                body = open_and_settle(page, f"{proxy.url}/overview", "company's sign-in page")
                assert_no_data(page, body, f"anonymous {context_args}")
                anonymous.close()

            viewer_context = open_as(chromium, proxy, "viewer")
            viewer = viewer_context.new_page()
            body = open_and_settle(viewer, f"{proxy.url}/", "Active customers")
            assert f"Signed in as {VIEWER}" in body
            for path, title, _icon, needed in PAGES:
                if needed != "admin":
                    continue
                # Not in the viewer's navigation: Streamlit says so and shows the main page.
                url = f"{proxy.url}/{Path(path).stem}"
                body = open_and_settle(viewer, url, "Page not found")
                assert viewer.get_by_role("heading", name=title).count() == 0, path
            viewer_context.close()

            admin_context = open_as(chromium, proxy, "admin")
            admin = admin_context.new_page()
            body = open_and_settle(admin, f"{proxy.url}/invoice_run", "Preview")
            assert f"Signed in as {ADMIN}" in body
            admin_context.close()
        except Exception as error:
            raise AssertionError(f"{error}\n{proxy.log_tail()}") from error


def test_a_bent_proxy_header_gets_no_role(tmp_path: Path, demo_db_url: str, nginx: None) -> None:
    # What a client without a browser can send: the header twice, or one value bent so that
    # the text after its last @ is a trusted domain. Sent over Streamlit's own websocket.
    header = "X-Forwarded-Email"
    env = {
        "AUTH_PROXY_HEADER": header,
        "VIEWER_EMAILS": VIEWER,
        "ADMIN_EMAILS": f"{ADMIN},@ops.acme.example",
    }
    viewer_session = ("Cookie", "proxy_user=viewer")
    with launch_streamlit(tmp_path, demo_db_url, env=env) as server:
        for sent in (
            [(header, "stranger@outside.example@ops.acme.example")],
            [(header, "stranger@outside.example,admin@ops.acme.example")],
            [(header, "stranger@outside.example"), (header, ADMIN)],
        ):
            body = run_page(server.url, sent)
            assert "Sign-in refused" in body, sent
            assert "Active customers" not in body, sent
        assert f"Signed in as **{VIEWER}**" in run_page(server.url, [(header, VIEWER)])

        users = {"viewer": VIEWER, "admin": ADMIN}
        with sign_in_proxy(
            tmp_path / "set", upstream=server.url, header=header, users=users
        ) as proxy:
            # A proxy that sets the header: the client's value is gone, with or without a session.
            body = run_page(proxy.url, [(header, ADMIN)])
            assert "please sign in first" in body
            assert "Signed in as" not in body
            body = run_page(proxy.url, [(header, ADMIN), viewer_session])
            assert f"Signed in as **{VIEWER}** (viewer)" in body
            assert ADMIN not in body

        with sign_in_proxy(
            tmp_path / "append", upstream=server.url, header=header, users=users, append=True
        ) as proxy:
            # A proxy that appends: refused with a sentence, never guessed at.
            body = run_page(proxy.url, [(header, ADMIN), viewer_session])
            assert "Sign-in refused" in body, proxy.log_tail()
            assert "Active customers" not in body
            assert f"Signed in as **{VIEWER}**" in run_page(proxy.url, [viewer_session])
