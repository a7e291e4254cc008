"""Reconciliation page: accept a difference with a note, see it resolved, find it in the audit log.

Its own server on a fresh demo database: resolving changes data.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Page, expect
from playwright.sync_api import TimeoutError as PlaywrightTimeout
from sqlmodel import Session, col, select

from billing_core.db import make_engine
from billing_core.models import AuditEntry, Customer, ReconciliationDiff
from billing_core.views.reconciliation import diff_label
from tests.browser.conftest import (
    StreamlitServer,
    assert_no_error_shown,
    dataframe_with_column,
    go_to,
    grid_rows,
    launch_streamlit,
    metric_value,
    open_page,
    wait_for_app,
)

Shot = Callable[[Page, str], Path]
NOTE = "Checked with finance: rounding on the customer's side (browser test)"


@pytest.fixture
def reconcile_server(tmp_path: Path, fresh_demo_db: str) -> Iterator[StreamlitServer]:
    with launch_streamlit(tmp_path, fresh_demo_db, env={}) as server:
        yield server


def pick(page: Page, widget: str, option: str) -> None:
    """Choose an option of the st.selectbox labelled `widget`."""
    wanted = page.get_by_role("option", name=option, exact=True)
    for _ in range(3):
        # A rerun that lands just after the click re-renders the widget and closes its list:
        # open it again once the app is idle.
        wait_for_app(page)
        page.get_by_role("combobox", name=widget).click()
        try:
            wanted.wait_for(timeout=5000)
            break
        except PlaywrightTimeout:
            page.keyboard.press("Escape")
    wanted.click()
    wait_for_app(page)


def test_accept_a_difference_and_see_it_in_the_audit_log(
    reconcile_server: StreamlitServer,
    page_on: Callable[[StreamlitServer], Page],
    screenshot: Shot,
) -> None:
    engine = make_engine(reconcile_server.database_url)
    with Session(engine) as session:
        diff = session.exec(
            select(ReconciliationDiff)
            .where(
                ReconciliationDiff.status == "open",
                col(ReconciliationDiff.within_tolerance).is_(False),
            )
            .order_by(col(ReconciliationDiff.id))
        ).first()
        assert diff is not None, "the demo world has open differences"
        name = session.get(Customer, diff.customer_id).name if diff.customer_id else None  # type: ignore[union-attr]
        label = diff_label(diff, name)
        diff_id = diff.id

    page = page_on(reconcile_server)
    # Wide enough that the grid renders every column of the diff table (it virtualizes them).
    page.set_viewport_size({"width": 2600, "height": 1200})
    open_page(page, "/")
    go_to(page, "Reconciliation")
    open_before = int(metric_value(page, "Open above tolerance"))
    resolved_before = int(metric_value(page, "Resolved"))
    assert open_before > 0

    pick(page, "Difference", label)
    page.get_by_text("Accept with a note").click()
    note = page.get_by_label("Note (required to accept)")
    note.fill(NOTE)
    note.press("Enter")
    wait_for_app(page)
    page.get_by_role("button", name="Apply resolution").click()
    expect(page.locator("[data-testid=stAlertContentSuccess]")).to_contain_text(
        f"Difference #{diff_id} accepted."
    )
    wait_for_app(page)
    expect(
        page.locator("[data-testid=stMetric]")
        .filter(has_text="Resolved")
        .locator("[data-testid=stMetricValue]")
    ).to_have_text(str(resolved_before + 1))
    assert int(metric_value(page, "Open above tolerance")) == open_before - 1
    # It left the resolve list.
    page.get_by_role("combobox", name="Difference").click()
    expect(page.get_by_role("option").first).to_be_visible()  # the list is open
    expect(page.get_by_role("option", name=label, exact=True)).to_have_count(0)
    page.keyboard.press("Escape")
    assert_no_error_shown(page)
    screenshot(page, "accepted")

    # Show only resolved differences of that month: the row says resolved, with the note.
    pick(page, "Month", diff.period)
    status = page.get_by_role("combobox", name="Status")
    status.click()
    status.fill("resolved")
    page.get_by_role("option", name="resolved", exact=True).click()
    page.keyboard.press("Escape")
    wait_for_app(page)
    remove_open = page.get_by_role("button", name="Remove open")
    for _ in range(3):
        # A click that lands during a rerun can be lost: try again until "open" is gone.
        wait_for_app(page)
        if remove_open.count() == 0:
            break
        remove_open.click()
        try:
            expect(remove_open).to_have_count(0, timeout=5000)
        except AssertionError:
            continue
    expect(remove_open).to_have_count(0)
    wait_for_app(page)
    table = dataframe_with_column(page, "Resolution")
    expect(table.locator("td", has_text=re.compile("^open$"))).to_have_count(0)
    expect(
        table.locator("td[aria-colindex='1']", has_text=re.compile(f"^{diff_id}$"))
    ).to_have_count(1)
    row = next(r for r in grid_rows(table) if r["#"] == str(diff_id))
    assert row["Status"] == "resolved"
    assert row["Resolution"] == f"accepted: {NOTE}"
    screenshot(page, "resolved-row")

    with Session(engine) as session:
        stored = session.get(ReconciliationDiff, diff_id)
        assert stored is not None
        assert (stored.status, stored.resolution, stored.resolution_note) == (
            "resolved",
            "accepted",
            NOTE,
        )
        entries = session.exec(
            select(AuditEntry).where(AuditEntry.target == f"diff:{diff_id}")
        ).all()
    engine.dispose()
    assert [e.action for e in entries] == ["reconcile.accepted"]

    # The audit log shows who resolved it and how.
    go_to(page, "Audit log")
    target = page.get_by_label("Target contains")
    target.fill(f"diff:{diff_id}")
    target.press("Enter")
    wait_for_app(page)
    log = dataframe_with_column(page, "Action")
    expect(log.locator("table[role=grid]")).to_have_attribute("aria-rowcount", "2")
    (entry,) = grid_rows(log)
    assert entry["Action"] == "reconcile.accepted"
    assert entry["Target"] == f"diff:{diff_id}"
    assert entry["Who"] == "local-admin"
    # Its changes, field by field: status open -> resolved, the resolution and the note.
    changes = page.locator("[data-testid=stTable] tbody tr")
    expect(changes.filter(has_text="status")).to_contain_text(
        re.compile(r"status\s*open\s*resolved")
    )
    expect(changes.filter(has_text="resolution")).to_contain_text("accepted")
    expect(changes.filter(has_text="note")).to_contain_text(NOTE)
    assert_no_error_shown(page)
    screenshot(page, "audit-log")
    assert re.fullmatch(r"\d{4}-\d{2}-\d{2} \d{2}:\d{2} UTC", entry["When"])
