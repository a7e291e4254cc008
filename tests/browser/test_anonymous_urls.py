"""Anonymous visitors of a fresh server see the sign-in screen on every URL, and no data.

On a fresh server Streamlit routes /<page> straight to pages/<page>.py (its pages-folder mode)
until dashboard.py has called st.navigation once, so the page URLs are opened before "/"; then
once more, now routed through dashboard.py's navigation.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from billing_core.demo.catalog import CUSTOMERS
from pages.common.registry import PAGES
from tests.browser.conftest import VIEWER, StreamlitServer, launch_streamlit

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


def test_proxy_header_mode_end_to_end(tmp_path: Path, demo_db_url: str, chromium: Any) -> None:
    # The proxy's header reaches Streamlit with the websocket handshake (st.context.headers).
    env = {"AUTH_PROXY_HEADER": "X-Forwarded-Email", "VIEWER_EMAILS": VIEWER,
           "ADMIN_EMAILS": "boss@acme.example"}  # fmt: skip
    with launch_streamlit(tmp_path, demo_db_url, env=env) as server:
        anonymous = chromium.new_page()
        body = open_and_settle(anonymous, f"{server.url}/overview", "company's sign-in page")
        assert_no_data(anonymous, body, "anonymous")
        context = chromium.new_context(extra_http_headers={"X-Forwarded-Email": VIEWER})
        viewer = context.new_page()
        body = open_and_settle(viewer, f"{server.url}/", "Active customers")
        assert f"Signed in as {VIEWER}" in body
        for path, title, _icon, needed in PAGES:
            if needed != "admin":
                continue
            # Not in the viewer's navigation: Streamlit says so and shows the main page.
            body = open_and_settle(viewer, f"{server.url}/{Path(path).stem}", "Page not found")
            assert viewer.get_by_role("heading", name=title).count() == 0, path
        context.close()
