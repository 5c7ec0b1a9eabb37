"""The ingestion cache: decode each series once, keyed by file content and preprocessing.

Why content and not paths: a renamed or copied dataset reuses its entries, and any
changed pixel byte gives a new key, so a stale array can never be served. A stat memo
((path, size, mtime_ns) -> sha256) lets a second run find its entries without reading
a single image file. Entries are written atomically (temporary file + ``os.replace``,
metadata last), so a killed run leaves either a complete entry or none. Series that
cannot be decoded are cached too (as a negative entry with their problems), so a rerun
reports them without decoding them again.

Layout of ``cache_dir``::

    stat-memo.sqlite           the stat memo
    volumes/ab/<key>.npy       the (z, y, x) float32 array
    volumes/ab/<key>.json      spacing, shape, problems (by file digest); written last
"""

from __future__ import annotations

import hashlib
import json
import multiprocessing
import os
import sqlite3
import time
from collections.abc import Iterable, Mapping, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from harness.hashing import canonical_json, json_digest
from harness.paths import default_cache_dir
from harness.atomic import atomic_write
from harness.errors import HarnessError
from harness.data.cohort import LABEL_MODALITIES, Cohort, Problem
from harness.data.volume import (
    DECODER_VERSION,
    SeriesError,
    Volume,
    apply_preprocess,
    decode_dicom,
    decode_nifti,
    series_digest,
    sha256_bytes,
    validate_preprocess,
)

if TYPE_CHECKING:  # pandas and tqdm are imported where used: decode workers import this
    import pandas as pd  # module and should start in a fraction of a second (numpy only)

#: Files modified this recently are not memoised: a rewrite within the file system's
#: timestamp granularity could keep (size, mtime) and make the memo lie (git's "racy" rule).
RACY_WINDOW_NS = 2_000_000_000
#: Paths per memo query (below SQLite's historical 999 bound on bound parameters).
MEMO_BATCH = 900


def cache_key(content: str, fmt: str, cfg: Mapping, is_label: bool) -> str:
    """Key of one cache entry: series content + decoder version + preprocessing."""
    payload = {"content": content, "format": fmt, "preprocess": dict(cfg),
               "label": bool(is_label), "decoder": DECODER_VERSION}
    return json_digest(payload)


# --------------------------------------------------------------------------- stat memo


