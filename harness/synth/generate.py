"""Generate a whole synthetic cohort: patients (in a process pool) plus the cohort CSVs.

Output bytes depend only on the arguments, never on ``jobs`` or the wall clock.
"""

from __future__ import annotations

import os
import sys
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
import pandas as pd
from tqdm import tqdm

from harness.errors import HarnessError
from harness.synth.anatomy import load_anatomy
from harness.synth.cohort import (
    DEFAULT_PATIENTS,
    FLAVOURS,
    SIGNALS,
    PatientParams,
    blank_grades,
    censored,
    draw_parameters,
    survival_days,
)
from harness.synth.patients import write_patient

#: The real REMBRANDT collection's size: 130 patients, 110,020 DICOM images.
REMBRANDT_FULL_PATIENTS = 130
REMBRANDT_FULL_IMAGES = 110_020
#: Slices per series for a full-size synthetic REMBRANDT: 4 series x 212 = 848 slices per
#: patient, 110,240 files for 130 patients (the real collection averages 846 per patient).
REMBRANDT_FULL_SLICES_PER_SERIES = 212
#: ``scale`` presets of :func:`generate_cohort` / ``data synth --scale``.
SCALES: dict[str, dict[str, int]] = {
    "rembrandt": {"n_patients": REMBRANDT_FULL_PATIENTS,
                  "slices_per_series": REMBRANDT_FULL_SLICES_PER_SERIES},
}

TRUTH_COLUMNS: tuple[str, ...] = (
    "patient_id", "site", "grade", "rho_per_month", "diffusion_wm_mm2_per_month",
    "diffusion_gm_mm2_per_month", "seed_x_mm", "seed_y_mm", "seed_z_mm", "tumour_volume_ml",
    "interval_months", "signal",
)


def rembrandt_clinical(params: list[PatientParams], seed: int) -> pd.DataFrame:
    """``REMBRANDT_clinical.csv``: Sample, Disease, Grade (a few grades left empty)."""
    blanks = blank_grades(len(params), seed)
    rows = []
    for p in params:
        if p.index in blanks:
            rows.append({"Sample": p.patient_id, "Disease": "UNKNOWN", "Grade": ""})
        else:
            disease = "GBM" if p.label_grade == "IV" else p.disease_subtype
            rows.append({"Sample": p.patient_id, "Disease": disease, "Grade": p.label_grade})
    return pd.DataFrame(rows, columns=["Sample", "Disease", "Grade"])


def brats_grade(p: PatientParams) -> str:
    return "LGG" if p.label_grade == "II" else "HGG"


