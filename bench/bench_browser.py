"""Every dashboard page's time to interactive in a real browser (goal: < 1.5 s after navigation).

Two worlds: the demo (`python -m billing_core seed-demo`, as `make run` serves it) and the
cockpit bench's large one (bench/bench_cockpit.py: 1,000 customers, 13 costed months, 50,000
invoices; 100 customers and 5,000 invoices with --quick). Each is served by `streamlit run
dashboard.py` on a free localhost port, signed in as an admin through the sign-in proxy header
(AUTH_PROXY_HEADER, which a localhost server trusts; the browser sends it on every request as
the proxy would), and driven by Debian's chromium through Playwright, as tests/browser does.

Time to interactive, exactly: from the navigation (the click on the page's sidebar link, taken
by a capturing click listener; for a URL opened in the address bar, the browser's navigation
start, i.e. performance.now()'s origin) to the first animation frame at which all of these hold:
the app is CONNECTED and its script state is "notRunning"; Streamlit's running indicator (the
status widget's Stop button) is gone; the page's own title is drawn as its h1; no element is
still stale (greyed, from the page before) and no dialog (such as "Page not found") covers
the page; no skeleton placeholder is left on screen; every
st.dataframe on screen (the 1440x900 window) has mounted its grid and every plotly chart
on screen its SVG (below the fold both draw only once scrolled to). That is the moment the last
element of the page is delivered, the first screen is drawn and a click reaches a settled page.

Each page is first opened once (warm caches, as for someone who has the dashboard open), then
measured three times by each way of getting there; the median is printed, as "link / URL".
Links are clicked in the app opened at "/", from the Audit log (the Overview for the Audit log).
The reference, measured in the same chromium and run: a trivial Streamlit app served by the
same Streamlit (bench/browser_reference_app.py, one title and one st.write), reached the same
two ways; the ratio page / reference holds on a noisy machine. Printed, never asserted. Without
chromium (or Playwright) one row says so instead of failing.

BENCH_BROWSER_PAGES="Overview,Invoices" (titles or URL stems) measures only those pages (the
reference is always measured). `python -m bench.bench_browser [--quick]` runs it alone;
`run(quick)` fits bench/run.py's BENCHES.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.run import Figure
from pages.common.registry import PAGES

AREA = "browser"
GOAL = "< 1.5 s"
ROUNDS = 3
HEADER = "X-Forwarded-Email"
ADMIN = "bench@acme.example"
SCREEN = {"width": 1440, "height": 900}
TIMEOUT_MS = 60_000
PAGES_ENV = "BENCH_BROWSER_PAGES"
REFERENCE_APP = Path(__file__).resolve().parent / "browser_reference_app.py"

# Resolves to performance.now() at the first animation frame the page is interactive (above).
_INTERACTIVE = """
(title) => {
  const app = document.querySelector('[data-testid=stApp]');
  if (!app || app.getAttribute('data-test-connection-state') !== 'CONNECTED'
      || app.getAttribute('data-test-script-state') !== 'notRunning') return false;
  if (document.querySelector('[data-testid=stStatusWidget] button')) return false;
  if (document.querySelector('[data-stale=true], [role=dialog]')) return false;
  const main = document.querySelector('[data-testid=stMain]');
  if (!main || ![...main.querySelectorAll('h1')].some(h => h.innerText.trim() === title))
    return false;
  // On screen: the grid and plotly draw a chart below the fold only once it is scrolled to,
  // and an element in a closed expander keeps its placeholder until it is opened.
  const shown = (e) => {
    const r = e.getBoundingClientRect();
    return e.checkVisibility() && r.top < window.innerHeight && r.bottom > 0;
  };
  if ([...document.querySelectorAll('[data-testid=stSkeleton]')].some(shown)) return false;
  for (const f of main.querySelectorAll('[data-testid=stDataFrame]'))
    if (shown(f) && !f.querySelector('canvas, [data-testid=stDataFrameGlideDataEditor]'))
      return false;
  for (const c of main.querySelectorAll('[data-testid=stPlotlyChart]'))
    if (shown(c) && !c.querySelector('.main-svg')) return false;
  return performance.now();
}
"""
# The moment of the click that starts an in-app navigation, in performance.now() time.
_CLICK_CLOCK = """
document.addEventListener('click', () => { window.__clicked = performance.now(); }, true);
"""


@dataclass(frozen=True)
class Target:
    """A page to measure: its URL path and the title it shows as its h1 and sidebar link."""

    path: str
    title: str


# What still stands in the way of "interactive", for a page that never got there.
_STATE = """
() => {
  const app = document.querySelector('[data-testid=stApp]');
  return [
    'script ' + (app && app.getAttribute('data-test-script-state')),
    'stale ' + document.querySelectorAll('[data-stale=true]').length,
    'skeletons ' + document.querySelectorAll('[data-testid=stSkeleton]').length,
    'dialogs ' + document.querySelectorAll('[role=dialog]').length,
    'h1 ' + [...document.querySelectorAll('h1')].map(h => h.innerText.trim()).join('/'),
  ].join(', ');
}
"""


def _state(page: Any) -> str:
    try:
        return str(page.evaluate(_STATE))
    except Exception as error:  # a crashed page: say so in the row instead
        return f"page unreadable ({error.__class__.__name__})"


def _interactive_at(page: Any, title: str) -> float:
    handle = page.wait_for_function(_INTERACTIVE, arg=title, polling="raf", timeout=TIMEOUT_MS)
    return float(handle.json_value())


def by_link(page: Any, target: Target) -> float:
    """Seconds from the click on `target`'s sidebar link to interactive."""
    nav = page.locator("[data-testid=stSidebarNav]")
    nav.get_by_role("link", name=target.title, exact=True).click()
    done = _interactive_at(page, target.title)
    return (done - float(page.evaluate("window.__clicked"))) / 1000


