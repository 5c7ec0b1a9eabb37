"""Task views: turn a cohort into samples with a target and a group (the patient).

A task view decides the sample unit, the target, and which series and slices take part;
baselines see only :class:`TaskData`, never files.

- ``grading``: one axial slice per sample, target the grade (II/III/IV).
- ``progression``: one patient-date-series per sample, target MonthDif (months between
  the patient's two scans), as the capstone paper's rows.
- ``survival``: one modality image per sample, target grade (HGG/LGG) or survival class.
"""

from typing import Any, Callable

from harness.tasks.base import SAMPLE_COLUMNS, TaskData, foreground_fraction
from harness.tasks.grading import GRADE_CLASSES, grading_task
from harness.tasks.progression import progression_task
from harness.tasks.survival import survival_task

#: task name -> builder(cohort, arrays, content_keys, **task_options) -> (TaskData, problems)
TASK_BUILDERS: dict[str, Callable[..., tuple[TaskData, list[Any]]]] = {
    "grading": grading_task,
    "progression": progression_task,
    "survival": survival_task,
}

__all__ = [
    "GRADE_CLASSES", "SAMPLE_COLUMNS", "TASK_BUILDERS", "TaskData", "foreground_fraction",
    "grading_task", "progression_task", "survival_task",
]
