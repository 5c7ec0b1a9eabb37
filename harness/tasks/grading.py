"""Grade classification, one sample per axial slice (the published pipelines' unit)."""

from __future__ import annotations

from typing import Any, Iterable, Mapping

import numpy as np
import pandas as pd

from harness.data.cohort import Cohort, Problem
from harness.errors import NoUsableDataError
from harness.tasks.base import SAMPLE_COLUMNS, TaskData, foreground_fraction


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
                    "site": getattr(rec, "institution", "") or "",
                }
            )
    if not rows:
        raise NoUsableDataError(
            f"no usable grading samples in {cohort.root}: need graded patients with "
            f"decodable series of modalities {sorted(wanted)}"
        )
    # "site": the acquiring institution (DICOM InstitutionName), for the site-confound check.
    samples = pd.DataFrame(rows, columns=[*SAMPLE_COLUMNS, "site"])
    return (
        TaskData("grading", "classification", samples, class_list, volumes, content_keys),
        problems,
    )


def _ordered_classes(values: Iterable[str]) -> list[str]:
    present = sorted(set(values))
    known = [g for g in GRADE_CLASSES if g in present]
    return known + [g for g in present if g not in known]