def by_url(page: Any, target: Target) -> float:
    """Seconds from the navigation start of `target`'s URL to interactive."""
    page.goto(target.path)
    return _interactive_at(page, target.title) / 1000


def median_times(page: Any, target: Target, start: Target, home: Target) -> tuple[float, float]:
    """(link, URL) medians of ROUNDS runs each, after one unmeasured visit. Links are clicked
    in the app opened at `home` ("/"), each from page `start`: a deep URL opened in the address
    bar lists the pages/ folder in the sidebar instead of the app's navigation."""
    url = [by_url(page, target) for _ in range(ROUNDS + 1)][1:]
    by_url(page, home)
    link = []
    for _ in range(ROUNDS):
        by_link(page, start)
        link.append(by_link(page, target))
    return statistics.median(link), statistics.median(url)


def _shown(link: float, url: float) -> str:
    return f"{link:.2f} s / {url:.2f} s"


@contextmanager
def _browser_page(base_url: str, headers: dict[str, str]) -> Iterator[Any]:
    from playwright.sync_api import sync_playwright

    from tests.browser.conftest import CHROMIUM_ARGS
    from tests.conftest import CHROMIUM

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            context = browser.new_context(
                base_url=base_url, viewport=SCREEN, extra_http_headers=headers
            )
            context.add_init_script(_CLICK_CLOCK)
            yield context.new_page()
        finally:
            browser.close()


def _dashboard_pages() -> list[Target]:
    # st.navigation serves its first page (the Overview) at "/": "/overview" is "Page not found".
    return [
        Target("/" if i == 0 else "/" + Path(path).stem, title)
        for i, (path, title, _icon, _role) in enumerate(PAGES)
    ]


