"""`python -m pyomnisift ...`: the same as the `pyomnisift` console script (pyomnisift/cli.py)."""

from __future__ import annotations

import sys

from .cli import main

if __name__ == "__main__":
    sys.exit(main())
