"""Where the harness keeps what it can rebuild: one default for every command."""

from __future__ import annotations

import os
from pathlib import Path

#: Environment variable that moves the default cache (generated cohorts, decoded arrays,
#: features, manifests, finished folds).
CACHE_DIR_ENV = "HARNESS_CACHE_DIR"


def default_cache_dir() -> Path:
    """``$HARNESS_CACHE_DIR`` or ``.harness-cache`` in the working directory (gitignored)."""
    return Path(os.environ.get(CACHE_DIR_ENV) or ".harness-cache")