def _selected(targets: list[Target]) -> list[Target]:
    """The targets named in BENCH_BROWSER_PAGES (comma-separated titles or URL stems, e.g.
    "Overview,invoices"; case-insensitive), all of them when it is unset or empty.
    Raises ValueError naming the valid choices for a name that matches no page."""
    wanted = [w.strip().lower() for w in os.environ.get(PAGES_ENV, "").split(",") if w.strip()]
    if not wanted:
        return targets
    names = {t.title.lower(): t for t in targets} | {t.path[1:].lower(): t for t in targets}
    unknown = [w for w in wanted if w not in names]
    if unknown:
        choices = ", ".join(t.title for t in targets)
        raise ValueError(f"{PAGES_ENV}: no page named {', '.join(unknown)}; choose from {choices}")
    return [t for t in targets if t in {names[w] for w in wanted}]


def measure_dashboard(tmp: Path, database_url: str, dataset: str) -> list[Figure]:
    """One row per page: median time to interactive by sidebar link and by URL."""
    from playwright.sync_api import TimeoutError as PlaywrightTimeout

    from tests.browser.conftest import launch_streamlit

    env = {"AUTH_PROXY_HEADER": HEADER, "ADMIN_EMAILS": ADMIN}
    targets = _dashboard_pages()
    rows: list[Figure] = []
    with (
        launch_streamlit(tmp, database_url, env=env) as server,
        _browser_page(server.url, {HEADER: ADMIN}) as page,
    ):
        for target in _selected(targets):
            # Start from a light page that is not the target (the Audit log, or the Overview).
            start = targets[-1] if target != targets[-1] else targets[0]
            print(f"  {target.title} ({dataset})", file=sys.stderr, flush=True)
            try:
                link, url = median_times(page, target, start, Target("/", targets[0].title))
                shown = _shown(link, url)
            except PlaywrightTimeout:
                shown = f"not interactive in {TIMEOUT_MS // 1000} s: {_state(page)}"
            rows.append(Figure(AREA, target.title, shown, GOAL, dataset))
    return rows


def measure_reference(tmp: Path) -> tuple[float, float]:
    """The trivial app's (link, URL) medians, in the same chromium and Streamlit."""
    from tests.browser.conftest import launch_streamlit

    with (
        launch_streamlit(
            tmp, f"sqlite:///{tmp / 'unused.db'}", env={}, script=REFERENCE_APP
        ) as server,
        _browser_page(server.url, {}) as page,
    ):
        reference = Target("/", "Reference")
        return median_times(page, reference, Target("/elsewhere", "Elsewhere"), reference)


def _seed_large(database_url: str, customers: int) -> None:
    from bench.bench_cockpit import _populate
    from billing_core.db import make_engine, migrate

    engine = make_engine(database_url)
    migrate(engine)
    _populate(engine, customers)
    engine.dispose()


def _unavailable() -> str | None:
    """Why the bench cannot run here, or None."""
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return "Playwright is not installed"
    from tests.conftest import CHROMIUM

    if not CHROMIUM.exists():
        return f"no chromium at {CHROMIUM} (set CHROMIUM_PATH)"
    return None


def run(quick: bool) -> list[Figure]:
    why = _unavailable()
    if why is not None:
        return [Figure(AREA, "every page: time to interactive", f"not measured: {why}", GOAL)]
    from tests.browser.conftest import seed_demo_cli

    customers = 100 if quick else 1_000
    with tempfile.TemporaryDirectory() as name:
        tmp = Path(name)
        link, url = measure_reference(tmp)
        rows = [
            Figure(
                AREA,
                "reference: trivial page (one st.write)",
                _shown(link, url),
                "",
                "same Streamlit and chromium, link / URL",
            )
        ]
        demo = f"sqlite:///{tmp / 'demo.db'}"
        seed_demo_cli(tmp, demo)
        rows += measure_dashboard(tmp, demo, "demo seed, link / URL")
        large = f"sqlite:///{tmp / 'large.db'}"
        _seed_large(large, customers)
        dataset = f"{customers} customers, 13 months, {customers * 50} invoices, link / URL"
        rows += measure_dashboard(tmp, large, dataset)
    return rows


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="100 customers instead of 1,000")
    for f in run(parser.parse_args().quick):
        print(f"{f.area:8} {f.figure:40} {f.value:>18}  {f.goal:8} {f.dataset}")
    sys.exit(0)
