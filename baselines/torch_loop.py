"""The torch baselines' side of the one training engine (:mod:`harness.training.engine`).

``fit_model`` runs the engine with the baselines' hooks: a DataLoader as batch source,
per-sample mean loss, optional step decay, validation loss and metric, selection and
early stopping on either, the best checkpoint kept in memory, and one history record per
epoch in ``ctx.history`` for the overfitting report. ``seed_everything`` is the engine's
(one definition for every torch model), re-exported here for the baselines.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass
from typing import Any, Callable, Iterable

import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from baselines.registry import FitContext
from harness.training.engine import (
    Engine, EpochStats, LoaderBatches, Scored, Selection, seed_everything,
)

__all__ = ["LoopConfig", "MetricFn", "accuracy_metric", "copy_model", "evaluate", "fit_model",
           "make_adam", "make_loader", "predict_batches", "seed_everything"]

MetricFn = Callable[[torch.Tensor, torch.Tensor], float]


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


def _validator(val_loader: Iterable, loss_fn: nn.Module, device: torch.device,
               metric_fn: MetricFn | None, monitor: str) -> Callable[[nn.Module, float], Scored]:
    def validate(model: nn.Module, train_loss: float) -> Scored:
        val_loss, val_metric = evaluate(model, val_loader, loss_fn, device, metric_fn)
        return Scored({"val_loss": val_loss, "val_metric": val_metric},
                      val_loss if monitor == "val_loss" else val_metric)
    return validate


def _recorder(tag: str) -> Callable[[EpochStats], dict[str, Any]]:
    """The baselines' history row (the overfitting report reads these keys)."""
    def record(stats: EpochStats) -> dict[str, Any]:
        return {"stage": tag, "epoch": stats.epoch, "lr": stats.lr, "train_loss": stats.train_loss,
                **stats.metrics, "best_epoch": stats.best_epoch}
    return record


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
    optimizer = make_adam(trainable, lr=config.lr, weight_decay=config.weight_decay)
    step_size, gamma = config.step_size, config.gamma
    engine = Engine(
        loss_fn=loss_fn, epochs=config.epochs,
        scheduler=(lambda opt: torch.optim.lr_scheduler.StepLR(opt, step_size=step_size, gamma=gamma))
        if step_size else None,
        validate=_validator(val_loader, loss_fn, device, metric_fn, config.monitor)
        if val_loader is not None else None,
        selection=Selection(
            better=lambda value, best: _better(value, best, config.monitor, config.min_delta),
            best=math.inf if config.monitor == "val_loss" else -math.inf,
            patience=config.patience, fallback="first"),
        record=_recorder(tag),
    )
    engine.fit(model, LoaderBatches(train_loader, device), optimizer, history=ctx.history)
    return model


def make_adam(params: list[nn.Parameter], *, lr: float, weight_decay: float = 0.0) -> torch.optim.Optimizer:
    """Adam with the fused kernel where this torch has one for the parameters' device.

    Why: on the CPU the default per-tensor Adam step took 22 of a ResNet-18 fold's 123 s
    (32 px slices, one thread); the fused step does the same update in one kernel, about
    six times faster. Same algorithm and hyper-parameters; float sums in another order.
    """
    try:
        return torch.optim.Adam(params, lr=lr, weight_decay=weight_decay, fused=True)
    except (RuntimeError, TypeError, ValueError):  # an old torch, or a device without the kernel
        return torch.optim.Adam(params, lr=lr, weight_decay=weight_decay)


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
