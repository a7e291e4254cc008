"""The committed Streamlit settings that `make run` and production serve with."""

from __future__ import annotations

import tomllib

from tests.conftest import ROOT


def _server() -> dict[str, object]:
    with (ROOT / ".streamlit" / "config.toml").open("rb") as f:
        return dict(tomllib.load(f)["server"])


def test_the_dashboard_watches_no_source_files() -> None:
    # A watcher per browser session made every new tab wait 0.2 to 0.5 s before its first page.
    assert _server()["fileWatcherType"] == "none"


def test_the_dashboard_listens_on_localhost_unless_told_otherwise() -> None:
    assert _server()["address"] == "localhost"
