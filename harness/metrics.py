"""Metrics with patient-level (cluster) bootstrap confidence intervals.

Slices or images of one patient are not independent, so a row bootstrap gives falsely
narrow intervals. Here every replicate resamples *patients* with replacement inside
each fold's test set (a stratified cluster bootstrap). To make 1000 replicates cheap,
each metric is computed from per-patient sufficient statistics: a confusion matrix per
patient for classification, (n, sum|e|, sum e^2, sum y, sum y^2) for regression. A
replicate is then a patient-count vector times those statistics.

Point estimates equal scikit-learn's (``accuracy_score``, ``balanced_accuracy_score``,
``f1_score(average="macro", labels=classes, zero_division=0)``, ``mean_absolute_error``,
``root_mean_squared_error``, ``r2_score``).

Patient-level metrics (``patient_accuracy``, ``patient_balanced_accuracy``,
``patient_macro_f1``) first reduce each patient's test rows of a fold to one prediction,
against the patient's true label (its most frequent label if the rows disagree; ties: the
first tied class in class order):

- when the rows carry class probabilities (``proba:<class>`` columns, written for every
  model with ``predict_proba``), the class of highest mean probability over the rows
  (scikit-learn's soft voting);
- otherwise a vote: the most frequent predicted class (same tie rule).

Why: with every head slice sampled most slices show no tumour, which caps slice-level
scores even for a perfect reader of tumour slices; a clinician grades the patient. The
mean probability lets a few confident tumour slices outweigh many unsure tumour-free
ones, which a vote of labels cannot. Each patient is then one confusion-matrix entry,
so the same patient bootstrap applies.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Sequence

import numpy as np
import pandas as pd

from harness.errors import HarnessError

#: Row-level classification metrics (each equal to scikit-learn's on the rows).
CLASSIFICATION_METRICS: tuple[str, ...] = ("accuracy", "balanced_accuracy", "macro_f1")
#: One vote per patient and fold, scored like the row metric of the same name.
PATIENT_METRICS: tuple[str, ...] = tuple(f"patient_{m}" for m in CLASSIFICATION_METRICS)
#: Every metric computed from confusion matrices (row and patient level).
CONFUSION_METRICS: tuple[str, ...] = CLASSIFICATION_METRICS + PATIENT_METRICS
REGRESSION_METRICS: tuple[str, ...] = ("mae", "rmse", "r2")
FOLD_COLUMNS: tuple[str, ...] = ("patient_id", "y_true", "y_pred")
#: Prefix of a predictions column holding one class's probability, e.g. ``proba:IV``.
PROBA_PREFIX = "proba:"
SOFT_VOTE_NOTE = "patient prediction: the class of highest mean probability over the patient's rows"
VOTE_NOTE = "patient prediction: a vote of the patient's row labels (the model gives no probabilities)"


@dataclass
class MetricEstimate:
    """A metric's mean over folds with its 95% patient-bootstrap CI and sample sizes."""

    metric: str
    mean: float
    ci95: tuple[float, float]
    n_patients: int
    n_samples: int
    n_folds: int
    fold_values: list[float] = field(default_factory=list)
    #: Caveats of the estimate (e.g. patients whose rows carry different labels).
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        """JSON-ready dict (for summary.json)."""
        d = asdict(self)
        d["ci95"] = list(self.ci95)
        return d


# --------------------------------------------------------------------------- metric kernels
# Each kernel takes statistics with any leading batch shape and returns that shape.


def _check_name(name: str) -> None:
    if name not in CONFUSION_METRICS + REGRESSION_METRICS:
        known = ", ".join(CONFUSION_METRICS + REGRESSION_METRICS)
        raise HarnessError(f"unknown metric {name!r}; known metrics: {known}")


def _from_confusion(name: str, cm: np.ndarray) -> np.ndarray:
    """Classification metric from confusion matrices (..., C, C), rows = true class."""
    name = name.removeprefix("patient_")  # patient metrics: the same kernel on patient votes
    tp = np.diagonal(cm, axis1=-2, axis2=-1)
    support = cm.sum(axis=-1)
    predicted = cm.sum(axis=-2)
    with np.errstate(invalid="ignore", divide="ignore"):
        if name == "accuracy":
            return tp.sum(axis=-1) / support.sum(axis=-1)
        if name == "balanced_accuracy":
            # sklearn: mean recall over classes that occur in y_true
            present = support > 0
            recall = np.where(present, tp / np.where(present, support, 1), 0.0)
            return recall.sum(axis=-1) / present.sum(axis=-1)
        # macro F1 over all given classes; 0/0 -> 0 (sklearn zero_division=0)
        denom = support + predicted
        f1 = np.where(denom > 0, 2 * tp / np.where(denom > 0, denom, 1), 0.0)
        return f1.mean(axis=-1)


