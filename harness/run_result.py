"""What a suite run returns, and what its data stage prepared, whichever task ran.

Its own module so that the drivers a suite task plugs in (``harness.explain.run``,
``harness.segmentation.task``) need not import the runner that calls them: no import
cycle, counting lazy imports too.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # pragma: no cover
    import pandas as pd

    from harness.data.cohort import Problem
    from harness.tasks.base import TaskData


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


@dataclass
class PreparedData:
    """Stage 1's output, whatever the task: the data, its task views and fingerprint.

    Here, not in the runner, so that a task plugin (``harness.segmentation.task``)
    builds it without importing the runner that calls the plugin.
    """

    data_dir: Path
    dataset_name: str
    task_data: "TaskData"
    fingerprint: str
    problems: "list[Problem]"
    #: Task variants (e.g. survival's "grade" and "survival_class"): name -> view.
    #: A suite without ``[task] targets`` has one variant named "".
    views: "dict[str, TaskData]" = field(default_factory=dict)
    variant: str = ""
    #: Tables written by pipeline stages that run before the splits (CSV + MLflow).
    stage_tables: "dict[str, pd.DataFrame]" = field(default_factory=dict)
    stage_tags: dict[str, str] = field(default_factory=dict)
    stage_files: list[Path] = field(default_factory=list)
    #: What a task plugin keeps for its later stages (segmentation: cases by variant).
    extra: dict[str, Any] = field(default_factory=dict)
