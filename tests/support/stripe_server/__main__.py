"""``python -m tests.support.stripe_server --port 12111``"""

from tests.support.stripe_server.cli import main

raise SystemExit(main())
