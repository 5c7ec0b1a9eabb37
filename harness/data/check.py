"""``harness data check DIR``: what a dataset folder holds and what is wrong with it.

Meant to be the first thing a user runs on their own data: it names every bad file
with its reason, and says whether enough is left to run anything.
"""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from harness.data.cache import VolumeStore
from harness.data.cohort import LABEL_MODALITIES, MODALITIES, Cohort, Problem
from harness.data.detect import load_cohort
from harness.data.modality_map import ModalityMap
from harness.errors import NoUsableDataError


@dataclass
class LabelSummary:
    """One label column: how many patients have it, how many miss it, value counts."""

    name: str
    present: int
    missing: int
    values: dict[str, int] = field(default_factory=dict)  # only for categorical labels


@dataclass
class CheckReport:
    root: Path
    layout: str | None
    n_patients: int = 0
    n_studies: int = 0
    series_by_modality: dict[str, int] = field(default_factory=dict)
    labels: list[LabelSummary] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)
    decoded: bool = False
    n_series_ok: int = 0
    n_series_failed: int = 0
    #: patients with at least one image (non-label) series that decodes (or, without
    #: decoding, that was indexed)
    n_usable_patients: int = 0
    error: str | None = None

    @property
    def usable(self) -> bool:
        return self.n_usable_patients > 0


_CATEGORICAL = {"grade", "disease", "extent_of_resection", "survival_censored", "n_studies"}


def _label_summaries(patients: pd.DataFrame) -> list[LabelSummary]:
    out = []
    for col in patients.columns:
        if col == "patient_id":
            continue
        s = patients[col]
        if col == "study_dates":
            present = int(s.map(lambda v: isinstance(v, tuple) and len(v) == 2).sum())
        else:
            present = int(s.notna().sum())
        values: dict[str, int] = {}
        if col in _CATEGORICAL:
            values = {str(k): int(v) for k, v in
                      sorted(Counter(s.dropna().map(str)).items())}
        out.append(LabelSummary(col, present, len(s) - present, values))
    return out


def check_dataset(
    root: Path | str,
    *,
    layout: str | None = None,
    decode: bool = True,
    store: VolumeStore | None = None,
    modality_map: ModalityMap | Mapping[str, str | None] | None = None,
    clinical_csv: str | os.PathLike | None = None,
    progress: bool = False,
) -> CheckReport:
    """Index (and by default decode) a dataset folder and summarise what is usable.

    Never raises for bad data: an unrecognised or empty folder gives a report with
    ``usable`` False and the reason in ``error``.
    """
    root = Path(root)
    try:
        cohort = load_cohort(root, layout, modality_map=modality_map,
                             clinical_csv=clinical_csv, allow_empty=True)
    except NoUsableDataError as exc:
        return CheckReport(root=root, layout=layout, error=str(exc))
    report = _summarise(cohort)
    if decode and not cohort.series.empty:
        own = store is None
        store = store or VolumeStore(progress=progress)
        try:
            volumes, problems = store.load_many(cohort.series)
            problems += store.check_many(cohort.skipped)
        finally:
            if own:
                store.close()
        report.decoded = True
        report.problems += problems
        report.n_series_ok = len(volumes)
        report.n_series_failed = len(cohort.series) - len(volumes)
        ok = cohort.series[cohort.series["series_id"].isin(list(volumes))]
    else:
        ok = cohort.series
    images = ok[~ok["modality"].isin(list(LABEL_MODALITIES))]
    usable = set(images["patient_id"])
    report.n_usable_patients = len(usable)
    if report.decoded:
        for pid in sorted(set(cohort.series["patient_id"]) - usable):
            report.problems.append(Problem(pid, "patient has no decodable image series"))
    return report


def unused_series_problems(cohort: Cohort, used: pd.DataFrame, store: VolumeStore
                           ) -> list[Problem]:
    """Bad files in the series a run will not decode: skipped by the adapter, or of a
    modality the suite does not use. Why: ``run`` names the same bad files as ``data check``."""
    unused = cohort.series[~cohort.series["series_id"].isin(used["series_id"])]
    frames = [f for f in (unused, cohort.skipped) if f is not None and not f.empty]
    if not frames:
        return []
    return store.check_many(pd.concat(frames, ignore_index=True))


def _summarise(cohort: Cohort) -> CheckReport:
    s = cohort.series
    order = {m: i for i, m in enumerate(MODALITIES)}
    counts = Counter(s["modality"])
    by_mod = {m: int(counts[m]) for m in sorted(counts, key=lambda m: order.get(m, 99))}
    n_patients = len(set(s["patient_id"]) | set(cohort.patients.get("patient_id", [])))
    return CheckReport(
        root=cohort.root,
        layout=cohort.layout,
        n_patients=n_patients,
        n_studies=int(s["study_id"].nunique()),
        series_by_modality=by_mod,
        labels=_label_summaries(cohort.patients),
        problems=list(cohort.problems),
    )


def format_check_report(report: CheckReport) -> str:
    """A plain-text report for the terminal."""
    lines = [f"Dataset: {report.root}"]
    if report.error:
        lines += [f"Layout: {report.layout or 'not recognised'}", f"Error: {report.error}",
                  "Usable: NO"]
        return "\n".join(lines)
    lines.append(f"Layout: {report.layout}")
    lines.append(f"Found: {report.n_patients} patients, {report.n_studies} studies, "
                 f"{sum(report.series_by_modality.values())} series")
    if report.series_by_modality:
        lines.append("Series by modality: " + ", ".join(
            f"{m} {n}" for m, n in report.series_by_modality.items()))
    if report.labels:
        lines.append("Labels:")
        for lab in report.labels:
            vals = ("  (" + ", ".join(f"{k}: {v}" for k, v in lab.values.items()) + ")"
                    if lab.values else "")
            lines.append(f"  {lab.name}: {lab.present} present, {lab.missing} missing{vals}")
    if report.decoded:
        lines.append(f"Decoded: {report.n_series_ok} series ok, "
                     f"{report.n_series_failed} rejected")
    else:
        lines.append("Decoded: not checked (--no-decode); corrupt slices are not detected")
    if report.problems:
        lines.append(f"Problems ({len(report.problems)}):")
        lines += [f"  {p.path}: {p.reason}" for p in report.problems]
    else:
        lines.append("Problems: none")
    lines.append(f"Usable: {'yes' if report.usable else 'NO'} "
                 f"({report.n_usable_patients} patient(s) with a usable image series)")
    return "\n".join(lines)
