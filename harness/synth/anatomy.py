"""Reference anatomy for the synthetic cohort: the MNI ICBM152 2009a template.

The template and its grey/white-matter probability maps ship inside the nilearn wheel,
so the synthetic cohort needs no download. Everything is resampled once to the working
grid and cropped to the brain's bounding box (plus a margin) to keep arrays small.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from typing import Any

import nibabel as nib
import numpy as np
from scipy import ndimage

#: Native resolution of the nilearn copy of the template, in mm.
TEMPLATE_MM = 1.0
#: Margin kept around the brain's bounding box, in mm.
CROP_MARGIN_MM = 12.0


@dataclass(frozen=True)
class Anatomy:
    """Tissue maps on the working grid (RAS, axis-aligned, isotropic ``spacing`` mm).

    ``t1`` is the template T1 scaled to [0, 1]; ``gm``, ``wm``, ``csf`` are tissue
    fractions summing to 1 inside ``brain`` (0 outside); ``affine`` maps voxel indices
    to RAS millimetres.
    """

    t1: np.ndarray
    gm: np.ndarray
    wm: np.ndarray
    csf: np.ndarray
    brain: np.ndarray
    affine: np.ndarray
    spacing: float

    @property
    def shape(self) -> tuple[int, int, int]:
        return tuple(self.t1.shape)  # type: ignore[return-value]


def template_dir() -> Path:
    """Folder of the MNI files bundled with nilearn (no network access needed)."""
    import nilearn

    return Path(nilearn.__file__).resolve().parent / "datasets" / "data"


def _load_map(name: str) -> tuple[np.ndarray, np.ndarray]:
    img: Any = nib.load(str(template_dir() / f"mni_icbm152_{name}_tal_nlin_sym_09a_converted.nii.gz"))
    return np.asarray(img.dataobj, dtype=np.float32) / 255.0, img.affine


def _resample(arr: np.ndarray, step: float) -> np.ndarray:
    """Sample every ``step`` native voxels exactly (so the affine is exact), anti-aliased."""
    if step > 1:
        arr = ndimage.gaussian_filter(arr, sigma=0.4 * step)
    shape = tuple(int(np.floor((n - 1) / step)) + 1 for n in arr.shape)
    out = ndimage.affine_transform(arr, np.full(3, step), output_shape=shape, order=1)
    return np.clip(out, 0, 1).astype(np.float32)


@lru_cache(maxsize=4)
def load_anatomy(grid_mm: float = 2.0) -> Anatomy:
    """Load the template and resample it to ``grid_mm`` isotropic voxels (cached)."""
    if grid_mm < TEMPLATE_MM:
        raise ValueError(f"grid_mm must be >= {TEMPLATE_MM}, got {grid_mm}")
    t1, affine = _load_map("t1")
    gm, _ = _load_map("gm")
    wm, _ = _load_map("wm")

    # Crop to the brain's bounding box at native resolution first: less to resample.
    brain_native = (gm + wm) > 0.3
    margin = int(round(CROP_MARGIN_MM / TEMPLATE_MM))
    lo, hi = [], []
    for ax in range(3):
        other = tuple(a for a in range(3) if a != ax)
        idx = np.flatnonzero(brain_native.any(axis=other))
        lo.append(max(int(idx[0]) - margin, 0))
        hi.append(min(int(idx[-1]) + margin + 1, t1.shape[ax]))
    sl = tuple(slice(a, b) for a, b in zip(lo, hi))
    t1, gm, wm = t1[sl], gm[sl], wm[sl]

    t1, gm, wm = (_resample(a, grid_mm / TEMPLATE_MM) for a in (t1, gm, wm))

    # Brain = tissue plus the CSF spaces it encloses (ventricles, sulci).
    tissue = (gm + wm) > 0.25
    brain = ndimage.binary_closing(tissue, iterations=max(1, int(round(4 / grid_mm))))
    brain = ndimage.binary_fill_holes(brain)
    brain = ndimage.binary_opening(brain, iterations=1) | tissue
    total = gm + wm
    scale = np.where(total > 1, 1.0 / np.maximum(total, 1e-6), 1.0).astype(np.float32)
    gm = np.where(brain, gm * scale, 0).astype(np.float32)
    wm = np.where(brain, wm * scale, 0).astype(np.float32)
    csf = np.where(brain, 1.0 - gm - wm, 0).astype(np.float32)

    new_affine = affine.copy()
    new_affine[:3, :3] = np.diag([grid_mm] * 3)
    # Voxel centres: the zoomed grid starts at the first cropped voxel.
    new_affine[:3, 3] = affine[:3, 3] + np.array(lo, dtype=float) * TEMPLATE_MM
    for arr in (t1, gm, wm, csf, brain):
        arr.setflags(write=False)
    return Anatomy(t1=t1, gm=gm, wm=wm, csf=csf, brain=brain, affine=new_affine, spacing=float(grid_mm))
