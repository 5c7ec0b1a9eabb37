"""The clinical table alone: what the inputs fused beside the image say without it.

Valbuena et al. concatenate age and extent of resection to the pooled image features.
In BraTS 2020 the survival table (age, survival, resection) has rows for HGG patients
only; the paper fills LGG ages at random, and the resection field stays empty for every
LGG patient. An empty field then points to LGG whatever the split: the label leaks
through which fields are missing, not through the images. ``clinical_only`` measures
that leak, so an audit can tell a fused model's honest score from the table's.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from baselines.registry import Baseline, FitContext, labels_from_proba, register_baseline
from harness.errors import HarnessError
from harness.tasks import TaskData

#: Extent of resection levels one-hot encoded; "NA" (not given) is neither.
RESECTION_LEVELS = ("GTR", "STR")


@dataclass
class ClinicalEncoding:
    """Age standardised on the training rows (missing: 0 plus a flag) and extent of
    resection one-hot (GTR, STR): four columns per row."""

    age_mu: float = 0.0
    age_sd: float = 1.0

    @classmethod
    def fit(cls, rows: pd.DataFrame) -> "ClinicalEncoding":
        age = _ages(rows)
        known = age[np.isfinite(age)]
        if not len(known):
            return cls()
        return cls(float(known.mean()), float(known.std()) + 1e-6)

    def transform(self, rows: pd.DataFrame) -> np.ndarray:
        age = _ages(rows)
        missing = ~np.isfinite(age)
        z = np.where(missing, 0.0, (age - self.age_mu) / self.age_sd)
        eor = rows.get("extent_of_resection", pd.Series(["NA"] * len(rows))).astype(str).to_numpy()
        cols = [z, missing.astype(float)] + [(eor == level).astype(float) for level in RESECTION_LEVELS]
        return np.stack(cols, axis=1) if len(rows) else np.zeros((0, 2 + len(RESECTION_LEVELS)))


def _ages(rows: pd.DataFrame) -> np.ndarray:
    return pd.to_numeric(rows["age"], errors="coerce").to_numpy(dtype=float)


@register_baseline
class ClinicalOnly(Baseline):
    """Balanced logistic regression on the clinical encoding alone (no image)."""

    name = "clinical_only"
    tasks = frozenset({"survival"})
    target_kinds = frozenset({"classification"})
    profiles = {"quick": {"C": 1.0}, "paper": {"C": 1.0}}

    def fit(self, train: TaskData, val: TaskData | None, ctx: FitContext) -> "ClinicalOnly":
        from sklearn.linear_model import LogisticRegression

        if "age" not in train.samples.columns:
            raise HarnessError(f"{self.name} needs a clinical table (age, extent of resection); "
                               f"task {train.task!r} has none")
        self.encoding_ = ClinicalEncoding.fit(train.samples)
        y = train.y.astype(str)
        self.classes_ = sorted(set(y))
        if len(self.classes_) < 2:  # nothing to separate: the one class, with certainty
            return self
        self.model_ = LogisticRegression(C=float(self.params["C"]), class_weight="balanced", max_iter=5000,
                                         random_state=ctx.seed)
        self.model_.fit(self.encoding_.transform(train.samples), y)
        self.classes_ = list(self.model_.classes_)
        return self

    def predict_proba(self, data: TaskData) -> np.ndarray:
        if len(self.classes_) < 2:
            return np.ones((len(data), 1))
        return self.model_.predict_proba(self.encoding_.transform(data.samples))

    def predict(self, data: TaskData) -> np.ndarray:
        return labels_from_proba(self.classes_, self.predict_proba(data))
