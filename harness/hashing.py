"""The one spelling of "sha256 of canonical JSON" that every cache key and run key uses.

Keys must not depend on dict order or on whitespace, and values JSON cannot encode
(paths, numpy scalars) are written with ``str``, so the same inputs give the same key on
any machine.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any


def canonical_json(obj: Any) -> str:
    """Sorted keys, no whitespace, ``str`` for anything else."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), default=str)


def json_digest(obj: Any, length: int | None = None) -> str:
    """Hex sha256 of :func:`canonical_json`, optionally cut to ``length`` characters."""
    hexdigest = hashlib.sha256(canonical_json(obj).encode("utf-8")).hexdigest()
    return hexdigest if length is None else hexdigest[:length]
