"""Executors for independent jobs: serial (in-process), a local process pool, or Ray.

Each has the same four verbs, so the runner's scheduling loop (:func:`run_jobs`) is
written once: ``start`` (ship the shared data once), ``submit`` one job, ``wait_any``
for the next finished one, ``close``. A job's function is ``fn(job, data)`` with
``data = datasets[job.data_key]``; it must be a module-level function (picklable).
"""

from __future__ import annotations

import multiprocessing
import multiprocessing.connection
import os
import pickle
import tempfile
import threading
from abc import ABC, abstractmethod
from collections import deque
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from contextlib import contextmanager
from typing import Any, Callable, Hashable, Iterable, Iterator, Mapping

from harness.errors import HarnessError, raise_if_interrupted
from harness.parallel.threads import usable_cores

JobFn = Callable[[Any, Any], Any]
#: How shared data is prepared for an executor's workers (e.g. materialised for Ray).
Shipper = Callable[[Any], Any]

EXECUTORS: tuple[str, ...] = ("process", "ray")


def default_jobs() -> int:
    """One job per available core, at most 8 (each worker holds its own torch and model)."""
    return min(usable_cores(), 8)


class Executor(ABC):
    """Runs ``fn(job, datasets[job.data_key])`` for submitted jobs, ``slots`` at a time."""

    name: str = ""
    slots: int = 1

    def __enter__(self) -> Executor:
        return self

    def __exit__(self, exc_type: object, *exc: object) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()

    @abstractmethod
    def start(self, fn: JobFn, datasets: Mapping[str, Any]) -> None: ...

    @abstractmethod
    def submit(self, job: Any) -> Hashable: ...

    @abstractmethod
    def wait_any(self, handles: list[Hashable]) -> tuple[Hashable, Any]:
        """The next finished handle and its result, or the exception it raised."""

    def close(self) -> None:  # noqa: B027 - optional
        pass

    def abort(self) -> None:
        """Leaving on an exception (SIGTERM, Ctrl-C): stop running jobs now, not when done."""
        self.close()

    def describe(self) -> str:
        return f"{self.name} ({self.slots} at a time)"


class SerialExecutor(Executor):
    """In this process, one job at a time, in submission order: no pickling at all."""

    name = "serial"

    def start(self, fn: JobFn, datasets: Mapping[str, Any]) -> None:
        self._fn, self._datasets = fn, datasets
        self._done: dict[Hashable, Any] = {}
        self._next = 0

    def submit(self, job: Any) -> Hashable:
        handle = self._next
        self._next += 1
        try:
            self._done[handle] = self._fn(job, self._datasets[job.data_key])
        except Exception as exc:  # noqa: BLE001 - handed to the caller like a future's
            self._done[handle] = exc
        return handle

    def wait_any(self, handles: list[Hashable]) -> tuple[Hashable, Any]:
        handle = handles[0]
        return handle, self._done.pop(handle)


# -- local process pool -----------------------------------------------------------------
_WORKER_FN: JobFn | None = None
_WORKER_DATA: Mapping[str, Any] = {}


def _exit_with_parent() -> None:
    """End this worker when the driver dies, even by SIGKILL (no orphans left running)."""
    parent = multiprocessing.parent_process()
    if parent is None:
        return

    def watch() -> None:
        multiprocessing.connection.wait([parent.sentinel])
        os._exit(1)

    threading.Thread(target=watch, name="exit-with-parent", daemon=True).start()


def _init_worker(fn: JobFn, datasets_file: str) -> None:
    global _WORKER_FN, _WORKER_DATA
    _exit_with_parent()
    with open(datasets_file, "rb") as fh:
        _WORKER_DATA = pickle.load(fh)
    _WORKER_FN = fn


def _call_in_worker(job: Any) -> Any:
    assert _WORKER_FN is not None, "worker not initialised"
    return _WORKER_FN(job, _WORKER_DATA[job.data_key])


