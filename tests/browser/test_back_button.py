"""The browser's back button and reload keep a person's place (pages/common/url_state.py).

On Invoices: filter to failed payments, open one of them; back shows the filtered list again
without the invoice, forward reopens it, and a reload keeps the view. On Customer: open one
customer, then another; back shows the first. Read-only, so it runs on the shared server.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path

from playwright.sync_api import Page, expect
from sqlmodel import Session, col, select

from billing_core.db import make_engine
from billing_core.models import Customer, Invoice, display_status_in
from billing_core.states import DisplayStatus
from tests.browser.conftest import (
    StreamlitServer,
    assert_no_error_shown,
    go_to,
    grid_row_count,
    open_page,
    wait_for_app,
)

Shot = Callable[[Page, str], Path]


def _failed_numbers(server: StreamlitServer) -> list[str]:
    engine = make_engine(server.database_url)
    with Session(engine) as session:
        found = session.exec(
            select(Invoice.number).where(display_status_in([DisplayStatus.FAILED]))
        ).all()
    engine.dispose()
    return sorted(str(n) for n in found if n)


def _detail(page: Page, number: str) -> object:
    return page.get_by_role("heading", level=3).filter(has_text=number)


def _status_chips(page: Page) -> list[str]:
    """The options chosen in the Status multiselect (the tab's first)."""
    box = page.get_by_role("tabpanel", name="Invoices").get_by_test_id("stMultiSelect").first
    expect(box).to_contain_text("Status")
    return [t.strip() for t in box.locator("[data-tag]").all_inner_texts()]


def test_back_restores_the_filtered_list_and_reload_keeps_the_open_invoice(
    page: Page, streamlit_server: StreamlitServer, screenshot: Shot
) -> None:
    failed = _failed_numbers(streamlit_server)
    assert failed, "the demo world has failed payments"
    open_page(page, "/")
    go_to(page, "Invoices")
    tab = page.get_by_role("tabpanel", name="Invoices")

    # Filter like a person: pick "failed" in the Status multiselect.
    status = page.get_by_role("combobox", name="Status")
    status.click()
    status.fill("failed")
    page.get_by_role("option", name="failed", exact=True).click()
    page.keyboard.press("Escape")
    expect(page).to_have_url(re.compile(r"[?&]status=failed"))
    grid = tab.locator("[data-testid=stDataFrame] table[role=grid]").first
    expect(grid).to_have_attribute("aria-rowcount", str(len(failed) + 1))
    wait_for_app(page)

    # Open one of them by its number.
    number = failed[0]
    lookup = page.get_by_label("Invoice number or id")
    lookup.fill(number)
    lookup.press("Enter")
    expect(_detail(page, number)).to_be_visible()  # type: ignore[attr-defined]
    expect(page).to_have_url(re.compile(rf"[?&]invoice={re.escape(number)}"))
    wait_for_app(page)
    screenshot(page, "invoice-open")

    # Back: the filtered list, no invoice open.
    page.go_back()
    expect(page).not_to_have_url(re.compile(r"[?&]invoice="))
    expect(page).to_have_url(re.compile(r"[?&]status=failed"))
    expect(_detail(page, number)).to_have_count(0)  # type: ignore[attr-defined]
    wait_for_app(page)
    assert _status_chips(page) == ["failed"]
    assert grid_row_count(tab) == len(failed)
    assert_no_error_shown(page)
    screenshot(page, "after-back")

    # Forward reopens it; a reload keeps both the filter and the open invoice.
    page.go_forward()
    expect(_detail(page, number)).to_be_visible()  # type: ignore[attr-defined]
    wait_for_app(page)
    page.reload()
    wait_for_app(page)
    expect(_detail(page, number)).to_be_visible()  # type: ignore[attr-defined]
    assert _status_chips(page) == ["failed"]
    assert grid_row_count(page.get_by_role("tabpanel", name="Invoices")) == len(failed)
    assert_no_error_shown(page)


def test_back_reopens_the_previous_customer(
    page: Page, streamlit_server: StreamlitServer, screenshot: Shot
) -> None:
    engine = make_engine(streamlit_server.database_url)
    with Session(engine) as session:
        customers = session.exec(select(Customer).order_by(col(Customer.name))).all()
        first, second = (c.name for c in customers[:2])
    engine.dispose()
    open_page(page, "/")
    go_to(page, "Customer")
    picker = page.get_by_role("combobox", name="Customer")

    def choose(name: str) -> None:
        picker.click()
        page.get_by_role("option", name=name, exact=True).click()
        expect(page.get_by_role("heading", level=3).filter(has_text=name).first).to_be_visible()
        wait_for_app(page)

    choose(second)
    url_second = page.url
    choose(first)
    assert page.url != url_second
    page.go_back()
    expect(page).to_have_url(url_second)
    expect(page.get_by_role("heading", level=3).filter(has_text=second).first).to_be_visible()
    wait_for_app(page)
    assert_no_error_shown(page)
    screenshot(page, "customer-after-back")


def test_the_open_tab_is_in_the_url_and_leaves_the_filters_alone(
    page: Page, streamlit_server: StreamlitServer, screenshot: Shot
) -> None:
    """Only the open tab is built (pages/invoices.py); which one is open is in the URL, so a
    reload or a pasted link opens the same tab, and leaving the Invoices tab and coming back
    keeps its filters."""
    open_page(page, "/invoices?status=failed")
    assert _status_chips(page) == ["failed"]
    page.get_by_role("tab", name="Stripe events").click()
    expect(page).to_have_url(re.compile(r"[?&]tab=Stripe\+events"))
    expect(page.get_by_role("combobox", name="Outcome")).to_be_visible()
    wait_for_app(page)
    page.reload()
    wait_for_app(page)
    expect(page.get_by_role("tab", name="Stripe events")).to_have_attribute("aria-selected", "true")
    expect(page.get_by_role("combobox", name="Outcome")).to_be_visible()
    screenshot(page, "invoices-stripe-events-tab")
    page.get_by_role("tab", name="Invoices").click()
    expect(page).not_to_have_url(re.compile(r"[?&]tab="))
    assert _status_chips(page) == ["failed"]
    expect(page).to_have_url(re.compile(r"[?&]status=failed"))
    assert_no_error_shown(page)
