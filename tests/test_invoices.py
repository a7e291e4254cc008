"""Invoice queries and the Invoices page (AppTest): filters, figures, detail, downloads."""

from __future__ import annotations

import csv
import io
from datetime import UTC, datetime
from decimal import Decimal

import pytest
from sqlmodel import Session, func, select
from streamlit.runtime.media_file_manager import MediaFileManager
from streamlit.testing.v1 import AppTest

from billing_core.db import make_engine, session_scope
from billing_core.models import Invoice, StripeEvent, display_status_in
from billing_core.money import display
from billing_core.states import EventOutcome
from billing_core.views import invoices as inv
from billing_core.views import overview
from tests.conftest import ROOT

PAGE = str(ROOT / "pages/invoices.py")


# ------------------------------------------------------------------------------ queries


def test_headline_figures_per_currency_match_the_database(demo_session: Session) -> None:
    figures = {h.currency: h for h in inv.headline_figures(demo_session, inv.InvoiceFilter())}
    assert set(figures) == {"EUR", "USD"}  # never one sum across currencies
    for cur, h in figures.items():
        rows = demo_session.exec(select(Invoice).where(Invoice.currency == cur)).all()
        assert h.count == len(rows)
        shown = {r.id: r.display_status for r in rows}
        assert h.billed == sum(r.total_minor for r in rows if shown[r.id] not in ("draft", "void"))
        assert h.paid == sum(r.amount_paid_minor for r in rows)
        assert h.failed == sum(r.total_minor for r in rows if shown[r.id] == "failed")
        assert h.void == sum(r.total_minor for r in rows if shown[r.id] == "void")
        assert h.refunded == sum(r.amount_refunded_minor for r in rows)
    assert figures["EUR"].failed > 0 and figures["EUR"].void > 0 and figures["EUR"].refunded > 0


def test_an_amount_carried_to_next_month_is_not_billed_twice(demo_session: Session) -> None:
    before = {h.currency: h.billed for h in inv.headline_figures(demo_session, inv.InvoiceFilter())}
    row = demo_session.exec(select(Invoice).where(Invoice.currency == "EUR")).first()
    assert row is not None
    demo_session.add(
        Invoice(
            customer_id=row.customer_id,
            period="2027-01",
            currency="EUR",
            status="draft",
            outcome="below_minimum",
            total_minor=30,
            subtotal_minor=30,
        )
    )
    demo_session.flush()
    after = {h.currency: h for h in inv.headline_figures(demo_session, inv.InvoiceFilter())}
    assert after["EUR"].billed == before["EUR"] and after["EUR"].counts["carried"] == 1
    table = inv.invoice_table(demo_session, inv.InvoiceFilter(statuses=("carried",)))
    assert list(table["status"]) == ["carried"]


def test_overview_does_not_count_a_carried_amount_as_billed(demo_session: Session) -> None:
    now = datetime(2027, 2, 10, tzinfo=UTC)  # last month: 2027-01, nothing billed yet
    row = demo_session.exec(select(Invoice).where(Invoice.currency == "EUR")).first()
    assert row is not None
    demo_session.add(
        Invoice(
            customer_id=row.customer_id,
            period="2027-01",
            currency="EUR",
            status="draft",
            outcome="below_minimum",
            total_minor=30,
            subtotal_minor=30,
        )
    )
    demo_session.flush()
    out = overview.build_overview(demo_session, now)
    assert out.billed_last_month == {} and out.invoices_last_month == 0


def test_filters_narrow_the_selection(demo_session: Session) -> None:
    everything = inv.count_invoices(demo_session, inv.InvoiceFilter())
    one_month = inv.InvoiceFilter(period_from="2026-09", period_to="2026-09")
    assert inv.count_invoices(demo_session, one_month) == 9 < everything
    usd = inv.InvoiceFilter(currencies=("USD",))
    assert {h.currency for h in inv.headline_figures(demo_session, usd)} == {"USD"}
    table = inv.invoice_table(demo_session, inv.InvoiceFilter(statuses=("failed",)))
    assert set(table["status"]) == {"failed"} and len(table) >= 2


def test_monthly_chart_has_a_panel_per_currency(demo_session: Session) -> None:
    frame = inv.monthly_billed(demo_session, inv.InvoiceFilter())
    assert (
        int(frame["total_minor"].sum())
        == demo_session.exec(select(func.sum(Invoice.total_minor))).one()
    )
    fig = inv.billed_chart(frame)
    titles = [a.text for a in fig.layout.annotations]
    assert titles == ["Invoiced in EUR, by status", "Invoiced in USD, by status"]
    assert {t.name for t in fig.data} >= {"paid", "failed", "void"}


