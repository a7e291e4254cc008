"""Browser tests: a real `streamlit run` server driven by Debian's chromium through Playwright.

Every test in this folder is marked `browser` and runs with `make test` when /usr/bin/chromium
exists (skipped without it locally; an error on CI). Playwright cannot download browsers here, so
pytest-playwright's `browser`/`page` fixtures launch Debian's chromium (`CHROMIUM_PATH` to
override). `pytest tests/browser --headed` shows the browser where a display is available.

Fixtures:
- `streamlit_server` (session): one server as `make run` starts it (demo database seeded by
  `python -m billing_core seed-demo`, demo mode, no sign-in so the visitor is the local admin).
  Tests share it: a flow that changes data must not rely on another test's changes.
- `page` (pytest-playwright, per test): a fresh browser context whose base URL is that server,
  so `page.goto("/")` opens the dashboard.
- `signin_server` (per test): a fresh server with OIDC sign-in configured and roles set.
- `nginx`: skips a test that signs in through tests/support/reverse_proxy.py without nginx.
- `launch_streamlit(...)`: a context manager for a server with any other settings, e.g. pointed
  at `stripe_test_server` (session) with `env={"STRIPE_API_BASE": stripe_test_server.url,
  "STRIPE_API_KEY": "sk_test_browser"}`.
- `fresh_demo_db` (per test): a new database holding the demo world seeded as of the real
  clock (the pages offer months by the clock, so DEMO_NOW's world would drift from them).
- `screenshot(page, name)`: saves test-artifacts/browser/<test>-<name>.png.
- `grid_rows(page_or_locator)`, `grid_row_count(...)`: what a st.dataframe shows, read from
  the accessible table the grid renders (only the rows scrolled into view are rendered).
When a test fails, every open page is screenshotted into test-artifacts/browser/ and the tail of
each running server's log is added to the report.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Generator, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import Browser, Locator, Page, expect

from billing_core.db import make_engine, migrate, session_scope
from billing_core.demo import seed_demo
from billing_core.periods import utcnow
from tests.conftest import CHROMIUM, DB_BACKEND, ROOT
from tests.support.reverse_proxy import nginx_available
from tests.support.stripe_server import StripeTestServer

ARTIFACTS = ROOT / "test-artifacts" / "browser"
# Flags that keep chromium quiet and able to run as root in a container.
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
VIEWPORT = {"width": 1400, "height": 1000}
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
STARTUP_SECONDS = 60  # a loaded 2-core CI machine imports streamlit + pandas slowly
APP_TIMEOUT_MS = 30_000
LOG_TAIL_CHARS = 6_000


@dataclass
class StreamlitServer:
    url: str
    log: Path
    database_url: str = ""


# Servers alive right now: their logs go into the report of a failing test.
_RUNNING: list[StreamlitServer] = []


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _log_tail(log: Path) -> str:
    try:
        return log.read_text(errors="replace")[-LOG_TAIL_CHARS:]
    except OSError:
        return "(no log)"


def _wait_healthy(url: str, process: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + STARTUP_SECONDS
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"streamlit exited early:\n{_log_tail(log)}")
        try:
            with urllib.request.urlopen(f"{url}/_stcore/health", timeout=1) as response:
                if response.status == 200:
                    return
        except OSError:
            time.sleep(0.2)
    raise RuntimeError(
        f"streamlit did not become healthy in {STARTUP_SECONDS} s:\n{_log_tail(log)}"
    )


def _stop(process: subprocess.Popen[bytes]) -> None:
    # The server runs in its own process group: stop it and anything it started.
    with suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        with suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=10)


def base_env(tmp_path: Path, database_url: str) -> dict[str, str]:
    """The environment of a demo-mode process: no secrets file, no inherited credentials."""
    keep = {k: v for k, v in os.environ.items() if k in ("PATH", "HOME", "LANG", "VIRTUAL_ENV")}
    return {
        **keep,
        "DATABASE_URL": database_url,
        "BILLING_MODE": "demo",
        "BILLING_SECRETS_FILE": str(tmp_path / "no-billing-secrets.toml"),
    }


@contextmanager
def launch_streamlit(
    tmp_path: Path,
    database_url: str,
    *,
    env: dict[str, str],
    secrets: str = "",
    script: Path = ROOT / "dashboard.py",
) -> Iterator[StreamlitServer]:
    """A fresh `streamlit run dashboard.py` (or `script`) on a free localhost port, stopped
    afterwards. It runs from the project's folder, so .streamlit/config.toml applies as it does
    to `make run` (the bench measures what people are served)."""
    port = _free_port()
    secrets_file = tmp_path / f"streamlit-secrets-{port}.toml"
    secrets_file.write_text(secrets.format(port=port))
    log = tmp_path / f"streamlit-{port}.log"
    command = [
        sys.executable, "-m", "streamlit", "run", str(script),
        "--server.port", str(port),
        "--server.address", "127.0.0.1",
        "--server.headless", "true",
        "--browser.gatherUsageStats", "false",
        "--secrets.files", str(secrets_file),
    ]  # fmt: skip
    with log.open("wb") as out:
        process = subprocess.Popen(
            command,
            cwd=ROOT,
            env={**base_env(tmp_path, database_url), **env},
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    server = StreamlitServer(url=f"http://127.0.0.1:{port}", log=log, database_url=database_url)
    try:
        _wait_healthy(server.url, process, log)
        _RUNNING.append(server)
        yield server
    finally:
        if server in _RUNNING:
            _RUNNING.remove(server)
        _stop(process)


def seed_demo_cli(tmp_path: Path, database_url: str) -> None:
    """Seed a database the way `make run` does: through the command line."""
    done = subprocess.run(
        [sys.executable, "-m", "billing_core", "seed-demo"],
        cwd=ROOT,
        env=base_env(tmp_path, database_url),
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    if done.returncode != 0:
        raise RuntimeError(f"seed-demo failed ({done.returncode}):\n{done.stdout}{done.stderr}")


# --- servers --------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def streamlit_server(
    _databases: Any, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[StreamlitServer]:
    """The dashboard as `make run` serves it: demo database and mode, local admin."""
    tmp_path = tmp_path_factory.mktemp("streamlit")
    database_url = _databases.blank(tmp_path)
    seed_demo_cli(tmp_path, database_url)
    with launch_streamlit(tmp_path, database_url, env={}) as server:
        yield server
    _databases.drop(database_url)


@pytest.fixture(scope="session")
def stripe_test_server() -> Iterator[StripeTestServer]:
    """The local Stripe test server, for dashboards that push invoices (see launch_streamlit)."""
    with StripeTestServer() as server:
        yield server


@pytest.fixture
def signin_server(tmp_path: Path, demo_db_url: str) -> Iterator[StreamlitServer]:
    """A fresh server on the demo database with OIDC sign-in configured and roles set."""
    with launch_streamlit(
        tmp_path,
        demo_db_url,
        env={"ADMIN_EMAILS": ADMIN, "VIEWER_EMAILS": VIEWER},
        secrets=AUTH_SECRETS,
    ) as server:
        yield server


@pytest.fixture
def nginx() -> None:
    """Tests through the sign-in proxy need nginx: skipped without it locally, an error on CI."""
    if nginx_available():
        return
    if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
        pytest.fail("The proxy sign-in test needs nginx on CI: `apt-get install nginx` (.ci/run).")
    pytest.skip("no nginx (apt-get install nginx)")


@pytest.fixture(scope="session")
def _clock_demo_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A SQLite demo database seeded once per session as of now; tests get copies."""
    path = tmp_path_factory.mktemp("browser-template") / "demo-now.db"
    engine = make_engine(f"sqlite:///{path}")
    migrate(engine)
    with session_scope(engine) as session:
        seed_demo(session, now=utcnow())
    engine.dispose()
    return path


