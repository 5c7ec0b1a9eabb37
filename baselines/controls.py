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


class _ConstantRegressor(Baseline):
    """Predicts one statistic of the training target for every sample."""

    tasks = frozenset({"progression"})
    target_kinds = frozenset({"regression"})

    def statistic(self, y: np.ndarray) -> float:
        """The value predicted for every sample, from the training targets."""
        return float(np.mean(y))

    def fit(self, train: TaskData, val: TaskData | None, ctx: FitContext) -> "_ConstantRegressor":
        self.value_ = float(self.statistic(train.y.astype(float)))
        return self

    def predict(self, data: TaskData) -> np.ndarray:
        return np.full(len(data), self.value_, dtype=float)


@register_baseline
class MeanPredictor(_ConstantRegressor):
    """Predicts the training mean of the target."""

    name = "mean"


@register_baseline
class MedianPredictor(_ConstantRegressor):
    """Predicts the training median of the target (robust to a few long intervals)."""

    name = "median"

    def statistic(self, y: np.ndarray) -> float:
        return float(np.median(y))


@register_baseline
class PatientMemorizer(Baseline):
    """1-nearest-neighbour on the DWT-DCT features: succeeds only by recognising the patient.

    Its prediction is the target of the most similar training sample, which under a
    row-level split is almost always another row of the same patient. Under a
    patient-held-out split it has nobody to recognise, so the gap between the two is
    what memorisation alone is worth.
    """

    name = "patient_memorizer"
    tasks = frozenset({"grading", "progression", "survival"})
    profiles = {
        "quick": {"image_size": 128, "n_neighbors": 1, "min_foreground": 0.15},
        "paper": {"image_size": 256, "n_neighbors": 1, "min_foreground": 0.15},
    }

    def fit(self, train: TaskData, val: TaskData | None, ctx: FitContext) -> "PatientMemorizer":
        from sklearn.neighbors import KNeighborsClassifier, KNeighborsRegressor
        from sklearn.pipeline import make_pipeline
        from sklearn.preprocessing import StandardScaler

        self.cache_ = ctx.work_dir / "features" if ctx.work_dir else None
        k = min(int(self.params["n_neighbors"]), len(train))
        self.regression_ = train.target_kind == "regression"
        knn = KNeighborsRegressor(k) if self.regression_ else KNeighborsClassifier(k)
        self.model_ = make_pipeline(StandardScaler(), knn)
        y = train.y.astype(float) if self.regression_ else train.y.astype(str)
        self.model_.fit(self._features(train), y)
        return self

    def predict(self, data: TaskData) -> np.ndarray:
        out = self.model_.predict(self._features(data))
        return out.astype(float) if self.regression_ else out.astype(object)

    def _features(self, data: TaskData) -> np.ndarray:
        from harness.features.dwtdct import DwtDctConfig
        from harness.features.series import sample_dwtdct

        config = DwtDctConfig(image_size=int(self.params["image_size"]))
        return sample_dwtdct(data, self.cache_, config, float(self.params["min_foreground"]))
