"""How a registered torch baseline hands the explain engine its fitted model.

A baseline that can be explained has a method ``explain_adapter(modalities, dims)``
returning an :class:`ExplainAdapter`: a ``torch.nn.Module`` taking the *explained
input* (B, M, *spatial) and returning class scores (B, C), the names of the M
modalities it consumes, the class names, and ``prepare``, which turns the explain
cohort's case arrays (N, M_all, H, W) or (N, M_all, D, H, W) into that input (picking
the modalities by name, then applying the baseline's own input pipeline). The engine
then explains the module like any other: one heatmap per modality.

The wrappers here keep every baseline's layers used once per forward pass (Captum's
DeepLift and Guided Backprop hook each activation module and refuse one reused), and
turn in-place activations off on a copy of the model (hooks on in-place outputs fail).
The baseline's own model is never changed.

- :class:`PerModality`: a single-modality model (one grey slice, three cuts, one
  series) applied to every modality channel, the logits averaged: the modalities
  ride in the batch dimension, so each layer runs once.
- :class:`FixedTabular`: a model that also takes tabular inputs, with them held at zero
  (the training mean after standardisation; no resection flag).
- :class:`SeriesWindows`: a sequence model over a series' feature rows, read in the
  baseline's windows whose logits are averaged (as its ``predict`` does).
- :class:`SegmentationScore`: a segmentation network reduced to one scalar score (two
  "classes": none, and the region) so class-score methods apply.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from harness.errors import HarnessError

DEFAULT_MODALITIES: tuple[str, ...] = ("T1", "T1post", "T2", "FLAIR")


@dataclass
class ExplainAdapter:
    """A fitted torch model as the explain engine takes it.

    ``module``: explained input (B, M, *spatial) -> scores (B, len(classes)).
    ``prepare_fn``: case arrays of the chosen modalities (N, M, *case spatial) -> the
    explained input. ``prepare_mask_fn``: case masks (N, *case spatial), with the case
    arrays, -> masks on the explained grid (None: no pixel mask applies, e.g. features).
    ``kind``: "pixels" (heatmaps over image voxels) or "features" (over a feature
    sequence: slice x coefficient). ``dims``: spatial dims of the case arrays it takes.
    """

    module: nn.Module
    modalities: list[str]
    classes: list[str]
    dims: int
    prepare_fn: Callable[[np.ndarray], torch.Tensor]
    description: str = ""
    kind: str = "pixels"
    prepare_mask_fn: Callable[[np.ndarray, np.ndarray], np.ndarray | None] | None = None
    #: The case-level target to explain, when it is not the case's class (segmentation: 1).
    fixed_target: int | None = None
    notes: list[str] = field(default_factory=list)

    def select(self, x: np.ndarray, modalities: Sequence[str] | None = None) -> np.ndarray:
        """The channels of ``x`` (named ``modalities``, default T1/T1post/T2/FLAIR) this adapter reads."""
        names = list(modalities or DEFAULT_MODALITIES)
        missing = [m for m in self.modalities if m not in names]
        if missing:
            raise HarnessError(f"the model reads {self.modalities}; the cases lack {missing} (have {names})")
        idx = [names.index(m) for m in self.modalities]
        return np.asarray(x)[:, idx]

    def prepare(self, x: np.ndarray, modalities: Sequence[str] | None = None) -> torch.Tensor:
        """Case arrays (N, M_all, *spatial) -> the explained input (N, M, *explained spatial)."""
        x = np.asarray(x, dtype=np.float32)
        if x.ndim != self.dims + 2:
            raise HarnessError(f"this model explains {self.dims}D cases (N, M, {'D, ' if self.dims == 3 else ''}"
                               f"H, W); got an array of shape {x.shape}")
        out = self.prepare_fn(self.select(x, modalities))
        return out.detach().float().contiguous()

    def prepare_mask(self, mask: np.ndarray | None, x: np.ndarray,
                     modalities: Sequence[str] | None = None) -> np.ndarray | None:
        """Tumour masks on the explained grid, or None where no pixel mask applies."""
        if mask is None or self.kind != "pixels":
            return None
        if self.prepare_mask_fn is None:
            return np.asarray(mask, dtype=bool)
        return self.prepare_mask_fn(np.asarray(mask, dtype=bool), self.select(np.asarray(x), modalities))


def without_inplace(model: nn.Module) -> nn.Module:
    """A copy of ``model`` in eval mode with every in-place activation made out-of-place."""
    work = copy.deepcopy(model).eval()
    for m in work.modules():
        if getattr(m, "inplace", False) is True:
            m.inplace = False  # type: ignore[assignment]
    for p in work.parameters():
        p.requires_grad_(False)
    return work


class PerModality(nn.Module):
    """A single-modality model on each of M modality channels; logits averaged over them.

    Input (B, M, *rest) -> model((B*M, *rest), with a channel axis added when
    ``add_channel``) -> (B*M, C) -> mean over M -> (B, C). With M = 1 it is the model.
    """

    def __init__(self, model: nn.Module, add_channel: bool = True) -> None:
        super().__init__()
        self.model = model
        self.add_channel = add_channel

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, m = x.shape[:2]
        flat = x.reshape(b * m, *x.shape[2:])
        if self.add_channel:
            flat = flat.unsqueeze(1)
        out = self.model(flat)
        return out.view(b, m, -1).mean(dim=1)


class FixedTabular(nn.Module):
    """``net(x, tab)`` with ``tab`` zeros of width ``n_tab`` (standardised mean, no flags)."""

    def __init__(self, net: nn.Module, n_tab: int) -> None:
        super().__init__()
        self.net = net
        self.n_tab = int(n_tab)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x, x.new_zeros((x.shape[0], self.n_tab)))


class SeriesWindows(nn.Module):
    """A sequence classifier over (B, L, F) windows, applied to a whole (B, D, F) series.

    ``windows(D)`` gives the index windows (the baseline's own); their logits are averaged.
    """

    def __init__(self, model: nn.Module, windows: Callable[[int], list[np.ndarray]]) -> None:
        super().__init__()
        self.model = model
        self.windows = windows

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        idx = torch.as_tensor(np.stack(self.windows(int(x.shape[1]))), dtype=torch.long, device=x.device)
        w, length = idx.shape
        seqs = x[:, idx.reshape(-1)].reshape(x.shape[0] * w, length, x.shape[2])
        return self.model(seqs).view(x.shape[0], w, -1).mean(dim=1)


class SegmentationScore(nn.Module):
    """Segmentation logits (B, R, *spatial) -> (B, 2) scores [0, s] for one region channel.

    S = softplus(the region's logit) summed over the volume: the logit summed over the
    predicted voxels (logit > 0, p > 0.5), smoothed so a region not (yet) predicted still
    has a gradient; each clearly negative voxel adds almost nothing. With K = 1% of the volume's voxels (in logit
    units), s = log(S / K + 1e-3), so the target probability sigmoid(s) = S / (S + K) (up
    to the 1e-3): near 0 when nothing is predicted, 0.5 when S = K, near 1 for a large
    confident region; it neither saturates at one voxel nor grows with the grid.
    """

    def __init__(self, model: nn.Module, channel: int) -> None:
        super().__init__()
        self.model = model
        self.channel = int(channel)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logit = self.model(x)[:, self.channel]
        ratio = 100.0 * F.softplus(logit).flatten(1).mean(dim=1)  # S / K
        s = torch.log(ratio + 1e-3)
        return torch.stack([torch.zeros_like(s), s], dim=1)


def resize_masks(mask: np.ndarray, size: tuple[int, ...]) -> np.ndarray:
    """(N, *spatial) bool -> (N, *size) bool, nearest neighbour."""
    if tuple(mask.shape[1:]) == tuple(size):
        return mask.astype(bool)
    t = torch.as_tensor(mask.astype(np.float32))[:, None]
    return (F.interpolate(t, size=size, mode="nearest")[:, 0] > 0.5).numpy()
