"""The feature matrix the audit probes: what the suite's feature baselines see.

Why: the identity probe, the permutation test and the test-set-selection study must
look at the same inputs the benchmarked baselines use, or a clean result would say
nothing about them. Suites whose baselines use DWT-DCT vectors get those (read from
the feature cache the baselines filled); otherwise the pixel thumbnails stand in.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from harness.tasks import TaskData

#: Baselines whose inputs are DWT-DCT vectors, in order of preference.
DWTDCT_BASELINES: tuple[str, ...] = ("cnn_lstm", "patient_memorizer", "logreg_dwtdct", "dwtdct_lstm")


def audit_features(
    data: TaskData, *, baselines: list[str], baseline_params: dict[str, dict[str, Any]],
    profile: str = "quick", cache_dir: Path | None = None, thumbs: np.ndarray | None = None,
) -> tuple[np.ndarray, str]:
    """(n_samples, n_features) matrix and a sentence naming where it comes from."""
    from baselines import create_baseline

    for name in DWTDCT_BASELINES:
        if name not in baselines:
            continue
        try:
            params = create_baseline(name, profile=profile, **baseline_params.get(name, {})).params
        except Exception:  # noqa: BLE001 - an unavailable baseline: try the next
            continue
        from harness.features.dwtdct import DwtDctConfig
        from harness.features.series import sample_dwtdct

        cfg = DwtDctConfig(image_size=int(params.get("image_size", 128)),
                           n_coefficients=int(params.get("n_coefficients", 100)))
        x = sample_dwtdct(data, Path(cache_dir) / "features" if cache_dir else None, cfg,
                          float(params.get("min_foreground", 0.15)))
        return np.asarray(x, dtype=np.float64), f"the DWT-DCT vectors {name} uses ({cfg.image_size} px, {cfg.n_coefficients} coefficients)"
    if thumbs is None:
        from harness.audit.images import fingerprints

        thumbs = fingerprints(data).thumbs
    return np.asarray(thumbs, dtype=np.float64), "pixel thumbnails (no DWT-DCT baseline in the suite)"
