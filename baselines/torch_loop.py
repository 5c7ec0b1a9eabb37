"""The one training loop every torch baseline shares.

Seeded and deterministic on CPU (same seed and config give the same weights), early
stopping on validation, the best checkpoint kept in memory and restored at the end, and
one history record per epoch in ``ctx.history`` for the overfitting report. It is kept
deliberately thin: ``benchmarks/perf/test_training_loop.py`` holds it to within 5% of a
bare PyTorch loop over the same model and batches.
"""

from __future__ import annotations

import copy
import math
import random
from dataclasses import dataclass
from typing import Callable, Iterable

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from baselines.registry import FitContext

MetricFn = Callable[[torch.Tensor, torch.Tensor], float]


def seed_everything(seed: int) -> torch.Generator:
    """Seed python, numpy and torch; prefer deterministic kernels. Returns a generator
    for DataLoader shuffling so batch order depends on the seed alone."""
    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)
    torch.use_deterministic_algorithms(True, warn_only=True)
    g = torch.Generator()
    g.manual_seed(seed)
    return g


def make_loader(
    *tensors: torch.Tensor, batch_size: int, shuffle: bool, generator: torch.Generator | None = None
) -> DataLoader:
    """A single-process loader (num_workers=0: reproducible, and 2 cores gain nothing).

    A shuffled (training) loader drops a last batch of one sample: batch norm cannot
    train on a single value, and which sample lands there is chance anyway.
    """
    n = len(tensors[0]) if tensors else 0
    drop_last = bool(shuffle and n > batch_size and n % batch_size == 1)
    return DataLoader(
        TensorDataset(*tensors), batch_size=batch_size, shuffle=shuffle,
        generator=generator if shuffle else None, num_workers=0, drop_last=drop_last,
    )


@dataclass
class LoopConfig:
    """Optimisation settings: Adam, optional step decay, early stopping on validation."""

    epochs: int = 10
    lr: float = 1e-3
    weight_decay: float = 0.0
    #: StepLR: multiply the learning rate by ``gamma`` every ``step_size`` epochs.
    step_size: int | None = None
    gamma: float = 0.1
    #: Stop after ``patience`` epochs without an improvement of at least ``min_delta``.
    patience: int | None = None
    min_delta: float = 0.0
    #: What picks the best checkpoint and drives early stopping: "val_loss" or "val_metric".
    monitor: str = "val_loss"


def _better(value: float, best: float, monitor: str, min_delta: float) -> bool:
    if math.isnan(value):
        return False
    if monitor == "val_metric":
        return value > best + min_delta
    return value < best - min_delta


def _state(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def evaluate(
    model: nn.Module, loader: Iterable, loss_fn: nn.Module, device: torch.device,
    metric_fn: MetricFn | None = None,
) -> tuple[float, float]:
    """Mean loss and metric of ``model`` over ``loader`` (eval mode, no gradients)."""
    model.eval()
    total, n, outs, ys = 0.0, 0, [], []
    with torch.no_grad():
        for *xs, y in loader:
            xs = [x.to(device) for x in xs]
            y = y.to(device)
            out = model(*xs)
            total += float(loss_fn(out, y)) * len(y)
            n += len(y)
            if metric_fn is not None:
                outs.append(out)
                ys.append(y)
    metric = metric_fn(torch.cat(outs), torch.cat(ys)) if metric_fn is not None and outs else float("nan")
    return (total / n if n else float("nan")), metric


def train_one_epoch(
    model: nn.Module, loader: Iterable, loss_fn: nn.Module, optimizer: torch.optim.Optimizer,
    device: torch.device,
) -> float:
    """One pass over ``loader``; returns the mean training loss."""
    model.train()
    total = torch.zeros((), device=device)
    n = 0
    for *xs, y in loader:
        xs = [x.to(device, non_blocking=True) for x in xs]
        y = y.to(device, non_blocking=True)
        optimizer.zero_grad(set_to_none=True)
        loss = loss_fn(model(*xs), y)
        loss.backward()
        optimizer.step()
        total += loss.detach() * len(y)
        n += len(y)
    return float(total) / n if n else float("nan")


def fit_model(
    model: nn.Module,
    train_loader: Iterable,
    val_loader: Iterable | None,
    loss_fn: nn.Module,
    config: LoopConfig,
    ctx: FitContext,
    *,
    metric_fn: MetricFn | None = None,
    params: Iterable[nn.Parameter] | None = None,
    tag: str = "",
) -> nn.Module:
    """Train ``model`` in place and return it with the best checkpoint loaded.

    Without a validation loader the last epoch is kept (there is nothing to select on).
    """
    device = torch.device(ctx.device)
    model.to(device)
    loss_fn = loss_fn.to(device)
    trainable = [p for p in (params if params is not None else model.parameters()) if p.requires_grad]
    optimizer = torch.optim.Adam(trainable, lr=config.lr, weight_decay=config.weight_decay)
    scheduler = (
        torch.optim.lr_scheduler.StepLR(optimizer, step_size=config.step_size, gamma=config.gamma)
        if config.step_size else None
    )
    best = math.inf if config.monitor == "val_loss" else -math.inf
    best_state, best_epoch, stale = None, -1, 0
    for epoch in range(config.epochs):
        lr = optimizer.param_groups[0]["lr"]
        train_loss = train_one_epoch(model, train_loader, loss_fn, optimizer, device)
        record = {"stage": tag, "epoch": epoch, "lr": lr, "train_loss": train_loss}
        if val_loader is not None:
            val_loss, val_metric = evaluate(model, val_loader, loss_fn, device, metric_fn)
            record.update(val_loss=val_loss, val_metric=val_metric)
            value = val_loss if config.monitor == "val_loss" else val_metric
            if _better(value, best, config.monitor, config.min_delta) or best_state is None:
                best, best_state, best_epoch, stale = value, _state(model), epoch, 0
            else:
                stale += 1
        record["best_epoch"] = best_epoch
        ctx.history.append(record)
        if scheduler is not None:
            scheduler.step()
        if config.patience is not None and stale >= config.patience:
            break
    if best_state is not None:
        model.load_state_dict(best_state)
    model.eval()
    return model


def predict_batches(model: nn.Module, *tensors: torch.Tensor, batch_size: int, device: str) -> torch.Tensor:
    """Model outputs for ``tensors`` in order (eval mode, no gradients), on the CPU."""
    model.eval()
    dev = torch.device(device)
    outs = []
    with torch.no_grad():
        n = len(tensors[0])
        for start in range(0, n, batch_size):
            outs.append(model(*[t[start:start + batch_size].to(dev) for t in tensors]).cpu())
    return torch.cat(outs) if outs else torch.zeros(0)


def accuracy_metric(out: torch.Tensor, y: torch.Tensor) -> float:
    return float((out.argmax(dim=1) == y).float().mean())


def copy_model(model: nn.Module) -> nn.Module:
    return copy.deepcopy(model)