class StatMemo:
    """(path, size, mtime_ns) -> content digest, persisted in a small sqlite db.

    A damaged db (not a database, malformed pages) is moved aside, logged and started
    afresh: the memo is only a shortcut, so losing it costs one re-hash of the files.
    """

    def __init__(self, db_path: Path):
        db_path.parent.mkdir(parents=True, exist_ok=True)
        self.db_path = db_path
        try:
            self._open()
        except sqlite3.DatabaseError as exc:
            self._reset(exc)

    def _open(self) -> None:
        self._db = sqlite3.connect(str(self.db_path), timeout=60)
        # A lost memo row only costs a re-hash, so no fsync per commit.
        self._db.execute("PRAGMA synchronous=OFF")
        self._db.execute(
            "CREATE TABLE IF NOT EXISTS memo (path TEXT PRIMARY KEY, size INTEGER, "
            "mtime_ns INTEGER, digest TEXT)"
        )
        self._db.commit()

    def _reset(self, exc: Exception) -> None:
        from harness.console import log

        try:
            self._db.close()
        except Exception:  # noqa: BLE001 - closing a broken connection
            pass
        aside = self.db_path.with_name(f"{self.db_path.name}.damaged-{time.time_ns()}")
        try:
            os.replace(self.db_path, aside)
        except FileNotFoundError:
            pass
        log(f"cache: {self.db_path} is damaged ({exc}); moved to {aside.name} and started "
            "afresh (files are hashed again)")
        self._open()

    def get(self, path: str, size: int, mtime_ns: int) -> str | None:
        try:
            row = self._db.execute(
                "SELECT digest FROM memo WHERE path=? AND size=? AND mtime_ns=?",
                (path, size, mtime_ns),
            ).fetchone()
        except sqlite3.DatabaseError as exc:
            if isinstance(exc, sqlite3.OperationalError) and "locked" in str(exc):
                return None  # busy beyond the timeout: just hash the file
            self._reset(exc)
            return None
        return row[0] if row else None

    def get_many(self, stats: Sequence[tuple[str, int, int]]) -> dict[str, str]:
        """path -> digest for the ``(path, size, mtime_ns)`` whose memo row still matches.

        One query per :data:`MEMO_BATCH` paths instead of one per file (the per-call
        overhead of sqlite3 is most of a warm read); a path whose size or mtime changed
        is simply absent from the answer, so it gets re-hashed as before.
        """
        out: dict[str, str] = {}
        try:
            for i in range(0, len(stats), MEMO_BATCH):
                want = {p: (size, mtime) for p, size, mtime in stats[i:i + MEMO_BATCH]}
                marks = ",".join("?" * len(want))
                for path, size, mtime, digest in self._db.execute(
                        f"SELECT path, size, mtime_ns, digest FROM memo WHERE path IN ({marks})",
                        list(want)):
                    if want.get(path) == (size, mtime):
                        out[path] = digest
        except sqlite3.DatabaseError as exc:
            if isinstance(exc, sqlite3.OperationalError) and "locked" in str(exc):
                return {}
            self._reset(exc)
            return {}
        return out

    def put_many(self, rows: Iterable[tuple[str, int, int, str]]) -> None:
        now = time.time_ns()
        rows = [r for r in rows if now - r[2] > RACY_WINDOW_NS]
        if rows:
            try:
                self._db.executemany("INSERT OR REPLACE INTO memo VALUES (?,?,?,?)", rows)
                self._db.commit()
            except sqlite3.DatabaseError as exc:
                if isinstance(exc, sqlite3.OperationalError) and "locked" in str(exc):
                    self._db.rollback()
                    return  # another run holds the write lock: the rows are only a shortcut
                self._reset(exc)

    def close(self) -> None:
        self._db.close()


# --------------------------------------------------------------------------- entries


def _entry_paths(entries_dir: Path, key: str) -> tuple[Path, Path]:
    d = entries_dir / key[:2]
    return d / f"{key}.npy", d / f"{key}.json"


def _log_damage(path: Path | str, why: str) -> None:
    """Say (on stderr) that a cache file is damaged and is being rebuilt: never silent."""
    from harness.console import log

    log(f"cache: {path} is damaged ({why}); rebuilding it from the source files")


def _read_entry(entries_dir: Path, key: str, *, with_array: bool = True, quiet: bool = False
                ) -> tuple[dict, np.ndarray | None] | None:
    """A complete entry, or None when absent or damaged (then it is rebuilt).

    The array file's header and size are checked before it is mapped, so a truncated
    file is a logged miss, never a bus error when its missing pages are touched.
    ``quiet``: the caller will look again (and report) if this returns None.
    """
    npy, meta_path = _entry_paths(entries_dir, key)
    try:
        text = meta_path.read_text()
    except FileNotFoundError:
        return None
    except (OSError, UnicodeDecodeError) as exc:
        if not quiet:
            _log_damage(meta_path, f"unreadable: {exc}")
        return None
    try:
        meta = json.loads(text)
        if not isinstance(meta, dict) or "ok" not in meta:
            raise ValueError("not a cache entry")
        if not meta.get("ok") or meta.get("check_only"):
            return meta, None
        why = npy_damage(npy, meta["shape"])
    except (ValueError, KeyError, TypeError) as exc:
        if not quiet:
            _log_damage(meta_path, f"bad metadata: {exc}")
        return None
    if why is not None:
        if not quiet:
            _log_damage(npy, why)
        return None
    if not with_array:
        return meta, None
    try:
        # Memory-mapped: a cohort of any size costs page cache, not heap.
        arr = np.load(npy, allow_pickle=False, mmap_mode="r")
    except (OSError, ValueError) as exc:
        if not quiet:
            _log_damage(npy, str(exc))
        return None
    return meta, arr


