"""Training 3D segmentation models on whole volumes: the hooks of the one engine.

:mod:`harness.training.engine` runs the loop; this module supplies what is particular to
segmentation: Adam with exponential learning-rate decay (Ren et al. 2.4), batches of
whole volumes with optional left-right flips, validation Dice after every epoch, the
best epoch's weights kept (saved and re-read with ``harness.model_files.load_state_dict``
when a checkpoint path is given), early stopping after ``patience`` epochs without
improvement. Same seed, same weights: torch, numpy and the shuffling generator are all
seeded and deterministic algorithms are on.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping, Sequence

import numpy as np
import torch

from harness.segmentation.data import SegCase
from harness.segmentation.losses import make_loss
from harness.training.engine import (
    Batch, DiskCheckpoint, Engine, EpochStats, Scored, Selection, batch_mean, seed_everything,
)

__all__ = ["SegBatches", "TrainConfig", "freeze", "predict_probabilities", "seed_everything", "train_model"]


@dataclass
class TrainConfig:
    epochs: int = 12
    lr: float = 3e-3
    batch_size: int = 2
    patience: int = 6
    loss: Any = "dice_focal_edge005"
    lr_decay: float = 0.97
    flip: bool = True
    seed: int = 0
    device: str = "cpu"
    checkpoint: Path | None = None

    @classmethod
    def from_params(cls, params: Mapping[str, Any], **extra: Any) -> "TrainConfig":
        keys = set(cls.__dataclass_fields__)
        return cls(**{k: v for k, v in {**params, **extra}.items() if k in keys})


def _batch(cases: Sequence[SegCase], device: str, flip: Sequence[bool] | np.ndarray | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    x = np.stack([c.image for c in cases])
    y = np.stack([c.regions for c in cases])
    if flip is not None:
        for i, f in enumerate(flip):
            if f:
                x[i] = x[i][..., ::-1]
                y[i] = y[i][..., ::-1]
    return torch.from_numpy(np.ascontiguousarray(x)).to(device), torch.from_numpy(np.ascontiguousarray(y)).to(device)


@torch.no_grad()
def predict_probabilities(model: torch.nn.Module, cases: Sequence[SegCase], device: str = "cpu") -> list[np.ndarray]:
    """(3, Z, Y, X) sigmoid probabilities per case, ET/TC/WT order."""
    model.eval().to(device)
    out = []
    for c in cases:
        x = torch.from_numpy(c.image[None]).to(device)
        out.append(torch.sigmoid(model(x))[0].cpu().numpy())
    return out


def _val_dice(model: torch.nn.Module, cases: Sequence[SegCase], device: str) -> float:
    """Dice pooled over the validation cases at probability 0.5, averaged over the regions
    some validation case has (all three when none has any).

    Not a mean of per-case Dice: per case, a patient without ET scores 1 for an empty ET
    map, so with two or three validation patients the epochs before the net predicted ET
    at all scored best and were the model kept (a fold whose validation patients had no
    ET kept its sixth epoch of ten, with no ET predicted anywhere). Pooled over the
    regions present, an empty map scores 0 and a region no validation case shows cannot
    make an untrained epoch look good.
    """
    if not len(cases):
        return float("nan")
    inter, pred, true = np.zeros(3), np.zeros(3), np.zeros(3)
    for probs, c in zip(predict_probabilities(model, cases, device), cases):
        p, t = probs >= 0.5, c.regions > 0.5
        inter += [(p[k] & t[k]).sum() for k in range(3)]
        pred += [p[k].sum() for k in range(3)]
        true += [t[k].sum() for k in range(3)]
    regions = [k for k in range(3) if true[k] > 0] or [0, 1, 2]
    return float(np.mean([1.0 if pred[k] + true[k] == 0 else 2.0 * inter[k] / (pred[k] + true[k])
                          for k in regions]))


@dataclass
class SegBatches:
    """Whole-volume batches: a fresh permutation per epoch, then per batch one flip draw
    per case (this RNG call order is what makes a seed's weights reproducible)."""

    cases: Sequence[SegCase]
    batch_size: int
    flip: bool
    rng: np.random.Generator
    device: str

    def batches(self, epoch: int) -> Iterator[Batch]:
        order = self.rng.permutation(len(self.cases))
        for i in range(0, len(order), self.batch_size):
            idx = order[i:i + self.batch_size]
            flips = self.rng.random(len(idx)) < 0.5 if self.flip else None
            x, y = _batch([self.cases[j] for j in idx], self.device, flips)
            yield (x,), y


def _dice_validator(val: Sequence[SegCase], device: str) -> Callable[[torch.nn.Module, float], Scored]:
    """Validation Dice selects; without validation cases the lowest training loss does."""
    def validate(model: torch.nn.Module, train_loss: float) -> Scored:
        if not val:
            return Scored({"val_dice": float("nan")}, -train_loss)
        dice = _val_dice(model, val, device)
        return Scored({"val_dice": dice}, dice)
    return validate


def _record(stats: EpochStats) -> dict[str, Any]:
    return {"epoch": stats.epoch, "train_loss": stats.train_loss, **stats.metrics, "seconds": stats.seconds}


def train_model(model: torch.nn.Module, train: Sequence[SegCase], val: Sequence[SegCase], cfg: TrainConfig,
                *, log: Callable[[str], None] = print) -> tuple[torch.nn.Module, list[dict[str, float]]]:
    """Train ``model`` in place; returns it with the best validation weights, and the history."""
    seed_everything(cfg.seed)
    model.to(cfg.device)
    opt = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=cfg.lr)
    decay = cfg.lr_decay
    engine = Engine(
        loss_fn=make_loss(cfg.loss), epochs=cfg.epochs,
        scheduler=lambda o: torch.optim.lr_scheduler.ExponentialLR(o, gamma=decay),
        validate=_dice_validator(val, cfg.device),
        selection=Selection(patience=cfg.patience, fallback="initial"),
        reduce_loss=batch_mean,
        checkpoint=DiskCheckpoint(cfg.checkpoint) if cfg.checkpoint is not None else None,
        record=_record,
    )
    source = SegBatches(train, cfg.batch_size, cfg.flip, np.random.default_rng(cfg.seed), cfg.device)
    history = engine.fit(model, source, opt)
    return model, history


def freeze(model: torch.nn.Module, group: str) -> int:
    """Freeze one parameter group of a model with ``parameter_groups()``; returns how many tensors."""
    groups = model.parameter_groups()  # type: ignore[operator]
    if group not in groups:
        from harness.errors import HarnessError

        raise HarnessError(f"unknown freezing group {group!r}; known: {sorted(groups)}")
    for p in model.parameters():
        p.requires_grad_(True)
    for p in groups[group]:
        p.requires_grad_(False)
    return len(groups[group])
