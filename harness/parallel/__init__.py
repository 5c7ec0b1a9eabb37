"""Running independent fold jobs in parallel: in-process, in a local process pool, or on Ray.

Only the driver process writes the fold cache and talks to MLflow; workers are pure
functions of (job, data) -> predictions. That is what keeps MLflow correct under any
amount of concurrency: one writer, one nested run per fold.
"""

from harness.parallel.executors import (
    EXECUTORS,
    Executor,
    ProcessExecutor,
    RayExecutor,
    SerialExecutor,
    default_jobs,
    make_executor,
    run_jobs,
)
from harness.parallel.threads import limit_threads, usable_cores
from harness.parallel.volumes import CachedVolumes, materialize_volumes

__all__ = [
    "EXECUTORS", "CachedVolumes", "Executor", "ProcessExecutor", "RayExecutor", "SerialExecutor",
    "default_jobs", "limit_threads", "make_executor", "materialize_volumes", "run_jobs", "usable_cores",
]
