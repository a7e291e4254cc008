"""Readable at a glance at 1440x900: on every page, no metric value is cut off, and the table
columns a person needs (marked below) are drawn on screen, not scrolled off to the right.

A metric value is truncated when its text is wider than its box (scrollWidth > clientWidth on
the value or anything inside it: Streamlit ends it with "…"). The data grid draws only the
columns in view, so a key column whose header is missing from the grid's accessible table, or
lies right of the grid's visible edge, is off-screen. Screenshots of every page go to
test-artifacts/browser/.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from playwright.sync_api import Page, expect
from sqlmodel import Session, col, select

from billing_core.db import make_engine
from billing_core.models import Invoice, display_status_in
from pages.common.registry import PAGES
from tests.browser.conftest import (
    StreamlitServer,
    assert_no_error_shown,
    go_to,
    open_page,
    wait_for_app,
)

Shot = Callable[[Page, str], Path]
SCREEN = {"width": 1440, "height": 900}

# Page title -> tables' key columns; a table is the one whose drawn headers hold the first.
KEY_COLUMNS: dict[str, list[list[str]]] = {
    "Invoices": [["Days late", "Number", "Customer", "Status", "Total", "Due", "Stripe", "PDF"]],
    "Usage vs plan limits": [["Metric", "Customer", "Status", "Overage cost"]],
    "Reconciliation": [
        ["Gone", "Month", "Kind", "Open", "Within", "Resolved"],
        ["Subject", "Customer", "Delta (remote − local)"],
    ],
    "AWS costs": [["Record type", "Customer", "Service", "Amount (USD)"]],
}

_TRUNCATED_METRICS = """
() => [...document.querySelectorAll('[data-testid=stMetricValue]')]
  .filter(v => [v, ...v.querySelectorAll('*')].some(e => e.scrollWidth > e.clientWidth + 1)
               || v.getBoundingClientRect().right > window.innerWidth)
  .map(v => v.innerText.trim())
"""

# The grid draws only the columns in view into its accessible table; the last one drawn may be
# cut by the grid's edge, so a key column must be drawn and not be that last, cut one.
_OFF_SCREEN_COLUMNS = """
(wanted) => {
  for (const table of document.querySelectorAll('[data-testid=stDataFrame] table[role=grid]')) {
    const drawn = [...table.querySelectorAll('thead th')].map(th => th.innerText.trim());
    if (!drawn.includes(wanted[0])) continue;
    const all = Number(table.getAttribute('aria-colcount'));
    const cut = drawn.length < all ? drawn[drawn.length - 1] : null;
    return wanted.filter(name => !drawn.includes(name) || name === cut);
  }
  return [wanted[0]];
}
"""


def truncated_metrics(page: Page) -> list[str]:
    found: list[str] = page.evaluate(_TRUNCATED_METRICS)
    return found


def off_screen_columns(page: Page, wanted: list[str]) -> list[str]:
    """Of `wanted`, the columns not fully drawn at this width (all of them when no table on
    the page draws wanted[0])."""
    expect(
        page.locator("[data-testid=stDataFrame] table[role=grid] thead th").first
    ).to_be_attached()
    missing: list[str] = page.evaluate(_OFF_SCREEN_COLUMNS, wanted)
    return missing


def settle(page: Page) -> None:
    """Wait until the page is drawn as a person sees it: script done, no placeholder boxes,
    web fonts loaded (a fallback font is narrower and would hide a cut-off value)."""
    wait_for_app(page)
    page.wait_for_function(
        """() => document.fonts.status === 'loaded'
                 && !document.querySelector('[data-testid=stSkeleton]')
                 && [...document.querySelectorAll('[data-testid=stMetricValue]')]
                      .every(v => v.getBoundingClientRect().width > 0)"""
    )
    page.wait_for_timeout(500)  # one more frame for the last layout pass


def _check(page: Page, title: str, screenshot: Shot) -> list[str]:
    settle(page)
    problems = [f"{title}: metric value cut off: {v!r}" for v in truncated_metrics(page)]
    for wanted in KEY_COLUMNS.get(title, []):
        missing = off_screen_columns(page, wanted)
        problems += [f"{title}: key column {c!r} is off-screen at 1440 px" for c in missing]
    screenshot(page, title)
    return problems


@pytest.fixture
def screen(page: Page) -> Page:
    page.set_viewport_size(SCREEN)  # type: ignore[arg-type]
    return page


def test_every_page_reads_whole_at_1440(screen: Page, screenshot: Shot) -> None:
    open_page(screen, "/")
    problems: list[str] = []
    for _path, title, _icon, _needed in PAGES:
        go_to(screen, title)
        assert_no_error_shown(screen)
        problems += _check(screen, title, screenshot)
    assert not problems, "\n".join(problems)


def test_invoice_detail_reads_whole_at_1440(
    screen: Page, screenshot: Shot, streamlit_server: StreamlitServer
) -> None:
    # The largest total of the demo: the detail's money must still fit.
    with Session(make_engine(streamlit_server.database_url)) as s:
        largest = s.exec(
            select(Invoice)
            .where(col(Invoice.number).is_not(None))
            .order_by(col(Invoice.total_minor).desc())
        ).first()
        failed = s.exec(select(Invoice).where(display_status_in(["failed"]))).first()
    assert largest is not None and failed is not None
    problems: list[str] = []
    open_page(screen, "/")
    for invoice in (largest, failed):
        open_page(screen, f"/invoices?invoice={invoice.number}")
        heading = screen.get_by_role("heading", level=3).filter(has_text=str(invoice.number))
        expect(heading).to_be_visible()
        assert_no_error_shown(screen)
        problems += _check(screen, f"Invoice {invoice.number}", screenshot)
    assert not problems, "\n".join(problems)


def test_a_pasted_link_shows_the_same_invoices(screen: Page) -> None:
    """The URL holds the filters: opening it in a new tab shows the same selection."""
    open_page(screen, "/invoices?status=failed&overdue=1")
    frame = screen.locator("[data-testid=stDataFrame]").filter(
        has=screen.locator("table[role=grid] thead th").filter(has_text="Days late")
    )
    expect(frame).to_have_count(1)
    statuses = frame.locator("table[role=grid] tbody tr td").all_inner_texts()
    assert "failed" in statuses and "paid" not in statuses
    expect(screen.get_by_label("Overdue only")).to_be_checked()
