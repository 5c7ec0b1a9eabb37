"""Per-sample DWT-DCT vectors for any task view, cached per series.

Slice samples get their slice's vector. Whole-series samples (``slice_index == -1``:
progression rows, survival images) get one vector per series: the mean of the slice
vectors over the slices that contain head, which is how the capstone paper turns "each
image in an MRI sequence" into one vector of length 100 per patient-date-series.
"""

from __future__ import annotations

from dataclasses import replace
from functools import partial
from pathlib import Path

import numpy as np
import pandas as pd

from harness.errors import HarnessError
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


def study_dwtdct(
    data, cache_dir: Path | None, config: DwtDctConfig, min_foreground: float = 0.15
) -> np.ndarray:
    """(n_samples, n_coefficients): one vector per scan (patient-date), shared by its rows.

    The vector is the mean of the series vectors of every series of the row's scan
    (``data.study_series``), whichever rows a split keeps. Why: the capstone paper's own
    predictions (its Figure 4) agree to float32 precision across different series of one
    patient-date, so its rows carried one input per patient-date, not one per series.
    """
    studies = [str(s) for s in data.samples["study_id"]]
    missing = sorted({s for s in studies if s not in data.study_series})
    if missing:
        raise HarnessError(f"inputs per scan need the series of each scan; the view does not list them for "
                           f"{missing[:5]} (a progression view lists them)")
    ids = sorted({i for s in set(studies) for i in data.study_series[s]})
    absent = [i for i in ids if i not in data.volumes]
    if absent:
        raise HarnessError(f"inputs per scan: series {absent[:5]} of the view's scans have no pixels")
    series_rows = pd.DataFrame({"sample_id": ids, "patient_id": "", "study_id": "", "image_id": ids,
                                "modality": "", "slice_index": -1, "target": ""})
    vectors = sample_dwtdct(replace(data, samples=series_rows), cache_dir, config, min_foreground)
    row_of = {image_id: k for k, image_id in enumerate(ids)}
    per_study = {s: vectors[[row_of[i] for i in data.study_series[s]]].mean(axis=0) for s in set(studies)}
    return np.stack([per_study[s] for s in studies]).astype(np.float32)