class ProcessExecutor(Executor):
    """A pool of ``jobs`` spawned processes on this machine.

    Spawn, not fork: a fork after torch has started its thread pool can deadlock.
    The shared data is pickled once to a temporary file that each worker reads as it
    starts (its cached volumes travel as file paths). Why a file: initializer arguments
    go down the spawn pipe, and a payload larger than the pipe buffer blocks the driver
    until that worker has imported torch, one worker after the other.
    """

    name = "process"

    def __init__(self, jobs: int):
        self.jobs = max(1, int(jobs))
        self.slots = self.jobs + 1  # one queued job hides the driver's bookkeeping

    def start(self, fn: JobFn, datasets: Mapping[str, Any]) -> None:
        with tempfile.NamedTemporaryFile("wb", prefix="harness-jobs-", suffix=".pkl", delete=False) as fh:
            pickle.dump(dict(datasets), fh, protocol=pickle.HIGHEST_PROTOCOL)
        self._datasets_file = fh.name
        self._init_args = (fn, fh.name)
        self._pool = self._new_pool()

    def _new_pool(self) -> ProcessPoolExecutor:
        return ProcessPoolExecutor(max_workers=self.jobs, mp_context=multiprocessing.get_context("spawn"),
                                   initializer=_init_worker, initargs=self._init_args)

    def submit(self, job: Any) -> Hashable:
        try:
            return self._pool.submit(_call_in_worker, job)
        except BrokenProcessPool:
            # A worker died (killed, out of memory): its jobs failed; later ones get a new pool.
            self._pool.shutdown(wait=False, cancel_futures=True)
            self._pool = self._new_pool()
            return self._pool.submit(_call_in_worker, job)

    def wait_any(self, handles: list[Hashable]) -> tuple[Hashable, Any]:
        done, _ = wait(handles, return_when=FIRST_COMPLETED)  # type: ignore[arg-type]
        future: Future = next(h for h in handles if h in done)  # type: ignore[assignment]
        exc = future.exception()
        if isinstance(exc, BrokenProcessPool):
            exc = HarnessError(f"a worker process died while running this job ({exc}); "
                               "out of memory? try fewer --jobs")
        return future, exc if exc is not None else future.result()

    def abort(self) -> None:
        """End the workers at once (their jobs' results are lost; finished ones are cached)."""
        pool = getattr(self, "_pool", None)
        if pool is not None:
            processes = list((getattr(pool, "_processes", None) or {}).values())
            for proc in processes:
                proc.terminate()
            pool.shutdown(wait=False, cancel_futures=True)
            for proc in processes:
                proc.join(timeout=5)
                if proc.is_alive():
                    proc.kill()
            self._pool = None  # type: ignore[assignment]  # closed for good
        self.close()

    def close(self) -> None:
        pool = getattr(self, "_pool", None)
        if pool is not None:
            pool.shutdown(wait=True, cancel_futures=True)
        datasets_file = getattr(self, "_datasets_file", None)
        if datasets_file is not None:
            try:
                os.unlink(datasets_file)
            except FileNotFoundError:
                pass


# -- Ray --------------------------------------------------------------------------------
@contextmanager
def _without_env(name: str | None) -> Iterator[None]:
    """``os.environ`` without ``name`` for the duration (Ray reads RAY_ADDRESS first)."""
    saved = os.environ.pop(name, None) if name else None
    try:
        yield
    finally:
        if name and saved is not None:
            os.environ[name] = saved


def _ray_call(fn: JobFn, job: Any, data: Any) -> Any:
    return fn(job, data)


