"""Trivial predictors every model must beat: the majority class and the mean.

They ignore the images entirely, so under any honest split their score is what
"no information" looks like.
"""

from __future__ import annotations

import numpy as np

from baselines.registry import Baseline, FitContext, register_baseline
from harness.tasks import TaskData


@register_baseline
class MajorityClass(Baseline):
    """Predicts the most frequent training class (ties: the first in ``classes`` order)."""

    name = "majority"
    tasks = frozenset({"grading", "survival"})
    target_kinds = frozenset({"classification"})

    def fit(self, train: TaskData, val: TaskData | None, ctx: FitContext) -> "MajorityClass":
        classes = train.classes or sorted(set(train.y))
        counts = {c: int(np.sum(train.y == c)) for c in classes}
        self.majority_ = max(classes, key=lambda c: counts[c])
        return self

    def predict(self, data: TaskData) -> np.ndarray:
        return np.full(len(data), self.majority_, dtype=object)


@register_baseline
class MeanPredictor(Baseline):
    """Predicts the training mean of the target."""

    name = "mean"
    tasks = frozenset({"progression", "survival_days"})
    target_kinds = frozenset({"regression"})

    def fit(self, train: TaskData, val: TaskData | None, ctx: FitContext) -> "MeanPredictor":
        self.mean_ = float(np.mean(train.y.astype(float)))
        return self

    def predict(self, data: TaskData) -> np.ndarray:
        return np.full(len(data), self.mean_, dtype=float)