def _from_regression_stats(name: str, stats: np.ndarray) -> np.ndarray:
    """Regression metric from summed stats (..., 5): n, sum|e|, sum e^2, sum y, sum y^2.

    ``y`` should be centred (by the fold mean) so sum y^2 - (sum y)^2/n stays accurate.
    """
    n, abs_e, sq_e, sy, syy = np.moveaxis(stats, -1, 0)
    with np.errstate(invalid="ignore", divide="ignore"):
        if name == "mae":
            return abs_e / n
        if name == "rmse":
            return np.sqrt(sq_e / n)
        sst = np.maximum(syy - sy**2 / n, 0.0)
        r2 = 1.0 - sq_e / np.where(sst > 0, sst, 1.0)
        # sklearn force_finite: constant y_true -> 1 if perfect else 0
        return np.where(sst > 0, r2, np.where(sq_e > 0, 0.0, 1.0))


# --------------------------------------------------------------------------- statistics


def _class_index(values: np.ndarray, classes: np.ndarray) -> np.ndarray:
    """Map labels to positions in ``classes``; unknown labels are an input error."""
    idx = pd.Index(classes).get_indexer(values)
    if (idx < 0).any():
        bad = sorted({str(v) for v in np.asarray(values)[idx < 0]})[:5]
        raise HarnessError(f"labels {bad} are not among the classes {list(classes)}")
    return idx


def _resolve_classes(frames: Sequence[pd.DataFrame], classes: Sequence | None) -> np.ndarray:
    """The given classes, or the sorted union of y_true and y_pred (sklearn's default)."""
    if classes is not None:
        return np.asarray(list(classes), dtype=object)
    values = pd.unique(pd.concat([pd.concat([f["y_true"], f["y_pred"]]) for f in frames]))
    try:
        ordered = sorted(values.tolist())
    except TypeError:  # mixed label types: any fixed order will do
        ordered = sorted(values.tolist(), key=str)
    return np.asarray(ordered, dtype=object)


def proba_column(label: object) -> str:
    """The predictions column holding the probability of class ``label``."""
    return f"{PROBA_PREFIX}{label}"


def class_probabilities(frame: pd.DataFrame, classes: Sequence | np.ndarray) -> np.ndarray | None:
    """The rows' class probabilities (N, C) in ``classes`` order (0 for a class the model
    never saw), or None when the frame has no ``proba:`` columns or some row lacks them."""
    cols = [c for c in frame.columns if str(c).startswith(PROBA_PREFIX)]
    if not cols:
        return None
    values = frame[cols].to_numpy(dtype=np.float64)
    if not np.isfinite(values).any(axis=1).all():
        return None  # some row has no probabilities at all
    values = np.where(np.isfinite(values), values, 0.0)  # folds pooled: a class one model never saw
    index = {str(c): i for i, c in enumerate(classes)}
    unknown = sorted(str(c)[len(PROBA_PREFIX):] for c in cols if str(c)[len(PROBA_PREFIX):] not in index)
    if unknown:
        raise HarnessError(f"probabilities given for classes {unknown} that are not among {list(classes)}")
    out = np.zeros((len(frame), len(classes)))
    for j, col in enumerate(cols):
        out[:, index[str(col)[len(PROBA_PREFIX):]]] = values[:, j]
    return out


def _patient_stats(
    name: str, frame: pd.DataFrame, classes: np.ndarray | None
) -> np.ndarray:
    """Per-patient sufficient statistics (P, K) of one fold, in patient order."""
    patient, _ = pd.factorize(frame["patient_id"], sort=True)
    n_pat = int(patient.max()) + 1
    if name in CONFUSION_METRICS:
        assert classes is not None
        c = len(classes)
        t = _class_index(frame["y_true"].to_numpy(), classes)
        p = _class_index(frame["y_pred"].to_numpy(), classes)
        flat = np.bincount(patient * c * c + t * c + p, minlength=n_pat * c * c)
        rows = flat.reshape(n_pat, c * c).astype(np.float64)
        if name in PATIENT_METRICS:
            proba = class_probabilities(frame, classes)
            if proba is None:
                return _votes_one_hot(rows, c)
            return _one_hot(rows, _soft_votes(patient, n_pat, proba), c)
        return rows
    y = frame["y_true"].to_numpy(dtype=np.float64)
    e = frame["y_pred"].to_numpy(dtype=np.float64) - y
    if not (np.isfinite(y).all() and np.isfinite(e).all()):
        raise HarnessError("regression y_true / y_pred contain NaN or infinite values")
    yc = y - y.mean()
    cols = [np.ones_like(y), np.abs(e), e**2, yc, yc**2]
    return np.stack([np.bincount(patient, weights=v, minlength=n_pat) for v in cols], axis=1)


