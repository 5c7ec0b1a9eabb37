"""What a suite run returns, whichever driver ran it (rows, segmentation, explain).

Its own module so that the drivers a suite task plugs in (``harness.explain.run``,
``harness.segmentation.suite``) need not import the runner that calls them: no import
cycle, counting lazy imports too.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


@dataclass
class RunResult:
    out_dir: Path
    summary: dict[str, Any]
    failures: list[str] = field(default_factory=list)
    folds_fitted: int = 0
    folds_reused: int = 0
    #: One record per baseline x protocol (x variant): fold cache dir, MLflow parent run id.
    runs: list[dict[str, Any]] = field(default_factory=list)
    #: Report files written after the suite (leakage, overfitting, audit).
    reports: list[Path] = field(default_factory=list)
