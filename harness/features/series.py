"""Per-sample DWT-DCT vectors for any task view, cached per series.

Slice samples get their slice's vector. Whole-series samples (``slice_index == -1``:
progression rows, survival images) get one vector per series: the mean of the slice
vectors over the slices that contain head, which is how the capstone paper turns "each
image in an MRI sequence" into one vector of length 100 per patient-date-series.
"""

from __future__ import annotations

from functools import partial
from pathlib import Path

import numpy as np

from harness.features.dwtdct import DwtDctConfig, dwtdct_features
from harness.features.store import FeatureStore


def _foreground(volume: np.ndarray, min_foreground: float) -> np.ndarray:
    from harness.tasks import foreground_fraction

    keep = np.flatnonzero(foreground_fraction(volume) >= min_foreground)
    return keep if len(keep) else np.arange(volume.shape[0])


def series_dwtdct(volume: np.ndarray, config: DwtDctConfig, min_foreground: float = 0.15) -> np.ndarray:
    """(1, n_coefficients): mean slice vector over the head-containing slices."""
    keep = _foreground(volume, min_foreground)
    return dwtdct_features(volume[keep], config).mean(axis=0, keepdims=True)


def sample_dwtdct(
    data, cache_dir: Path | None, config: DwtDctConfig, min_foreground: float = 0.15
) -> np.ndarray:
    """(n_samples, n_coefficients) DWT-DCT vectors, slice- or series-level as the view says."""
    store = FeatureStore(cache_dir)
    if len(data) and (data.samples["slice_index"] < 0).all():
        cfg = {**config.to_dict(), "min_foreground": min_foreground, "level": "series-mean"}
        return store.matrix(data, "dwtdct", cfg, partial(series_dwtdct, config=config, min_foreground=min_foreground))
    return store.matrix(data, "dwtdct", config.to_dict(), partial(dwtdct_features, config=config))
