"""``python -m clientmeter spool``: see _cli.py."""

from __future__ import annotations

import sys

from clientmeter._cli import main

if __name__ == "__main__":
    sys.exit(main())
