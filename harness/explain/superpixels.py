"""SLIC superpixel feature masks for the perturbation methods (Jin et al., MethodsX 2023).

Superpixels are computed once per case on the foreground only (the blank background
is one feature that is never perturbed apart from the rest), on all modalities at once
(they are co-registered), then given ids unique per modality so each modality's
superpixels are separate features: the heatmap can then differ between modalities.
"""

from __future__ import annotations

import numpy as np
import torch
from skimage.segmentation import slic


def foreground(x: np.ndarray, eps: float = 0.0) -> np.ndarray:
    """Where any modality is non-zero: (M, *spatial) -> bool (*spatial)."""
    return np.any(np.abs(x) > eps, axis=0)


def superpixel_labels(x: np.ndarray, n_segments: int = 24, compactness: float = 0.1,
                      seed_mask: np.ndarray | None = None) -> np.ndarray:
    """SLIC labels (1..K on the foreground, 0 on background) of a (M, *spatial) case."""
    fg = foreground(x) if seed_mask is None else seed_mask.astype(bool)
    if not fg.any():
        return np.zeros(x.shape[1:], dtype=np.int64)
    img = np.moveaxis(np.asarray(x, dtype=np.float64), 0, -1)  # channels last
    # Per-channel min-max over the foreground so no modality dominates the clustering.
    lo = np.array([img[..., m][fg].min() for m in range(img.shape[-1])])
    hi = np.array([img[..., m][fg].max() for m in range(img.shape[-1])])
    img = (img - lo) / np.where(hi > lo, hi - lo, 1.0)
    labels = slic(img, n_segments=int(n_segments), compactness=float(compactness), mask=fg,
                  channel_axis=-1, start_label=1, enforce_connectivity=True)
    return labels.astype(np.int64)


def modality_feature_mask(x: torch.Tensor, n_segments: int = 24, compactness: float = 0.1) -> torch.Tensor:
    """Captum ``feature_mask`` of x's shape (1, M, *spatial): one id per (modality, superpixel).

    Ids run 0..M*(K+1)-1: modality m's background is ``m*(K+1)`` and its superpixel k is
    ``m*(K+1)+k``, so no two modalities share a feature.
    """
    case = x.detach().cpu().numpy()[0]
    labels = superpixel_labels(case, n_segments, compactness)
    k = int(labels.max()) + 1
    m = case.shape[0]
    mask = np.stack([labels + i * k for i in range(m)])[None]
    return torch.as_tensor(mask, dtype=torch.long, device=x.device)
