"""Invoices page: filter by status, see the figures and table follow, download the CSV.

Read-only, so it runs on the shared server (`streamlit_server`).
"""

from __future__ import annotations

import csv
import io
import re
from collections import Counter, defaultdict
from collections.abc import Callable
from decimal import Decimal
from pathlib import Path

from playwright.sync_api import Page, expect
from sqlmodel import Session, select

from billing_core.db import make_engine
from billing_core.models import Invoice, display_status_in
from billing_core.money import exponent
from billing_core.states import DisplayStatus
from tests.browser.conftest import (
    StreamlitServer,
    assert_no_error_shown,
    go_to,
    grid_columns,
    grid_row_count,
    grid_rows,
    metric_value,
    open_page,
    shown_amount,
    wait_for_app,
)

Shot = Callable[[Page, str], Path]
# "EUR · 9 invoices": the line above each currency's figures.
COUNT_LINE = re.compile(r"^([A-Z]{3}) · ([\d,]+) invoices?$")
CSV_HEADER = [
    "invoice_id",
    "number",
    "customer_id",
    "customer",
    "period",
    "currency",
    "subtotal",
    "tax",
    "total",
    "amount_paid",
    "amount_refunded",
    "status",
    "issued_at",
    "paid_at",
    "stripe_invoice_id",
]


def counts_shown(page: Page) -> dict[str, int]:
    lines = page.locator("[data-testid=stMarkdownContainer] p").all_inner_texts()
    found = (COUNT_LINE.match(line.strip()) for line in lines)
    return {m.group(1): int(m.group(2).replace(",", "")) for m in found if m}


def test_filter_failed_invoices_and_download_csv(
    page: Page, streamlit_server: StreamlitServer, screenshot: Shot
) -> None:
    engine = make_engine(streamlit_server.database_url)
    with Session(engine) as session:
        every = session.exec(select(Invoice)).all()
        failed_ids = {
            i.id
            for i in session.exec(select(Invoice).where(display_status_in([DisplayStatus.FAILED])))
        }
    engine.dispose()
    assert failed_ids, "the demo world has failed payments"

    open_page(page, "/")
    go_to(page, "Invoices")
    tab = page.get_by_role("tabpanel", name="Invoices")
    before = counts_shown(page)
    assert sum(before.values()) == len(every)
    assert grid_row_count(tab) == len(every)
    screenshot(page, "all-invoices")

    # Filter on one status like a person: type into the multiselect, pick the option.
    status = page.get_by_role("combobox", name="Status")
    status.click()
    status.fill("failed")
    page.get_by_role("option", name="failed", exact=True).click()
    page.keyboard.press("Escape")
    expect(tab.locator("[data-testid=stDataFrame] table[role=grid]").first).to_have_attribute(
        "aria-rowcount", str(len(failed_ids) + 1)
    )
    wait_for_app(page)
    after = counts_shown(page)
    assert sum(after.values()) == len(failed_ids) < sum(before.values())
    rows = grid_rows(tab)
    assert rows and {r["Status"] for r in rows} == {"failed"}
    assert "Number" in grid_columns(tab) and "Total" in grid_columns(tab)
    assert_no_error_shown(page)
    screenshot(page, "failed-only")

    billed = {cur: shown_amount(metric_value(page, f"Billed · {cur}"), cur) for cur in after}
    failed = {cur: shown_amount(metric_value(page, f"Failed · {cur}"), cur) for cur in after}

    button = page.get_by_test_id("stDownloadButton").filter(has_text="Invoices CSV")
    with page.expect_download() as info:
        button.get_by_role("button").click()
    download = info.value
    # The name says what was filtered: the months on the slider, failed only.
    assert re.fullmatch(
        r"invoices_\d{4}-\d{2}-to-\d{4}-\d{2}_failed\.csv", download.suggested_filename
    )
    raw = Path(download.path()).read_bytes()
    assert raw.startswith(b"\xef\xbb\xbf")  # a byte-order mark: Excel reads UTF-8
    text = raw.decode("utf-8-sig")
    wait_for_app(page)

    reader = csv.reader(io.StringIO(text))
    assert next(reader) == CSV_HEADER
    records = [dict(zip(CSV_HEADER, row, strict=True)) for row in reader]
    # As many rows as the page says, per currency, and exactly the failed invoices.
    assert len(records) == sum(after.values())
    assert Counter(r["currency"] for r in records) == Counter(after)
    assert {int(r["invoice_id"]) for r in records} == failed_ids
    assert {r["status"] for r in records} == {"failed"}
    totals: dict[str, Decimal] = defaultdict(Decimal)
    unpaid: dict[str, Decimal] = defaultdict(Decimal)
    for r in records:
        cur = r["currency"]
        places = exponent(cur)
        plain = re.compile(rf"^-?\d+\.\d{{{places}}}$" if places else r"^-?\d+$")
        for column in ("subtotal", "tax", "total", "amount_paid", "amount_refunded"):
            # Plain decimals: no currency sign, no thousands separator, the currency's places.
            assert plain.match(r[column]), (column, r[column])
        totals[cur] += Decimal(r["total"])
        unpaid[cur] += Decimal(r["total"]) - Decimal(r["amount_paid"])
    # The file's totals are the figures the page showed.
    assert dict(totals) == billed
    assert dict(unpaid) == failed
