"""Progression: one sample per patient-date-series, target MonthDif, as the capstone paper.

The paper's rows are (patient, scan date, MRI series) triples and its target, MonthDif,
is the interval in months between the patient's two scans. Every row of one patient
therefore carries the same target: a row-level split can score by recognising the
patient. The view keeps that structure on purpose so the audit can show it.

Eligibility (the paper's stage 3: keep patients whose pseudo-grade rises between the two
dates) needs the stage-1 grader and runs in the runner (:func:`select_eligible`), after
this view is built; it only ever removes whole patients.
"""

from __future__ import annotations

from typing import Any, Iterable, Mapping

import numpy as np
import pandas as pd

from harness.data.cohort import Cohort, Problem
from harness.errors import HarnessError, NoUsableDataError
from harness.tasks.base import SAMPLE_COLUMNS, TaskData

#: Days per month used for MonthDif (365.25 / 12).
DAYS_PER_MONTH = 30.4375
#: The BTP image series (the paper used every series, MaskTumor included).
BTP_IMAGE_MODALITIES = ("T1post", "dT1", "T1", "FLAIR", "ADC", "sRCBV", "nRCBV", "nCBF", "T2")
ELIGIBILITY_RULES = ("grade_rise", "all")
#: "site": the acquiring institution (DICOM InstitutionName), for the site-confound check.
PROGRESSION_COLUMNS = SAMPLE_COLUMNS + ("study_date", "visit", "site")


def progression_task(
    cohort: Cohort,
    volumes: Mapping[str, np.ndarray],
    content_keys: Mapping[str, str],
    *,
    modalities: Iterable[str] = BTP_IMAGE_MODALITIES,
    # Used by the pipeline stages in the runner (stage 1-3), not by the view itself:
    eligibility: str = "grade_rise",
    grade_modalities: Iterable[str] = ("T1post", "FLAIR"),
    min_eligible_patients: int = 6,
    on_too_few: str = "use_all",
    min_foreground: float = 0.15,
    aux_slice_step: int = 2,
    aux_modalities: Iterable[str] = ("T1", "T1post", "T2", "FLAIR"),
    grader: str = "resnet18_grader",
    grader_slice_sampling: str = "all",
    grader_crop_mm: float = 0.0,
    grader_cv_folds: int = 0,
) -> tuple[TaskData, list[Problem]]:
    """Rows of every patient with two dated scans; ``target`` = MonthDif (float).

    ``slice_index`` is -1: a sample is a whole series (features are per series). The
    ``grader*`` options belong to stage 1 (`harness.tasks.progression_stages`); they are
    checked here so a bad suite file fails before any cohort is read.
    """
    from harness.tasks.grading import SLICE_SAMPLINGS

    if grader_slice_sampling not in SLICE_SAMPLINGS:
        raise HarnessError(f"progression grader_slice_sampling must be one of {SLICE_SAMPLINGS}, "
                           f"got {grader_slice_sampling!r}")
    if grader_crop_mm and grader_slice_sampling != "lesion":
        raise HarnessError("progression grader_crop_mm needs grader_slice_sampling = 'lesion'")
    if grader_cv_folds == 1 or grader_cv_folds < 0:
        raise HarnessError(f"progression grader_cv_folds must be 0 (off) or at least 2, got {grader_cv_folds}")
    if eligibility not in ELIGIBILITY_RULES:
        raise HarnessError(f"progression eligibility must be one of {ELIGIBILITY_RULES}, got {eligibility!r}")
    if on_too_few not in ("use_all", "fail"):
        raise HarnessError(f"progression on_too_few must be 'use_all' or 'fail', got {on_too_few!r}")
    if "interval_days" not in cohort.patients.columns:
        raise HarnessError(
            f"{cohort.root}: the progression task needs a two-date cohort (btp layout), "
            f"found layout {cohort.layout!r}"
        )
    problems: list[Problem] = []
    patients = cohort.patients.set_index("patient_id")
    wanted = set(modalities)
    rows: list[dict[str, Any]] = []
    for pid, rec in patients.iterrows():
        if pd.isna(rec["interval_days"]):
            problems.append(Problem(str(cohort.root / str(pid)),
                                    f"patient {pid}: no two dated scans, so no MonthDif; left out"))
            continue
        months = float(rec["interval_days"]) / DAYS_PER_MONTH
        for s in cohort.series_of(str(pid)).itertuples(index=False):
            if s.modality not in wanted or s.series_id not in volumes:
                continue
            rows.append({
                "sample_id": s.series_id, "patient_id": str(pid), "study_id": s.study_id,
                "image_id": s.series_id, "modality": s.modality, "slice_index": -1,
                "target": months, "study_date": s.study_date,
                "visit": "baseline" if s.study_date == rec["baseline_date"] else "followup",
                "site": getattr(s, "institution", "") or "",
            })
    if not rows:
        raise NoUsableDataError(
            f"no usable progression rows in {cohort.root}: need patients with two dated "
            f"scans and decodable series of modalities {sorted(wanted)}"
        )
    samples = pd.DataFrame(rows, columns=list(PROGRESSION_COLUMNS))
    study_series = {str(study): tuple(sorted(g["image_id"])) for study, g in samples.groupby("study_id")}
    return TaskData("progression", "regression", samples, None, volumes, content_keys,
                    study_series=study_series), problems


