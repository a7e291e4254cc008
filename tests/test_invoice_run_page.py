"""The admin invoice run page: guard, preview, run through the background worker."""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from datetime import UTC, datetime

import pytest
from sqlmodel import Session, select
from streamlit.testing.v1 import AppTest

from billing_core.db import make_engine
from billing_core.models import CostSnapshot, Invoice, InvoiceRun
from billing_core.periods import Period, utcnow
from tests.conftest import ROOT
from tests.support.stripe_server import StripeTestServer

PAGE = str(ROOT / "pages/invoice_run.py")


@pytest.fixture
def stripe_server() -> Iterator[StripeTestServer]:
    with StripeTestServer() as server:
        yield server


def _page() -> AppTest:
    return AppTest.from_file(PAGE, default_timeout=60)


# The demo world's last closed month: the test database is seeded at DEMO_NOW, while the page
# offers months by the real clock, so the tests pick it instead of the page's default.
DEMO_MONTH = Period(2026, 10)


def _opened() -> AppTest:
    at = _page().run()
    at.selectbox(key="run_period").set_value(DEMO_MONTH).run()
    return at


def test_viewer_cannot_open_the_run_page(app_env: dict[str, str], monkeypatch) -> None:
    monkeypatch.setenv("VIEWER_EMAILS", "finance@example.com")
    monkeypatch.setenv("AUTH_PROXY_HEADER", "X-Email")
    at = _page().run()
    assert not at.exception
    assert not at.button
    assert len(at.dataframe) == 0


def test_preview_shows_drafts_and_saves_nothing(app_env: dict[str, str]) -> None:
    default = _page().run().selectbox[0].value
    assert default == Period.containing(utcnow()).previous()  # the last closed month
    at = _opened()
    assert not at.exception
    at.button[0].click().run()  # Preview
    assert not at.exception
    metrics = {m.label: m.value for m in at.metric}
    assert metrics["Drafts"] == "9"
    assert "Total EUR" in metrics and "Total USD" in metrics
    frame = at.dataframe[0].value
    assert len(frame) == 9
    with Session(make_engine(app_env["DATABASE_URL"])) as s:
        assert s.exec(select(Invoice).where(Invoice.period == "2026-10")).all() == []
        assert s.exec(select(InvoiceRun)).all() == []
    # Run is disabled without Stripe configured, with a sentence saying why.
    assert any("STRIPE_API_KEY" in c.value for c in at.caption)


def test_preview_shows_the_cost_figures_as_of_and_coverage(app_env: dict[str, str]) -> None:
    at = _opened()
    at.button[0].click().run()  # Preview
    assert not at.exception
    frame = at.dataframe[0].value
    assert set(frame["days covered"]) == {"31 of 31"}  # the demo's October is complete
    assert any(
        c.value.startswith("AWS costs: UnblendedCost by LINKED_ACCOUNT, as of 2026-11-")
        for c in at.caption
    )
    # October as fetched on October 20th only: the preview says so and refuses who owns costs.
    with Session(make_engine(app_env["DATABASE_URL"])) as s:
        for snap in s.exec(select(CostSnapshot).where(CostSnapshot.period == "2026-10")).all():
            snap.fetched_at = datetime(2026, 10, 20, 14, tzinfo=UTC)
            s.add(snap)
        s.commit()
    at = _opened()
    at.button[0].click().run()
    assert not at.exception
    frame = at.dataframe[0].value
    assert set(frame["days covered"]) == {"20 of 31"}
    assert all(w.startswith("refused: not invoiced:") for w in frame["warnings"])
    assert any("fetch-costs --period 2026-10 --force" in w.value for w in at.warning)


def test_run_button_bills_every_customer_once(
    app_env: dict[str, str], monkeypatch, stripe_server: StripeTestServer
) -> None:
    monkeypatch.setenv("STRIPE_API_BASE", stripe_server.url)
    monkeypatch.setenv("STRIPE_API_KEY", "sk_test_page")
    at = _opened()
    assert not at.exception
    at.button[0].click().run()  # Preview first, as a person would
    assert any(h.value == "Preview of 2026-10" for h in at.subheader)
    at.checkbox[0].check()
    run_button = next(b for b in at.button if b.label.startswith("Run invoicing"))
    run_button.click().run()
    assert not at.exception
    engine = make_engine(app_env["DATABASE_URL"])
    deadline = time.monotonic() + 30
    run = None
    while time.monotonic() < deadline:
        with Session(engine) as s:
            run = s.exec(select(InvoiceRun)).first()
            if run is not None and run.status not in ("requested", "running"):
                break
        time.sleep(0.2)
    assert run is not None and run.status == "succeeded", run and run.errors
    assert run.trigger == "button" and run.actor == "local-admin"
    with Session(engine) as s:
        invoices = s.exec(select(Invoice).where(Invoice.period == "2026-10")).all()
    assert len(invoices) == 9
    assert len(stripe_server.invoices()) == 9
    for inv in invoices:
        remote = stripe_server.invoice(inv.stripe_invoice_id or "")
        assert remote["total"] == inv.total_minor
    at.run()
    assert not at.exception
    results = at.dataframe[0].value
    assert sorted(results["status"].unique()) == ["open", "paid"]
    assert any("Run 1: succeeded" in h.value for h in at.subheader)
    # The preview of what was just billed is gone, not left as an empty block.
    assert not any(h.value.startswith("Preview of") for h in at.subheader)
    history = at.dataframe[-1].value
    assert re.fullmatch(r"\d{4}-\d\d-\d\d \d\d:\d\d UTC", history["started"][0])
    assert history["finished"][0].endswith(" UTC")
    # A second click does not start a second billing.
    run_button = next(b for b in at.button if b.label.startswith("Run invoicing"))
    run_button.click().run()
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        with Session(engine) as s:
            runs = s.exec(select(InvoiceRun).order_by(InvoiceRun.id)).all()  # type: ignore[arg-type]
        if len(runs) == 2 and runs[1].status not in ("requested", "running"):
            break
        time.sleep(0.2)
    assert runs[1].status == "succeeded" and runs[1].total_count == 0
    assert len(stripe_server.invoices()) == 9


def test_progress_panel_follows_the_run_that_billed_not_a_refused_click(
    app_env: dict[str, str],
) -> None:
    """A click refused by the lock is newer, but the panel shows the run that billed."""
    from billing_core.db import session_scope

    engine = make_engine(app_env["DATABASE_URL"])
    with session_scope(engine) as s:
        s.add(InvoiceRun(period="2026-10", status="succeeded", total_count=9, done_count=9))
        s.add(
            InvoiceRun(
                period="2026-10",
                status="locked",
                errors=[{"step": "lock", "message": "Another invoice run holds the lock"}],
            )
        )
    engine.dispose()
    at = _opened()
    assert not at.exception
    assert [h.value for h in at.subheader if h.value.startswith("Run ") and ":" in h.value] == [
        "Run 1: succeeded"
    ]
    assert not [e for e in at.error if "holds the lock" in e.value]
