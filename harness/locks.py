"""Advisory file locks for runs that share a cache or an MLflow store.

Why flock: the kernel drops the lock when its holder dies (even by SIGKILL), so a killed
run never leaves a stale lock behind and the next run resumes as before.
"""

from __future__ import annotations

import os
import time
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Iterator, Sequence

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows: no locks, concurrent runs unsupported
    fcntl = None  # type: ignore[assignment]


@contextmanager
def file_lock(path: Path | str, *, what: str = "", poll_s: float = 0.2) -> Iterator[None]:
    """Hold an exclusive lock on ``path`` (created if needed), waiting for it if busy.

    ``what`` names the guarded work in the message logged while waiting, so a user sees
    why a run pauses. The holder's pid is written into the file for that message.
    """
    if fcntl is None:  # pragma: no cover
        yield
        return
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+") as fh:
        try:
            fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            from harness.console import log

            fh.seek(0)
            holder = fh.read().strip() or "?"
            log(f"waiting for another process (pid {holder}) that holds {path.name}"
                + (f": {what}" if what else ""))
            started = time.monotonic()
            fcntl.flock(fh.fileno(), fcntl.LOCK_EX)
            log(f"lock {path.name} acquired after {time.monotonic() - started:.1f} s")
        try:
            fh.seek(0)
            fh.truncate()
            fh.write(str(os.getpid()))
            fh.flush()
            yield
        finally:
            fcntl.flock(fh.fileno(), fcntl.LOCK_UN)


@contextmanager
def file_locks(paths: Sequence[Path | str], *, what: str = "") -> Iterator[None]:
    """Several locks, always taken in sorted order so two runs cannot deadlock."""
    with ExitStack() as stack:
        for p in sorted({str(Path(p).resolve()) for p in paths}):
            stack.enter_context(file_lock(p, what=what))
        yield


def lock_name(*parts: str) -> str:
    """A file name for a lock from free text (suite names may hold '/' or spaces)."""
    safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in "-".join(parts))
    return f"{safe[:120]}.lock"


def run_locks(suite_name: str, cache_dir: Path | str, tracking_uri: str) -> list[Path]:
    """Locks a suite run holds: one in the cache, one beside a local sqlite MLflow store.

    Why per suite: two runs of one suite share run keys, so they would resume each
    other's MLflow parent runs (and mark the other's running folds KILLED) and fit the
    same folds twice. Holding these, the second run waits, then reuses every fold the
    first one cached. Runs of different suites do not wait for each other.
    """
    name = lock_name("suite", suite_name)
    paths = [Path(cache_dir) / "locks" / name]
    if tracking_uri.startswith("sqlite:///"):
        db = Path(tracking_uri[len("sqlite:///"):])
        paths.append(db.parent / "locks" / f"{db.name}-{name}")
    return paths


@contextmanager
def store_lock(tracking_uri: str) -> Iterator[None]:
    """Held while a local sqlite MLflow store is opened (and on first use created).

    Why: MLflow creates and migrates a new store's tables on first access; two runs
    doing it at once fail ("duplicate column name"). Not needed for a server store.
    """
    if not tracking_uri.startswith("sqlite:///"):
        yield
        return
    db = Path(tracking_uri[len("sqlite:///"):])
    with file_lock(db.parent / "locks" / f"{db.name}-open.lock", what="opening the MLflow store"):
        yield
