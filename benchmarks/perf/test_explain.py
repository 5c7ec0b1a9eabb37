"""Speed of the 16 attribution methods on one four-modality 2D case at the default size.

The default explain input is 4 x 64 x 64 (T1, T1post, T2, FLAIR) and the default model
the ``multimodal_cnn``; settings are the defaults of :class:`ExplainConfig`. Each method's
time is reported next to a bare forward + backward pass of the same model measured in
the same run (``extra_info['ratio']``: method time / forward + backward time), so numbers
compare across machines. Run: ``pytest benchmarks/perf/test_explain.py --benchmark-only``.
"""

from __future__ import annotations

import time

import pytest
import torch

from harness.explain import METHODS, ExplainConfig, attribute
from harness.explain.methods import MethodInputs
from harness.explain.models import MultiModalCNN
from harness.explain.superpixels import modality_feature_mask

SIZE = 64
_BASE: dict[str, float] = {}


def _case(seed: int) -> torch.Tensor:
    """A head-like case: an ellipse of tissue with a bright blob, zero background."""
    g = torch.Generator().manual_seed(seed)
    yy, xx = torch.meshgrid(torch.linspace(-1, 1, SIZE), torch.linspace(-1, 1, SIZE), indexing="ij")
    head = ((yy / 0.9) ** 2 + (xx / 0.75) ** 2 < 1).float()
    blob = torch.exp(-(((yy - 0.2) ** 2 + (xx + 0.3) ** 2) / 0.02))
    x = torch.stack([head * (0.5 + 0.1 * torch.rand(SIZE, SIZE, generator=g)) + blob * k for k in (0.1, 0.8, 0.3, 0.5)])
    return x[None]


@pytest.fixture(scope="module")
def setup() -> tuple[torch.nn.Module, torch.Tensor, MethodInputs, ExplainConfig]:
    torch.set_num_threads(1)
    torch.manual_seed(0)
    model = MultiModalCNN(4, 2).eval()
    x = _case(0)
    cfg = ExplainConfig()
    extra = MethodInputs(feature_mask=modality_feature_mask(x, cfg.n_segments, cfg.compactness),
                         batch=torch.cat([_case(s) for s in (1, 2, 3)]))
    # The reference: one bare forward + backward pass of the same model on the same case.
    reps, start = 50, time.perf_counter()
    for _ in range(reps):
        xi = x.clone().requires_grad_(True)
        model(xi)[0, 1].backward()
    _BASE["forward_backward_s"] = (time.perf_counter() - start) / reps
    return model, x, extra, cfg


@pytest.mark.parametrize("name", list(METHODS))
def test_method_speed(benchmark, report_ratio, setup, name: str) -> None:
    model, x, extra, cfg = setup
    attr = benchmark.pedantic(attribute, args=(name, model, x, 1, cfg, extra), rounds=3, iterations=1,
                              warmup_rounds=1)
    assert attr.shape == x.shape
    mean = benchmark.stats.stats.mean
    report_ratio(mean / _BASE["forward_backward_s"], ratio_is="method mean seconds / one forward+backward pass",
                 baseline="one bare forward + backward pass of the same model on the same case",
                 baseline_seconds=_BASE["forward_backward_s"], label=f"explain {name}, one 4x64x64 case")
