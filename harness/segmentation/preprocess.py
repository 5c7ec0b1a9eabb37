"""Intensity pre-processing of Ren et al. 2.1, fit on training patients only.

- ``none``: raw intensities.
- ``zscore``: each image standardised by its own brain-voxel (non-zero) mean and SD;
  uses no other patient, so it cannot leak.
- ``zscore_rescale``: z-score, then the 2nd-98th percentile range is stretched to
  [0, 1] (clipped). The percentiles are pooled over the *training* patients' brain
  voxels, per channel, and frozen.
- ``zscore_rescale_histmatch``: as above, then each image's brain-voxel histogram is
  matched to a reference histogram (the pooled training quantiles per channel).

Background (zero) voxels stay zero throughout, so the skull-stripped mask survives.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

import numpy as np

from harness.errors import HarnessError

METHODS: tuple[str, ...] = ("none", "zscore", "zscore_rescale", "zscore_rescale_histmatch")
LABELS: dict[str, str] = {
    "none": "none", "zscore": "Z-score", "zscore_rescale": "Z-score + 2-98% rescaling",
    "zscore_rescale_histmatch": "Z-score + rescaling + histogram matching",
}
N_QUANTILES = 101
_MAX_POOL = 200_000  # voxels per channel kept for pooled statistics (deterministic stride)


def _zscore(image: np.ndarray) -> np.ndarray:
    out = np.zeros_like(image, dtype=np.float32)
    for c in range(image.shape[0]):
        brain = image[c] != 0
        if brain.sum() < 2:
            continue
        v = image[c][brain]
        out[c][brain] = (v - v.mean()) / (v.std() + 1e-6)
    return out


def _pooled(images: Sequence[np.ndarray], channel: int) -> np.ndarray:
    vals = np.concatenate([im[channel][im[channel] != 0] for im in images])
    if vals.size > _MAX_POOL:
        vals = vals[:: int(np.ceil(vals.size / _MAX_POOL))]
    return vals


@dataclass
class Preprocessor:
    """Fit on training images (C, Z, Y, X), then transform any image the same way."""

    method: str = "zscore_rescale"
    low_high: list[tuple[float, float]] = field(default_factory=list)
    reference_quantiles: list[np.ndarray] = field(default_factory=list)

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise HarnessError(f"unknown pre-processing {self.method!r}; known: {', '.join(METHODS)}")

    def fit(self, images: Sequence[np.ndarray]) -> "Preprocessor":
        if self.method in ("none", "zscore"):
            return self
        if not images:
            raise HarnessError("pre-processing: no training images to fit on")
        z = [_zscore(im) for im in images]
        self.low_high = []
        self.reference_quantiles = []
        for c in range(z[0].shape[0]):
            pooled = _pooled(z, c)
            lo, hi = np.percentile(pooled, [2, 98])
            self.low_high.append((float(lo), float(hi)))
            if self.method == "zscore_rescale_histmatch":
                scaled = self._rescale(pooled, c)
                self.reference_quantiles.append(np.quantile(scaled, np.linspace(0, 1, N_QUANTILES)))
        return self

    def _rescale(self, values: np.ndarray, c: int) -> np.ndarray:
        lo, hi = self.low_high[c]
        return np.clip((values - lo) / max(hi - lo, 1e-6), 0.0, 1.0)

    def transform(self, image: np.ndarray) -> np.ndarray:
        image = np.asarray(image, dtype=np.float32)
        if self.method == "none":
            return image
        z = _zscore(image)
        if self.method == "zscore":
            return z
        if not self.low_high:
            raise HarnessError(f"pre-processing {self.method!r} used before fit()")
        out = np.zeros_like(z)
        for c in range(z.shape[0]):
            brain = image[c] != 0
            v = self._rescale(z[c][brain], c)
            if self.method == "zscore_rescale_histmatch":
                v = self._match(v, self.reference_quantiles[c])
            out[c][brain] = v
        return out

    @staticmethod
    def _match(values: np.ndarray, reference: np.ndarray) -> np.ndarray:
        """Map each value's rank in its own image to the reference quantile at that rank."""
        if values.size == 0:
            return values
        own = np.quantile(values, np.linspace(0, 1, len(reference)))
        ranks = np.interp(values, own, np.linspace(0, 1, len(reference)))
        return np.interp(ranks, np.linspace(0, 1, len(reference)), reference).astype(np.float32)
