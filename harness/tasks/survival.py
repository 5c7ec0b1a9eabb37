"""Survival-paper tasks on BraTS 2020: grade (HGG/LGG) or survival class, one image per row.

Valbuena et al. treat each of a patient's four modality images as a separate sample and
split the images 80/20 (the ``image_level`` protocol); the view keeps one row per
modality image so that protocol and a patient-level one can run on the same rows.

Survival classes follow the paper: short (< 1 year), mid (1 to 5 years), long (> 5
years). BraTS has no survival for LGG patients; ``impute_lgg_survival = "paper"``
reproduces the paper's random filling (76% between 5 and 7 years, 24% between 4 and 5,
ages drawn within mean +- sd of the known ones), ``"drop"`` keeps only real labels.
"""

from __future__ import annotations

from typing import Any, Iterable, Mapping

import numpy as np
import pandas as pd

from harness.data.cohort import Cohort, Problem
from harness.errors import HarnessError, NoUsableDataError
from harness.tasks.base import SAMPLE_COLUMNS, TaskData

SURVIVAL_CLASSES = ["short", "mid", "long"]
SURVIVAL_TARGETS = ("grade", "survival_class")
IMPUTE_MODES = ("paper", "drop")
YEAR_DAYS = 365.25
SURVIVAL_COLUMNS = SAMPLE_COLUMNS + ("age", "extent_of_resection", "survival_days", "imputed", "site")
#: With ``lesion_crop_mm``: slices kept either side of the lesion's axial centre (mm); the
#: transfer backbones cut three slices 30 mm apart, so 34 mm keeps all three inside.
LESION_HALF_DEPTH_MM = 34.0


def survival_class(days: float) -> str:
    """The paper's three classes: under 1 year, 1 to 5 years, over 5 years."""
    if days < YEAR_DAYS:
        return "short"
    return "mid" if days <= 5 * YEAR_DAYS else "long"


def impute_paper(patients: pd.DataFrame, seed: int) -> pd.DataFrame:
    """The paper's filling of missing LGG survival and age (random, seeded)."""
    out = patients.copy()
    rng = np.random.default_rng(seed)
    known_age = out["age"].dropna().astype(float)
    mean, sd = (float(known_age.mean()), float(known_age.std(ddof=0))) if len(known_age) else (50.0, 10.0)
    out["imputed"] = False
    for i in out.index:
        if pd.isna(out.at[i, "survival_days"]) and out.at[i, "grade"] == "LGG":
            lo, hi = (5, 7) if rng.random() < 0.76 else (4, 5)
            out.at[i, "survival_days"] = float(rng.uniform(lo * YEAR_DAYS, hi * YEAR_DAYS))
            out.at[i, "imputed"] = True
        if pd.isna(out.at[i, "age"]):
            out.at[i, "age"] = float(rng.uniform(mean - sd, mean + sd))
            out.at[i, "imputed"] = True
    return out


