"""``python -m tests.support.stripe_server``: run the server until killed."""

from __future__ import annotations

import argparse
import threading


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
    server.start()
    print(server.url, flush=True)
    try:
        threading.Event().wait()
    except KeyboardInterrupt:
        pass
    finally:
        server.stop()
    return 0
