"""Grade classification, one sample per axial slice (the published pipelines' unit)."""

from __future__ import annotations

from typing import Any, Iterable, Mapping

import numpy as np
import pandas as pd

from harness.data.cohort import Cohort, Problem
from harness.errors import NoUsableDataError
from harness.tasks.base import SAMPLE_COLUMNS, TaskData, foreground_fraction
from harness.tasks.lesion import DEFAULT_SPACING_MM, ScanLesion, lesions_per_scan, series_lesion_view


GRADE_CLASSES = ["II", "III", "IV"]
#: ``slice_sampling``: every head slice (the papers' sampling), or only the slices where
#: the lesion is visible (found in the images, `harness.tasks.lesion`).
SLICE_SAMPLINGS = ("all", "lesion")


def grading_task(
    cohort: Cohort,
    volumes: Mapping[str, np.ndarray],
    content_keys: Mapping[str, str],
    *,
    modalities: Iterable[str] = ("T1", "T1post", "T2", "FLAIR"),
    min_foreground: float = 0.15,
    slice_step: int = 1,
    classes: list[str] | None = None,
    slice_sampling: str = "all",
    lesion_modality: str = "FLAIR",
    lesion_crop_mm: float = 0.0,
    spacings: Mapping[str, tuple[float, float, float]] | None = None,
) -> tuple[TaskData, list[Problem]]:
    """Grade classification, one sample per axial slice of each chosen series.

    Patients without a grade are left out, and so are series that failed to decode
    (they are absent from ``volumes``); the adapter and the store report both.
    ``slice_sampling = "lesion"`` keeps, of each scan, the slices where its
    ``lesion_modality`` series shows the lesion (the same slice indices in every series of
    the scan with as many slices); a scan where that cannot be done keeps its head slices
    and is named in the problems. ``lesion_crop_mm`` > 0 cuts every kept slice of the scan
    (all head slices, or the lesion slices) to a square of that side centred on the lesion
    (on the volume's centre where none was found), so a model sees the tumour and little of
    the head around it.
    """
    if slice_sampling not in SLICE_SAMPLINGS:
        raise ValueError(f"slice_sampling must be one of {SLICE_SAMPLINGS}, got {slice_sampling!r}")
    if lesion_crop_mm < 0:
        raise ValueError(f"lesion_crop_mm must be >= 0, got {lesion_crop_mm}")
    problems: list[Problem] = []
    patients = cohort.patients.set_index("patient_id")
    grades: dict[str, str] = {}
    for pid, grade in patients["grade"].items():
        # A missing grade is reported by the adapter, naming the clinical file.
        if not (pd.isna(grade) or str(grade).strip() == ""):
            grades[str(pid)] = str(grade).strip()
    class_list = list(classes) if classes else _ordered_classes(grades.values())
    wanted = set(modalities)
    lesions: dict[str, ScanLesion] = {}
    if slice_sampling == "lesion" or lesion_crop_mm:
        lesions, lesion_problems = lesions_per_scan(cohort.series, volumes, lesion_modality, spacings or {})
        problems += lesion_problems
    cropped: dict[str, np.ndarray] = {}
    cropped_keys: dict[str, str] = {}
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
        keep = np.flatnonzero(fg >= min_foreground)
        view = series_lesion_view(
            rec.series_id, np.asarray(volumes[rec.series_id]), keep, lesions.get(str(rec.study_id)),
            crop_mm=lesion_crop_mm, content_key=content_keys.get(rec.series_id, rec.series_id),
            spacing_mm=(spacings or {}).get(rec.series_id, DEFAULT_SPACING_MM), modality=lesion_modality,
            narrow=slice_sampling == "lesion")
        view.record(rec.series_id, cropped, cropped_keys, problems)
        keep = view.keep[::slice_step]
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
    if cropped:  # the crops stand in for their series, under keys of their own for the caches
        volumes = {**{k: volumes[k] for k in volumes if k not in cropped}, **cropped}
        content_keys = {**content_keys, **cropped_keys}
    return (
        TaskData("grading", "classification", samples, class_list, volumes, content_keys),
        problems,
    )


def _ordered_classes(values: Iterable[str]) -> list[str]:
    present = sorted(set(values))
    known = [g for g in GRADE_CLASSES if g in present]
    return known + [g for g in present if g not in known]