def survival_task(
    cohort: Cohort,
    volumes: Mapping[str, np.ndarray],
    content_keys: Mapping[str, str],
    *,
    target: str = "grade",
    targets: Iterable[str] | None = None,  # the runner expands this list, one view each
    modalities: Iterable[str] = ("T1", "T1post", "T2", "FLAIR"),
    impute_lgg_survival: str = "paper",
    impute_seed: int = 0,
    lesion_crop_mm: float = 0.0,
    lesion_half_depth_mm: float = LESION_HALF_DEPTH_MM,
    lesion_modality: str = "FLAIR",
    spacings: Mapping[str, tuple[float, float, float]] | None = None,
) -> tuple[TaskData, list[Problem]]:
    """One row per modality image; ``target`` is ``"grade"`` or ``"survival_class"``.

    ``lesion_crop_mm`` > 0 cuts every image of a scan to a square of that side around the
    lesion its ``lesion_modality`` image shows (found in the image: no mask, no label;
    `harness.tasks.lesion`) and to the slices within ``lesion_half_depth_mm`` of the
    lesion's axial centre, so the backbone's three cuts 30 mm apart pass through the tumour
    instead of the head's middle. Off by default: the paper cut the whole image.
    """
    if target not in SURVIVAL_TARGETS:
        raise HarnessError(f"survival target must be one of {SURVIVAL_TARGETS}, got {target!r}")
    if impute_lgg_survival not in IMPUTE_MODES:
        raise HarnessError(f"impute_lgg_survival must be one of {IMPUTE_MODES}, got {impute_lgg_survival!r}")
    needed = {"grade", "age", "survival_days", "extent_of_resection"}
    if not needed <= set(cohort.patients.columns):
        raise HarnessError(f"{cohort.root}: the survival task needs a BraTS-style cohort, found {cohort.layout!r}")
    problems: list[Problem] = []
    patients = cohort.patients.copy()
    patients["age"] = patients["age"].astype(float)
    patients["survival_days"] = patients["survival_days"].astype(float)
    patients["imputed"] = False
    if impute_lgg_survival == "paper":
        patients = impute_paper(patients, impute_seed)
    labels: dict[str, str] = {}
    for rec in patients.itertuples(index=False):
        pid = str(rec.patient_id)
        if target == "grade":
            if isinstance(rec.grade, str) and rec.grade in ("HGG", "LGG"):
                labels[pid] = rec.grade
            continue
        days, censored = rec.survival_days, bool(getattr(rec, "survival_censored", False) is True)
        if pd.isna(days):
            continue
        if censored and impute_lgg_survival == "drop" and survival_class(days) != "long":
            continue  # alive at a time that does not fix the class: not a real label
        labels[pid] = survival_class(float(days))
    info = patients.set_index(patients["patient_id"].astype(str))
    wanted = set(modalities)
    rows: list[dict[str, Any]] = []
    for s in cohort.series.itertuples(index=False):
        pid = str(s.patient_id)
        if s.modality not in wanted or pid not in labels or s.series_id not in volumes:
            continue
        p = info.loc[pid]
        rows.append({
            "sample_id": s.series_id, "patient_id": pid, "study_id": s.study_id,
            "image_id": s.series_id, "modality": s.modality, "slice_index": -1,
            "target": labels[pid], "age": p["age"],
            "extent_of_resection": p["extent_of_resection"] if isinstance(p["extent_of_resection"], str) else "NA",
            "survival_days": p["survival_days"], "imputed": bool(p["imputed"]),
            # the contributing site (brats adapter: from name_mapping.csv's older IDs), for the site check
            "site": getattr(s, "institution", "") or "",
        })
    if not rows:
        raise NoUsableDataError(
            f"no usable {target} samples in {cohort.root} (impute_lgg_survival={impute_lgg_survival!r})"
        )
    samples = pd.DataFrame(rows, columns=list(SURVIVAL_COLUMNS))
    order = ["HGG", "LGG"] if target == "grade" else SURVIVAL_CLASSES
    classes = [c for c in order if c in set(samples["target"])]
    if lesion_crop_mm:
        volumes, content_keys, crop_problems = _lesion_crops(
            samples, volumes, content_keys, crop_mm=lesion_crop_mm, half_depth_mm=lesion_half_depth_mm,
            modality=lesion_modality, spacings=spacings or {})
        problems += crop_problems
    return TaskData("survival", "classification", samples, classes, volumes, content_keys), problems


def _lesion_crops(samples: pd.DataFrame, volumes: Mapping[str, np.ndarray], content_keys: Mapping[str, str], *,
                  crop_mm: float, half_depth_mm: float, modality: str,
                  spacings: Mapping[str, tuple[float, float, float]],
                  ) -> tuple[dict[str, np.ndarray], dict[str, str], list[Problem]]:
    """Each sample's image cut around its scan's lesion, under cache keys of its own."""
    from harness.tasks.lesion import DEFAULT_SPACING_MM, lesions_per_scan, series_lesion_view

    lesions, problems = lesions_per_scan(samples, volumes, modality, spacings, id_column="image_id")
    cut, keys = dict(volumes), dict(content_keys)
    for rec in samples.itertuples(index=False):
        volume = np.asarray(volumes[rec.image_id])
        view = series_lesion_view(
            rec.image_id, volume, np.arange(len(volume)), lesions.get(str(rec.study_id)), crop_mm=crop_mm,
            content_key=keys.get(rec.image_id, rec.image_id),
            spacing_mm=spacings.get(rec.image_id, DEFAULT_SPACING_MM), modality=modality,
            half_depth_mm=half_depth_mm)
        view.record(rec.image_id, cut, keys, problems)
    return cut, keys, problems
