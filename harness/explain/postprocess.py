"""Heatmap post-processing as in Jin et al.: interpolate, smooth, scale to [-1, 1].

Scaling divides by the 99th percentile of |attribution| over the whole case (all
modalities together, so a modality the method ignores stays pale next to one it
uses) and clips, keeping the sign: red is evidence for the class, blue against.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from scipy import ndimage

#: Matplotlib's blue-white-red map: negative blue, zero white, positive red.
CMAP = "bwr"


def interpolate(attr: np.ndarray, size: tuple[int, ...]) -> np.ndarray:
    """Resize (M, *spatial) maps to ``size`` (linear), e.g. a layer attribution to the input."""
    if tuple(attr.shape[1:]) == tuple(size):
        return attr
    mode = {1: "linear", 2: "bilinear", 3: "trilinear"}[len(size)]
    t = torch.as_tensor(attr, dtype=torch.float32)[None]
    return F.interpolate(t, size=size, mode=mode, align_corners=False)[0].numpy()


def smooth(attr: np.ndarray, sigma: float) -> np.ndarray:
    """Gaussian smoothing of each modality's map (never across modalities)."""
    if sigma <= 0:
        return attr
    return np.stack([ndimage.gaussian_filter(a.astype(np.float64), sigma) for a in attr]).astype(np.float32)


def scale(attr: np.ndarray, percentile: float = 99.0) -> np.ndarray:
    """Divide by the percentile of |attr| over the case and clip to [-1, 1]; all-zero stays zero."""
    ref = float(np.percentile(np.abs(attr), percentile)) if attr.size else 0.0
    if ref <= 0:
        ref = float(np.abs(attr).max()) if attr.size else 0.0
    if ref <= 0:
        return np.zeros_like(attr, dtype=np.float32)
    return np.clip(attr / ref, -1.0, 1.0).astype(np.float32)


def postprocess(attr: np.ndarray, size: tuple[int, ...] | None = None, sigma: float = 1.0,
                percentile: float = 99.0) -> np.ndarray:
    """The display heatmap of one case: (M, *spatial) in [-1, 1]."""
    attr = np.asarray(attr, dtype=np.float32)
    if size is not None:
        attr = interpolate(attr, size)
    return scale(smooth(attr, sigma), percentile)