def npy_damage(npy: Path | str, shape: Sequence[int] | None = None) -> str | None:
    """Why a cached .npy cannot be used, or None: header parses, C-order float32 (of
    ``shape`` when given), and the file holds every byte the header promises.

    Why a size check and not only ``np.load``: mapping a short file succeeds for the
    part that exists and kills the process with SIGBUS when the rest is touched.
    """
    try:
        with open(npy, "rb") as fh:
            version = np.lib.format.read_magic(fh)
            read_header = (np.lib.format.read_array_header_1_0 if version == (1, 0)
                           else np.lib.format.read_array_header_2_0)
            hdr_shape, fortran, dtype = read_header(fh)
            offset = fh.tell()
            size = os.fstat(fh.fileno()).st_size
    except FileNotFoundError:
        return "array file missing"
    except (OSError, ValueError, EOFError) as exc:
        return f"unreadable header: {exc}"
    if dtype != np.float32 or fortran:
        return f"unexpected dtype {dtype} or order"
    if shape is not None and list(hdr_shape) != list(shape):
        return f"shape {list(hdr_shape)} instead of {list(shape)}"
    want = offset + int(np.prod(hdr_shape)) * 4
    if size != want:
        return f"{size} of {want} bytes"
    return None


def _write_entry(entries_dir: Path, key: str, meta: dict, array: np.ndarray | None) -> None:
    npy, meta_path = _entry_paths(entries_dir, key)
    if array is not None:
        atomic_write(npy, lambda fh: np.save(fh, array, allow_pickle=False))
    atomic_write(meta_path, lambda fh: fh.write(canonical_json(meta).encode()))


# --------------------------------------------------------------------------- the job


@dataclass
class _Job:
    series_id: str
    fmt: str
    files: tuple[str, ...]
    cfg: dict
    is_label: bool
    entries_dir: str
    #: read and decode every file to find bad ones, but keep no array (unused series)
    check_only: bool = False


#: Preprocess part of the key of a check-only entry (problems, no array).
_CHECK_ONLY = {"check_only": True}


@dataclass
class _JobResult:
    series_id: str
    key: str | None
    content: str | None
    digests: dict[str, str]  # path -> digest of the files that could be read
    memo_rows: list[tuple[str, int, int, str]]
    decoded: bool
    files_read: int
    read_problems: list[Problem] = field(default_factory=list)
    #: set only when the entry could not be written (then the array travels back)
    array: np.ndarray | None = None
    meta: dict | None = None


def _run_job(job: _Job, quiet: bool = False) -> _JobResult:
    """Read every file once, hash, and decode only when the cache has no entry.

    A module-level function of plain data, so it runs the same in-process and in a
    worker process (fork server or spawn).
    """
    blobs: list[bytes] = []
    paths: list[str] = []
    digests: dict[str, str] = {}
    memo_rows = []
    read_problems = []
    for p in job.files:
        try:
            st = os.stat(p)
            with open(p, "rb") as fh:
                data = fh.read()
        except OSError as exc:
            read_problems.append(Problem(p, f"cannot read file: {exc.strerror or exc}"))
            continue
        d = sha256_bytes(data)
        digests[p] = d
        memo_rows.append((p, st.st_size, st.st_mtime_ns, d))
        blobs.append(data)
        paths.append(p)
    n_read = len(blobs)
    if not blobs:
        return _JobResult(job.series_id, None, None, digests, memo_rows, False, n_read,
                          read_problems)
    content = series_digest([digests[p] for p in paths])
    key = cache_key(content, job.fmt, _CHECK_ONLY if job.check_only else job.cfg, job.is_label)
    entries_dir = Path(job.entries_dir)
    if _read_entry(entries_dir, key, with_array=False, quiet=quiet) is not None:
        return _JobResult(job.series_id, key, content, digests, memo_rows, False, n_read,
                          read_problems)

    if job.fmt == "nifti":
        dec = decode_nifti(blobs[0])
    else:
        dec = decode_dicom(blobs, [os.path.basename(p) for p in paths])
    del blobs
    array, spacing = dec.array, dec.spacing
    if array is not None and not job.check_only:
        array, spacing = apply_preprocess(array, spacing, job.cfg, is_label=job.is_label)
    meta = {
        "ok": array is not None,
        **({"check_only": True} if job.check_only else {}),
        "shape": list(array.shape) if array is not None else None,
        "spacing": list(spacing),
        "problems": [[digests[paths[i]] if i is not None else None, reason]
                     for i, reason in dec.problems],
        "format": job.fmt,
        "preprocess": job.cfg,
        "label": job.is_label,
        "decoder": DECODER_VERSION,
    }
    result = _JobResult(job.series_id, key, content, digests, memo_rows, True, n_read,
                        read_problems)
    if job.check_only:
        array = None
        result.meta = meta  # travels back: the caller needs only the problems
    try:
        _write_entry(entries_dir, key, meta, array)
    except OSError as exc:
        result.read_problems.append(
            Problem(str(entries_dir), f"could not write cache entry: {exc}"))
        result.array, result.meta = array, meta
    return result


