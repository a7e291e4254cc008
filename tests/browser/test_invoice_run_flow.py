"""Invoice run page against the local Stripe test server: preview, run, watch, check Stripe.

Its own server on a fresh demo database: running invoices changes data.
"""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Callable, Iterator
from decimal import Decimal
from pathlib import Path

import pytest
from playwright.sync_api import Page, expect
from sqlmodel import Session, col, select

from billing_core.db import make_engine
from billing_core.models import Customer, Invoice, InvoiceRun
from billing_core.money import minor_to_decimal
from billing_core.periods import previous_period, utcnow
from tests.browser.conftest import (
    StreamlitServer,
    assert_no_error_shown,
    dataframe_with_column,
    go_to,
    grid_row_count,
    grid_rows,
    launch_streamlit,
    metric_value,
    open_page,
    shown_amount,
    wait_for_app,
)
from tests.support.stripe_server import StripeTestServer

Shot = Callable[[Page, str], Path]
RUN_TIMEOUT_MS = 90_000  # nine customers pushed on a busy 2-core machine, polled every 1.5 s


@pytest.fixture
def run_server(
    tmp_path: Path, fresh_demo_db: str, stripe_test_server: StripeTestServer
) -> Iterator[StreamlitServer]:
    env = {
        "STRIPE_API_BASE": stripe_test_server.url,
        "STRIPE_API_KEY": "sk_test_browser",
        "BILLING_MODE": "demo",
    }
    with launch_streamlit(tmp_path, fresh_demo_db, env=env) as server:
        yield server


def test_preview_run_and_every_customer_billed_once_in_stripe(
    run_server: StreamlitServer,
    stripe_test_server: StripeTestServer,
    page_on: Callable[[StreamlitServer], Page],
    screenshot: Shot,
) -> None:
    period = str(previous_period(utcnow()))  # the last closed month
    page = open_page(page_on(run_server), "/")
    go_to(page, "Invoice run")

    # Choose the month explicitly, as a person would.
    page.get_by_test_id("stSelectbox").filter(has_text="Month to invoice").click()
    page.get_by_role("option", name=period, exact=True).click()
    wait_for_app(page)
    expect(page.get_by_text(f"No run for {period} yet.")).to_be_visible()

    page.get_by_role("button", name=re.compile(r"Preview$")).click()
    expect(page.get_by_role("heading", name=f"Preview of {period}")).to_be_visible()
    wait_for_app(page)
    assert metric_value(page, "Drafts") == "9"
    preview_totals = {
        cur: shown_amount(metric_value(page, f"Total {cur}"), cur) for cur in ("EUR", "USD")
    }
    drafts = dataframe_with_column(page, "Warnings")
    assert grid_row_count(drafts) == 9
    assert all(row["Total"] for row in grid_rows(drafts))
    assert_no_error_shown(page)
    screenshot(page, "preview")

    # The emulator gives each new Stripe customer a test card, so card customers get paid;
    # in demo mode the box is ticked already.
    expect(page.get_by_role("checkbox", name=re.compile("test card"))).to_be_checked()
    wait_for_app(page)

    page.get_by_role("button", name=re.compile(f"Run invoicing for {period}$")).click()
    # The progress panel (a fragment polling the run) shows it finishing.
    expect(page.get_by_role("heading", name=re.compile(r"^Run \d+: succeeded$"))).to_be_visible(
        timeout=RUN_TIMEOUT_MS
    )
    expect(page.get_by_text("9 of 9 invoices pushed, 0 failed")).to_be_visible()
    results = dataframe_with_column(page, "Step")
    expect(results.locator("table[role=grid]")).to_have_attribute("aria-rowcount", "10")
    wait_for_app(page)
    shown = grid_rows(results)
    assert {r["Status"] for r in shown} <= {"open", "paid"}
    assert "paid" in {r["Status"] for r in shown}  # the test cards were charged
    # The preview of what was just billed is gone, not left as an empty block; asked again,
    # it says there is nothing left to draft.
    expect(page.get_by_role("heading", name=f"Preview of {period}")).to_have_count(0)
    assert_no_error_shown(page)
    screenshot(page, "after-run")
    page.get_by_role("button", name="Preview").click()
    expect(page.get_by_text(f"No invoice to draft for {period}.")).to_be_visible()
    expect(page.get_by_text("Already invoiced for this month:")).to_be_visible()
    wait_for_app(page)

    engine = make_engine(run_server.database_url)
    with Session(engine) as session:
        customers = session.exec(select(Customer).where(col(Customer.active))).all()
        invoices = {
            i.customer_id: i
            for i in session.exec(select(Invoice).where(Invoice.period == period)).all()
        }
        runs = session.exec(select(InvoiceRun).where(InvoiceRun.period == period)).all()
    engine.dispose()
    assert len(customers) == 9 and len(runs) == 1 and runs[0].status == "succeeded"
    assert set(invoices) == {c.id for c in customers}

    # Stripe holds exactly one invoice per demo customer for the period, with our totals.
    local_totals: dict[str, Decimal] = defaultdict(Decimal)
    for customer in customers:
        local = invoices[customer.id]
        assert customer.stripe_customer_id, customer.name
        remote = [
            inv
            for inv in stripe_test_server.invoices(customer=customer.stripe_customer_id)
            if inv["metadata"].get("period") == period
        ]
        assert len(remote) == 1, (customer.name, remote)
        assert remote[0]["id"] == local.stripe_invoice_id
        assert remote[0]["total"] == local.total_minor, customer.name
        assert remote[0]["currency"] == local.currency.lower()
        assert remote[0]["status"] == local.status, customer.name
        local_totals[local.currency] += minor_to_decimal(local.total_minor, local.currency)
    # What the preview promised is what was billed.
    assert dict(local_totals) == preview_totals
