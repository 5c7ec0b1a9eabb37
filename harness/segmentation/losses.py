"""Segmentation losses on three sigmoid channels (ET, TC, WT), combinable with weights.

Each loss takes logits and binary region targets of shape (N, C, Z, Y, X), computes the
loss per channel and averages over channels (Ren et al. 2.4). The edge loss follows
their reference [1]: gradient-magnitude maps of prediction and target, each normalised
by its own maximum, compared by MSE, which rewards getting boundaries where the target
has them regardless of intensity.
"""

from __future__ import annotations

from typing import Callable, Mapping

import torch
from torch.nn import functional as F

from harness.errors import HarnessError

EPS = 1e-6


def dice_loss(logits: torch.Tensor, target: torch.Tensor, smooth: float = 1.0) -> torch.Tensor:
    """1 - soft Dice per sample and channel, averaged."""
    p = torch.sigmoid(logits)
    dims = tuple(range(2, p.ndim))
    inter = (p * target).sum(dims)
    denom = p.sum(dims) + target.sum(dims)
    return (1.0 - (2.0 * inter + smooth) / (denom + smooth)).mean()


def focal_loss(logits: torch.Tensor, target: torch.Tensor, gamma: float = 2.0, alpha: float = 0.25) -> torch.Tensor:
    """Binary focal loss (Lin et al.), mean over voxels and channels."""
    ce = F.binary_cross_entropy_with_logits(logits, target, reduction="none")
    p = torch.sigmoid(logits)
    p_t = p * target + (1 - p) * (1 - target)
    a_t = alpha * target + (1 - alpha) * (1 - target)
    return (a_t * (1 - p_t) ** gamma * ce).mean()


def ce_loss(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Binary cross-entropy per channel (the regions overlap, so not a softmax CE)."""
    return F.binary_cross_entropy_with_logits(logits, target)


def mse_loss(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """MSE between sigmoid probabilities and the binary targets."""
    return F.mse_loss(torch.sigmoid(logits), target)


def gradient_magnitude(x: torch.Tensor) -> torch.Tensor:
    """Central-difference gradient magnitude over the spatial axes, same shape as ``x``."""
    sq = torch.zeros_like(x)
    for axis in range(2, x.ndim):
        pad = [0, 0] * (x.ndim - 2)
        k = 2 * (x.ndim - 1 - axis)
        pad[k], pad[k + 1] = 1, 1
        xp = F.pad(x, pad, mode="replicate")
        hi = xp.narrow(axis, 2, x.shape[axis])
        lo = xp.narrow(axis, 0, x.shape[axis])
        sq = sq + ((hi - lo) / 2.0) ** 2
    return torch.sqrt(sq + EPS)


def _normalise(m: torch.Tensor) -> torch.Tensor:
    peak = m.flatten(2).amax(dim=2).view(*m.shape[:2], *([1] * (m.ndim - 2)))
    return m / (peak + EPS)


def edge_loss(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """MSE between normalised gradient-magnitude maps of prediction and target."""
    pe = _normalise(gradient_magnitude(torch.sigmoid(logits)))
    te = _normalise(gradient_magnitude(target))
    return F.mse_loss(pe, te)


LOSSES: dict[str, Callable[[torch.Tensor, torch.Tensor], torch.Tensor]] = {
    "dice": dice_loss, "focal": focal_loss, "ce": ce_loss, "mse": mse_loss, "edge": edge_loss,
}

#: Ren et al.'s three combinations (Table 2); weights as published.
PRESETS: dict[str, dict[str, float]] = {
    "mse_ce_edge": {"mse": 0.25, "ce": 0.0044, "edge": 0.00015},
    "dice_focal_edge05": {"dice": 1.0, "focal": 1.0, "edge": 0.05},
    "dice_focal_edge005": {"dice": 1.0, "focal": 1.0, "edge": 0.005},
}
PRESET_LABELS: dict[str, str] = {
    "mse_ce_edge": "MSE + CE + Edge (0.25, 0.0044, 0.00015)",
    "dice_focal_edge05": "Dice + Focal + 0.05 Edge",
    "dice_focal_edge005": "Dice + Focal + 0.005 Edge",
}


class CompoundLoss:
    """sum_k w_k * loss_k(logits, target); ``parts`` keeps the last unweighted terms."""

    def __init__(self, weights: Mapping[str, float]) -> None:
        unknown = set(weights) - set(LOSSES)
        if unknown or not weights:
            raise HarnessError(f"unknown or empty loss terms {sorted(unknown)}; known: {sorted(LOSSES)}")
        self.weights = {k: float(v) for k, v in weights.items()}
        self.parts: dict[str, float] = {}

    def __call__(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        total = logits.new_zeros(())
        for name, w in self.weights.items():
            term = LOSSES[name](logits, target)
            self.parts[name] = float(term.detach())
            total = total + w * term
        return total


def make_loss(spec: str | Mapping[str, float]) -> CompoundLoss:
    """A preset name (see PRESETS) or an explicit ``{term: weight}`` mapping."""
    if isinstance(spec, str):
        if spec not in PRESETS:
            raise HarnessError(f"unknown loss preset {spec!r}; known: {', '.join(PRESETS)}")
        return CompoundLoss(PRESETS[spec])
    return CompoundLoss(spec)