def rebuild_entry(job: _Job) -> Path:
    """Decode a series again because its cached array was damaged while in use.

    Returns the path of the new array file (written atomically, so other processes that
    still map the old file keep their pages). Raises SeriesError if it no longer decodes.
    """
    res = _run_job(job, quiet=True)  # the caller has said why it rebuilds
    if res.key is None or (res.meta is not None and not res.meta.get("ok")):
        raise SeriesError(res.read_problems or [Problem(job.series_id, "series no longer decodes")])
    npy = _entry_paths(Path(job.entries_dir), res.key)[0]
    why = npy_damage(npy)
    if why is not None:
        raise HarnessError(f"cache file {npy} could not be rebuilt: {why}")
    return npy


def _tag_source(array: np.ndarray, job: _Job) -> None:
    """Remember how to rebuild a mapped array (read by CachedVolumes when its file is damaged)."""
    if isinstance(array, np.memmap):
        array._harness_source = job  # type: ignore[attr-defined]


# --------------------------------------------------------------------------- the store


#: Modules a decode worker needs, imported once by the fork server instead of by each worker.
_WORKER_PRELOAD = ["harness.data.cache", "pydicom"]


def _pool_context() -> multiprocessing.context.BaseContext:
    """Start method of the decode workers: ``forkserver`` where the platform has it.

    Why not ``fork``: the parent may hold threads (torch, tqdm, sqlite) that a forked
    child would inherit half-locked. Why not plain ``spawn``: every worker would start a
    new interpreter and import numpy and pydicom (about half a second on a small machine,
    longer than decoding a small cohort); the fork server imports them once per parent
    process and forks ready workers from its clean, single-threaded state.
    """
    if "forkserver" in multiprocessing.get_all_start_methods():
        ctx = multiprocessing.get_context("forkserver")
        ctx.set_forkserver_preload(_WORKER_PRELOAD)  # no effect once the server runs
        return ctx
    return multiprocessing.get_context("spawn")


def _row_get(row: Any, name: str, default: Any = None) -> Any:
    try:
        return row[name]
    except (KeyError, IndexError):
        return default


def _raise_open_file_limit() -> None:
    """Soft limit on open files up to the hard one (Unix; a no-op elsewhere).

    Why: every memory-mapped volume keeps a duplicate file descriptor (CPython's mmap
    does, before 3.13's ``trackfd``), so a cohort of more series than the common soft
    limit of 1024 would fail with "too many open files" half-way through loading.
    """
    try:
        import resource
    except ImportError:  # pragma: no cover - not Unix
        return
    try:
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        want = hard if hard != resource.RLIM_INFINITY else 1 << 20
        if soft != resource.RLIM_INFINITY and soft < want:
            resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))
    except (ValueError, OSError):  # pragma: no cover - e.g. a sandbox that forbids it
        pass


