"""Grade classification, one sample per axial slice (the published pipelines' unit)."""

from __future__ import annotations

from dataclasses import replace
from typing import Any, Iterable, Mapping

import numpy as np
import pandas as pd

from harness.data.cohort import Cohort, Problem
from harness.errors import NoUsableDataError
from harness.tasks.base import SAMPLE_COLUMNS, TaskData, foreground_fraction
from harness.hashing import json_digest
from harness.tasks.lesion import (DEFAULT_SPACING_MM, LesionRule, ScanLesion, crop_in_plane, find_scan_lesion,
                                  mm_to_pixels)


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
    and is named in the problems. ``lesion_crop_mm`` > 0 also cuts every slice of the scan
    to a square of that side centred on the lesion (on the volume's centre where none was
    found), so a model sees the tumour and little of the head around it.
    """
    if slice_sampling not in SLICE_SAMPLINGS:
        raise ValueError(f"slice_sampling must be one of {SLICE_SAMPLINGS}, got {slice_sampling!r}")
    if lesion_crop_mm and slice_sampling != "lesion":
        raise ValueError("lesion_crop_mm needs slice_sampling = 'lesion'")
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
    if slice_sampling == "lesion":
        lesions, lesion_problems = _lesions_per_scan(cohort, volumes, lesion_modality, spacings or {})
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
        lesion = lesions.get(str(rec.study_id))
        if lesion is not None and len(fg) == lesion.n_slices:
            keep = np.intersect1d(keep, lesion.slices)
            if lesion_crop_mm:
                size = mm_to_pixels(lesion_crop_mm, (spacings or {}).get(rec.series_id, DEFAULT_SPACING_MM), least=8)
                cropped[rec.series_id] = crop_in_plane(np.asarray(volumes[rec.series_id]), lesion.centre_yx, size)
                cropped_keys[rec.series_id] = json_digest(
                    {"series": content_keys.get(rec.series_id, rec.series_id), "crop": [*lesion.centre_yx, size]}, 32)
        elif lesion is not None:
            problems.append(Problem(str(rec.series_id), f"{len(fg)} slices, not the {lesion.n_slices} of the "
                                    f"scan's {lesion_modality} series: lesion slices not mapped, every head "
                                    "slice kept" + (", not cropped" if lesion_crop_mm else "")))
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
    if cropped:  # the crops stand in for their series, under keys of their own for the caches
        volumes = {**{k: volumes[k] for k in volumes if k not in cropped}, **cropped}
        content_keys = {**content_keys, **cropped_keys}
    return (
        TaskData("grading", "classification", samples, class_list, volumes, content_keys),
        problems,
    )


def _lesions_per_scan(
    cohort: Cohort, volumes: Mapping[str, np.ndarray], modality: str,
    spacings: Mapping[str, tuple[float, float, float]],
) -> tuple[dict[str, ScanLesion], list[Problem]]:
    """``study_id`` -> what the lesion finder saw in the scan's ``modality`` series; where it
    found too few slices to be trusted, every slice of the scan (its centre still places a crop)."""
    rule = LesionRule()
    found: dict[str, ScanLesion] = {}
    problems: list[Problem] = []
    for study_id, scan in cohort.series.groupby("study_id", sort=False):
        finders = [s for s in scan.loc[scan["modality"] == modality, "series_id"] if s in volumes]
        if not finders:
            problems.append(Problem(str(study_id), f"slice_sampling = 'lesion' needs a decoded {modality} "
                                    "series in the scan; none, so every head slice of the scan kept"))
            continue
        lesion = find_scan_lesion(np.asarray(volumes[finders[0]]), spacings.get(finders[0], DEFAULT_SPACING_MM), rule)
        if lesion.slices.size < rule.min_slices:
            problems.append(Problem(str(finders[0]), f"the lesion finder found {lesion.slices.size} lesion "
                                    f"slice(s), fewer than {rule.min_slices}: every head slice of the scan kept"))
            lesion = replace(lesion, slices=np.arange(lesion.n_slices))
        found[str(study_id)] = lesion
    return found, problems


def _ordered_classes(values: Iterable[str]) -> list[str]:
    present = sorted(set(values))
    known = [g for g in GRADE_CLASSES if g in present]
    return known + [g for g in present if g not in known]


