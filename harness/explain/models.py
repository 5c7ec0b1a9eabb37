"""The default models to explain: a small multi-modal CNN (2D slices or 3D volumes).

The registered torch baselines are explained through their adapters
(:mod:`harness.explain.baselines`); without one the ``explain`` command trains this one
(seeded, CPU, seconds). Its layout suits
every Captum method: separate ``nn.ReLU`` modules (DeepLift, Guided Backprop and
Deconvolution hook them; a reused or in-place ReLU breaks them), a last convolution for
Grad-CAM, and an ordered list of parametrised layers for cascading randomisation.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Iterator

import numpy as np
import torch
from torch import nn

from harness.errors import HarnessError
from harness.training.engine import Batch, Engine, EpochStats, sample_mean_float64


class MultiModalCNN(nn.Module):
    """Modalities stacked as channels -> three conv blocks -> global max pool -> class logits.

    Global max pooling: the grade shows in a small part of the image (the tumour core),
    which an average over the whole slice would dilute."""

    def __init__(self, in_channels: int = 4, n_classes: int = 2, width: int = 16, dims: int = 2) -> None:
        super().__init__()
        if dims not in (2, 3):
            raise HarnessError(f"MultiModalCNN supports 2D or 3D input, not {dims}D")
        conv = nn.Conv2d if dims == 2 else nn.Conv3d
        pool = nn.MaxPool2d if dims == 2 else nn.MaxPool3d
        gap = nn.AdaptiveMaxPool2d if dims == 2 else nn.AdaptiveMaxPool3d
        self.dims = dims
        self.features = nn.Sequential(
            conv(in_channels, width, 3, padding=1), nn.ReLU(), pool(2),
            conv(width, 2 * width, 3, padding=1), nn.ReLU(), pool(2),
            conv(2 * width, 2 * width, 3, padding=1), nn.ReLU(),
        )
        self.pool = nn.Sequential(gap(1), nn.Flatten())
        self.classifier = nn.Linear(2 * width, n_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.pool(self.features(x)))


def multimodal_cnn(in_channels: int, n_classes: int) -> nn.Module:
    return MultiModalCNN(in_channels, n_classes, dims=2)


def multimodal_cnn3d(in_channels: int, n_classes: int) -> nn.Module:
    return MultiModalCNN(in_channels, n_classes, width=8, dims=3)


@dataclass(frozen=True)
class ModelSpec:
    """A model the explain command can build and train itself."""

    name: str
    dims: int
    build: Callable[[int, int], nn.Module]
    description: str


MODELS: dict[str, ModelSpec] = {
    "multimodal_cnn": ModelSpec("multimodal_cnn", 2, multimodal_cnn,
                                "3-block 2D CNN on stacked T1/T1post/T2/FLAIR slices"),
    "multimodal_cnn3d": ModelSpec("multimodal_cnn3d", 3, multimodal_cnn3d,
                                  "3-block 3D CNN on stacked T1/T1post/T2/FLAIR volumes"),
}


def get_model_spec(name: str) -> ModelSpec:
    if name not in MODELS:
        raise HarnessError(f"unknown explain model {name!r}; known: {', '.join(MODELS)}")
    return MODELS[name]


@dataclass
class TrainResult:
    model: nn.Module
    history: list[dict[str, float]] = field(default_factory=list)


@dataclass
class FlipBatches:
    """Shuffled batches; with ``augment`` each spatial axis is flipped with probability 1/2
    per batch (a fresh permutation per epoch, then one draw per axis per batch: this RNG
    call order is what keeps a seed's weights)."""

    x: torch.Tensor
    y: torch.Tensor
    batch_size: int
    augment: bool
    rng: np.random.Generator

    def batches(self, epoch: int) -> Iterator[Batch]:
        order = self.rng.permutation(len(self.x))
        spatial = tuple(range(2, self.x.dim()))
        for start in range(0, len(order), self.batch_size):
            idx = torch.as_tensor(order[start:start + self.batch_size])
            xb, yb = self.x[idx], self.y[idx]
            if self.augment:
                for d in spatial:
                    if self.rng.random() < 0.5:
                        xb = torch.flip(xb, dims=(d,))
            yield (xb,), yb


def _record(stats: EpochStats) -> dict[str, Any]:
    return {"epoch": float(stats.epoch), "loss": stats.train_loss}


def train_classifier(model: nn.Module, x: np.ndarray, y: np.ndarray, *, epochs: int = 30, lr: float = 3e-3,
                     batch_size: int = 16, seed: int = 0, weight_decay: float = 1e-4,
                     augment: bool = True) -> TrainResult:
    """Seeded full-batch-ish Adam training on CPU; flips as augmentation (tumours sit anywhere).

    Classes are balanced by loss weights so a small cohort's majority class cannot win by default.
    The last epoch is kept (no validation split here). Seeds torch only, not python's or
    numpy's global RNGs: code run after training may draw from those.
    """
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    xt = torch.as_tensor(x, dtype=torch.float32)
    yt = torch.as_tensor(y, dtype=torch.long)
    counts = np.bincount(y, minlength=int(y.max()) + 1).astype(np.float64)
    weights = torch.as_tensor(counts.sum() / np.maximum(counts, 1) / len(counts), dtype=torch.float32)
    opt = torch.optim.Adam(model.parameters(), lr=lr, weight_decay=weight_decay)
    engine = Engine(loss_fn=nn.CrossEntropyLoss(weight=weights), epochs=epochs,
                    reduce_loss=sample_mean_float64, record=_record)
    history = engine.fit(model, FlipBatches(xt, yt, batch_size, augment, rng), opt)
    return TrainResult(model, history)


@torch.no_grad()
def predict_proba(model: nn.Module, x: np.ndarray | torch.Tensor, batch_size: int = 64) -> np.ndarray:
    model.eval()
    xt = torch.as_tensor(x, dtype=torch.float32)
    out = [torch.softmax(model(xt[i:i + batch_size]), dim=1) for i in range(0, len(xt), batch_size)]
    return torch.cat(out).numpy()