def _votes_one_hot(rows: np.ndarray, c: int) -> np.ndarray:
    """Per-patient row confusion counts (P, C*C) -> one (true, vote) entry per patient.

    ``argmax`` returns the first maximum, so ties go to the first class in class order:
    deterministic, and documented in the module docstring.
    """
    vote = rows.reshape(-1, c, c).sum(axis=1).argmax(axis=1)  # most frequent predicted label
    return _one_hot(rows, vote, c)


def _soft_votes(patient: np.ndarray, n_pat: int, proba: np.ndarray) -> np.ndarray:
    """Each patient's class of highest mean probability over its rows (ties: first class)."""
    sums = np.stack([np.bincount(patient, weights=proba[:, k], minlength=n_pat)
                     for k in range(proba.shape[1])], axis=1)
    return sums.argmax(axis=1)


def _one_hot(rows: np.ndarray, predicted: np.ndarray, c: int) -> np.ndarray:
    """One (true, predicted) confusion entry per patient; the truth is the patient's most
    frequent row label."""
    truth = rows.reshape(-1, c, c).sum(axis=2).argmax(axis=1)
    out = np.zeros((len(rows), c * c))
    out[np.arange(len(rows)), truth * c + predicted] = 1.0
    return out


def patient_votes(frame: pd.DataFrame, classes: Sequence | None = None) -> pd.DataFrame:
    """One row per patient of one fold: its prediction (mean probability where the rows
    carry probabilities, else a vote), its label, its rows, and whether its rows disagree
    on the label (then the most frequent label is used)."""
    _check_frame(frame, "predictions")
    cls = _resolve_classes([frame], classes)
    c = len(cls)
    entries = _patient_stats("patient_accuracy", frame, cls).reshape(-1, c, c)
    truth_counts = _patient_stats("accuracy", frame, cls).reshape(-1, c, c).sum(axis=2)
    return pd.DataFrame({
        "patient_id": np.sort(frame["patient_id"].unique()),
        "y_true": cls[truth_counts.argmax(axis=1)],
        "y_pred": cls[entries.sum(axis=1).argmax(axis=1)],
        "n_rows": truth_counts.sum(axis=1).astype(int),
        "label_mixed": (truth_counts > 0).sum(axis=1) > 1,
    })


def _mixed_label_note(folds: Sequence[pd.DataFrame]) -> list[str]:
    """A note when some patient's test rows carry more than one label."""
    n = sum(int((f.groupby("patient_id")["y_true"].nunique() > 1).sum()) for f in folds)
    if not n:
        return []
    return [f"{n} patient-fold(s) have rows with different labels; their most frequent label was used"]


def _metric_from_stats(name: str, stats: np.ndarray, n_classes: int | None) -> np.ndarray:
    """Dispatch summed statistics (..., K) to the metric kernel."""
    if name in CONFUSION_METRICS:
        assert n_classes is not None
        return _from_confusion(name, stats.reshape(*stats.shape[:-1], n_classes, n_classes))
    return _from_regression_stats(name, stats)


def _check_frame(frame: pd.DataFrame, where: str) -> None:
    missing = [c for c in FOLD_COLUMNS if c not in frame.columns]
    if missing:
        raise HarnessError(f"{where} lacks columns {missing} (needs {list(FOLD_COLUMNS)})")
    if len(frame) == 0:
        raise HarnessError(f"{where} has no rows")


# --------------------------------------------------------------------------- public API


def compute_metric(
    name: str, y_true: Sequence, y_pred: Sequence, classes: Sequence | None = None,
    patient_ids: Sequence | None = None, proba: pd.DataFrame | None = None,
) -> float:
    """One metric on one set of predictions (same value as scikit-learn).

    Patient-level metrics need ``patient_ids`` (one per row) to form each patient's
    prediction; ``proba`` (the rows' ``proba:<class>`` columns, if the model gave them)
    makes it the class of highest mean probability instead of a vote.
    """
    _check_name(name)
    if name in PATIENT_METRICS and patient_ids is None:
        raise HarnessError(f"metric {name!r} needs the patient id of every row")
    pid = 0 if patient_ids is None else list(patient_ids)
    frame = pd.DataFrame({"patient_id": pid, "y_true": list(y_true), "y_pred": list(y_pred)})
    if proba is not None and name in PATIENT_METRICS:
        frame = pd.concat([frame, proba.reset_index(drop=True)], axis=1)
    _check_frame(frame, "predictions")
    cls = _resolve_classes([frame], classes) if name in CONFUSION_METRICS else None
    stats = _patient_stats(name, frame, cls).sum(axis=0)
    return float(_metric_from_stats(name, stats, None if cls is None else len(cls)))


