"""Logistic regression on DWT-DCT slice features: the classical control for grading.

It sees exactly the features the published LSTM pipelines see, so the gap between it and
them is what the sequence model adds. Standardisation is fit on training rows only.
"""

from __future__ import annotations

from functools import partial

import numpy as np
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from baselines.registry import Baseline, FitContext, labels_from_proba, register_baseline
from harness.features.dwtdct import DwtDctConfig, dwtdct_features
from harness.features.store import FeatureStore
from harness.tasks import TaskData


def dwtdct_config_from(params: dict) -> DwtDctConfig:
    keys = DwtDctConfig.__dataclass_fields__.keys()
    return DwtDctConfig(**{k: params[k] for k in keys if k in params})


@register_baseline
class LogRegDwtDct(Baseline):
    """Logistic regression on per-slice DWT-DCT features (scaler fit on training rows)."""

    name = "logreg_dwtdct"
    tasks = frozenset({"grading"})
    target_kinds = frozenset({"classification"})
    profiles = {
        # The paper resizes to 256x256; the quick profile halves it for CPU runs.
        "quick": {"image_size": 128, "C": 1.0, "max_iter": 2000, "class_weight": "balanced"},
        "paper": {"image_size": 256, "C": 1.0, "max_iter": 5000, "class_weight": "balanced"},
    }

    def fit(self, train: TaskData, val: TaskData | None, ctx: FitContext) -> "LogRegDwtDct":
        self.features_ = FeatureStore(ctx.work_dir / "features" if ctx.work_dir else None)
        x = self._features(train)
        self.model_ = make_pipeline(
            StandardScaler(),
            LogisticRegression(
                C=float(self.params["C"]),
                max_iter=int(self.params["max_iter"]),
                class_weight=self.params.get("class_weight"),
                random_state=ctx.seed,
            ),
        )
        self.model_.fit(x, train.y.astype(str))
        self.classes_ = list(self.model_.classes_)
        return self

    def predict_proba(self, data: TaskData) -> np.ndarray:
        return self.model_.predict_proba(self._features(data))

    def predict(self, data: TaskData) -> np.ndarray:
        return labels_from_proba(self.classes_, self.predict_proba(data))

    def _features(self, data: TaskData) -> np.ndarray:
        config = dwtdct_config_from(self.params)
        return self.features_.matrix(
            data, "dwtdct", config.to_dict(), partial(dwtdct_features, config=config)
        )
