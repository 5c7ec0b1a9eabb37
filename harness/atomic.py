"""Atomic file writes: a reader (or a rerun after SIGKILL) never sees half a file."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import IO, Any, Callable


def atomic_write(path: Path, write: Callable[[IO[Any]], Any], *, text: bool = False) -> None:
    """Call ``write(fh)`` on a temporary sibling file, then rename it over ``path``.

    No fsync: ``os.replace`` is atomic for a killed process, which is what resume relies
    on; readers of cache entries also check sizes, so a power loss costs a rebuild.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with (os.fdopen(fd, "w", encoding="utf-8") if text else os.fdopen(fd, "wb")) as fh:
            write(fh)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
