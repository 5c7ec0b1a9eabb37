"""Volumes backed by the ingestion cache's .npy files, cheap to send to worker processes."""

from __future__ import annotations

from typing import Any, Iterable, Iterator, Mapping

import numpy as np


class CachedVolumes(Mapping[str, np.ndarray]):
    """``image_id`` -> volume, memory-mapped from the cache's .npy files on first use.

    Why: pickled, it carries paths rather than pixels, so worker processes on this
    machine map the same page-cache pages instead of each holding a copy of the cohort.
    """

    def __init__(self, paths: Mapping[str, str], opened: Mapping[str, np.ndarray] | None = None,
                 sources: Mapping[str, Any] | None = None):
        self._paths = dict(paths)
        self._opened: dict[str, np.ndarray] = dict(opened or {})
        #: image_id -> the cache job that rebuilds its file (harness.data.cache._Job)
        self._sources: dict[str, Any] = dict(sources or {})

    @classmethod
    def from_arrays(cls, arrays: Mapping[str, np.ndarray]) -> Mapping[str, np.ndarray]:
        """Wrap arrays that are whole-file memory maps; anything else stays a plain dict."""
        paths, sources = {}, {}
        for key, arr in arrays.items():
            filename = getattr(arr, "filename", None)
            if not isinstance(arr, np.memmap) or not filename:
                return dict(arrays)
            paths[key] = str(filename)
            if getattr(arr, "_harness_source", None) is not None:
                sources[key] = arr._harness_source  # type: ignore[attr-defined]
        return cls(paths, arrays, sources)

    def __getitem__(self, key: str) -> np.ndarray:
        """The mapped volume, after checking that its file still holds every byte.

        Why: a file truncated while mapped kills the process with SIGBUS when a missing
        page is touched. Checked on every access (one fstat), a damaged file is rebuilt
        from the source files (logged) or refused with a message instead.
        """
        arr = self._opened.get(key)
        if arr is not None and not _whole(arr):
            arr = None
            self._opened.pop(key, None)
            self._recover(key, "truncated while this run was using it")
        if arr is None:
            from harness.data.cache import npy_damage

            why = npy_damage(self._paths[key])
            if why is not None:
                self._recover(key, why)
            arr = np.load(self._paths[key], mmap_mode="r", allow_pickle=False)
            self._opened[key] = arr
        return arr

    def _recover(self, key: str, why: str) -> None:
        from harness.console import log
        from harness.data.cache import rebuild_entry
        from harness.errors import HarnessError

        source = self._sources.get(key)
        path = self._paths[key]
        if source is None:
            raise HarnessError(f"cache file {path} for {key} is damaged ({why}); run again "
                               "to rebuild it from the source files")
        log(f"cache: {path} for {key} is damaged ({why}); rebuilding it from the source files")
        self._paths[key] = str(rebuild_entry(source))

    def __iter__(self) -> Iterator[str]:
        return iter(self._paths)

    def __len__(self) -> int:
        return len(self._paths)

    def __contains__(self, key: object) -> bool:
        return key in self._paths

    def __reduce__(self):  # noqa: ANN204 - pickle protocol
        return (CachedVolumes, (self._paths, None, self._sources))

    def path(self, key: str) -> str:
        return self._paths[key]


def _whole(arr: np.ndarray) -> bool:
    """Whether the file behind a memory map still holds all of the mapped bytes."""
    mm = getattr(arr, "_mmap", None)
    if mm is None:
        return True
    try:
        return mm.size() >= int(getattr(arr, "offset", 0)) + arr.nbytes
    except (ValueError, OSError):  # closed map or vanished descriptor
        return False


def materialize_volumes(volumes: Mapping[str, np.ndarray], keys: Iterable[str] | None = None
                        ) -> dict[str, np.ndarray]:
    """Plain in-memory arrays, for workers that cannot see this machine's files (Ray)."""
    wanted = volumes.keys() if keys is None else keys
    return {k: np.ascontiguousarray(volumes[k]) for k in dict.fromkeys(wanted)}
