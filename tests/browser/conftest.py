"""Browser tests: a real `streamlit run` server driven by Debian's chromium through Playwright.

Run with `pytest -m browser` (excluded from the default run). Needs /usr/bin/chromium
(`apt-get install chromium`).
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.conftest import ROOT

CHROMIUM = Path(os.environ.get("CHROMIUM_PATH", "/usr/bin/chromium"))
ADMIN = "boss@acme.example"
VIEWER = "finance@acme.example"
# A complete [auth] section: enough for Streamlit to offer st.login(); never contacted.
AUTH_SECRETS = """
[auth]
redirect_uri = "http://127.0.0.1:{port}/oauth2callback"
cookie_secret = "browser-test-cookie-secret-not-a-real-one"
client_id = "billing-dashboard"
client_secret = "not-a-real-secret"
server_metadata_url = "http://127.0.0.1:9/.well-known/openid-configuration"
"""
STARTUP_SECONDS = 30


@dataclass
class StreamlitServer:
    url: str
    log: Path


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _wait_healthy(url: str, process: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + STARTUP_SECONDS
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"streamlit exited early:\n{log.read_text()}")
        try:
            with urllib.request.urlopen(f"{url}/_stcore/health", timeout=1) as response:
                if response.status == 200:
                    return
        except OSError:
            time.sleep(0.2)
    raise RuntimeError(f"streamlit did not become healthy:\n{log.read_text()}")


@contextmanager
def launch_streamlit(
    tmp_path: Path, database_url: str, *, env: dict[str, str], secrets: str = ""
) -> Iterator[StreamlitServer]:
    """A fresh `streamlit run dashboard.py` on a free localhost port, stopped afterwards."""
    port = _free_port()
    secrets_file = tmp_path / "streamlit-secrets.toml"
    secrets_file.write_text(secrets.format(port=port))
    log = tmp_path / f"streamlit-{port}.log"
    keep = {k: v for k, v in os.environ.items() if k in ("PATH", "HOME", "LANG", "VIRTUAL_ENV")}
    full_env = {
        **keep,
        "DATABASE_URL": database_url,
        "BILLING_MODE": "demo",
        "BILLING_SECRETS_FILE": str(tmp_path / "no-billing-secrets.toml"),
        **env,
    }
    command = [
        sys.executable, "-m", "streamlit", "run", str(ROOT / "dashboard.py"),
        "--server.port", str(port),
        "--server.address", "127.0.0.1",
        "--server.headless", "true",
        "--server.fileWatcherType", "none",
        "--browser.gatherUsageStats", "false",
        "--secrets.files", str(secrets_file),
    ]  # fmt: skip
    with log.open("wb") as out:
        process = subprocess.Popen(command, cwd=ROOT, env=full_env, stdout=out, stderr=out)
    url = f"http://127.0.0.1:{port}"
    try:
        _wait_healthy(url, process, log)
        yield StreamlitServer(url=url, log=log)
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()


@pytest.fixture
def streamlit_server(tmp_path: Path, demo_db_url: str) -> Iterator[StreamlitServer]:
    """A fresh server on the demo database with OIDC sign-in configured and roles set."""
    with launch_streamlit(
        tmp_path,
        demo_db_url,
        env={"ADMIN_EMAILS": ADMIN, "VIEWER_EMAILS": VIEWER},
        secrets=AUTH_SECRETS,
    ) as server:
        yield server


@pytest.fixture
def chromium() -> Iterator[object]:
    """Debian's chromium driven by Playwright's sync API (no downloaded browser needed)."""
    if not CHROMIUM.exists():
        pytest.skip(f"{CHROMIUM} is missing: apt-get install -y chromium")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), headless=True)
        try:
            yield browser
        finally:
            browser.close()
