"""Turning TaskData pixels into tensors, the way the published CNN pipelines did.

Grey slices are rescaled to [0, 1] per slice (what PIL's RGB conversion of an 8-bit
export amounts to), resized, and replicated to three channels with ImageNet
normalisation inside the model (:class:`ImageNetInput`), so batches stay one channel.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from torch import nn

from baselines.registry import FitContext
from harness.tasks import TaskData, foreground_fraction

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class ImageNetInput(nn.Module):
    """(B, C, H, W) in [0, 1] -> 3 channels (grey replicated), ImageNet-normalised."""

    mean: torch.Tensor  # buffers, declared for the type checker
    std: torch.Tensor

    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[1] == 1:
            x = x.expand(-1, 3, -1, -1)
        return (x - self.mean) / self.std


def unit_resize(stack: np.ndarray, size: int) -> torch.Tensor:
    """(N, H, W) -> (N, 1, size, size) float32, each image min-max rescaled to [0, 1]."""
    x = torch.from_numpy(np.ascontiguousarray(stack, dtype=np.float32))
    if x.ndim == 3:
        x = x.unsqueeze(1)
    lo = x.amin(dim=(-2, -1), keepdim=True)
    span = x.amax(dim=(-2, -1), keepdim=True) - lo
    x = (x - lo) / torch.where(span > 0, span, torch.ones_like(span))
    if x.shape[-2:] != (size, size):
        x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False, antialias=True)
    return x.contiguous()


def slice_tensor(data: TaskData, size: int, rows: pd.DataFrame | None = None, chunk: int = 512) -> torch.Tensor:
    """The slices of ``rows`` (default: all samples) as (N, 1, size, size)."""
    rows = data.samples if rows is None else rows
    parts = [
        unit_resize(data.slices(rows.iloc[i:i + chunk]), size) for i in range(0, len(rows), chunk)
    ]
    return torch.cat(parts) if parts else torch.zeros((0, 1, size, size))


def subsample(rows: pd.DataFrame, max_n: int | None, seed: int) -> pd.DataFrame:
    """At most ``max_n`` rows, drawn without replacement (seeded); all rows if None."""
    if max_n is None or len(rows) <= max_n:
        return rows
    pick = np.sort(np.random.default_rng(seed).choice(len(rows), size=int(max_n), replace=False))
    return rows.iloc[pick]


def class_weights(y: np.ndarray, n_classes: int) -> torch.Tensor:
    """Inverse-frequency weights (scikit-learn's "balanced"); absent classes get 0."""
    counts = np.bincount(y, minlength=n_classes).astype(np.float64)
    w = np.where(counts > 0, len(y) / (n_classes * np.maximum(counts, 1)), 0.0)
    return torch.tensor(w, dtype=torch.float32)


def three_cuts(volume: np.ndarray, spacing_z: float, gap_mm: float = 30.0) -> np.ndarray:
    """Three axial slices ``gap_mm`` apart around the middle of the head (Valbuena et al.).

    The middle is the centre of the slices that contain head (foreground), so the cuts
    land on the brain whatever the field of view; cuts past the ends are clipped.
    """
    fg = np.flatnonzero(foreground_fraction(volume) >= 0.15)
    centre = int(round((fg[0] + fg[-1]) / 2)) if len(fg) else volume.shape[0] // 2
    step = max(1, int(round(gap_mm / max(spacing_z, 1e-6))))
    idx = np.clip([centre - step, centre, centre + step], 0, volume.shape[0] - 1)
    return np.stack([np.asarray(volume[i], dtype=np.float32) for i in idx])


def weights_file(ctx: FitContext, name: str) -> Path | None:
    """The local pretrained-weights file for baseline ``name`` (``--weights``), if any."""
    w = getattr(ctx, "weights", None) or {}
    return w.get(name) or w.get("*")


def label_codes(y: np.ndarray, classes: list[str]) -> np.ndarray:
    index = {c: i for i, c in enumerate(classes)}
    return np.array([index[str(v)] for v in y], dtype=np.int64)
