"""The one training loop of every torch model: baselines, the 3D U-Net, the explain CNN.

One loop, hooks for what differs between callers (MONAI-style): where batches come
from, how the epoch's loss is averaged, the learning-rate schedule, the validation
score, model selection and early stopping, the checkpoint on disk and the history
record. Callers keep their own seeding (they need the seed before the engine runs,
for their loaders) and their own history format (other code reads it).

The loop is thin on purpose: ``benchmarks/perf/test_training_loop.py`` holds it to
within 5% of a bare PyTorch loop. Per batch it does the textbook five steps and keeps
the detached loss; every other hook runs once per epoch.
"""

from __future__ import annotations

import math
import random
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Literal, NamedTuple, Protocol, Sequence

import numpy as np
import torch
from torch import nn

#: One batch: the model's inputs (``model(*inputs)``) and the target the loss compares to.
Batch = tuple[Sequence[torch.Tensor], torch.Tensor]
#: Per-batch (detached loss, batch size) pairs of one epoch -> the epoch's training loss.
LossReducer = Callable[[Sequence[tuple[torch.Tensor, int]]], float]
SchedulerFactory = Callable[[torch.optim.Optimizer], Any]
StateDict = dict[str, torch.Tensor]


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


class BatchSource(Protocol):
    """Yields one epoch's batches; a source that draws random numbers owns its seeded RNG."""

    def batches(self, epoch: int) -> Iterable[Batch]: ...


@dataclass
class LoaderBatches:
    """A DataLoader's ``(*inputs, target)`` tuples, moved to ``device`` (the baselines)."""

    loader: Iterable[Sequence[torch.Tensor]]
    device: torch.device

    def batches(self, epoch: int) -> Iterator[Batch]:
        for *xs, y in self.loader:
            yield ([x.to(self.device, non_blocking=True) for x in xs],
                   y.to(self.device, non_blocking=True))


class Scored(NamedTuple):
    """What validation returns: fields for the history record, and the selection score
    (higher is better for the default comparison; None: nothing to select on)."""

    metrics: dict[str, float]
    score: float | None


#: (model, epoch's training loss) -> Scored. Called after every epoch's training.
Validate = Callable[[nn.Module, float], Scored]


def greater(score: float, best: float) -> bool:
    """Strict improvement (NaN never improves)."""
    return score > best


@dataclass
class Selection:
    """Which epoch's weights are kept, and when to stop early.

    ``fallback``: "initial" keeps the untrained weights until an epoch improves on
    ``best`` (the 3D U-Net); "first" keeps the first scored epoch whatever its score,
    even NaN (the baselines).
    """

    better: Callable[[float, float], bool] = greater
    best: float = -math.inf
    patience: int | None = None
    fallback: Literal["initial", "first"] = "first"


@dataclass
class EpochStats:
    """What the engine knows after one epoch; ``record`` hooks turn it into a history row."""

    epoch: int
    lr: float
    train_loss: float
    metrics: dict[str, float]
    score: float | None
    best_epoch: int
    seconds: float


Record = Callable[[EpochStats], dict[str, Any]]


def sample_mean(losses: Sequence[tuple[torch.Tensor, int]]) -> float:
    """Mean loss per sample, summed on the loss's device (one sync per epoch)."""
    if not losses:
        return float("nan")
    total = torch.zeros((), device=losses[0][0].device)
    n = 0
    for loss, size in losses:
        total += loss * size
        n += size
    return float(total) / n


def sample_mean_float64(losses: Sequence[tuple[torch.Tensor, int]]) -> float:
    """Mean loss per sample in python floats (the explain CNN's history, bit for bit)."""
    total, n = 0.0, 0
    for loss, size in losses:
        total += float(loss) * size
        n += size
    return total / n if n else float("nan")


def batch_mean(losses: Sequence[tuple[torch.Tensor, int]]) -> float:
    """Mean of the batch losses, every batch weighing the same (the 3D U-Net)."""
    return float(np.mean([float(loss) for loss, _ in losses]))


def default_record(stats: EpochStats) -> dict[str, Any]:
    return {"epoch": stats.epoch, "train_loss": stats.train_loss, **stats.metrics}


def snapshot(model: nn.Module) -> StateDict:
    """A copy of the weights that later steps do not change."""
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


@dataclass
class DiskCheckpoint:
    """Save the kept weights and re-read them through the one model-file loader, so the
    weights used are exactly those on disk."""

    path: Path

    def __call__(self, state: StateDict) -> StateDict:
        from harness.model_files import load_state_dict

        self.path.parent.mkdir(parents=True, exist_ok=True)
        torch.save(state, self.path)
        return load_state_dict(self.path)


def train_epoch(model: nn.Module, batches: Iterable[Batch], loss_fn: Callable[..., torch.Tensor],
                optimizer: torch.optim.Optimizer) -> list[tuple[torch.Tensor, int]]:
    """One pass: zero_grad, forward, loss, backward, step. Returns the detached losses."""
    model.train()
    losses = []
    for xs, y in batches:
        optimizer.zero_grad(set_to_none=True)
        loss = loss_fn(model(*xs), y)
        loss.backward()
        optimizer.step()
        losses.append((loss.detach(), len(y)))
    return losses


@dataclass
class Engine:
    """The hooks of one training run; :meth:`fit` runs it. Defaults: no schedule, no
    validation, no selection (the last epoch is kept), no checkpoint file."""

    loss_fn: Callable[..., torch.Tensor]
    epochs: int
    scheduler: SchedulerFactory | None = None
    validate: Validate | None = None
    selection: Selection = field(default_factory=Selection)
    reduce_loss: LossReducer = sample_mean
    checkpoint: Callable[[StateDict], StateDict] | None = None
    record: Record = default_record

    def fit(self, model: nn.Module, source: BatchSource, optimizer: torch.optim.Optimizer,
            history: list[dict[str, Any]] | None = None) -> list[dict[str, Any]]:
        """Train ``model`` in place; it ends in eval mode with the kept weights loaded.
        Appends one record per epoch to ``history`` (a new list if None) and returns it."""
        history = [] if history is None else history
        sel = self.selection
        scheduler = self.scheduler(optimizer) if self.scheduler is not None else None
        best = sel.best
        best_state = snapshot(model) if sel.fallback == "initial" else None
        best_epoch, stale = -1, 0
        for epoch in range(self.epochs):
            started = time.perf_counter()
            lr = optimizer.param_groups[0]["lr"]
            train_loss = self.reduce_loss(train_epoch(model, source.batches(epoch), self.loss_fn, optimizer))
            if scheduler is not None:
                scheduler.step()
            scored = self.validate(model, train_loss) if self.validate is not None else Scored({}, None)
            seconds = time.perf_counter() - started
            if scored.score is not None:
                if sel.better(scored.score, best) or best_state is None:
                    best, best_state, best_epoch, stale = scored.score, snapshot(model), epoch, 0
                else:
                    stale += 1
            history.append(self.record(EpochStats(epoch, lr, train_loss, scored.metrics, scored.score,
                                                  best_epoch, seconds)))
            if sel.patience is not None and stale >= sel.patience:
                break
        if best_state is None and self.checkpoint is not None:
            best_state = snapshot(model)
        if best_state is not None:
            if self.checkpoint is not None:
                best_state = self.checkpoint(best_state)
            model.load_state_dict(best_state)
        model.eval()
        return history
