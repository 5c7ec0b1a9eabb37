"""Grade classification, one sample per axial slice (the published pipelines' unit)."""

from __future__ import annotations

from typing import Any, Iterable, Mapping

import numpy as np
import pandas as pd

from harness.data.cohort import Cohort, Problem
from harness.errors import NoUsableDataError
from harness.tasks.base import SAMPLE_COLUMNS, TaskData, foreground_fraction
from harness.tasks.lesion import LesionRule, lesion_slices


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
    spacings: Mapping[str, tuple[float, float, float]] | None = None,
) -> tuple[TaskData, list[Problem]]:
    """Grade classification, one sample per axial slice of each chosen series.

    Patients without a grade are left out, and so are series that failed to decode
    (they are absent from ``volumes``); the adapter and the store report both.
    ``slice_sampling = "lesion"`` keeps, of each scan, the slices where its
    ``lesion_modality`` series shows the lesion (the same slice indices in every series of
    the scan with as many slices); a scan where that cannot be done keeps its head slices
    and is named in the problems.
    """
    if slice_sampling not in SLICE_SAMPLINGS:
        raise ValueError(f"slice_sampling must be one of {SLICE_SAMPLINGS}, got {slice_sampling!r}")
    problems: list[Problem] = []
    patients = cohort.patients.set_index("patient_id")
    grades: dict[str, str] = {}
    for pid, grade in patients["grade"].items():
        # A missing grade is reported by the adapter, naming the clinical file.
        if not (pd.isna(grade) or str(grade).strip() == ""):
            grades[str(pid)] = str(grade).strip()
    class_list = list(classes) if classes else _ordered_classes(grades.values())
    wanted = set(modalities)
    lesion_z: dict[str, np.ndarray] = {}
    if slice_sampling == "lesion":
        lesion_z, lesion_problems = _lesion_slices_per_scan(cohort, volumes, lesion_modality, spacings or {})
        problems += lesion_problems
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
        scan_z = lesion_z.get(str(rec.study_id))
        if scan_z is not None and len(fg) == scan_z[1]:
            keep = np.intersect1d(keep, scan_z[0])
        elif scan_z is not None:
            problems.append(Problem(str(rec.series_id), f"{len(fg)} slices, not the {scan_z[1]} of the scan's "
                                    f"{lesion_modality} series: lesion slices not mapped, every head slice kept"))
        keep = keep[::slice_step]
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


def _lesion_slices_per_scan(
    cohort: Cohort, volumes: Mapping[str, np.ndarray], modality: str,
    spacings: Mapping[str, tuple[float, float, float]],
) -> tuple[dict[str, Any], list[Problem]]:
    """``study_id`` -> (lesion slice indices, the finder series' slice count), per scan."""
    rule = LesionRule()
    found: dict[str, Any] = {}
    problems: list[Problem] = []
    for study_id, scan in cohort.series.groupby("study_id", sort=False):
        finders = [s for s in scan.loc[scan["modality"] == modality, "series_id"] if s in volumes]
        if not finders:
            problems.append(Problem(str(study_id), f"slice_sampling = 'lesion' needs a decoded {modality} "
                                    "series in the scan; none, so every head slice of the scan kept"))
            continue
        volume = np.asarray(volumes[finders[0]])
        z = lesion_slices(volume, spacings.get(finders[0], (2.0, 2.0, 2.0)), rule)
        if z.size < rule.min_slices:
            problems.append(Problem(str(finders[0]), f"the lesion finder found {z.size} lesion slice(s), "
                                    f"fewer than {rule.min_slices}: every head slice of the scan kept"))
            continue
        found[str(study_id)] = (z, volume.shape[0])
    return found, problems


def _ordered_classes(values: Iterable[str]) -> list[str]:
    present = sorted(set(values))
    known = [g for g in GRADE_CLASSES if g in present]
    return known + [g for g in present if g not in known]


