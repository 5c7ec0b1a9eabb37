"""The shared torch loop: seeded, deterministic, early stopping, best checkpoint, history."""

from __future__ import annotations

import pandas as pd
import torch
from torch import nn

from baselines.registry import FitContext
from baselines.torch_loop import LoopConfig, fit_model, make_loader, predict_batches, seed_everything


def _data(n: int = 64):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(n, 5, generator=g)
    y = x @ torch.arange(1.0, 6.0) + 0.1 * torch.randn(n, generator=g)
    return x, y


class Lin(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.f = nn.Sequential(nn.Linear(5, 8), nn.ReLU(), nn.Linear(8, 1))

    def forward(self, x):
        return self.f(x).squeeze(-1)


def _fit(seed: int, epochs: int = 5, **cfg):
    x, y = _data()
    gen = seed_everything(seed)
    model = Lin()
    ctx = FitContext(seed=seed)
    fit_model(model, make_loader(x[:48], y[:48], batch_size=8, shuffle=True, generator=gen),
              make_loader(x[48:], y[48:], batch_size=8, shuffle=False), nn.MSELoss(),
              LoopConfig(epochs=epochs, lr=1e-2, **cfg), ctx)
    return model, ctx, x


def test_same_seed_same_weights_and_history():
    a, ca, x = _fit(3)
    b, cb, _ = _fit(3)
    c, _, _ = _fit(4)
    assert pd.DataFrame(ca.history).equals(pd.DataFrame(cb.history))
    assert torch.equal(predict_batches(a, x, batch_size=16, device="cpu"),
                       predict_batches(b, x, batch_size=16, device="cpu"))
    assert not torch.equal(predict_batches(a, x, batch_size=16, device="cpu"),
                           predict_batches(c, x, batch_size=16, device="cpu"))


def test_history_and_best_checkpoint_and_early_stopping():
    _, ctx, _ = _fit(0, epochs=6)
    assert [h["epoch"] for h in ctx.history] == list(range(6))
    assert {"train_loss", "val_loss", "lr", "best_epoch"} <= set(ctx.history[0])
    best = min(ctx.history, key=lambda h: h["val_loss"])
    assert ctx.history[-1]["best_epoch"] == best["epoch"]
    # a huge min_delta means no epoch after the first counts as an improvement
    _, ctx2, _ = _fit(0, epochs=20, patience=2, min_delta=1e9)
    assert len(ctx2.history) == 3
    # step decay
    _, ctx3, _ = _fit(0, epochs=4, step_size=2, gamma=0.5)
    assert [h["lr"] for h in ctx3.history] == [1e-2, 1e-2, 5e-3, 5e-3]


def test_batch_norm_head_trains_when_one_sample_is_left_over():
    """65 rows in batches of 64 once left a batch of one, which batch norm refuses."""
    x, y = _data(65)
    model = nn.Sequential(nn.Linear(5, 8), nn.BatchNorm1d(8), nn.ReLU(), nn.Linear(8, 1), nn.Flatten(0))
    loader = make_loader(x, y, batch_size=64, shuffle=True, generator=seed_everything(0))
    assert [len(b[0]) for b in loader] == [64]
    fit_model(model, loader, None, nn.MSELoss(), LoopConfig(epochs=1), FitContext())
    assert [len(b[0]) for b in make_loader(x, y, batch_size=64, shuffle=False)] == [64, 1]
