"""``python -m dlum``: the command line (:mod:`dlum.cli`)."""
from __future__ import annotations

from dlum.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
