"""Scores of a heatmap method (Jin et al., MedIA 2023, and the usual sanity checks).

- :func:`modality_shapley`: exact Shapley values of the modalities (2^M subsets, absent
  modalities set to the reference), the ground truth for modality importance (MI).
- :func:`modality_attribution` / :func:`mi_correlation`: a method's own per-modality
  importance and its Kendall tau-b with the Shapley MI.
- :func:`msfi`: modality-specific feature importance: per modality, the share of positive
  attribution inside the (dilated) tumour mask, weighted by normalised MI.
- :func:`localisation`: energy inside the mask and the pointing game.
- :func:`deletion_curve`: target probability as the highest-ranked inputs are deleted.
- :func:`cascading_randomisation`: rank similarity of maps as layers are re-initialised
  from the top; a method whose maps barely change does not depend on the model.
- :func:`completeness_error`: |sum(IG) - (f(x) - f(x0))| relative to f(x) - f(x0).
"""

from __future__ import annotations

import copy
import itertools
import math
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import torch
from scipy import ndimage, stats
from torch import nn


def target_prob(model: nn.Module, x: torch.Tensor, target: int, batch_size: int = 64) -> np.ndarray:
    """Softmax probability of ``target`` for each row of ``x`` (no grad)."""
    out = []
    with torch.no_grad():
        for i in range(0, len(x), batch_size):
            out.append(torch.softmax(model(x[i:i + batch_size]), dim=1)[:, target])
    return torch.cat(out).cpu().numpy().astype(np.float64)


def target_logit(model: nn.Module, x: torch.Tensor, target: int) -> float:
    with torch.no_grad():
        return float(model(x)[0, target])


def modality_shapley(model: nn.Module, x: torch.Tensor, target: int, baseline_value: float = 0.0
                     ) -> np.ndarray:
    """Exact Shapley value of each modality for the target probability.

    v(S) = p(target | modalities outside S set to ``baseline_value``); all 2^M subsets in
    one batch, so this is exact and cheap for the usual four modalities.
    """
    m = int(x.shape[1])
    subsets = list(itertools.product((0, 1), repeat=m))
    keep = torch.tensor(subsets, dtype=x.dtype, device=x.device).view(len(subsets), m, *([1] * (x.dim() - 2)))
    batch = x * keep + float(baseline_value) * (1 - keep)
    v = dict(zip(subsets, target_prob(model, batch, target)))
    phi = np.zeros(m)
    for s in subsets:
        size = sum(s)
        for i in range(m):
            if s[i]:
                continue
            weight = math.factorial(size) * math.factorial(m - size - 1) / math.factorial(m)
            with_i = tuple(1 if j == i else s[j] for j in range(m))
            phi[i] += weight * (v[with_i] - v[s])
    return phi


def normalised_importance(mi: np.ndarray) -> np.ndarray:
    """MI clipped at zero and scaled to sum 1 (uniform when nothing is positive)."""
    pos = np.clip(np.asarray(mi, dtype=np.float64), 0, None)
    total = pos.sum()
    return pos / total if total > 0 else np.full(len(pos), 1.0 / len(pos))


def modality_attribution(attr: np.ndarray) -> np.ndarray:
    """A method's importance of each modality: the sum of its positive attribution there."""
    a = np.asarray(attr, dtype=np.float64)
    return np.clip(a, 0, None).reshape(a.shape[0], -1).sum(axis=1)


def mi_correlation(mi: np.ndarray, method_mi: np.ndarray) -> float:
    """Kendall tau-b between Shapley MI and a method's per-modality importance (NaN on ties-only)."""
    if np.ptp(method_mi) == 0 or np.ptp(mi) == 0:
        return float("nan")
    return float(stats.kendalltau(mi, method_mi).statistic)


def dilate(mask: np.ndarray, iterations: int) -> np.ndarray:
    mask = np.asarray(mask, dtype=bool)
    return ndimage.binary_dilation(mask, iterations=int(iterations)) if iterations > 0 and mask.any() else mask


def msfi(attr: np.ndarray, mask: np.ndarray, mi: np.ndarray) -> float:
    """Modality-specific feature importance (Jin et al., MedIA 2023), in [0, 1].

    MSFI = sum_m MI_m * (sum_{x in mask} S_m(x)^+ / sum_x S_m(x)^+) / sum_m MI_m, with S_m
    the heatmap of modality m and MI the (non-negative) modality importance. A method
    scores high when it puts its positive evidence on the tumour in the modalities that
    matter. A modality with no positive attribution contributes 0.
    """
    w = normalised_importance(mi)
    pos = np.clip(np.asarray(attr, dtype=np.float64), 0, None)
    inside = np.asarray(mask, dtype=bool)
    shares = []
    for m in range(pos.shape[0]):
        total = pos[m].sum()
        shares.append(pos[m][inside].sum() / total if total > 0 else 0.0)
    return float(np.dot(w, shares))


