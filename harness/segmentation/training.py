"""The shared, seeded training loop for 3D segmentation models on whole volumes.

Adam with exponential learning-rate decay (Ren et al. 2.4), optional left-right flips,
validation Dice after every epoch, the best epoch's weights kept (saved and re-read
with ``harness.model_files.load_state_dict`` when a checkpoint path is given), early stopping
after ``patience`` epochs without improvement. Same seed, same weights: torch,
numpy and the shuffling generator are all seeded and deterministic algorithms are on.
"""

from __future__ import annotations

import copy
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np
import torch

from harness.segmentation.data import SegCase
from harness.segmentation.losses import make_loss


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


def seed_everything(seed: int) -> None:
    """The one seeding of every torch model (baselines.torch_loop): python, numpy, torch,
    deterministic CPU kernels."""
    from baselines.torch_loop import seed_everything as seed_all

    seed_all(seed)


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
    """Mean whole-volume Dice over regions and cases at probability 0.5."""
    scores = []
    for probs, c in zip(predict_probabilities(model, cases, device), cases):
        p, t = probs >= 0.5, c.regions > 0.5
        for k in range(3):
            denom = p[k].sum() + t[k].sum()
            scores.append(1.0 if denom == 0 else 2.0 * (p[k] & t[k]).sum() / denom)
    return float(np.mean(scores)) if scores else float("nan")


def train_model(model: torch.nn.Module, train: Sequence[SegCase], val: Sequence[SegCase], cfg: TrainConfig,
                *, log: Callable[[str], None] = print) -> tuple[torch.nn.Module, list[dict[str, float]]]:
    """Train ``model`` in place; returns it with the best validation weights, and the history."""
    seed_everything(cfg.seed)
    device = cfg.device
    model.to(device)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.Adam(params, lr=cfg.lr)
    sched = torch.optim.lr_scheduler.ExponentialLR(opt, gamma=cfg.lr_decay)
    loss_fn = make_loss(cfg.loss)
    rng = np.random.default_rng(cfg.seed)
    best, best_state, stale = -np.inf, copy.deepcopy(model.state_dict()), 0
    history: list[dict[str, float]] = []
    for epoch in range(cfg.epochs):
        started = time.perf_counter()
        model.train()
        order = rng.permutation(len(train))
        losses = []
        for i in range(0, len(order), cfg.batch_size):
            idx = order[i:i + cfg.batch_size]
            flips = rng.random(len(idx)) < 0.5 if cfg.flip else None
            x, y = _batch([train[j] for j in idx], device, flips)
            opt.zero_grad(set_to_none=True)
            loss = loss_fn(model(x), y)
            loss.backward()
            opt.step()
            losses.append(float(loss.detach()))
        sched.step()
        val_dice = _val_dice(model, val, device) if val else float("nan")
        record = {"epoch": epoch, "train_loss": float(np.mean(losses)), "val_dice": val_dice,
                  "seconds": time.perf_counter() - started}
        history.append(record)
        score = val_dice if val else -record["train_loss"]
        if score > best:
            best, stale = score, 0
            best_state = copy.deepcopy(model.state_dict())
        else:
            stale += 1
        if stale >= cfg.patience:
            break
    if cfg.checkpoint is not None:
        cfg.checkpoint.parent.mkdir(parents=True, exist_ok=True)
        torch.save(best_state, cfg.checkpoint)
        from harness.model_files import load_state_dict

        best_state = load_state_dict(cfg.checkpoint)
    model.load_state_dict(best_state)
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
