"""A page's URL opened as the very first request of a fresh server shows the app's navigation.

A link pasted to a colleague (/invoices?status=failed) is often the first thing a freshly
started server is asked for. Streamlit then runs in its pages-folder mode (pages/ sits next to
dashboard.py) until dashboard.py has called st.navigation once: it would list the pages/ file
names ("dashboard", "audit", ...) and run pages/<name>.py alone. The page guard hands such a run
over to dashboard.py (ui.page_setup), so the sidebar lists the app's titles, filtered by role,
and the linked page keeps its query parameters. Each test starts its own server, so its deep
link really is the server's first request.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

from playwright.sync_api import Browser, Page, expect
from sqlmodel import Session, select

from billing_core.db import make_engine
from billing_core.models import Invoice, display_status_in
from billing_core.periods import Period, utcnow
from billing_core.states import DisplayStatus
from pages.common.registry import PAGES
from tests.browser.conftest import (
    ADMIN,
    ARTIFACTS,
    VIEWER,
    StreamlitServer,
    assert_no_error_shown,
    grid_row_count,
    launch_streamlit,
    wait_for_app,
)
from tests.browser.test_anonymous_urls import open_as
from tests.support.reverse_proxy import sign_in_proxy

Shot = Callable[[Page, str], Path]
# What the pages-folder mode would list: "dashboard" and the file names in pages/.
FILE_NAMES = ["dashboard", *(Path(path).stem.replace("_", " ") for path, *_ in PAGES)]
SCREEN = {"width": 1440, "height": 900}
ALL_TITLES = [title for _path, title, _icon, _needed in PAGES]  # the local admin's navigation


def _failed_count(server: StreamlitServer) -> int:
    engine = make_engine(server.database_url)
    with Session(engine) as session:
        found = session.exec(
            select(Invoice.id).where(display_status_in([DisplayStatus.FAILED]))
        ).all()
    engine.dispose()
    return len(found)


def _assert_nav_lists(page: Page, titles: list[str]) -> None:
    """The sidebar navigation's links are these page titles, in this order, and nothing else
    (a link's accessible name leaves out its icon's ligature text)."""
    links = page.locator("[data-testid=stSidebarNav]").get_by_role("link")
    expect(links).to_have_count(len(titles))
    for number, title in enumerate(titles):
        expect(links.nth(number)).to_have_accessible_name(title)
    for name in FILE_NAMES:
        expect(page.get_by_role("link", name=name, exact=True)).to_have_count(0)


def _assert_failed_invoices_shown(page: Page, failed: int) -> None:
    expect(page.get_by_role("heading", name="Invoices", level=1)).to_be_visible()
    expect(page).to_have_url(re.compile(r"/invoices\?(.*&)?status=failed"))
    tab = page.get_by_role("tabpanel", name="Invoices")
    box = tab.get_by_test_id("stMultiSelect").first
    expect(box).to_contain_text("Status")
    expect(box.locator("[data-tag]")).to_have_text(["failed"])
    grid = tab.locator("[data-testid=stDataFrame] table[role=grid]").first
    expect(grid).to_have_attribute("aria-rowcount", str(failed + 1))
    assert grid_row_count(tab) == failed


def test_deep_link_as_first_request_shows_app_navigation_and_the_view(
    tmp_path: Path, fresh_demo_db: str, chromium: Browser
) -> None:
    with launch_streamlit(tmp_path, fresh_demo_db, env={}) as server:
        failed = _failed_count(server)
        assert failed, "the demo world has failed payments"
        context = chromium.new_context(base_url=server.url, viewport=SCREEN)  # type: ignore[arg-type]
        try:
            page = context.new_page()
            page.goto("/invoices?status=failed")  # nothing has opened "/" on this server
            wait_for_app(page)
            _assert_failed_invoices_shown(page, failed)
            # The local admin's navigation: every title of the registry, in its order.
            _assert_nav_lists(page, ALL_TITLES)
            assert_no_error_shown(page)
            ARTIFACTS.mkdir(parents=True, exist_ok=True)
            page.screenshot(path=ARTIFACTS / "deep-link-first-request-invoices-failed.png")

            # A second person on another deep link, and the sidebar still leads everywhere.
            other = context.new_page()
            other.goto("/audit")
            wait_for_app(other)
            expect(other.get_by_role("heading", name="Audit log", level=1)).to_be_visible()
            _assert_nav_lists(other, ALL_TITLES)
            other.locator("[data-testid=stSidebarNav]").get_by_role(
                "link", name="Overview", exact=True
            ).click()
            expect(other.get_by_role("heading", name="Overview", level=1)).to_be_visible()
            expect(other).to_have_url(re.compile(r"^http://[^/]+/(\?.*)?$"))  # Overview is "/"
        finally:
            context.close()


def test_deep_link_as_first_request_keeps_role_filtering(
    tmp_path: Path, demo_db_url: str, chromium: Any, nginx: None
) -> None:
    header = "X-Forwarded-Email"
    env = {"AUTH_PROXY_HEADER": header, "VIEWER_EMAILS": VIEWER, "ADMIN_EMAILS": ADMIN}
    viewer_titles = [title for _path, title, _icon, needed in PAGES if needed == "viewer"]
    with (
        launch_streamlit(tmp_path, demo_db_url, env=env) as server,
        sign_in_proxy(
            tmp_path / "nginx", upstream=server.url, header=header, users={"viewer": VIEWER}
        ) as proxy,
    ):
        context = open_as(chromium, proxy, "viewer", viewport=SCREEN)
        try:
            page = context.new_page()
            # An admin page as the server's first request: the viewer is not shown it, and the
            # navigation lists only the viewer's pages, by title.
            page.goto(f"{proxy.url}/audit")
            wait_for_app(page)
            expect(page.get_by_role("heading", name="Audit log", level=1)).to_have_count(0)
            _assert_nav_lists(page, viewer_titles)
            expect(page.get_by_text(f"Signed in as {VIEWER}")).to_be_visible()
        except Exception as error:
            raise AssertionError(f"{error}\n{proxy.log_tail()}") from error
        finally:
            context.close()


def _assert_overview_at_home(page: Page, month: str) -> None:
    """The Overview of `month`, served at "/" with the month kept, and no "Page not found"."""
    expect(page.get_by_role("heading", name="Overview", level=1)).to_be_visible()
    expect(page).to_have_url(re.compile(rf"^http://[^/]+/\?(.*&)?month={month}(&.*)?$"))
    expect(page.get_by_text(f"Invoices billed for {month}", exact=True)).to_be_visible()
    expect(page.get_by_role("dialog")).to_have_count(0)
    expect(page.get_by_text("Page not found")).to_have_count(0)
    assert_no_error_shown(page)


def test_overview_by_its_file_name_opens_at_home_with_its_query(
    tmp_path: Path, fresh_demo_db: str, chromium: Browser
) -> None:
    """ "/overview" is what people type and what the pages-folder mode links to, but
    st.navigation serves the first page at "/": the link is sent there, query and all, both as
    a fresh server's first request and on a server that is already running."""
    with launch_streamlit(tmp_path, fresh_demo_db, env={}) as server:
        context = chromium.new_context(base_url=server.url, viewport=SCREEN)  # type: ignore[arg-type]
        # Months other than the one the Overview opens on, so the query is what shows them.
        earlier = [str(Period.containing(utcnow()).shift(-months)) for months in (3, 4)]
        try:
            page = context.new_page()
            page.goto(f"/overview?month={earlier[0]}")  # the server's first request
            wait_for_app(page)
            _assert_overview_at_home(page, earlier[0])
            page.goto(f"/overview?month={earlier[1]}")  # and again, once dashboard.py has run
            wait_for_app(page)
            _assert_overview_at_home(page, earlier[1])
        finally:
            context.close()
