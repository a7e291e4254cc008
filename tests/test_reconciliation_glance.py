"""Reconciliation read at a glance: human subjects, the resolve list follows the table, the note
clears after Accept, "Last run" follows a run made on the page, filters live in the URL."""

from __future__ import annotations

import pytest
from sqlmodel import Session, select
from streamlit.testing.v1 import AppTest

from billing_core.db import make_engine
from billing_core.models import ReconciliationDiff
from billing_core.views.reconciliation import subject_text
from tests.conftest import ROOT

PAGE = str(ROOT / "pages/reconciliation.py")


@pytest.mark.parametrize(
    ("key", "text"),
    [
        ("demo/invoice:1", "Invoice INV-1"),
        (
            "inst/invoice:1:line:AWS Lambda, October 2026",
            "Invoice INV-1, line AWS Lambda, October 2026",
        ),
        ("demo/invoice:7", "Local invoice #7"),  # not numbered yet
        ("demo/stripe:in_demo_outside_tool", "Stripe invoice in_demo_outside_tool"),
        (
            "customer:3:service:Amazon Simple Storage Service",
            "AWS service Amazon Simple Storage Service",
        ),
        ("customer:2:metric:storage_gb", "Usage of storage_gb"),
        ("something else", "something else"),
    ],
)
def test_subjects_read_as_people_name_them(key: str, text: str) -> None:
    assert subject_text(key, {1: "INV-1"}) == text


def _page(**params: str) -> AppTest:
    at = AppTest.from_file(PAGE, default_timeout=60)
    at.query_params.update(params)
    return at.run()


def _diffs(at: AppTest):
    return next(d.value for d in at.dataframe if "subject" in d.value.columns)


def test_table_shows_numbers_not_keys(app_env: dict[str, str]) -> None:
    table = _diffs(_page())
    assert not table["subject"].str.contains(r"invoice:\d|customer:\d", regex=True).any()
    assert table["subject"].str.startswith("Invoice DEMO-").any()


def test_resolve_list_holds_only_the_rows_shown(app_env: dict[str, str]) -> None:
    at = _page(kind="usage")
    assert at.sidebar.multiselect(key="kinds").value == ["usage"]
    shown = set(_diffs(at)["id"])
    options = set(at.selectbox(key="resolve_diff").options)
    assert options and {int(o.lstrip("#").split()[0]) for o in options} == shown


def test_note_clears_after_accept(app_env: dict[str, str]) -> None:
    with Session(make_engine(app_env["DATABASE_URL"])) as s:
        diff = s.exec(
            select(ReconciliationDiff).where(
                ReconciliationDiff.kind == "missing_locally", ReconciliationDiff.status == "open"
            )
        ).one()
    at = _page()
    at.selectbox(key="resolve_diff").select(diff.id).run()
    key = f"resolve_note-{diff.id}"
    at.text_input(key=key).input("Created by hand in Stripe, known").run()
    at.button(key=f"resolve_apply-{diff.id}").click().run()
    assert any("accepted" in s.value for s in at.success)
    assert at.session_state[key] == ""


def test_last_run_follows_a_run_on_the_page(app_env: dict[str, str]) -> None:
    at = _page()
    before = {m.label: m.value for m in at.metric}["Last run"]
    assert before != "2026-08"
    at.text_input(key="run_period").input("2026-08")
    next(b for b in at.button if b.label == "Reconcile").click().run()
    assert not at.exception, at.exception
    assert {m.label: m.value for m in at.metric}["Last run"] == "2026-08"
    assert at.success  # the run's summary is still shown after the page redraws


def test_filters_live_in_the_url(app_env: dict[str, str]) -> None:
    at = _page(status="-", within="1")
    assert at.sidebar.multiselect(key="statuses").value == []
    assert at.sidebar.checkbox(key="within").value is True
    at.sidebar.multiselect(key="statuses").select("resolved").run()
    assert at.query_params["status"] == "resolved"
    at.sidebar.multiselect(key="statuses").unselect("resolved").select("open").run()
    assert "status" not in at.query_params  # back to the default: a plain URL