def test_detail_lines_attempts_and_timeline(demo_session: Session) -> None:
    failed = demo_session.exec(
        select(Invoice).where(display_status_in(["failed"])).order_by(Invoice.period)
    ).first()
    detail = inv.invoice_detail(demo_session, failed.id)
    assert detail.lines_total_minor == failed.total_minor
    assert [a.outcome for a in detail.attempts] == ["failed"] * failed.attempt_count
    assert detail.timeline[0].what == "Draft built"
    assert any(t.what == "Payment attempt 2 failed" for t in detail.timeline)
    assert inv.find_invoice(demo_session, failed.number) == failed.id
    assert inv.find_invoice(demo_session, str(failed.id)) == failed.id
    assert inv.find_invoice(demo_session, "no such thing") is None


# ------------------------------------------------------------------------------ page


def _frame(at: AppTest, *columns: str):
    """The first table holding these columns (plain tables have no widget key)."""
    return next(d.value for d in at.dataframe if set(columns) <= set(d.value.columns))


def _metrics(at: AppTest) -> dict[str, str]:
    return {m.label: m.value for m in at.metric}


def test_page_shows_figures_chart_and_table(app_env: dict[str, str]) -> None:
    at = AppTest.from_file(PAGE, default_timeout=60).run()
    assert not at.exception
    metrics = _metrics(at)
    assert {"Billed · EUR", "Billed · USD", "Failed · EUR", "Refunded · EUR"} <= set(metrics)
    with Session(make_engine(app_env["DATABASE_URL"])) as s:
        eur = next(h for h in inv.headline_figures(s, inv.InvoiceFilter()) if h.currency == "EUR")
    assert metrics["Billed · EUR"] == display(eur.billed, "EUR")
    assert len(at.get("plotly_chart")) == 1
    table = at.dataframe(key="inv_table").value
    assert len(table) == 108


def test_filters_change_the_table_and_the_figures(app_env: dict[str, str]) -> None:
    at = AppTest.from_file(PAGE, default_timeout=60).run()
    before = _metrics(at)
    at.multiselect(key="inv_currency").set_value(["USD"]).run()
    assert not at.exception
    after = _metrics(at)
    assert "Billed · EUR" not in after and after["Billed · USD"] == before["Billed · USD"]
    at.multiselect(key="inv_currency").set_value([])
    at.multiselect(key="inv_status").set_value(["failed"]).run()
    table = at.dataframe(key="inv_table").value
    assert set(table["status"]) == {"failed"} and len(table) == 2
    assert _metrics(at)["Billed · EUR"] != before["Billed · EUR"]
    assert "Billed · USD" not in _metrics(at)  # no failed USD invoice in the demo
    at.select_slider(key="inv_periods").set_value(("2026-09", "2026-09")).run()
    at.multiselect(key="inv_status").set_value([]).run()
    assert set(at.dataframe(key="inv_table").value["period"]) == {"2026-09"}


def test_detail_view_by_number(app_env: dict[str, str]) -> None:
    with Session(make_engine(app_env["DATABASE_URL"])) as s:
        failed = s.exec(select(Invoice).where(display_status_in(["failed"]))).first()
    at = AppTest.from_file(PAGE, default_timeout=60).run()
    at.text_input(key="inv_lookup").set_value(failed.number).run()
    assert not at.exception
    metrics = _metrics(at)
    assert metrics["Status"] == "failed" and metrics["Attempts"] == str(failed.attempt_count)
    lines = _frame(at, "kind", "description")
    assert len(lines) > 1
    assert len(_frame(at, "outcome", "detail")) == failed.attempt_count
    # The demo's retry dates lie weeks in the past: nothing is shown as still scheduled.
    assert any("No retry scheduled." in w.value for w in at.warning)
    assert not any("Next automatic attempt" in w.value for w in at.warning)
    # Local admin (no sign-in configured) sees the retry button; demo invoices cannot be retried.
    assert at.button(key="inv_retry").disabled


