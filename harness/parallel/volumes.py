"""Volumes backed by the ingestion cache's .npy files, cheap to send to worker processes."""

from __future__ import annotations

from typing import Iterable, Iterator, Mapping

import numpy as np


class CachedVolumes(Mapping[str, np.ndarray]):
    """``image_id`` -> volume, memory-mapped from the cache's .npy files on first use.

    Why: pickled, it carries paths rather than pixels, so worker processes on this
    machine map the same page-cache pages instead of each holding a copy of the cohort.
    """

    def __init__(self, paths: Mapping[str, str], opened: Mapping[str, np.ndarray] | None = None):
        self._paths = dict(paths)
        self._opened: dict[str, np.ndarray] = dict(opened or {})

    @classmethod
    def from_arrays(cls, arrays: Mapping[str, np.ndarray]) -> Mapping[str, np.ndarray]:
        """Wrap arrays that are whole-file memory maps; anything else stays a plain dict."""
        paths = {}
        for key, arr in arrays.items():
            filename = getattr(arr, "filename", None)
            if not isinstance(arr, np.memmap) or not filename:
                return dict(arrays)
            paths[key] = str(filename)
        return cls(paths, arrays)

    def __getitem__(self, key: str) -> np.ndarray:
        arr = self._opened.get(key)
        if arr is None:
            arr = np.load(self._paths[key], mmap_mode="r", allow_pickle=False)
            self._opened[key] = arr
        return arr

    def __iter__(self) -> Iterator[str]:
        return iter(self._paths)

    def __len__(self) -> int:
        return len(self._paths)

    def __contains__(self, key: object) -> bool:
        return key in self._paths

    def __reduce__(self):  # noqa: ANN204 - pickle protocol
        return (CachedVolumes, (self._paths,))

    def path(self, key: str) -> str:
        return self._paths[key]


def materialize_volumes(volumes: Mapping[str, np.ndarray], keys: Iterable[str] | None = None
                        ) -> dict[str, np.ndarray]:
    """Plain in-memory arrays, for workers that cannot see this machine's files (Ray)."""
    wanted = volumes.keys() if keys is None else keys
    return {k: np.ascontiguousarray(volumes[k]) for k in dict.fromkeys(wanted)}
