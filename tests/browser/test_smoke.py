"""The dashboard as `make run` serves it: demo banner, Overview figures, every page reachable."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from playwright.sync_api import Page, expect

from pages.common.registry import PAGES
from tests.browser.conftest import assert_no_error_shown, go_to, open_page

Shot = Callable[[Page, str], Path]


def test_overview_shows_demo_banner_and_metrics(page: Page, screenshot: Shot) -> None:
    open_page(page, "/")
    expect(page.get_by_role("heading", name="Overview", level=1)).to_be_visible()
    expect(page.get_by_text("Demo data.")).to_be_visible()
    metrics = page.locator("[data-testid=stMetric]")
    for label in ("Active customers", "Open invoices", "Failed payments"):
        expect(metrics.filter(has_text=label)).to_have_count(1)
    # The demo world has nine customers, all active.
    active = metrics.filter(has_text="Active customers").locator("[data-testid=stMetricValue]")
    expect(active).to_have_text("9")
    expect(page.get_by_text("Traceback")).to_have_count(0)
    screenshot(page, "overview")


def test_sidebar_reaches_every_page(page: Page, screenshot: Shot) -> None:
    open_page(page, "/")
    nav = page.locator("[data-testid=stSidebarNav]")
    # The local admin is offered every page of the registry, in its order.
    expect(nav.get_by_role("link")).to_have_count(len(PAGES))
    for _path, title, _icon, _needed in PAGES:
        go_to(page, title)  # clicks the link and waits for the page's title (h1)
        # Every page shows content below its title, not just a heading.
        expect(
            page.locator("[data-testid=stMain] [data-testid=stElementContainer]")
        ).not_to_have_count(0)
        assert_no_error_shown(page)
        screenshot(page, title)