def brats20_tables(params: list[PatientParams], seed: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    """``name_mapping.csv`` (all subjects) and ``survival_info.csv`` (HGG only)."""
    mapping = []
    for p in params:
        i = p.index + 1
        mapping.append({
            "Grade": brats_grade(p),
            "BraTS_2017_subject_ID": f"Brats17_{p.site.name}_{i}_1" if i % 3 else "NA",
            "BraTS_2018_subject_ID": f"Brats18_{p.site.name}_{i}_1" if i % 4 else "NA",
            "TCGA_TCIA_subject_ID": f"TCGA-{10 + i % 80:02d}-{1000 + i:04d}" if i % 2 else "NA",
            "BraTS_2019_subject_ID": f"BraTS19_{p.site.name}_{i}_1",
            "BraTS_2020_subject_ID": p.patient_id,
        })
    hgg = [p.index for p in params if brats_grade(p) == "HGG"]
    cens = censored(hgg, seed)
    surv = []
    for p in params:
        if brats_grade(p) != "HGG":
            continue
        days = survival_days(p)
        text = f"ALIVE ({max(30, int(0.7 * days))} days later)" if p.index in cens else str(days)
        surv.append({
            "Brats20ID": p.patient_id,
            "Age": f"{p.age:.3f}",
            "Survival_days": text,
            "Extent_of_Resection": p.extent_of_resection,
        })
    return (
        pd.DataFrame(mapping, columns=list(mapping[0])),
        pd.DataFrame(surv, columns=["Brats20ID", "Age", "Survival_days", "Extent_of_Resection"]),
    )


def _brats_truth(rows: list[dict], params: list[PatientParams], seed: int) -> None:
    hgg = [p.index for p in params if brats_grade(p) == "HGG"]
    cens = censored(hgg, seed)
    for row, p in zip(rows, params):
        row["grade"] = brats_grade(p)
        row["age"] = round(p.age, 3)
        is_hgg = brats_grade(p) == "HGG"
        row["survival_days"] = survival_days(p) if is_hgg else np.nan
        row["survival_censored"] = bool(p.index in cens)
        row["extent_of_resection"] = p.extent_of_resection if is_hgg else ""


def _write_csv(df: pd.DataFrame, path: Path) -> None:
    df.to_csv(path, index=False, lineterminator="\n")


def generate_cohort(flavour: str, out_dir: Path, *, n_patients: int | None = None, seed: int = 0,
                    signal: str = "growth", grid_mm: float = 2.0, progress: bool = True,
                    jobs: int | None = None, signal_modality: str | None = None,
                    slices_per_series: int | None = None, scale: str | None = None) -> Path:
    """Writes the cohort into out_dir (created; must be empty or absent) and returns out_dir.

    ``flavour`` is one of :data:`FLAVOURS`; ``n_patients`` defaults to
    :data:`DEFAULT_PATIENTS`; ``signal`` is ``"growth"`` (labels follow the tumour) or
    ``"none"`` (labels independent of it); ``jobs`` worker processes (default
    min(2, cpu count)) never change the bytes written. ``signal_modality`` (opt-in; one
    of ``T1, T1post, T2, FLAIR``; rembrandt and brats20 only) makes a known-truth cohort
    for explainability audits: labels are drawn independently of the tumour's growth and
    only that channel shows them (an enhancing core for grades III/IV, HGG); default
    ``None`` leaves the output unchanged.

    Full-size cohorts (rembrandt only; opt-in, the default output is unchanged):
    ``slices_per_series`` writes each series with that many axial slices over the same
    head extent (the anatomy and tumour are interpolated along z before rendering, so a
    slice costs a file, not a simulation); ``scale="rembrandt"`` is the real collection's
    size, 130 patients x 4 series x 212 slices = 110,240 files (``n_patients`` and
    ``slices_per_series``, when given, override the preset).
    """
    if flavour not in FLAVOURS:
        raise HarnessError(f"unknown synthetic flavour {flavour!r}; expected one of {', '.join(FLAVOURS)}")
    if signal not in SIGNALS:
        raise HarnessError(f"unknown signal {signal!r}; expected one of {', '.join(SIGNALS)}")
    if scale is not None:
        if scale not in SCALES:
            raise HarnessError(f"unknown scale {scale!r}; expected one of {', '.join(SCALES)}")
        if flavour != scale:
            raise HarnessError(f"scale {scale!r} is for the {scale} flavour, not {flavour!r}")
        preset = SCALES[scale]
        n_patients = preset["n_patients"] if n_patients is None else n_patients
        slices_per_series = preset["slices_per_series"] if slices_per_series is None else slices_per_series
    if slices_per_series is not None:
        if flavour != "rembrandt":
            raise HarnessError(f"slices_per_series is only available for rembrandt, not {flavour!r}")
        if int(slices_per_series) != slices_per_series or slices_per_series < 2:
            raise HarnessError(f"slices_per_series must be an integer >= 2, got {slices_per_series!r}")
        slices_per_series = int(slices_per_series)
    out_dir = Path(out_dir)
    if out_dir.exists() and (not out_dir.is_dir() or any(out_dir.iterdir())):
        raise HarnessError(f"output folder {out_dir} exists and is not empty")
    n = DEFAULT_PATIENTS[flavour] if n_patients is None else int(n_patients)
    if n < 1:
        raise HarnessError("n_patients must be at least 1")
    if jobs is None:
        jobs = min(2, os.cpu_count() or 1)
    try:
        params = draw_parameters(flavour, n, seed=seed, signal=signal, signal_modality=signal_modality)
    except ValueError as exc:
        raise HarnessError(str(exc)) from exc
    out_dir.mkdir(parents=True, exist_ok=True)

    load_anatomy(grid_mm)  # warm the cache before any fork
    tasks = [(flavour, p, float(grid_mm), str(out_dir))
             + ((slices_per_series,) if slices_per_series is not None else ()) for p in params]
    bar = tqdm(total=n, desc=f"synth {flavour}", unit="patient", disable=not progress, file=sys.stderr)
    rows: list[dict] = []
    try:
        if jobs <= 1 or n == 1:
            for t in tasks:
                rows.append(write_patient(t))
                bar.update(1)
        else:
            with ProcessPoolExecutor(max_workers=min(jobs, n)) as pool:
                for row in pool.map(write_patient, tasks):
                    rows.append(row)
                    bar.update(1)
    finally:
        bar.close()

    if flavour == "rembrandt":
        _write_csv(rembrandt_clinical(params, seed), out_dir / "REMBRANDT_clinical.csv")
        blanks = blank_grades(n, seed)
        for row, p in zip(rows, params):
            row["grade_blank_in_csv"] = p.index in blanks
    elif flavour == "brats20":
        mapping, survival = brats20_tables(params, seed)
        _write_csv(mapping, out_dir / "name_mapping.csv")
        _write_csv(survival, out_dir / "survival_info.csv")
        _brats_truth(rows, params, seed)
    truth = pd.DataFrame(rows)
    extra = [c for c in truth.columns if c not in TRUTH_COLUMNS]
    _write_csv(truth[list(TRUTH_COLUMNS) + extra], out_dir / "truth.csv")
    return out_dir