def estimate(
    name: str,
    folds: list[pd.DataFrame],
    *,
    classes: list | None = None,
    n_boot: int = 1000,
    seed: int = 0,
    pool: bool | None = None,
) -> MetricEstimate:
    """Mean over folds of the fold metric, with a stratified patient-bootstrap 95% CI.

    Each replicate resamples every fold's test patients with replacement, recomputes the
    fold metrics and averages them; the CI is the 2.5/97.5 percentile of the replicates.

    ``pool`` (default: automatic) treats all folds as one pooled test set. It is used
    when every fold holds a single patient (leave-one-patient-out): there a per-fold
    metric is degenerate (macro F1 over absent classes, no within-fold resampling) and
    only pooling gives a meaningful estimate and interval. ``fold_values`` always lists
    the per-fold metrics.

    The CI is ``(nan, nan)`` when ``n_boot`` is 0 or there is only one patient: one
    cluster carries no information about between-patient variability, and a zero-width
    interval would look falsely precise.
    """
    _check_name(name)
    if not folds:
        raise HarnessError(f"metric {name!r}: no folds given")
    for i, frame in enumerate(folds):
        _check_frame(frame, f"fold {i} predictions")
    cls = _resolve_classes(folds, classes) if name in CONFUSION_METRICS else None
    n_classes = None if cls is None else len(cls)

    per_fold = [_patient_stats(name, f, cls) for f in folds]
    fold_values = [float(_metric_from_stats(name, s.sum(axis=0), n_classes)) for s in per_fold]
    if pool is None:
        pool = len(folds) > 1 and all(len(s) == 1 for s in per_fold)
    strata = [_pooled_stats(name, folds, cls)] if pool else per_fold

    point = [float(_metric_from_stats(name, s.sum(axis=0), n_classes)) for s in strata]
    rng = np.random.default_rng(seed)
    boot = np.mean(
        [_metric_from_stats(name, _resample(s, n_boot, rng), n_classes) for s in strata],
        axis=0,
    )
    # with fewer than two patients to resample there is no interval to report
    if n_boot > 0 and sum(len(s) for s in strata) >= 2:
        ci = (float(np.percentile(boot, 2.5)), float(np.percentile(boot, 97.5)))
    else:
        ci = (float("nan"), float("nan"))
    all_patients = pd.concat([f["patient_id"] for f in folds])
    return MetricEstimate(
        metric=name,
        mean=float(np.mean(point)),
        ci95=ci,
        n_patients=int(all_patients.nunique()),
        n_samples=int(sum(len(f) for f in folds)),
        n_folds=len(folds),
        fold_values=fold_values,
        notes=_mixed_label_note(folds) + _aggregation_note(folds, cls) if name in PATIENT_METRICS else [],
    )


def _aggregation_note(folds: Sequence[pd.DataFrame], classes: np.ndarray | None) -> list[str]:
    """How each patient's prediction was formed: mean probability, vote, or some of each."""
    soft = [class_probabilities(f, classes) is not None for f in folds] if classes is not None else [False]
    if all(soft):
        return [SOFT_VOTE_NOTE]
    if not any(soft):
        return [VOTE_NOTE]
    return [f"{SOFT_VOTE_NOTE} in {sum(soft)} fold(s); {VOTE_NOTE.removeprefix('patient prediction: ')} in the others"]


def _pooled_stats(name: str, folds: list[pd.DataFrame], classes: np.ndarray | None) -> np.ndarray:
    """Per-patient statistics of all folds concatenated (a patient tested twice is kept
    as two clusters, one per fold)."""
    keyed = [
        f.assign(patient_id=f["patient_id"].astype(str) + f"\x00{i}") for i, f in enumerate(folds)
    ]
    return _patient_stats(name, pd.concat(keyed, ignore_index=True), classes)


def _resample(stats: np.ndarray, n_boot: int, rng: np.random.Generator) -> np.ndarray:
    """Summed statistics of ``n_boot`` patient resamples: (n_boot, K).

    Drawing P patients with replacement gives a count per patient; the replicate's
    statistics are those counts times the per-patient statistics (one matmul).
    """
    n_pat = stats.shape[0]
    draws = rng.integers(0, n_pat, size=(n_boot, n_pat))
    offsets = (np.arange(n_boot) * n_pat)[:, None]
    counts = np.bincount((draws + offsets).ravel(), minlength=n_boot * n_pat)
    return counts.reshape(n_boot, n_pat).astype(np.float64) @ stats
