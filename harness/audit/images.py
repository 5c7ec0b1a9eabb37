"""Per-sample pixel fingerprints: exact hashes and small normalised thumbnails.

Why: a duplicate image under another patient ID defeats any patient-level split, and
it can only be found from the pixels. Exact copies share a hash; near copies (re-saved,
re-noised, slightly rescaled) have thumbnails whose normalised correlation is close to 1,
which one matrix product finds for every train/test pair at once.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import ndimage

from harness.tasks import TaskData

#: Thumbnail shape for series samples (z, y, x) and slice samples (y, x).
SERIES_THUMB = (8, 24, 24)
SLICE_THUMB = (32, 32)


@dataclass
class Fingerprints:
    """``hashes`` and unit-norm ``thumbs`` (one row per sample, in ``sample_ids`` order)."""

    sample_ids: list[str]
    hashes: np.ndarray
    thumbs: np.ndarray

    def index(self) -> pd.Index:
        return pd.Index(self.sample_ids)


def _pixels(data: TaskData, image_id: str, z: int) -> np.ndarray:
    vol = np.asarray(data.volumes[image_id])
    return vol if z < 0 else vol[int(z)]


def _thumb(arr: np.ndarray) -> np.ndarray:
    shape = SERIES_THUMB if arr.ndim == 3 else SLICE_THUMB
    arr = np.asarray(arr, dtype=np.float32)
    small = ndimage.zoom(arr, [t / max(s, 1) for t, s in zip(shape, arr.shape)], order=1)
    v = small.ravel().astype(np.float64)
    v = v - v.mean()
    norm = np.linalg.norm(v)
    return v / norm if norm > 0 else v


def fingerprints(data: TaskData) -> Fingerprints:
    """Hash and thumbnail of every sample's pixels (a slice, or a whole series)."""
    rows = data.samples
    hashes: list[str] = []
    thumbs: list[np.ndarray | None] = []
    for image_id, z in zip(rows["image_id"].astype(str), rows["slice_index"].astype(int)):
        if image_id not in data.volumes:
            hashes.append("")
            thumbs.append(None)
            continue
        arr = _pixels(data, image_id, z)
        hashes.append(hashlib.sha1(np.ascontiguousarray(arr).tobytes()).hexdigest())
        thumbs.append(_thumb(arr))
    size = max((len(t) for t in thumbs if t is not None), default=1)
    mat = np.zeros((len(thumbs), size))
    for i, t in enumerate(thumbs):
        if t is not None and len(t) == size:
            mat[i] = t
    return Fingerprints(rows["sample_id"].astype(str).tolist(), np.asarray(hashes, dtype=object), mat)


def max_correlation(a: np.ndarray, b: np.ndarray, block: int = 2048) -> tuple[np.ndarray, np.ndarray]:
    """For each row of ``a``: the highest correlation with any row of ``b`` and its index."""
    if len(a) == 0 or len(b) == 0:
        return np.zeros(len(a)), np.full(len(a), -1)
    best = np.empty(len(a))
    arg = np.empty(len(a), dtype=int)
    for start in range(0, len(a), block):
        c = a[start:start + block] @ b.T
        arg[start:start + block] = c.argmax(axis=1)
        best[start:start + block] = c.max(axis=1)
    return best, arg
