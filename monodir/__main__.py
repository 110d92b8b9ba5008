"""``python -m monodir``: the ``monodir`` command line."""

from __future__ import annotations

import sys

from monodir.cli import main

if __name__ == "__main__":
    sys.exit(main())
