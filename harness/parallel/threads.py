"""Intra-op thread limits for one fold job (torch, BLAS and OpenMP pools)."""

from __future__ import annotations

import os
from contextlib import contextmanager
from typing import Iterator


def usable_cores() -> int:
    """Cores this process may run on (its CPU affinity), not the machine's count."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - not Linux
        return max(1, os.cpu_count() or 1)


@contextmanager
def limit_threads(n: int) -> Iterator[None]:
    """Run the block with at most ``n`` threads in torch, BLAS and OpenMP.

    Why: the thread count changes the order of floating-point sums (a 1-thread and a
    2-thread ResNet differ by ~1e-7), so every fold job runs with the same count whether
    it runs in-process or in a worker; and N workers x all cores each would oversubscribe.
    """
    import torch
    from threadpoolctl import threadpool_limits

    before = torch.get_num_threads()
    with threadpool_limits(limits=n):
        torch.set_num_threads(n)
        try:
            yield
        finally:
            torch.set_num_threads(before)
