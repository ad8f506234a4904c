"""`python -m optimkit ...`: the `optimkit` command (`optimkit/cli.py`) without the installed
entry point."""

import sys

from optimkit.cli import main

sys.exit(main())
