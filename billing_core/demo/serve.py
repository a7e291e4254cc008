"""`python -m billing_core.demo.serve`: the dashboard with the demo's own local Stripe (make run).

In demo mode (no AWS or Stripe credentials) the whole month can be played offline: this
launcher seeds the demo database, starts the local Stripe test server
(`python -m tests.support.stripe_server`, standard library only) as a child process on a free
loopback port, and runs the dashboard with `BILLING_MODE=demo`, `STRIPE_API_KEY=`DEMO_STRIPE_KEY
and `STRIPE_API_BASE=http://127.0.0.1:<port>`; demo mode accepts a Stripe key only with a
loopback address (config.py), so no request ever leaves the machine. The emulator keeps its
objects in `<demo database>-stripe.json` beside a SQLite demo database, so invoices pushed to
it survive a restart; a freshly seeded database starts with an empty local Stripe.

While the dashboard runs, a `sync` pass every SYNC_EVERY_SECONDS mirrors payments made on the
local Stripe (what cron does in production).

In live mode (credentials configured) or when STRIPE_API_BASE is already set, it runs the
dashboard alone, as `make run` always did. Stopping the dashboard (Ctrl-C) stops the emulator.
"""

from __future__ import annotations

import argparse
import os
import signal
import socket
import subprocess
import sys
import threading
from collections.abc import Mapping
from pathlib import Path
from types import FrameType

from billing_core.config import load_settings
from billing_core.db import make_engine, parse_database_url
from billing_core.errors import BillingError

#: The key the dashboard sends to the local Stripe (test prefix; it never reaches Stripe).
DEMO_STRIPE_KEY = "sk_test_demo_local_stripe"
#: The emulator's port when free: invoice links stored in the database (hosted invoice pages)
#: keep working across restarts. Another free port is used when it is taken.
PREFERRED_STRIPE_PORT = 12111
#: How long the emulator may take to print its address.
START_TIMEOUT_SECONDS = 20.0
#: Seconds between the demo's sync passes (production runs `sync` from cron).
SYNC_EVERY_SECONDS = 15.0
_FALLBACK_STATE_FILE = Path("data/demo-stripe.json")


class LocalStripe:
    """The emulator child process; `url` is its address (http://127.0.0.1:<port>)."""

    def __init__(self, process: subprocess.Popen[str], url: str) -> None:
        self.process = process
        self.url = url

    def stop(self) -> None:
        """Stop the emulator (SIGTERM: it saves its state file first) and wait for it."""
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def state_file_for(database_url: str) -> Path:
    """Where the local Stripe keeps its objects: beside a SQLite file, else data/."""
    url = parse_database_url(database_url)
    if url.get_backend_name() == "sqlite" and url.database not in (None, "", ":memory:"):
        db = Path(str(url.database))
        return db.with_name(db.stem + "-stripe.json")
    return _FALLBACK_STATE_FILE


def _port_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def start_local_stripe(
    state_file: Path,
    *,
    port: int = PREFERRED_STRIPE_PORT,
    cwd: Path | None = None,
    env: Mapping[str, str] | None = None,
) -> LocalStripe:
    """Start the emulator on `port` if free, else on any free loopback port (0: any).

    Raises RuntimeError when it does not start.
    """
    if port and not _port_free(port):
        port = 0
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "tests.support.stripe_server",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--api-key",
            DEMO_STRIPE_KEY,
            "--state-file",
            str(state_file),
        ],
        stdout=subprocess.PIPE,
        text=True,
        cwd=cwd,
        env=None if env is None else dict(env),
    )
    assert process.stdout is not None  # stdout=PIPE
    line = process.stdout.readline().strip()  # the server prints its address once it listens
    if not line.startswith("http://127.0.0.1:"):
        process.kill()
        process.wait()
        raise RuntimeError(
            "The demo's local Stripe did not start (see the message above); delete "
            f"{state_file} if it says the state file is damaged, then run `make run` again."
        )
    return LocalStripe(process, line)


def demo_environ(base: Mapping[str, str], stripe_url: str) -> dict[str, str]:
    """`base` plus the settings that point the dashboard and the CLI at the local Stripe."""
    env = dict(base)
    env.update(BILLING_MODE="demo", STRIPE_API_KEY=DEMO_STRIPE_KEY, STRIPE_API_BASE=stripe_url)
    return env