@pytest.fixture
def fresh_demo_db(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """URL of a new database holding the demo world as of the real clock, for one test."""
    if DB_BACKEND == "sqlite":
        template: Path = request.getfixturevalue("_clock_demo_template")
        target = tmp_path / "demo-now-copy.db"
        shutil.copy(template, target)
        yield f"sqlite:///{target}"
        return
    databases = request.getfixturevalue("_databases")
    url = databases.blank(tmp_path)
    seed_demo_cli(tmp_path, url)
    yield url
    databases.drop(url)


# --- browser (pytest-playwright, pointed at Debian's chromium) ------------------------------


@pytest.fixture(scope="session")
def browser_type_launch_args(browser_type_launch_args: dict[str, Any]) -> dict[str, Any]:
    return {**browser_type_launch_args, "executable_path": str(CHROMIUM), "args": CHROMIUM_ARGS}


@pytest.fixture(scope="session")
def browser_context_args(browser_context_args: dict[str, Any]) -> dict[str, Any]:
    return {**browser_context_args, "viewport": VIEWPORT}


@pytest.fixture(scope="session")
def base_url(streamlit_server: StreamlitServer) -> str:
    """`page.goto("/")` opens the shared dashboard server."""
    return streamlit_server.url


@pytest.fixture
def chromium(browser: Browser) -> Browser:
    """The session's chromium, for tests that open their own contexts (other servers)."""
    return browser


@pytest.fixture
def page_on(browser: Browser) -> Iterator[Callable[[StreamlitServer], Page]]:
    """`page_on(server)`: a page in a fresh context whose base URL is that server."""
    contexts = []

    def make(server: StreamlitServer) -> Page:
        context = browser.new_context(base_url=server.url, viewport=VIEWPORT)  # type: ignore[arg-type]
        contexts.append(context)
        return context.new_page()

    yield make
    for context in contexts:
        with suppress(Exception):
            context.close()


@pytest.fixture(autouse=True)
def _default_timeouts() -> None:
    expect.set_options(timeout=APP_TIMEOUT_MS)


# --- helpers for tests ----------------------------------------------------------------------


def wait_for_app(page: Page, timeout: int = APP_TIMEOUT_MS) -> None:
    """Wait until Streamlit is connected and its script has finished running.

    Right after a click the old "notRunning" state may still show for a moment, so after an
    interaction assert on the content you expect (expect() waits) rather than on this alone.
    """
    app = page.locator("[data-testid=stApp]")
    expect(app).to_have_attribute("data-test-connection-state", "CONNECTED", timeout=timeout)
    expect(app).to_have_attribute("data-test-script-state", "notRunning", timeout=timeout)
    expect(page.locator("[data-testid=stStatusWidget] button")).to_have_count(0, timeout=timeout)


def open_page(page: Page, path: str = "/") -> Page:
    """Open a dashboard URL (relative to the server) and wait for its first run."""
    page.goto(path)
    wait_for_app(page)
    return page


def go_to(page: Page, title: str) -> None:
    """Navigate through the sidebar like a person: click the page's link, wait for its title."""
    page.locator("[data-testid=stSidebarNav]").get_by_role("link", name=title, exact=True).click()
    expect(page.get_by_role("heading", name=title, level=1)).to_be_visible()
    wait_for_app(page)


def _grid(where: Page | Locator) -> Locator:
    return where.locator("table[role=grid]").first


def dataframe_with_column(page: Page, column: str) -> Locator:
    """The st.dataframe whose header has this column title (pages often show several)."""
    header = page.locator("table[role=grid] thead th").filter(
        has_text=re.compile(f"^{re.escape(column)}$")
    )
    frame = page.locator("[data-testid=stDataFrame]").filter(has=header)
    expect(frame).to_have_count(1)
    return frame


def grid_row_count(where: Page | Locator) -> int:
    """How many data rows the (first) st.dataframe in `where` holds, scrolled into view or not."""
    grid = _grid(where)
    expect(grid).to_be_attached()
    return int(grid.get_attribute("aria-rowcount") or "1") - 1


def grid_columns(where: Page | Locator) -> list[str]:
    grid = _grid(where)
    expect(grid).to_be_attached()
    return [str(t).strip() for t in grid.locator("thead th").all_inner_texts()]


def grid_rows(where: Page | Locator) -> list[dict[str, str]]:
    """The rendered rows of the (first) st.dataframe in `where`, as {column title: text}."""
    columns = grid_columns(where)
    if grid_row_count(where):  # the grid draws its rows a moment after it learns their count
        expect(_grid(where).locator("tbody tr").first).to_be_attached()
    cells: list[list[str]] = (
        _grid(where)
        .locator("tbody tr")
        .evaluate_all(
            "rows => rows.map(r => [...r.querySelectorAll('td')].map(td => td.innerText.trim()))"
        )
    )
    return [dict(zip(columns, row, strict=False)) for row in cells]


def assert_no_error_shown(page: Page) -> None:
    """Nothing a person would read as a failure: no exception box, error alert or traceback."""
    expect(page.locator("[data-testid=stException]")).to_have_count(0)
    expect(page.locator("[data-testid=stAlertContentError]")).to_have_count(0)
    expect(page.get_by_text("Traceback")).to_have_count(0)
    expect(page.get_by_text("Something went wrong")).to_have_count(0)


def metric_value(page: Page, label: str) -> str:
    """The value shown by the st.metric with exactly this label."""
    metric = page.locator("[data-testid=stMetric]").filter(
        has=page.locator(
            "[data-testid=stMetricLabel]", has_text=re.compile(f"^{re.escape(label)}$")
        )
    )
    expect(metric).to_have_count(1)
    return metric.locator("[data-testid=stMetricValue]").inner_text().strip()


def shown_amount(shown: str, currency: str) -> Decimal:
    """ "EUR 1,234.50" (how pages display money) -> Decimal("1234.50")."""
    assert shown.startswith(f"{currency} "), shown
    return Decimal(shown.removeprefix(f"{currency} ").replace(",", ""))


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", text).strip("-")[:120]


@pytest.fixture
def screenshot(request: pytest.FixtureRequest) -> Callable[[Page, str], Path]:
    """`screenshot(page, "after-upload")` saves a full-page PNG as a test artifact."""

    def save(page: Page, name: str) -> Path:
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        path = ARTIFACTS / f"{_slug(request.node.name)}-{_slug(name)}.png"
        page.screenshot(path=path, full_page=True)
        return path

    return save


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    report = yield
    if not report.failed or report.when == "teardown":
        return report
    funcargs: dict[str, Any] = getattr(item, "funcargs", {})
    browser = funcargs.get("browser")
    if browser is not None:
        pages = [p for ctx in browser.contexts for p in ctx.pages]
        for number, open_page_ in enumerate(pages):
            ARTIFACTS.mkdir(parents=True, exist_ok=True)
            path = ARTIFACTS / f"{_slug(item.name)}-FAILED-{number}.png"
            with suppress(Exception):  # a crashed page must not hide the real failure
                open_page_.screenshot(path=path, full_page=True)
                report.sections.append(("failure screenshot", str(path)))
    for server in _RUNNING:
        report.sections.append((f"streamlit log {server.url} (tail)", _log_tail(server.log)))
    return report
