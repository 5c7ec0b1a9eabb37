"""The shared torch loop vs a bare PyTorch loop: one epoch, same model, same batches.

Run: ``pytest benchmarks/perf/test_training_loop.py --benchmark-only``. The harness loop
(``baselines.torch_loop.fit_model`` for one epoch, history and best-checkpoint
bookkeeping included) must add no more than 5% over the bare loop; the ratio is
reported in the benchmark's ``extra_info`` and printed.
"""

from __future__ import annotations

import time

import pytest

torch = pytest.importorskip("torch")
from torch import nn  # noqa: E402

from baselines.registry import FitContext  # noqa: E402
from baselines.torch_loop import LoopConfig, fit_model, make_loader, seed_everything  # noqa: E402

MAX_OVERHEAD = 1.05


def _setup():
    import timm

    gen = seed_everything(0)
    x = torch.rand(256, 3, 32, 32)
    y = torch.randint(0, 3, (256,))
    model = timm.create_model("resnet18", pretrained=False, num_classes=3)
    loader = make_loader(x, y, batch_size=32, shuffle=True, generator=gen)
    return model, loader


def bare_epoch(model: nn.Module, loader) -> None:
    """The textbook loop: what any PyTorch user would write."""
    # the optimiser the harness builds (fused Adam), so the ratio measures the loop alone
    opt = torch.optim.Adam(model.parameters(), lr=1e-3, fused=True)
    loss_fn = nn.CrossEntropyLoss()
    model.train()
    for xb, yb in loader:
        opt.zero_grad()
        loss = loss_fn(model(xb), yb)
        loss.backward()
        opt.step()


def harness_epoch(model: nn.Module, loader) -> None:
    fit_model(model, loader, None, nn.CrossEntropyLoss(), LoopConfig(epochs=1, lr=1e-3),
              FitContext(seed=0, device="cpu"))


def _best_of(fn, model, loader, n: int) -> float:
    best = float("inf")
    for _ in range(n):
        t0 = time.perf_counter()
        fn(model, loader)
        best = min(best, time.perf_counter() - t0)
    return best


def test_harness_loop_overhead(benchmark, report_ratio):
    model, loader = _setup()
    bare_epoch(model, loader)  # warm-up (allocator, kernels)
    # interleaved rounds share machine noise evenly; best-of timing for both
    bare, ours = float("inf"), float("inf")
    for _ in range(5):
        bare = min(bare, _best_of(bare_epoch, model, loader, 1))
        ours = min(ours, _best_of(harness_epoch, model, loader, 1))
    benchmark.pedantic(harness_epoch, args=(model, loader), rounds=3, iterations=1)
    ratio = ours / bare
    print(f"\nharness loop / bare loop, one epoch: {ours:.3f}s / {bare:.3f}s = {ratio:.3f}")
    met = report_ratio(
        ratio, ratio_is="harness epoch seconds / bare epoch seconds (best of 5 interleaved; <1.05: within 5%)",
        baseline="bare PyTorch loop (zero_grad, forward, loss, backward, step), same model and batches",
        baseline_seconds=bare, target=("<=", MAX_OVERHEAD), label="training loop, one epoch, resnet18 32px",
        harness_seconds=round(ours, 4),
    )
    assert met, f"training loop overhead {ratio:.3f}x exceeds {MAX_OVERHEAD}x"