class DemoCron:
    """Runs `sync` every `every` seconds against the local Stripe, as cron does in production.

    A customer who pays on the local Stripe's hosted invoice page shows as paid on the
    Invoices page within `every` seconds; each pass that changes invoices is audited as cron.
    """

    def __init__(self, env: Mapping[str, str], every: float = SYNC_EVERY_SECONDS) -> None:
        self.settings = load_settings(env)
        self.every = every
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="demo-cron", daemon=True)

    def tick(self) -> int:
        """One sync pass; the number of events applied (0 on a Stripe problem, printed)."""
        from billing_core.payments.sync import sync
        from billing_core.stripe.gateway import Gateway

        engine = make_engine(self.settings.database_url)
        try:
            result = sync(engine, Gateway.from_settings(self.settings), actor="cron")
        except BillingError as exc:
            print(f"Demo sync: {exc}", flush=True)
            return 0
        finally:
            engine.dispose()
        if result.applied:
            print(f"Demo sync: {result.describe()}", flush=True)
        return result.applied

    def _loop(self) -> None:
        while not self._stop.wait(self.every):
            self.tick()

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=30)


def pushed_without_state(database_url: str, state_file: Path) -> str | None:
    """A warning when the demo database refers to local Stripe objects that are gone."""
    from sqlmodel import Session, col, func, select

    from billing_core.models import Invoice

    if state_file.exists():
        return None
    engine = make_engine(database_url)
    try:
        with Session(engine) as session:
            pushed = session.exec(
                select(func.count())
                .select_from(Invoice)
                .where(col(Invoice.stripe_invoice_id).is_not(None))
            ).one()
    finally:
        engine.dispose()
    if not pushed:
        return None
    return (
        f"Warning: the demo database holds {pushed} invoice(s) pushed to a local Stripe whose "
        f"objects are gone ({state_file} is missing), so sync and reconciliation will not find "
        "them. Run `make clean` (or delete data/demo.db) to start the demo story over."
    )


def seed(env: Mapping[str, str]) -> bool:
    """`seed-demo --only-in-demo` plus the operating history; True when it seeded just now.

    Raises ConfigError/DatabaseError with a sentence (bad settings, unusable database).
    """
    from billing_core.db import open_database, session_scope
    from billing_core.demo import seed_demo
    from billing_core.periods import utcnow

    settings = load_settings(env)
    if settings.mode != "demo":
        print("live mode: demo data not seeded", flush=True)
        return False
    engine = open_database(settings.database_url)
    try:
        with session_scope(engine) as session:
            summary = seed_demo(session, now=utcnow(), with_activity=True)
    finally:
        engine.dispose()
    print(summary.describe(), flush=True)
    return summary.seeded


def _interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0] if __doc__ else None)
    parser.add_argument("--port", type=int, default=8501, help="dashboard port")
    parser.add_argument(
        "--sync-every",
        type=float,
        default=SYNC_EVERY_SECONDS,
        help="seconds between demo sync passes (0: never; sync by hand)",
    )
    parser.add_argument("streamlit_args", nargs="*", help="passed on to `streamlit run`")
    args = parser.parse_args(argv)
    settings = load_settings()
    try:
        fresh = seed(os.environ)
    except BillingError as exc:
        print(exc, file=sys.stderr)
        return 2
    dashboard = [
        sys.executable,
        "-m",
        "streamlit",
        "run",
        "dashboard.py",
        "--server.port",
        str(args.port),
        *args.streamlit_args,
    ]
    if settings.mode != "demo" or settings.stripe_api_base:
        return subprocess.call(dashboard)
    state_file = state_file_for(settings.database_url)
    if fresh and state_file.exists():
        state_file.unlink()  # the Stripe objects of an earlier demo database
    if (warning := pushed_without_state(settings.database_url, state_file)) is not None:
        print(warning, file=sys.stderr, flush=True)
    stripe = start_local_stripe(state_file)
    print(f"Demo: local Stripe at {stripe.url} (objects kept in {state_file}).", flush=True)
    env = demo_environ(os.environ, stripe.url)
    # `kill` (SIGTERM) stops the children too, like Ctrl-C: the finally below runs either way.
    signal.signal(signal.SIGTERM, _interrupt)
    cron = DemoCron(env, args.sync_every) if args.sync_every > 0 else None
    if cron is not None:
        cron.start()
    try:
        return subprocess.call(dashboard, env=env)
    except KeyboardInterrupt:
        return 0
    finally:
        if cron is not None:
            cron.stop()
        stripe.stop()


if __name__ == "__main__":
    raise SystemExit(main())