def test_both_downloads_are_built_on_click_and_match_the_filter(
    app_env: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    built: dict[str, object] = {}
    original = MediaFileManager.add_deferred

    def spy(self, data_callable, mimetype, coordinates, file_name=None, **kw):
        built[file_name] = data_callable  # what a click would run
        return original(self, data_callable, mimetype, coordinates, file_name=file_name, **kw)

    monkeypatch.setattr(MediaFileManager, "add_deferred", spy)
    at = AppTest.from_file(PAGE, default_timeout=60).run()
    at.select_slider(key="inv_periods").set_value(("2026-09", "2026-09")).run()
    assert not at.exception
    assert {b.label for b in at.get("download_button")} == {"Invoices CSV", "Invoice lines CSV"}
    # File names say what was filtered; contents open in Excel (UTF-8 with a byte-order mark).
    raw_invoices = built["invoices_2026-09.csv"]()
    raw_lines = built["invoice-lines_2026-09.csv"]()
    assert raw_invoices.startswith(b"\xef\xbb\xbf") and raw_lines.startswith(b"\xef\xbb\xbf")
    invoices = list(csv.DictReader(io.StringIO(raw_invoices.decode("utf-8-sig"))))
    lines = list(csv.DictReader(io.StringIO(raw_lines.decode("utf-8-sig"))))
    assert len(invoices) == 9 and {r["period"] for r in invoices} == {"2026-09"}
    by_invoice: dict[str, Decimal] = {}
    for line in lines:
        by_invoice[line["invoice_id"]] = by_invoice.get(line["invoice_id"], Decimal(0)) + Decimal(
            line["amount"]
        )
    assert by_invoice == {r["invoice_id"]: Decimal(r["total"]) for r in invoices}


def _on_tab(tab: str) -> AppTest:
    """The Invoices page opened on one of its tabs, as ?tab=... in a link opens it."""
    at = AppTest.from_file(PAGE, default_timeout=60)
    at.query_params["tab"] = tab
    return at.run()


def test_only_the_open_tab_is_built_and_the_url_says_which(app_env: dict[str, str]) -> None:
    at = AppTest.from_file(PAGE, default_timeout=60).run()
    assert not at.exception
    # The Invoices tab by default: its filters are drawn, the other tabs' tables are not.
    keys = {w.key for w in at.selectbox} | {w.key for w in at.multiselect}
    assert "inv_status" in keys and "ev_outcome" not in keys and "pm_customer" not in keys
    events = _on_tab("Stripe events")
    keys = {w.key for w in events.selectbox} | {w.key for w in events.multiselect}
    assert "ev_outcome" in keys and "inv_status" not in keys
    assert events.query_params["tab"] == "Stripe events"


def test_payment_methods_and_events_tabs(app_env: dict[str, str]) -> None:
    at = _on_tab("Payment methods")
    methods = _frame(at, "has_payment_method")
    assert len(methods) == 9 and methods["has_payment_method"].sum() >= 5
    assert any("no payment method on file" in w.value for w in at.warning)
    # Demo mode has no Stripe: the admin action says so in a sentence.
    at.button(key="pm_setup").click().run()
    assert not at.exception
    assert any("Stripe" in e.value for e in at.error)
    at = _on_tab("Stripe events")
    at.selectbox(key="ev_outcome").set_value("ignored").run()
    events = _frame(at, "type", "outcome")
    assert list(events["type"]) == ["billing_portal.session.created"]


def test_events_tab_shows_failed_events_with_error_and_attempts(
    app_env: dict[str, str],
) -> None:
    payload = {
        "id": "evt_failing",
        "type": "invoice.paid",
        "created": 1_790_000_000,
        "data": {"object": {"id": "in_failing", "object": "invoice"}},
    }
    with session_scope(make_engine(app_env["DATABASE_URL"])) as s:
        s.add(
            StripeEvent(
                id="evt_failing",
                type="invoice.paid",
                created=datetime(2026, 9, 21, tzinfo=UTC),
                object_id="in_failing",
                payload=payload,
                outcome=EventOutcome.ERROR,
                attempts=3,
                processed_at=datetime(2026, 9, 21, tzinfo=UTC),
                next_attempt_at=datetime(2026, 9, 21, 0, 4, tzinfo=UTC),
                error="Stripe kept failing while reading Stripe invoice in_failing.",
            )
        )
    at = _on_tab("Stripe events")
    assert not at.exception
    assert any("1 Stripe event(s) failed to apply" in e.value for e in at.error)
    failed = _frame(at, "attempts", "error")
    assert list(failed["id"]) == ["evt_failing"] and list(failed["attempts"]) == [3]
    assert "reading Stripe invoice in_failing" in failed["error"][0]
    at.selectbox(key="ev_outcome").set_value("error").run()
    events = _frame(at, "type", "outcome", "next_attempt")
    assert list(events["id"]) == ["evt_failing"] and list(events["attempts"]) == [3]


def test_viewer_sees_data_but_no_admin_actions(app_env: dict[str, str], monkeypatch) -> None:
    # Anonymous and unknown visitors are refused by the registry-wide test_pages_access matrix.
    from tests.test_pages_access import ADMIN, AUTH, VIEWER

    monkeypatch.setenv("ADMIN_EMAILS", ADMIN)
    monkeypatch.setenv("VIEWER_EMAILS", VIEWER)
    at = AppTest.from_file(PAGE, default_timeout=60)
    at.secrets["auth"] = dict(AUTH)
    at.user = {"is_logged_in": True, "email": VIEWER}
    at.run()
    assert not at.exception and "Billed · EUR" in _metrics(at)
    at.text_input(key="inv_lookup").set_value("DEMO-2026-09-0002").run()
    assert _metrics(at)["Status"] == "failed"
    labels = {b.label for b in at.button}
    assert "Retry payment" not in labels and "Create setup link" not in labels


def test_empty_database_says_what_to_do(app_env: dict[str, str], db_url: str, monkeypatch) -> None:
    monkeypatch.setenv("DATABASE_URL", db_url)
    at = AppTest.from_file(PAGE, default_timeout=60).run()
    assert not at.exception
    assert any("No invoices yet" in i.value for i in at.info)


def test_paid_in_stripe_then_sync_shows_paid_on_the_page(app_env: dict[str, str]) -> None:
    from billing_core.payments import sync
    from tests.support.stripe_server import StripeTestServer
    from tests.support.stripe_world import make_world

    engine = make_engine(app_env["DATABASE_URL"])
    with StripeTestServer() as server:
        world = make_world(server, engine)
        cus = world.customer("new@example.com")
        local, remote = world.invoice(cus, status="open", period="2026-10")
        server.pay_out_of_band(remote["id"])
        sync.sync(engine, world.gateway)
    number = world.local(local.id).number
    at = AppTest.from_file(PAGE, default_timeout=60).run()
    at.text_input(key="inv_lookup").set_value(number).run()
    assert not at.exception
    assert _metrics(at)["Status"] == "paid"
    assert any("Stripe invoice" in m.value for m in at.markdown)


def test_setup_links_go_through_one_cached_stripe_gateway(
    app_env: dict[str, str], monkeypatch
) -> None:
    from pages.common import ui
    from tests.support.stripe_server import StripeTestServer
    from tests.support.stripe_world import API_KEY, make_world

    built = []

    build = ui._build_gateway

    def counting_build(settings):
        built.append(settings)
        return build(settings)

    monkeypatch.setattr(ui, "_build_gateway", counting_build)
    with StripeTestServer() as server:
        monkeypatch.setenv("STRIPE_API_BASE", server.url)
        monkeypatch.setenv("STRIPE_API_KEY", API_KEY)
        world = make_world(server, make_engine(app_env["DATABASE_URL"]))
        customer = world.customer("new@example.com")
        at = _on_tab("Payment methods")
        picker = at.selectbox(key="pm_customer")
        picker.select_index(picker.options.index(customer.name))
        for _ in range(2):
            at.button(key="pm_setup").click().run()
            assert not at.exception and not at.error
            assert any("Send this link" in s.value for s in at.success)
            assert at.code[0].value.startswith("http")
    assert len(built) == 1  # two links, one gateway


def test_the_invoice_list_draws_no_none_in_empty_cells(demo_session: Session) -> None:
    # st.dataframe draws a missing value as a grey "None": the page shows blanks instead.
    from billing_core.views.common_text import DAY, blank_missing

    table = inv.invoice_table(demo_session, inv.InvoiceFilter())
    assert table["next_attempt"].isna().any() and (table["refunded"] == "").any()
    dates = {"due": DAY, "next_attempt": DAY, "issued": DAY, "paid_at": DAY}
    shown = blank_missing(table, dates, counts=["days_past_due"])
    assert not shown.drop(columns=["id", "attempts"]).isna().any().any()
    assert set(shown["next_attempt"]) >= {""}
    late = sorted(d for d in shown["days_past_due"] if d)
    assert late and late == sorted(late, key=int)  # padded: text order is number order
    assert all(d == "" or len(d) == 10 for d in shown["due"])  # 2026-10-31
