"""Every page when loading its data fails: one sentence, never a traceback, then nothing more."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager

import pytest
from sqlmodel import Session
from streamlit.testing.v1 import AppTest

from billing_core.errors import BillingError
from pages.common import ui
from pages.common.registry import PAGES
from tests.conftest import ROOT

UNEXPECTED = (
    "Something went wrong (RuntimeError). The details are in the server log; reload the page "
    "or tell an admin."
)


@pytest.mark.parametrize("path", [path for path, *_ in PAGES])
@pytest.mark.parametrize(
    ("error", "shown"),
    [
        (BillingError("The database is busy: try again in a minute."), None),
        (RuntimeError("internal detail, not for people"), UNEXPECTED),
    ],
    ids=["billing-error", "unexpected"],
)
def test_a_failed_load_shows_one_sentence_and_stops(
    app_env: dict[str, str],
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    path: str,
    error: Exception,
    shown: str | None,
) -> None:
    @contextmanager
    def broken_db() -> Iterator[Session]:
        raise error
        yield  # a generator, like ui.db()

    at = AppTest.from_file(str(ROOT / path), default_timeout=60).run()
    if path == "pages/invoice_run.py":
        at.button[0].click()  # Preview: the run page's guarded load
    monkeypatch.setattr(ui, "db", broken_db)
    with caplog.at_level(logging.ERROR, logger="dashboard"):
        at.run()
    assert not at.exception, at.exception
    assert [e.value for e in at.error] == [shown or str(error)]
    assert at.main.children[len(at.main.children) - 1].type == "error"  # nothing after it
    assert not at.metric and not at.dataframe
    logged = [r for r in caplog.records if r.exc_info]
    assert len(logged) == (0 if isinstance(error, BillingError) else 1)