class VolumeStore:
    """Decoded volumes for cohort series, through a content-keyed on-disk cache.

    ``n_decoded`` counts series actually decoded in this store's lifetime,
    ``n_cache_hits`` series served from the cache, ``n_files_read`` image files read.
    """

    def __init__(self, cache_dir: Path | str | None = None, *, progress: bool = True,
                 workers: int = 1):
        self.cache_dir = Path(cache_dir) if cache_dir is not None else default_cache_dir()
        self.entries_dir = self.cache_dir / "volumes"
        self.entries_dir.mkdir(parents=True, exist_ok=True)
        self.progress = progress
        self.workers = max(1, int(workers))
        self.memo = StatMemo(self.cache_dir / "stat-memo.sqlite")
        _raise_open_file_limit()
        self.n_decoded = 0
        self.n_cache_hits = 0
        self.n_files_read = 0

    def close(self) -> None:
        self.memo.close()

    def __enter__(self) -> VolumeStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- helpers

    def _memo_digests(self, files: Sequence[str]) -> dict[str, str] | None:
        """Digests of all files from the memo, or None if any is unknown or changed."""
        stats = []
        for p in files:
            try:
                st = os.stat(p)
            except OSError:
                return None
            stats.append((p, st.st_size, st.st_mtime_ns))
        found = self.memo.get_many(stats)
        try:
            return {p: found[p] for p in files}
        except KeyError:  # unknown, or changed since it was hashed
            return None

    @staticmethod
    def _series_path(row: Any) -> str:
        files = list(_row_get(row, "files", ()) or ())
        if _row_get(row, "format") == "nifti" and files:
            return files[0]
        if files:
            return str(Path(files[0]).parent)
        return str(_row_get(row, "series_id", "?"))

    def _problems_from_meta(self, row: Any, meta: dict, digests: Mapping[str, str]
                            ) -> list[Problem]:
        if not meta.get("problems"):
            return []
        by_digest: dict[str, str] = {}
        for p, d in digests.items():
            by_digest.setdefault(d, p)
        where = self._series_path(row)
        return [Problem(by_digest.get(d, where) if d else where, reason)
                for d, reason in meta.get("problems", [])]

    def _volume(self, row: Any, key: str, meta: dict, array: np.ndarray | None,
                digests: Mapping[str, str], extra: Sequence[Problem] = ()) -> Volume:
        problems = list(extra) + self._problems_from_meta(row, meta, digests)
        if not meta.get("ok") or array is None:
            raise SeriesError(problems or [Problem(self._series_path(row), "unusable series")])
        dz, dy, dx = (float(s) for s in meta["spacing"])
        return Volume(array=array, spacing=(dz, dy, dx),
                      content_key=key, problems=tuple(problems))

    def _job(self, row: Any, cfg: dict, check_only: bool = False) -> _Job:
        return _Job(
            series_id=str(_row_get(row, "series_id", "")),
            fmt=str(_row_get(row, "format", "dicom")),
            files=tuple(str(f) for f in (_row_get(row, "files", ()) or ())),
            cfg=cfg,
            is_label=_row_get(row, "modality") in LABEL_MODALITIES,
            entries_dir=str(self.entries_dir),
            check_only=check_only,
        )

    def _try_fast(self, job: _Job, row: Any) -> Volume | None:
        """Serve from the cache via the stat memo, without reading any image file."""
        if not job.files:
            return None
        digests = self._memo_digests(job.files)
        if digests is None:
            return None
        content = series_digest(list(digests.values()))
        key = cache_key(content, job.fmt, job.cfg, job.is_label)
        entry = _read_entry(self.entries_dir, key, quiet=True)  # the job reports damage
        if entry is None:
            return None
        self.n_cache_hits += 1
        vol = self._volume(row, key, entry[0], entry[1], digests)
        _tag_source(vol.array, job)
        return vol

    def _finish(self, job: _Job, row: Any, res: _JobResult) -> Volume:
        self.memo.put_many(res.memo_rows)
        self.n_files_read += res.files_read
        if res.key is None:
            raise SeriesError(res.read_problems
                              or [Problem(self._series_path(row), "series has no files")])
        if res.decoded:
            self.n_decoded += 1
        else:
            self.n_cache_hits += 1
        if res.meta is not None:  # cache not writable: use what the job sent back
            return self._volume(row, res.key, res.meta, res.array, res.digests,
                                res.read_problems)
        entry = _read_entry(self.entries_dir, res.key)
        if entry is None:
            raise SeriesError([Problem(str(self.entries_dir),
                                       f"cache entry {res.key} vanished after writing")])
        vol = self._volume(row, res.key, entry[0], entry[1], res.digests, res.read_problems)
        _tag_source(vol.array, job)
        return vol

    def _settle(self, job: _Job, row: Any, res: _JobResult) -> tuple[Volume | None, list[Problem]]:
        """:meth:`_finish` for a batch: the volume (or None) and the series' problems."""
        try:
            vol = self._finish(job, row, res)
        except SeriesError as exc:
            return None, list(exc.problems)
        return vol, list(vol.problems)

    # -- public API

    def load(self, series_row: Any, preprocess: dict | None = None) -> Volume:
        """One series as a :class:`Volume`; raises :class:`SeriesError` if unusable."""
        cfg = validate_preprocess(preprocess)
        job = self._job(series_row, cfg)
        vol = self._try_fast(job, series_row)
        if vol is not None:
            return vol
        return self._finish(job, series_row, _run_job(job))

    def load_many(self, series_df: pd.DataFrame, preprocess: dict | None = None
                  ) -> tuple[dict[str, Volume], list[Problem]]:
        """All series of a frame: volumes by series_id, and every problem met.

        A series that fails contributes problems and no volume; the others still load.
        """
        cfg = validate_preprocess(preprocess)
        volumes: dict[str, Volume] = {}
        problems: list[Problem] = []
        pending: list[tuple[_Job, Any]] = []
        rows = [row for _, row in series_df.iterrows()]
        from tqdm.auto import tqdm

        with tqdm(total=len(rows), desc="loading series", unit="series",
                  disable=not self.progress, leave=False) as bar:
            for row in rows:
                job = self._job(row, cfg)
                fast = None
                try:
                    fast = self._try_fast(job, row)
                except SeriesError as exc:
                    problems.extend(exc.problems)
                    bar.update(1)
                    continue
                if fast is not None:
                    volumes[job.series_id] = fast
                    problems.extend(fast.problems)
                    bar.update(1)
                else:
                    pending.append((job, row))
            if self.workers > 1 and len(pending) > 1:
                # Each result is finished (memo rows stored, entry mapped) as it arrives and
                # then dropped: the parent keeps one small Volume per series, never every
                # file's digest, so its memory does not grow with the number of slices.
                outcome: list[tuple[Volume | None, list[Problem]]] = [(None, [])] * len(pending)
                with ProcessPoolExecutor(max_workers=min(self.workers, len(pending)),
                                         mp_context=_pool_context()) as pool:
                    futures = {pool.submit(_run_job, job): i for i, (job, _) in enumerate(pending)}
                    for fut in as_completed(futures):
                        i = futures.pop(fut)
                        job, row = pending[i]
                        outcome[i] = self._settle(job, row, fut.result())
                        bar.update(1)
                # Collected in input order so problems come out in a stable order.
                for (job, _), (vol, probs) in zip(pending, outcome):
                    if vol is not None:
                        volumes[job.series_id] = vol
                    problems.extend(probs)
            else:
                for job, row in pending:
                    vol, probs = self._settle(job, row, _run_job(job))
                    if vol is not None:
                        volumes[job.series_id] = vol
                    problems.extend(probs)
                    bar.update(1)
        return volumes, problems

    def check_many(self, series_df: pd.DataFrame | None) -> list[Problem]:
        """Problems of series that will not be used: every file read and decoded once.

        Why: a bad file in a skipped series (a second T1, an unknown description) must be
        named like any other. Only the problems are cached (no array), under their own
        key, so a rerun finds them through the stat memo without reading a file.
        """
        problems: list[Problem] = []
        if series_df is None or series_df.empty:
            return problems
        rows = [row for _, row in series_df.iterrows()]
        found: list[list[Problem] | None] = [None] * len(rows)
        pending: list[tuple[int, _Job]] = []
        for i, row in enumerate(rows):
            job = self._job(row, {}, check_only=True)
            digests = self._memo_digests(job.files) if job.files else None
            if digests is not None:
                key = cache_key(series_digest(list(digests.values())), job.fmt, _CHECK_ONLY,
                                job.is_label)
                entry = _read_entry(self.entries_dir, key, with_array=False, quiet=True)
                if entry is not None:
                    found[i] = self._problems_from_meta(row, entry[0], digests)
                    continue
            pending.append((i, job))

        def settle(i: int, res: _JobResult) -> None:
            self.memo.put_many(res.memo_rows)
            self.n_files_read += res.files_read
            meta = res.meta
            if meta is None and res.key is not None:
                entry = _read_entry(self.entries_dir, res.key, with_array=False)
                meta = entry[0] if entry is not None else None
            found[i] = list(res.read_problems) + (
                self._problems_from_meta(rows[i], meta, res.digests) if meta else [])

        if self.workers > 1 and len(pending) > 1:  # decoding is the cost: same pool as load_many
            with ProcessPoolExecutor(max_workers=min(self.workers, len(pending)),
                                     mp_context=_pool_context()) as pool:
                futures = {pool.submit(_run_job, job): i for i, job in pending}
                for fut in as_completed(futures):
                    settle(futures.pop(fut), fut.result())
        else:
            for i, job in pending:
                settle(i, _run_job(job))
        for probs in found:  # in input order, so problems come out in a stable order
            problems += [Problem(p.path, f"{p.reason} (in a series that is not used)")
                         for p in probs or []]
        return problems

    def content_digest(self, series_row: Any) -> str:
        """Digest of a series' file contents (memo first; reads only unknown files)."""
        files = [str(f) for f in (_row_get(series_row, "files", ()) or ())]
        digests = self._memo_digests(files)
        if digests is None:
            digests, rows = {}, []
            for p in files:
                try:
                    st = os.stat(p)
                    d = self.memo.get(p, st.st_size, st.st_mtime_ns)
                    if d is None:
                        with open(p, "rb") as fh:
                            d = sha256_bytes(fh.read())
                        self.n_files_read += 1
                        rows.append((p, st.st_size, st.st_mtime_ns, d))
                except OSError:
                    d = "unreadable"
                digests[p] = d
            self.memo.put_many(rows)
        return series_digest(list(digests.values()))


def dataset_fingerprint(cohort: Cohort, store: VolumeStore) -> str:
    """sha256 over every series' content digest and the patients table.

    Changes when any pixel file, any label, or the set of series changes; does not
    change when the dataset folder is moved or renamed.
    """
    h = hashlib.sha256()
    h.update(f"layout={cohort.layout}\n".encode())
    lines = sorted(f"{row['series_id']}\t{store.content_digest(row)}"
                   for _, row in cohort.series.iterrows())
    for line in lines:
        h.update(line.encode() + b"\n")
    h.update(b"patients\n")
    h.update(canonical_patients_csv(cohort.patients).encode())
    return h.hexdigest()


def canonical_patients_csv(patients: pd.DataFrame) -> str:
    """The patients table as CSV with sorted rows and columns: stable across runs."""
    if patients is None or patients.empty:
        return ""
    df = patients.copy()
    df = df[sorted(df.columns)]
    if "patient_id" in df.columns:
        df = df.sort_values("patient_id", kind="stable")
    return df.to_csv(index=False, na_rep="", lineterminator="\n")
