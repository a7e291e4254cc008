"""Usage page: a file with one bad row imports nothing and says why; a good file shows up.

Its own server on a fresh demo database: importing usage changes data.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from decimal import Decimal
from pathlib import Path

import pytest
from playwright.sync_api import Page, expect
from sqlmodel import Session, func, select

from billing_core.db import make_engine
from billing_core.models import Customer, UsageRecord
from billing_core.periods import Period, utcnow
from billing_core.usage.totals import totals_by_metric
from tests.browser.conftest import (
    StreamlitServer,
    assert_no_error_shown,
    go_to,
    grid_columns,
    launch_streamlit,
    open_page,
    wait_for_app,
)

Shot = Callable[[Page, str], Path]
CUSTOMER = "Birch & Co"
EMAIL = "accounts@birch.example"  # on the indie plan: 1,000,000 API calls included
ADDED_CALLS = 2_500_000


@pytest.fixture
def usage_server(tmp_path: Path, fresh_demo_db: str) -> Iterator[StreamlitServer]:
    with launch_streamlit(tmp_path, fresh_demo_db, env={}) as server:
        yield server


def db_state(url: str, period: Period) -> tuple[int, Decimal]:
    """(usage records stored, the customer's API calls in the period)."""
    engine = make_engine(url)
    with Session(engine) as session:
        count = session.exec(select(func.count()).select_from(UsageRecord)).one()
        customer = session.exec(select(Customer).where(Customer.email == EMAIL)).one()
        totals = totals_by_metric(session, period, customer.id)
    engine.dispose()
    return count, totals.get((customer.id or 0, "api_calls"), Decimal(0))


def upload(page: Page, name: str, text: str) -> None:
    page.locator("[data-testid=stFileUploader] input[type=file]").set_input_files(
        files=[{"name": name, "mimeType": "text/csv", "buffer": text.encode()}]
    )
    expect(page.get_by_text(name)).to_be_visible()  # the uploader lists the file
    button = page.get_by_role("button", name="Import usage")
    expect(button).to_be_enabled()
    wait_for_app(page)
    button.click()


def expect_used_calls_shown(page: Page, calls: Decimal) -> None:
    """The customer's API-calls row of the usage table shows this many calls used.

    The grid's accessible table is visually hidden, so cells are found by CSS, not by role.
    """
    frame = page.locator("[data-testid=stDataFrame]").first
    used = grid_columns(frame).index("Used") + 1
    row = (
        frame.locator("table[role=grid] tbody tr")
        .filter(has=page.locator("td", has_text=re.compile(f"^{re.escape(CUSTOMER)}$")))
        .filter(has=page.locator("td", has_text=re.compile(r"^api_calls")))
    )
    expect(row).to_have_count(1)
    # Localized number: whatever the separators, the same digits.
    digits = str(int(calls))
    shown = re.compile("^" + r"\D?".join(digits) + "$")
    expect(row.locator(f"td[aria-colindex='{used}']")).to_have_text(shown)


def test_bad_row_imports_nothing_then_good_file_shows_up(
    usage_server: StreamlitServer,
    page_on: Callable[[StreamlitServer], Page],
    screenshot: Shot,
) -> None:
    now = utcnow()
    period = Period.containing(now)
    moment = period.start_at + (now - period.start_at) / 2  # inside the month, not in the future
    stamp = moment.strftime("%Y-%m-%dT%H:%M:%SZ")
    count_before, calls_before = db_state(usage_server.database_url, period)

    page = open_page(page_on(usage_server), "/")
    go_to(page, "Usage vs plan limits")
    # Most customers are within their limits: the over-limit ones sort first.
    page.get_by_role("combobox", name="Show").click()
    page.get_by_role("option", name="over", exact=True).click()
    page.keyboard.press("Escape")
    wait_for_app(page)
    page.get_by_text("Import usage (CSV)").click()
    expect(page.locator("[data-testid=stFileUploader]")).to_be_visible()

    bad = (
        "customer,metric,quantity,timestamp\n"
        f"{EMAIL},api_calls,{ADDED_CALLS},{stamp}\n"
        f"{EMAIL},bogus_metric,5,{stamp}\n"
    )
    upload(page, "usage-bad.csv", bad)
    error = page.locator("[data-testid=stAlertContentError]")
    expect(error).to_contain_text("nothing was imported")
    expect(error).to_contain_text("line 3")
    expect(error).to_contain_text("bogus_metric")
    expect(error).not_to_contain_text("line 2")  # the good row is not blamed
    expect(page.get_by_text("Traceback")).to_have_count(0)
    screenshot(page, "bad-file")
    assert db_state(usage_server.database_url, period) == (count_before, calls_before)

    good = (
        "customer,metric,quantity,timestamp,idempotency_key\n"
        f"{EMAIL},api_calls,{ADDED_CALLS},{stamp},browser-test-1\n"
        f"{EMAIL},api_calls,1,{stamp},browser-test-2\n"
    )
    upload(page, "usage-good.csv", good)
    expect(page.locator("[data-testid=stAlertContentSuccess]")).to_contain_text(
        f"2 rows read, 2 imported, 0 already present (periods {period})"
    )
    wait_for_app(page)
    assert_no_error_shown(page)
    count_after, calls_after = db_state(usage_server.database_url, period)
    assert count_after == count_before + 2
    assert calls_after == calls_before + ADDED_CALLS + 1
    # Far over the limit now, so it is listed among the over-limit rows with the new total.
    expect_used_calls_shown(page, calls_after)
    screenshot(page, "good-file")