def scan_grades(slice_predictions: pd.DataFrame) -> pd.DataFrame:
    """Stage 2: one pseudo-grade per scan (patient, date): the most common slice prediction.

    ``slice_predictions`` has patient_id, study_id, study_date, image_id, modality,
    slice_index, grade. Ties go to the lower grade, so a rise is never invented by a tie.
    """
    rows = []
    for (pid, study, date), g in slice_predictions.groupby(
        ["patient_id", "study_id", "study_date"], sort=True
    ):
        counts = g["grade"].value_counts()
        top = counts[counts == counts.max()].index
        grade = sorted(top, key=_grade_rank)[0]
        rows.append({
            "patient_id": pid, "study_id": study, "study_date": date, "pseudo_grade": grade,
            "n_slices": len(g), "series": ",".join(sorted(g["modality"].unique())),
            "share": float(counts.max() / len(g)),
        })
    return pd.DataFrame(rows, columns=["patient_id", "study_id", "study_date", "pseudo_grade",
                                       "n_slices", "series", "share"])


def _grade_rank(grade: str) -> int:
    order = {"I": 1, "II": 2, "III": 3, "IV": 4}
    return order.get(str(grade), 99)


def eligibility_table(grades: pd.DataFrame) -> pd.DataFrame:
    """Stage 3: per patient, the baseline and follow-up pseudo-grades and whether they rise."""
    rows = []
    for pid, g in grades.sort_values("study_date").groupby("patient_id", sort=True):
        if len(g) != 2:
            rows.append({"patient_id": pid, "baseline_grade": None, "followup_grade": None,
                         "grade_rises": False, "reason": f"{len(g)} graded scan(s), need 2"})
            continue
        a, b = g["pseudo_grade"].tolist()
        rises = _grade_rank(b) > _grade_rank(a)
        rows.append({"patient_id": pid, "baseline_grade": a, "followup_grade": b,
                     "grade_rises": rises, "reason": "grade rises" if rises else "no rise"})
    return pd.DataFrame(rows, columns=["patient_id", "baseline_grade", "followup_grade",
                                       "grade_rises", "reason"])


def select_eligible(
    data: TaskData, table: pd.DataFrame, *, rule: str, min_patients: int, on_too_few: str
) -> tuple[TaskData, str]:
    """Keep the rows of eligible patients; returns the view and a plain-words outcome."""
    total = data.samples["patient_id"].nunique()
    if rule == "all":
        return data, f"eligibility 'all': every one of {total} patients kept"
    keep = set(table.loc[table["grade_rises"].astype(bool), "patient_id"].astype(str))
    kept = sorted(keep & set(data.samples["patient_id"]))
    if len(kept) >= min_patients:
        rows = data.samples[data.samples["patient_id"].isin(kept)]
        return (
            data.subset(rows["sample_id"]),
            f"eligibility 'grade_rise': kept {len(kept)} of {total} patients whose pseudo-grade "
            f"rises between the two scans (the paper kept 6 of 20)",
        )
    msg = (
        f"eligibility 'grade_rise' leaves only {len(kept)} of {total} patients "
        f"({', '.join(kept) or 'none'}); at least {min_patients} are needed"
    )
    if on_too_few == "fail":
        raise NoUsableDataError(msg + "; set [task] eligibility = \"all\" or on_too_few = \"use_all\"")
    return data, msg + f": TOO FEW, so all {total} patients are used instead (on_too_few = \"use_all\")"
