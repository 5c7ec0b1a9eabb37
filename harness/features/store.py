"""Per-series feature cache, so each slice's features are computed once per config.

Features are computed for every slice of a series and stored under the series' content
key plus the feature config hash; any task or fold then picks its rows by slice index.

Fold jobs running at once in several processes share the cache: a series another
process is computing (its lock file is held) is left for later, so concurrent folds
split the work instead of each computing every series.
"""

from __future__ import annotations

from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterator

try:  # advisory file locks; without them (Windows) processes may compute a series twice
    import fcntl
except ImportError:  # pragma: no cover
    fcntl = None  # type: ignore[assignment]

import numpy as np

from harness.hashing import json_digest
from harness.atomic import atomic_write
from harness.tasks import TaskData

FeatureFn = Callable[[np.ndarray], np.ndarray]


class FeatureStore:
    """Computes ``fn`` over whole series and caches the (z, d) result as .npy."""

    def __init__(self, cache_dir: Path | None) -> None:
        self.cache_dir = Path(cache_dir) if cache_dir is not None else None
        self.n_computed = 0

    def matrix(self, data: TaskData, name: str, config: dict, fn: FeatureFn) -> np.ndarray:
        """Feature rows for every sample of ``data``, in sample order."""
        if len(data) == 0:
            return np.zeros((0, 0), np.float32)
        tag = f"{name}-{json_digest(config, 16)}"
        per_series: dict[str, np.ndarray] = {}
        busy_elsewhere = []
        for image_id in data.samples["image_id"].unique():
            feats = self._series_features(data, image_id, tag, fn, wait=False)
            if feats is None:
                busy_elsewhere.append(image_id)
            else:
                per_series[image_id] = feats
        for image_id in busy_elsewhere:  # by now usually written by the other process
            per_series[image_id] = self._series_features_waiting(data, image_id, tag, fn)
        return np.stack(
            [
                per_series[img][int(z)]
                for img, z in zip(data.samples["image_id"], data.samples["slice_index"])
            ]
        ).astype(np.float32)

    def series(self, data: TaskData, image_id: str, name: str, config: dict, fn: FeatureFn) -> np.ndarray:
        """All rows ``fn`` gives for one series (e.g. every slice's features), cached."""
        return self._series_features_waiting(data, image_id, f"{name}-{json_digest(config, 16)}", fn)

    def _series_features_waiting(self, data: TaskData, image_id: str, tag: str, fn: FeatureFn) -> np.ndarray:
        feats = self._series_features(data, image_id, tag, fn, wait=True)
        assert feats is not None  # a waiting lock never gives up
        return feats

    def _series_features(self, data: TaskData, image_id: str, tag: str, fn: FeatureFn,
                         wait: bool = True) -> np.ndarray | None:
        """Cached or computed features; None when ``wait`` is False and another process
        holds the series' lock (it is computing them)."""
        key = data.content_keys.get(image_id)
        path = self.cache_dir / f"{key}-{tag}.npy" if (self.cache_dir and key) else None
        if path is None:
            return self._compute(data, image_id, fn, None)
        feats = _load(path)
        if feats is not None:
            return feats
        with _series_lock(path.with_suffix(".lock"), wait) as locked:
            if not locked:
                return None
            feats = _load(path)  # written while we waited
            if feats is not None:
                return feats
            return self._compute(data, image_id, fn, path)

    def _compute(self, data: TaskData, image_id: str, fn: FeatureFn, path: Path | None) -> np.ndarray:
        feats = np.asarray(fn(np.asarray(data.volumes[image_id], dtype=np.float32)), np.float32)
        self.n_computed += 1
        if path is not None:
            atomic_write(path, lambda fh: np.save(fh, feats))
        return feats


def _load(path: Path) -> np.ndarray | None:
    """Cached features, or None when absent or damaged (logged; then recomputed).

    Read whole, not memory-mapped: a short file raises here instead of a bus error later.
    """
    try:
        return np.load(path, allow_pickle=False)
    except FileNotFoundError:
        return None
    except (OSError, ValueError, EOFError) as exc:
        from harness.console import log

        log(f"cache: {path} is damaged ({exc}); computing its features again")
        return None


@contextmanager
def _series_lock(lock_path: Path, wait: bool) -> Iterator[bool]:
    """An exclusive advisory lock on ``lock_path``; yields whether it is held."""
    if fcntl is None:
        yield True
        return
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    with open(lock_path, "a+b") as fh:
        try:
            fcntl.flock(fh.fileno(), fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
        except BlockingIOError:
            yield False
            return
        try:
            yield True
        finally:
            fcntl.flock(fh.fileno(), fcntl.LOCK_UN)
