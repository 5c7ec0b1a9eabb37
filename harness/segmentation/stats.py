"""Per-subject scores -> mean over folds with a patient-level bootstrap 95% CI.

In segmentation one subject is one patient, so resampling a fold's rows *is* the
patient-level (cluster) bootstrap of harness.metrics.estimate: each replicate resamples
every fold's test patients with replacement and averages the fold means.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from harness.metrics import MetricEstimate


def estimate_mean(name: str, folds: Sequence[np.ndarray], patients: Sequence[Sequence[str]],
                  *, n_boot: int = 1000, seed: int = 0) -> MetricEstimate:
    """``folds``: per-patient values of each fold (one value per patient)."""
    folds = [np.asarray(f, dtype=np.float64) for f in folds if len(f)]
    fold_values = [float(f.mean()) for f in folds]
    rng = np.random.default_rng(seed)
    n_total = sum(len(f) for f in folds)
    if n_boot > 0 and n_total >= 2 and folds:
        boot = np.mean([f[rng.integers(0, len(f), size=(n_boot, len(f)))].mean(axis=1) for f in folds], axis=0)
        ci = (float(np.percentile(boot, 2.5)), float(np.percentile(boot, 97.5)))
    else:
        ci = (float("nan"), float("nan"))
    all_patients = {p for ps in patients for p in ps}
    return MetricEstimate(metric=name, mean=float(np.mean(fold_values)) if fold_values else float("nan"),
                          ci95=ci, n_patients=len(all_patients), n_samples=n_total, n_folds=len(folds),
                          fold_values=fold_values)