def localisation(attr: np.ndarray, mask: np.ndarray) -> tuple[float, float]:
    """(energy inside the mask, pointing game hit) of the modality-summed positive map."""
    agg = np.clip(np.asarray(attr, dtype=np.float64).sum(axis=0), 0, None)
    inside = np.asarray(mask, dtype=bool)
    total = agg.sum()
    energy = float(agg[inside].sum() / total) if total > 0 else 0.0
    hit = float(inside.flat[int(np.argmax(agg))]) if total > 0 else 0.0
    return energy, hit


def deletion_curve(model: nn.Module, x: torch.Tensor, target: int, attr: np.ndarray, steps: int = 16,
                   baseline_value: float = 0.0, order: np.ndarray | None = None) -> tuple[np.ndarray, float]:
    """Target probability as the top-ranked inputs (modality x pixel) are set to the reference.

    Returns the curve (steps + 1 points, from nothing to everything deleted) and its area
    (mean of the trapezoids, in [0, 1]): lower means the map found what the model uses.
    ``order`` overrides the ranking (e.g. a random one, the chance reference).
    """
    flat = x.detach().reshape(-1)
    n = flat.numel()
    rank = np.argsort(-np.asarray(attr, dtype=np.float64).reshape(-1), kind="stable") if order is None else order
    counts = np.linspace(0, n, steps + 1).round().astype(int)
    batch = flat.repeat(steps + 1, 1)
    idx = torch.as_tensor(rank.copy(), dtype=torch.long)
    for k, c in enumerate(counts):
        batch[k, idx[:c]] = float(baseline_value)
    probs = target_prob(model, batch.view(steps + 1, *x.shape[1:]), target)
    area = float(np.sum((probs[1:] + probs[:-1]) / 2.0) / steps)  # trapezoids on [0, 1]
    return probs, area


def random_deletion_auc(model: nn.Module, x: torch.Tensor, target: int, steps: int = 16,
                        baseline_value: float = 0.0, seed: int = 0) -> float:
    """The chance reference for the deletion area: a random ranking."""
    order = np.random.default_rng(seed).permutation(x.numel())
    return deletion_curve(model, x, target, np.zeros(x.shape[1:]), steps, baseline_value, order)[1]


def randomisable_layers(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """Layers with their own weights, top (output side) first: the cascade's order."""
    layers = [(n, m) for n, m in model.named_modules()
              if any(True for _ in m.parameters(recurse=False)) and hasattr(m, "reset_parameters")]
    return layers[::-1]


def rank_similarity(a: np.ndarray, b: np.ndarray) -> float:
    """Spearman correlation of |a| and |b| (Adebayo et al.'s measure); 1.0 when one is constant."""
    a = np.abs(np.asarray(a, dtype=np.float64)).ravel()
    b = np.abs(np.asarray(b, dtype=np.float64)).ravel()
    if np.ptp(a) == 0 or np.ptp(b) == 0:
        return 1.0 if np.ptp(a) == np.ptp(b) else 0.0
    return float(stats.spearmanr(a, b).statistic)


@dataclass
class RandomisationResult:
    """Similarity to the original map after randomising each successive layer (top first)."""

    layers: list[str]
    similarity: list[float]
    threshold: float
    final: float = field(init=False)
    passed: bool = field(init=False)

    def __post_init__(self) -> None:
        self.final = self.similarity[-1] if self.similarity else float("nan")
        self.passed = bool(self.similarity) and self.final < self.threshold


def cascading_randomisation(model: nn.Module, x: torch.Tensor, target: int,
                            explain: Callable[[nn.Module], np.ndarray], original: np.ndarray,
                            threshold: float = 0.5, seed: int = 0) -> RandomisationResult:
    """Re-initialise layers cumulatively from the top, re-explain, compare with ``original``.

    ``explain(model) -> map`` runs the method on a (copied, randomised) model. The model
    given is never changed.
    """
    work = copy.deepcopy(model).eval()
    names, sims = [], []
    torch.manual_seed(seed)
    for name, layer in randomisable_layers(work):
        layer.reset_parameters()  # type: ignore[operator]  # every randomisable layer has it
        names.append(name)
        sims.append(rank_similarity(original, explain(work)))
    return RandomisationResult(names, sims, threshold)


def completeness_error(model: nn.Module, x: torch.Tensor, target: int, attr: np.ndarray,
                       baseline_value: float = 0.0) -> float:
    """|sum(attr) - (f(x) - f(x0))| / |f(x) - f(x0)| on the target logit (IG's axiom)."""
    fx = target_logit(model, x, target)
    f0 = target_logit(model, torch.full_like(x, float(baseline_value)), target)
    gap = fx - f0
    err = abs(float(np.sum(attr, dtype=np.float64)) - gap)
    return err / abs(gap) if abs(gap) > 1e-12 else err
