"""``python -m tests.support.stripe_server``: run the server until killed."""

from __future__ import annotations

import argparse
import signal
import threading
from pathlib import Path
from types import FrameType


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Run the local Stripe test server until killed.")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=12111)
    parser.add_argument(
        "--api-key", default=None, help="accept only this key (default: any sk_test_ key)"
    )
    parser.add_argument("--latency", type=float, default=0.0, help="seconds added to every request")
    parser.add_argument(
        "--rate-limit", type=float, default=None, help="requests per second (429 beyond)"
    )
    parser.add_argument("--verbose", action="store_true", help="log every request to stderr")
    parser.add_argument(
        "--state-file",
        type=Path,
        default=None,
        help="keep objects in this JSON file across restarts (default: memory only)",
    )
    args = parser.parse_args(argv)
    from tests.support.stripe_server import StripeTestServer  # the package imports this module

    server = StripeTestServer(
        args.host,
        args.port,
        api_key=args.api_key,
        latency=args.latency,
        rate_limit=args.rate_limit,
        verbose=args.verbose,
    )
    keeper = None
    if args.state_file is not None:
        from tests.support.stripe_server.persist import StateKeeper, load_state

        try:
            load_state(server, args.state_file)
        except ValueError as exc:
            parser.error(str(exc))
        keeper = StateKeeper(server, args.state_file)
        keeper.start()
    server.start()
    print(server.url, flush=True)
    done = threading.Event()

    def _stop(signum: int, frame: FrameType | None) -> None:
        done.set()

    signal.signal(signal.SIGTERM, _stop)
    try:
        done.wait()
    except KeyboardInterrupt:
        pass
    finally:
        server.stop()
        if keeper is not None:
            keeper.stop()  # the last changes reach the file
    return 0
