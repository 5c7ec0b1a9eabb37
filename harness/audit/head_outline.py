"""Head outlines: the shape of the head (or the skull-stripped brain) in each sample.

Why: the identity probe on a suite's model features matches a held-out row to the
patient's other rows by what those features keep. DWT-DCT vectors keep the brightest
tissue, which differs by contrast, so a row split that puts a patient's T1 in test and
the same session's T2, FLAIR and T1post in training (the survival suite's image-level
split) looks safe to them. The outline is the same in every contrast of one session
(BraTS applies one brain mask to all four), any image model sees it, and head size and
shape are individual: it names the patient across contrasts. The audit probes it beside
the model features, so a split is judged by the stronger route.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from harness.tasks import TaskData
from harness.tasks.base import head_threshold

#: Outline shape for series samples (z, y, x) and slice samples (y, x).
SERIES_OUTLINE = (24, 24, 24)
SLICE_OUTLINE = (32, 32)
#: How the audit names these features.
OUTLINE_FEATURES = "head outlines (the head's filled mask, in every image a model sees)"


def head_mask(volume: np.ndarray) -> np.ndarray:
    """Voxels above the harness's head threshold, holes filled slice by slice."""
    v = np.asarray(volume, dtype=np.float32)
    if v.ndim != 3 or v.size == 0:
        return np.zeros(v.shape, dtype=bool)
    return np.stack([ndimage.binary_fill_holes(plane) for plane in v > head_threshold(v)])


def _shrink(mask: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    small = ndimage.zoom(mask.astype(np.float32), [t / max(s, 1) for t, s in zip(shape, mask.shape)], order=1)
    return small.ravel()


def outline_features(data: TaskData) -> np.ndarray:
    """One row per sample: its slice's (or series') head mask shrunk to a fixed grid, as
    occupancy in [0, 1]; zeros for a sample whose series is missing. Each series' mask is
    computed once, however many of its slices are samples."""
    rows = data.samples.reset_index(drop=True)
    series_rows = bool(len(rows)) and bool((rows["slice_index"].astype(int) < 0).all())
    shape = SERIES_OUTLINE if series_rows else SLICE_OUTLINE
    out = np.zeros((len(rows), int(np.prod(shape))), dtype=np.float32)
    for image_id, index in rows.groupby(rows["image_id"].astype(str), sort=False).indices.items():
        if image_id not in data.volumes:
            continue
        mask = head_mask(np.asarray(data.volumes[image_id]))
        for i in index:
            z = int(rows.at[i, "slice_index"])
            if series_rows:
                out[i] = _shrink(mask, shape)
            elif 0 <= z < len(mask):
                out[i] = _shrink(mask[z], shape)
    return out
