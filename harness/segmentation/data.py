"""BraTS-layout cohorts as segmentation cases: four channels plus the label map.

Reads through the project's adapter (``load_cohort``) and ingestion cache
(``VolumeStore``); a patient with a missing or unreadable series is a problem, not a
crash. ``degrade_site`` simulates a second, lower-resolution, noisier site for the
transfer-learning experiment.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Sequence

import numpy as np
from scipy import ndimage

from harness.data import VolumeStore, load_cohort
from harness.data.cache import dataset_fingerprint
from harness.data.cohort import Problem
from harness.errors import NoUsableDataError
from harness.segmentation.labels import LabelError, labels_to_regions, to_brats2023

#: Input channels in network order (canonical modality names of the adapters).
CHANNELS: tuple[str, ...] = ("T1", "T1post", "T2", "FLAIR")


@dataclass
class SegCase:
    """One patient: ``image`` (4, Z, Y, X) float32, ``labels`` (Z, Y, X) uint8 (2023)."""

    patient_id: str
    image: np.ndarray
    labels: np.ndarray
    spacing: tuple[float, float, float]
    grade: str = ""

    @property
    def regions(self) -> np.ndarray:
        return labels_to_regions(self.labels)


@dataclass
class SegCohort:
    cases: list[SegCase]
    fingerprint: str
    problems: list[Problem]
    root: Path

    def by_id(self) -> dict[str, SegCase]:
        return {c.patient_id: c for c in self.cases}


def load_seg_cohort(root: Path, cache_dir: Path, *, progress: bool = False) -> SegCohort:
    """Every patient of a BraTS-layout folder with all four channels and a label map."""
    cohort = load_cohort(Path(root), layout="brats20")
    problems = list(cohort.problems)
    series = cohort.series[cohort.series["modality"].isin((*CHANNELS, "SEG"))]
    with VolumeStore(Path(cache_dir) / "arrays", progress=progress) as store:
        volumes, decode_problems = store.load_many(series)
        fingerprint = dataset_fingerprint(cohort, store)
    problems += decode_problems
    grades = {}
    if "grade" in cohort.patients.columns:
        grades = dict(zip(cohort.patients["patient_id"], cohort.patients["grade"].fillna("").astype(str)))
    cases = []
    for pid, rows in series.groupby("patient_id", sort=True):
        by_mod = {m: sid for m, sid in zip(rows["modality"], rows["series_id"]) if sid in volumes}
        missing = [m for m in (*CHANNELS, "SEG") if m not in by_mod]
        if missing:
            problems.append(Problem(str(Path(root) / str(pid)), f"skipped for segmentation: missing {missing}"))
            continue
        shapes = {volumes[by_mod[m]].array.shape for m in (*CHANNELS, "SEG")}
        if len(shapes) > 1:
            problems.append(Problem(str(Path(root) / str(pid)), f"series differ in shape {sorted(shapes)}"))
            continue
        seg = volumes[by_mod["SEG"]]
        try:
            labels = to_brats2023(seg.array, "brats2020")
        except LabelError as exc:
            problems.append(Problem(str(rows.loc[rows["modality"] == "SEG", "files"].iloc[0][0]), str(exc)))
            continue
        image = np.stack([volumes[by_mod[m]].array for m in CHANNELS]).astype(np.float32)
        cases.append(SegCase(str(pid), image, labels, tuple(seg.spacing), grades.get(pid, "")))  # type: ignore[arg-type]
    if not cases:
        raise NoUsableDataError(f"{root}: no patient has T1, T1post, T2, FLAIR and a segmentation")
    return SegCohort(cases, fingerprint, problems, Path(root))


def brain_crop(cases: Sequence[SegCase], margin: int = 1) -> tuple[slice, ...]:
    """The box holding every case's non-zero voxels (image only, never labels)."""
    fg = np.zeros(cases[0].labels.shape, dtype=bool)
    for c in cases:
        fg |= (c.image != 0).any(axis=0)
    idx = np.argwhere(fg)
    lo = np.maximum(idx.min(axis=0) - margin, 0)
    hi = np.minimum(idx.max(axis=0) + 1 + margin, fg.shape)
    return tuple(slice(int(a), int(b)) for a, b in zip(lo, hi))


def crop_cases(cases: Sequence[SegCase], box: tuple[slice, ...]) -> list[SegCase]:
    return [replace(c, image=np.ascontiguousarray(c.image[(slice(None),) + tuple(box)]),
                    labels=np.ascontiguousarray(c.labels[box])) for c in cases]


def _fit_shape(arr: np.ndarray, shape: Sequence[int]) -> np.ndarray:
    """Crop or zero-pad the last len(shape) axes to ``shape``."""
    out = arr
    for axis, n in enumerate(shape, start=arr.ndim - len(shape)):
        have = out.shape[axis]
        if have > n:
            out = np.take(out, range(n), axis=axis)
        elif have < n:
            pad = [(0, 0)] * out.ndim
            pad[axis] = (0, n - have)
            out = np.pad(out, pad)
    return out


def _patient_rng(patient_id: str, seed: int) -> np.random.Generator:
    digest = int(hashlib.sha256(patient_id.encode()).hexdigest()[:8], 16)
    return np.random.default_rng([seed, digest])


def degrade_site(case: SegCase, shape: Sequence[int], *, noise: float, seed: int = 0) -> SegCase:
    """Resample a (coarser) case onto the working grid ``shape`` and add Rician noise.

    ``noise`` is the noise SD as a fraction of each channel's 99th brain percentile.
    Linear interpolation for images, nearest for labels: the blockiness of the coarse
    acquisition stays visible, as in a low-resolution site.
    """
    factors = [n / s for n, s in zip(shape, case.labels.shape)]
    labels = _fit_shape(ndimage.zoom(case.labels, factors, order=0), shape)
    image = np.stack([_fit_shape(ndimage.zoom(ch, factors, order=1), shape) for ch in case.image])
    rng = _patient_rng(case.patient_id, seed)
    out = np.zeros_like(image)
    for c in range(image.shape[0]):
        brain = image[c] > 0
        if not brain.any():
            continue
        sigma = noise * float(np.percentile(image[c][brain], 99))
        n1 = rng.normal(0.0, sigma, image[c].shape)
        n2 = rng.normal(0.0, sigma, image[c].shape)
        out[c] = np.where(brain, np.sqrt((image[c] + n1) ** 2 + n2**2), 0.0)
    spacing = tuple(s / f for s, f in zip(case.spacing, factors))
    return replace(case, image=out.astype(np.float32), labels=labels.astype(np.uint8), spacing=spacing)  # type: ignore[arg-type]


def describe(cases: Sequence[SegCase]) -> dict[str, Any]:
    return {"n_patients": len(cases), "shape": list(cases[0].labels.shape) if cases else None}
