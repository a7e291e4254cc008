import sys

from billing_core.cli import main

sys.exit(main())
