"""Progress messages go to stderr, so stdout keeps only the result tables."""

from __future__ import annotations

import sys


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)
