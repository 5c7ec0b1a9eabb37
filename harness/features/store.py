"""Per-series feature cache, so each slice's features are computed once per config.

Features are computed for every slice of a series and stored under the series' content
key plus the feature config hash; any task or fold then picks its rows by slice index.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Callable

import numpy as np

from harness.atomic import atomic_write
from harness.tasks import TaskData

FeatureFn = Callable[[np.ndarray], np.ndarray]


def config_hash(config: dict) -> str:
    return hashlib.sha256(json.dumps(config, sort_keys=True).encode()).hexdigest()[:16]


class FeatureStore:
    """Computes ``fn`` over whole series and caches the (z, d) result as .npy."""

    def __init__(self, cache_dir: Path | None) -> None:
        self.cache_dir = Path(cache_dir) if cache_dir is not None else None
        self.n_computed = 0

    def matrix(self, data: TaskData, name: str, config: dict, fn: FeatureFn) -> np.ndarray:
        """Feature rows for every sample of ``data``, in sample order."""
        if len(data) == 0:
            return np.zeros((0, 0), np.float32)
        tag = f"{name}-{config_hash(config)}"
        per_series: dict[str, np.ndarray] = {}
        for image_id in data.samples["image_id"].unique():
            per_series[image_id] = self._series_features(data, image_id, tag, fn)
        return np.stack(
            [
                per_series[img][int(z)]
                for img, z in zip(data.samples["image_id"], data.samples["slice_index"])
            ]
        ).astype(np.float32)

    def series(self, data: TaskData, image_id: str, name: str, config: dict, fn: FeatureFn) -> np.ndarray:
        """All rows ``fn`` gives for one series (e.g. every slice's features), cached."""
        return self._series_features(data, image_id, f"{name}-{config_hash(config)}", fn)

    def _series_features(self, data: TaskData, image_id: str, tag: str, fn: FeatureFn) -> np.ndarray:
        key = data.content_keys.get(image_id)
        path = self.cache_dir / f"{key}-{tag}.npy" if (self.cache_dir and key) else None
        if path is not None and path.exists():
            return np.load(path)
        feats = np.asarray(fn(np.asarray(data.volumes[image_id], dtype=np.float32)), np.float32)
        self.n_computed += 1
        if path is not None:
            atomic_write(path, lambda fh: np.save(fh, feats))
        return feats
