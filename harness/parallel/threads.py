"""Intra-op thread limits for one fold job (torch, BLAS and OpenMP pools)."""

from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator


@contextmanager
def limit_threads(n: int) -> Iterator[None]:
    """Run the block with at most ``n`` threads in torch, BLAS and OpenMP.

    Why: the thread count changes the order of floating-point sums (a 1-thread and a
    2-thread ResNet differ by ~1e-7), so every fold job runs with the same count whether
    it runs in-process or in a worker; and N workers x all cores each would oversubscribe.
    """
    from threadpoolctl import threadpool_limits

    torch = _torch_or_none()
    before = torch.get_num_threads() if torch is not None else None
    with threadpool_limits(limits=n):
        if torch is not None:
            torch.set_num_threads(n)
        try:
            yield
        finally:
            if torch is not None and before is not None:
                torch.set_num_threads(before)


def _torch_or_none():  # noqa: ANN202 - the torch module, imported only if installed
    try:
        import torch
    except ImportError:  # pragma: no cover - torch is a dependency
        return None
    return torch
