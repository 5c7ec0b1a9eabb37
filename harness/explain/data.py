"""Cases to explain: multi-modal slices or volumes with tumour masks, from a cohort folder.

The default is a known-truth BraTS-2020-style cohort whose grade shows on one modality
only (``signal_modality``), generated once into the cache. Any brats20-layout folder
(a real BraTS 2020 download included) is read by the same adapters; a layout without
tumour masks (REMBRANDT) still works, the mask-based scores are then left empty.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from scipy import ndimage

from harness.errors import HarnessError, NoUsableDataError
from harness.paths import default_cache_dir

#: The known-truth cohort the explain command uses when no --data is given.
DEFAULT_DATA: dict[str, Any] = {
    "cohort": "brats20", "patients": 36, "seed": 0, "grid_mm": 4.0, "signal_modality": "T1post",
}
DEFAULT_MODALITIES: tuple[str, ...] = ("T1", "T1post", "T2", "FLAIR")
#: Class order per layout: index 1 is the "positive" (higher-grade) class.
CLASS_ORDER: dict[str, list[str]] = {"brats20": ["LGG", "HGG"], "rembrandt": ["II", "III", "IV"]}


@dataclass
class CaseSet:
    """Samples as arrays: ``x`` (N, M, *spatial) float32, ``mask`` (N, *spatial) bool or None."""

    x: np.ndarray
    y: np.ndarray
    mask: np.ndarray | None
    patient_ids: list[str]
    slice_index: list[int]  # axial slice of the 2D sample (-1 for 3D volumes)
    is_key: np.ndarray  # the patient's representative sample (largest tumour area, or the volume)
    classes: list[str]
    modalities: list[str]
    #: The label maps (N, *spatial) uint8 in the cohort's convention (brats20: 0, 1, 2, 4), if any.
    labels: np.ndarray | None = None
    #: Voxel spacing (dz, dy, dx) in mm of each sample as resampled, where known.
    spacing: list[tuple[float, float, float]] | None = None

    def subset(self, idx: np.ndarray | list[int]) -> "CaseSet":
        idx = np.asarray(idx, dtype=int)
        return CaseSet(self.x[idx], self.y[idx], None if self.mask is None else self.mask[idx],
                       [self.patient_ids[i] for i in idx], [self.slice_index[i] for i in idx],
                       self.is_key[idx], self.classes, self.modalities,
                       None if self.labels is None else self.labels[idx],
                       None if self.spacing is None else [self.spacing[i] for i in idx])


def ensure_known_truth_cohort(cache_dir: Path, spec: dict[str, Any], *, progress: bool = True) -> Path:
    """Generate the known-truth cohort once (the shared synthetic-cohort cache)."""
    from harness.cohorts import ensure_synthetic_cohort

    return ensure_synthetic_cohort(cache_dir, {"grid_mm": 4.0, **spec}, progress=progress)


def normalise(vol: np.ndarray) -> np.ndarray:
    """Divide by the 99th percentile of the non-zero voxels: background stays exactly 0.

    Zero is the reference input of the attribution methods and "absent" for the modality
    Shapley values, so it must mean no signal, not the mean intensity.
    """
    fg = vol[vol > 0]
    ref = float(np.percentile(fg, 99)) if fg.size else 1.0
    return (vol / (ref if ref > 0 else 1.0)).astype(np.float32)


def _resize(arr: np.ndarray, size: tuple[int, ...], order: int) -> np.ndarray:
    zoom = [s / a for s, a in zip(size, arr.shape)]
    out = ndimage.zoom(arr, zoom, order=order, grid_mode=False)
    slices = tuple(slice(0, s) for s in size)
    pad = [(0, max(0, s - o)) for s, o in zip(size, out.shape)]
    return np.pad(out[slices], pad)


def load_cases(root: Path, *, dims: int = 2, size: int = 64, modalities: tuple[str, ...] = DEFAULT_MODALITIES,
               slices_per_patient: int = 5, cache_dir: Path | None = None, progress: bool = True
               ) -> tuple[CaseSet, list[str]]:
    """Read a cohort into samples; returns them and the problems met (as text).

    2D: up to ``slices_per_patient`` axial slices around the one with the largest tumour
    area (that one is the patient's key sample, the slice Jin et al. visualise); without
    masks, the middle slices. 3D: the whole volume. In-plane (or all) axes resized to ``size``.
    """
    from harness.data import VolumeStore, load_cohort

    cohort = load_cohort(root)
    classes = CLASS_ORDER.get(cohort.layout)
    if classes is None:
        raise HarnessError(f"explain reads grading layouts {sorted(CLASS_ORDER)}, not {cohort.layout!r}")
    grades = {str(r.patient_id): str(r.grade) for r in cohort.patients.itertuples()
              if isinstance(r.grade, str) and r.grade in classes}
    store = VolumeStore((cache_dir or default_cache_dir()) / "arrays", progress=progress)
    problems = [str(p) for p in cohort.problems]
    xs, ys, masks, pids, zs, keys, labels, spacings = [], [], [], [], [], [], [], []
    has_masks = "SEG" in set(cohort.series["modality"]) or "MASK" in set(cohort.series["modality"])
    try:
        for pid in cohort.patient_ids:
            if pid not in grades:
                problems.append(f"{pid}: no usable grade; left out")
                continue
            rows = cohort.series_of(pid).set_index("modality")
            missing = [m for m in modalities if m not in rows.index]
            if missing:
                problems.append(f"{pid}: missing modalities {missing}; left out")
                continue
            try:
                loaded = [store.load(rows.loc[m]) for m in modalities]
                vols = [normalise(v.array) for v in loaded]
                label_mod = "SEG" if "SEG" in rows.index else ("MASK" if "MASK" in rows.index else None)
                label_map = np.rint(store.load(rows.loc[label_mod]).array).astype(np.uint8) if label_mod else None
                seg = label_map > 0 if label_map is not None else None
            except Exception as exc:  # one bad patient must not stop the rest
                problems.append(f"{pid}: {exc}; left out")
                continue
            if len({v.shape for v in vols}) != 1:
                problems.append(f"{pid}: modalities differ in shape; left out")
                continue
            vol = np.stack(vols)
            spacing = tuple(float(s) for s in loaded[0].spacing)
            if dims == 3:
                xs.append(np.stack([_resize(v, (size,) * 3, 1) for v in vol]))
                lab = _resize(label_map, (size,) * 3, 0) if label_map is not None else None
                masks.append(lab > 0 if lab is not None else None)
                labels.append(lab)
                spacings.append(tuple(sp * n / size for sp, n in zip(spacing, vol.shape[1:])))
                ys.append(classes.index(grades[pid])); pids.append(pid); zs.append(-1); keys.append(True)
                continue
            area = seg.reshape(seg.shape[0], -1).sum(axis=1) if seg is not None else None
            if area is not None and area.max() > 0:
                best = int(np.argmax(area))
                cand = [z for z in np.argsort(-area, kind="stable") if area[z] > 0][:slices_per_patient]
            else:
                best = vol.shape[1] // 2
                cand = list(range(max(0, best - slices_per_patient // 2),
                                  min(vol.shape[1], best + slices_per_patient // 2 + 1)))
            for z in sorted(int(c) for c in cand):
                xs.append(np.stack([_resize(v[z], (size, size), 1) for v in vol]))
                lab = _resize(label_map[z], (size, size), 0) if label_map is not None else None
                masks.append(lab > 0 if lab is not None else None)
                labels.append(lab)
                spacings.append((spacing[0], *(sp * n / size for sp, n in zip(spacing[1:], vol.shape[2:]))))
                ys.append(classes.index(grades[pid])); pids.append(pid); zs.append(z); keys.append(z == best)
    finally:
        store.close()
    if not xs:
        raise NoUsableDataError(f"{root}: no patient with a grade and all of {list(modalities)}")
    with_masks = has_masks and all(m is not None for m in masks)
    mask_arr = np.stack([m for m in masks if m is not None]) if with_masks else None
    label_arr = np.stack([lab for lab in labels if lab is not None]) if with_masks else None
    return CaseSet(np.stack(xs).astype(np.float32), np.asarray(ys), mask_arr, pids, zs, np.asarray(keys),
                   classes, list(modalities), label_arr, spacings), problems


def patient_split(cases: CaseSet, test_fraction: float = 1 / 3, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Sample indices (train, test) with every patient on one side only, stratified by class."""
    rng = np.random.default_rng(seed)
    by_patient = {}
    for pid, y in zip(cases.patient_ids, cases.y):
        by_patient[pid] = int(y)
    test_pids: set[str] = set()
    for cls in sorted(set(by_patient.values())):
        pids = sorted(p for p, y in by_patient.items() if y == cls)
        rng.shuffle(pids)
        k = max(1, int(round(test_fraction * len(pids)))) if len(pids) > 1 else 0
        test_pids.update(pids[:k])
    test = np.array([i for i, p in enumerate(cases.patient_ids) if p in test_pids], dtype=int)
    train = np.array([i for i, p in enumerate(cases.patient_ids) if p not in test_pids], dtype=int)
    return train, test