class RayExecutor(Executor):
    """Jobs as Ray tasks, on a local Ray instance or the cluster at ``address``.

    The shared data goes into Ray's object store once (``ship`` turns it into something
    every node can read, e.g. in-memory arrays instead of local file paths). Workers on
    other machines need this package installed; ``work_dir`` paths in jobs must be
    reachable there or caches are simply rebuilt.
    """

    name = "ray"

    def __init__(self, jobs: int | None, threads: int, address: str | None = None,
                 ship: Shipper | None = None):
        try:
            import ray
        except ImportError as exc:
            raise HarnessError("--executor ray needs Ray: pip install '.[ray]'") from exc
        self._ray = ray
        self._started_here = False
        if not ray.is_initialized():
            kwargs: dict[str, Any] = {"include_dashboard": False, "logging_level": "WARNING",
                                      "log_to_driver": True}
            if address is None:
                kwargs["num_cpus"] = max(int(jobs or default_jobs()) * threads, threads)
            try:
                with _without_env("RAY_ADDRESS" if address is None else None):
                    # "local": a new instance of our own. Without it Ray joins the cluster named
                    # in its temp folder's ray_current_cluster (left by any earlier `ray start`,
                    # even a stopped one) or in $RAY_ADDRESS; only --ray-address may do that.
                    ray.init(address=address or "local", **kwargs)
            except Exception as exc:  # noqa: BLE001 - Ray raises many kinds; say what failed
                raise HarnessError(f"could not start or reach Ray at {address or 'a new local instance'}: "
                                   f"{type(exc).__name__}: {exc}") from exc
            self._started_here = True
        self.threads = max(1, int(threads))
        cpus = int(ray.cluster_resources().get("CPU", 1))
        self.slots = max(1, int(jobs)) if jobs else max(1, cpus // self.threads)
        self._ship = ship or (lambda data: data)
        self._task = ray.remote(num_cpus=self.threads, max_retries=0)(_ray_call)

    def start(self, fn: JobFn, datasets: Mapping[str, Any]) -> None:
        self._fn = fn
        self._refs = {key: self._ray.put(self._ship(data)) for key, data in datasets.items()}

    def submit(self, job: Any) -> Hashable:
        return self._task.remote(self._fn, job, self._refs[job.data_key])

    def wait_any(self, handles: list[Hashable]) -> tuple[Hashable, Any]:
        ready, _ = self._ray.wait(handles, num_returns=1)
        ref = ready[0]
        try:
            return ref, self._ray.get(ref)
        except self._ray.exceptions.RayTaskError as exc:
            cause = getattr(exc, "cause", None)
            return ref, cause if isinstance(cause, BaseException) else exc
        except Exception as exc:  # noqa: BLE001 - worker died, object lost, ...
            return ref, exc

    def close(self) -> None:
        self._refs = {}
        if self._started_here:
            self._ray.shutdown()

    def describe(self) -> str:
        return f"ray ({self.slots} at a time, {self.threads} CPU each)"


def make_executor(kind: str = "process", *, jobs: int = 1, threads: int = 1,
                  ray_address: str | None = None, ship_to_ray: Shipper | None = None) -> Executor:
    """``process`` with one job is the serial in-process executor."""
    if kind == "process":
        return SerialExecutor() if jobs <= 1 else ProcessExecutor(jobs)
    if kind == "ray":
        return RayExecutor(jobs, threads, ray_address, ship=ship_to_ray)
    raise HarnessError(f"unknown executor {kind!r}; expected one of {', '.join(EXECUTORS)}")


def run_jobs(executor: Executor, fn: JobFn, jobs: Iterable[Any], datasets: Mapping[str, Any], *,
             on_result: Callable[[Any, Any], None],
             should_run: Callable[[Any], bool] = lambda job: True) -> None:
    """Run every job whose ``should_run`` still holds when its turn comes.

    ``on_result(job, result_or_exception)`` runs in this process as each job finishes,
    so bookkeeping (caches, MLflow) has a single writer. At most ``executor.slots`` jobs
    are in flight, so a job whose run already failed is skipped rather than started.
    """
    pending = deque(jobs)
    in_flight: dict[Hashable, Any] = {}
    executor.start(fn, datasets)
    while pending or in_flight:
        raise_if_interrupted()
        while pending and len(in_flight) < executor.slots:
            job = pending.popleft()
            if should_run(job):
                in_flight[executor.submit(job)] = job
        if not in_flight:
            break
        handle, result = executor.wait_any(list(in_flight))
        on_result(in_flight.pop(handle), result)
