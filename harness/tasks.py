"""Task views: turn a cohort into samples with a target and a group (the patient).

A task view decides the sample unit (for grading: one axial slice of one series, as the
published pipelines use), the target, and which series and slices take part. Baselines
see only :class:`TaskData`, never files.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any, Iterable, Mapping

import numpy as np
import pandas as pd

from harness.data.cohort import Cohort, Problem
from harness.errors import NoUsableDataError

SAMPLE_COLUMNS = (
    "sample_id",
    "patient_id",
    "study_id",
    "image_id",  # the series the sample comes from
    "modality",
    "slice_index",
    "target",
)


@dataclass
class TaskData:
    """Samples of one task with their targets, groups and access to their pixels.

    ``volumes`` maps ``image_id`` to a (z, y, x) array; slices are cut on demand so the
    whole cohort never sits in memory as slices. ``content_keys`` maps ``image_id`` to
    the ingestion cache's content key, so features can be cached per series.
    """

    task: str
    target_kind: str  # "classification" | "regression"
    samples: pd.DataFrame
    classes: list[str] | None
    volumes: Mapping[str, np.ndarray] = field(repr=False, default_factory=dict)
    content_keys: Mapping[str, str] = field(repr=False, default_factory=dict)

    def __len__(self) -> int:
        return len(self.samples)

    @property
    def sample_ids(self) -> list[str]:
        return self.samples["sample_id"].tolist()

    @property
    def y(self) -> np.ndarray:
        return self.samples["target"].to_numpy()

    @property
    def groups(self) -> np.ndarray:
        return self.samples["patient_id"].to_numpy()

    def subset(self, sample_ids: Iterable[str]) -> "TaskData":
        """The same task restricted to ``sample_ids``, in that order."""
        indexed = self.samples.set_index("sample_id", drop=False)
        rows = indexed.loc[list(sample_ids)].reset_index(drop=True)
        return replace(self, samples=rows)

    def slices(self, rows: pd.DataFrame | None = None) -> np.ndarray:
        """Pixel arrays (n, y, x) of the given sample rows (default: all), as float32."""
        rows = self.samples if rows is None else rows
        return np.stack(
            [
                np.asarray(self.volumes[img][int(z)], dtype=np.float32)
                for img, z in zip(rows["image_id"], rows["slice_index"])
            ]
        ) if len(rows) else np.zeros((0, 1, 1), np.float32)


def foreground_fraction(volume: np.ndarray, rel_threshold: float = 0.1) -> np.ndarray:
    """Per-slice share of pixels brighter than ``rel_threshold`` x the volume's 99th percentile.

    Why: slices above the head or below the skull base carry nothing but noise; the
    published pipelines drop them implicitly by reading only "image" files, we do it
    explicitly and configurably.
    """
    ref = float(np.percentile(volume, 99)) if volume.size else 0.0
    if ref <= 0:
        return np.zeros(volume.shape[0])
    return (volume > rel_threshold * ref).reshape(volume.shape[0], -1).mean(axis=1)


GRADE_CLASSES = ["II", "III", "IV"]


def grading_task(
    cohort: Cohort,
    volumes: Mapping[str, np.ndarray],
    content_keys: Mapping[str, str],
    *,
    modalities: Iterable[str] = ("T1", "T1post", "T2", "FLAIR"),
    min_foreground: float = 0.15,
    slice_step: int = 1,
    classes: list[str] | None = None,
) -> tuple[TaskData, list[Problem]]:
    """Grade classification, one sample per axial slice of each chosen series.

    Patients without a grade are left out, and so are series that failed to decode
    (they are absent from ``volumes``); the adapter and the store report both.
    """
    problems: list[Problem] = []
    patients = cohort.patients.set_index("patient_id")
    grades: dict[str, str] = {}
    for pid, grade in patients["grade"].items():
        # A missing grade is reported by the adapter, naming the clinical file.
        if not (pd.isna(grade) or str(grade).strip() == ""):
            grades[str(pid)] = str(grade).strip()
    class_list = list(classes) if classes else _ordered_classes(grades.values())
    wanted = set(modalities)
    rows: list[dict[str, Any]] = []
    for rec in cohort.series.itertuples(index=False):
        if rec.modality not in wanted or rec.patient_id not in grades:
            continue
        if rec.series_id not in volumes:
            continue  # decode problems were reported by the store
        grade = grades[rec.patient_id]
        if grade not in class_list:
            problems.append(Problem(str(rec.patient_id), f"grade {grade!r} not in {class_list}"))
            continue
        fg = foreground_fraction(np.asarray(volumes[rec.series_id]))
        keep = np.flatnonzero(fg >= min_foreground)[::slice_step]
        for z in keep:
            rows.append(
                {
                    "sample_id": f"{rec.series_id}#z{int(z):03d}",
                    "patient_id": rec.patient_id,
                    "study_id": rec.study_id,
                    "image_id": rec.series_id,
                    "modality": rec.modality,
                    "slice_index": int(z),
                    "target": grade,
                }
            )
    if not rows:
        raise NoUsableDataError(
            f"no usable grading samples in {cohort.root}: need graded patients with "
            f"decodable series of modalities {sorted(wanted)}"
        )
    samples = pd.DataFrame(rows, columns=list(SAMPLE_COLUMNS))
    return (
        TaskData("grading", "classification", samples, class_list, volumes, content_keys),
        problems,
    )


def _ordered_classes(values: Iterable[str]) -> list[str]:
    present = sorted(set(values))
    known = [g for g in GRADE_CLASSES if g in present]
    return known + [g for g in present if g not in known]


TASK_BUILDERS = {"grading": grading_task}
