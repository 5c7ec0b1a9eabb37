"""``enhancement_probe``: the honest positive control for grade classification.

Why it exists: when the published networks score at chance with patients held out, a
user must be able to tell "the paper's number was leakage" from "the harness cannot read
the grade". This control reads what the grade does to the images, the way a radiologist
would: enhancement (a bright rim on T1post from grade III, a ring round a necrotic core in
grade IV) and a sharper, brighter hyperintensity on FLAIR/T2. If it recovers the grade with
whole patients held out, the signal is there and a network that misses it is the network's
failing, not the data's; on a cohort without signal it must stay at chance.

Features are per patient and come only from that patient's own images in the set being
fitted or predicted: for every modality, the bright half of the patient's voxels (its
slices, or its volume), its upper percentiles relative to its median and the share of it
above fixed multiples of that median. A multinomial logistic regression (balanced classes,
standardised features) maps them to the grade; every sample of a patient gets the
patient's prediction. Missing modalities get the training mean.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from baselines.registry import Baseline, FitContext, register_baseline
from harness.tasks import TaskData


def bright_half(values: np.ndarray) -> tuple[np.ndarray, float]:
    """The voxels above the median (the head, not the air) and their median."""
    v = np.asarray(values, dtype=np.float32).ravel()
    if v.size == 0:
        return v, float("nan")
    head = v[v > np.median(v)]
    return head, (float(np.median(head)) if head.size else float("nan"))


def tail_features(values: np.ndarray, quantiles: list[float], thresholds: list[float]) -> dict[str, float]:
    """Upper percentiles of the bright half over its median, and the log share above k x median."""
    head, ref = bright_half(values)
    if head.size == 0 or not ref > 0:
        return {}
    feats = {f"p{q:g}": float(np.percentile(head, q) / ref) for q in quantiles}
    feats.update({f"above{t:g}": float(np.log1p(1e4 * np.mean(head > t * ref))) for t in thresholds})
    return feats


@register_baseline
class EnhancementProbe(Baseline):
    """Logistic regression of the grade on per-patient intensity-tail features."""

    name = "enhancement_probe"
    tasks = frozenset({"grading", "survival"})
    target_kinds = frozenset({"classification"})
    profiles = {
        "quick": {"quantiles": [99.0, 99.9, 99.99], "thresholds": [1.3, 1.6, 2.0], "C": 1.0},
        "paper": {"quantiles": [99.0, 99.9, 99.99], "thresholds": [1.3, 1.6, 2.0], "C": 1.0},
    }

    def _patient_features(self, data: TaskData) -> pd.DataFrame:
        quantiles = [float(q) for q in self.params["quantiles"]]
        thresholds = [float(t) for t in self.params["thresholds"]]
        samples = data.samples
        table: dict[str, dict[str, float]] = {}
        for (patient, modality), rows in samples.groupby(["patient_id", "modality"], sort=True):
            parts = []
            for image_id, image_rows in rows.groupby("image_id", sort=True):
                volume = np.asarray(data.volumes[str(image_id)])
                slices = image_rows["slice_index"].to_numpy(dtype=int) if "slice_index" in image_rows \
                    else np.empty(0, dtype=int)
                if volume.ndim == 3 and slices.size and (slices >= 0).all():  # -1: the sample is the volume
                    volume = volume[np.unique(slices)]
                parts.append(volume.ravel())
            feats = tail_features(np.concatenate(parts), quantiles, thresholds)
            table.setdefault(str(patient), {}).update({f"{modality}_{k}": v for k, v in feats.items()})
        patients = sorted(samples["patient_id"].astype(str).unique())
        return pd.DataFrame.from_dict(table, orient="index").reindex(index=patients)

    def fit(self, train: TaskData, val: TaskData | None, ctx: FitContext) -> "EnhancementProbe":
        from sklearn.linear_model import LogisticRegression

        feats = self._patient_features(train)
        self.columns_ = list(feats.columns)
        y = train.samples.assign(t=train.y.astype(str)).groupby("patient_id")["t"].agg(lambda t: t.mode().iloc[0])
        y = y.reindex(feats.index)
        self.fill_ = feats.mean().fillna(0.0)
        x = feats.fillna(self.fill_)
        self.mu_, self.sd_ = x.mean(), x.std(ddof=0).replace(0, 1.0).fillna(1.0)
        self.only_class_ = str(y.iloc[0]) if y.nunique() < 2 else None  # nothing to separate: predict it
        if self.only_class_ is not None:
            return self
        self.model_ = LogisticRegression(C=float(self.params["C"]), class_weight="balanced", max_iter=5000,
                                         random_state=ctx.seed)
        self.model_.fit(((x - self.mu_) / self.sd_).to_numpy(), y.to_numpy())
        return self

    def predict(self, data: TaskData) -> np.ndarray:
        if self.only_class_ is not None:
            return np.full(len(data.samples), self.only_class_, dtype=object)
        feats = self._patient_features(data).reindex(columns=self.columns_).fillna(self.fill_)
        labels = self.model_.predict(((feats - self.mu_) / self.sd_).to_numpy())
        pred = pd.Series(labels, index=feats.index)
        return pred.reindex(data.samples["patient_id"].astype(str)).to_numpy(dtype=object)
