"""The "did not learn" guard: does a fitted model beat the trivial control on its own
training rows?

Why: a low patient-held-out score means "the paper's number was leakage" only if the
model could fit anything at all. A network that never left its random weights scores
low under every split, and comparing its protocols measures nothing. So after every
fit the runner scores the model on (a deterministic subsample of) its training rows and
on its validation rows, next to the trivial control on the same rows: the majority class
(classification) or the training mean (regression), fitted on the training rows.

The rule (also in docs/guard.md and in the overfitting report):

* higher-is-better metric (accuracy, balanced accuracy, F1, R^2): a fold did not learn
  when ``train <= trivial + ABS_MARGIN``;
* lower-is-better metric (MAE, RMSE): when ``train >= REL_MARGIN * trivial``;
* a run (baseline x protocol) did not learn when more than half of its folds with a
  known training score did not; no known fold (a fold cache older than the guard): unknown.

Only the training score decides: validation and test scores answer "does it generalise",
the very question the audit asks, so a memoriser that fits its training data and fails
with patients held out has learned, and its honest score is evidence. The trivial
controls themselves (majority, mean, median) score the trivial score by definition; they
are marked ``control`` and never flagged.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from typing import Any, Sequence

import numpy as np

from harness.metrics import REGRESSION_METRICS, compute_metric

#: Training rows scored per fold (a deterministic subsample bounds the cost).
MAX_GUARD_ROWS = 2000
#: Higher-is-better metrics must beat the trivial score by this much (absolute).
ABS_MARGIN = 0.05
#: Lower-is-better metrics must reach below this share of the trivial score.
REL_MARGIN = 0.9
LOWER_IS_BETTER = frozenset({"mae", "rmse"})
#: The trivial controls: their score is the trivial score, so they are never flagged.
TRIVIAL_CONTROLS: frozenset[str] = frozenset({"majority", "mean", "median"})

RULE = (f"a fold did not learn when its training score does not clearly beat the trivial control "
        f"(majority class / training mean, fitted on the same training rows): "
        f"score <= trivial + {ABS_MARGIN} for accuracy-like metrics, MAE or RMSE >= {REL_MARGIN} x trivial; "
        f"a baseline x protocol did not learn when most of its folds did not")


def guard_metric(metrics: Sequence[str], target_kind: str) -> str:
    """The suite's primary metric (its first name) if it fits the target kind, else
    accuracy (classification) or MAE (regression)."""
    first = metrics[0] if metrics else ""
    if target_kind == "regression":
        return first if first in REGRESSION_METRICS else "mae"
    return first if first and first not in REGRESSION_METRICS else "accuracy"


def is_trivial_control(baseline: str) -> bool:
    """Majority, mean or median, or a subclass of one (it predicts the same constant)."""
    if baseline in TRIVIAL_CONTROLS:
        return True
    try:
        from baselines import get_baseline
        from baselines.controls import MajorityClass, MeanPredictor, MedianPredictor

        return issubclass(get_baseline(baseline), (MajorityClass, MeanPredictor, MedianPredictor))
    except Exception:  # noqa: BLE001 - an unknown name is not a control
        return False


def guard_rows(sample_ids: Sequence[str], seed: int, max_rows: int = MAX_GUARD_ROWS) -> list[str]:
    """At most ``max_rows`` of the ids, drawn with ``seed``, in their original order."""
    ids = list(sample_ids)
    if len(ids) <= max_rows:
        return ids
    keep = np.sort(np.random.default_rng(seed).choice(len(ids), size=max_rows, replace=False))
    return [ids[i] for i in keep]


def trivial_predictions(train_y: np.ndarray, n: int, target_kind: str, classes: Sequence | None) -> np.ndarray:
    """What the trivial control fitted on ``train_y`` predicts for ``n`` rows."""
    if target_kind == "regression":
        return np.full(n, float(np.mean(train_y.astype(float))))
    order = list(classes) if classes else sorted(set(train_y))
    counts = {c: int(np.sum(train_y == c)) for c in order}
    return np.full(n, max(order, key=lambda c: counts[c]), dtype=object)


def fold_did_not_learn(metric: str, train: float | None, trivial: float | None) -> bool | None:
    """The per-fold rule; None when either score is unknown."""
    if train is None or trivial is None or train != train or trivial != trivial:
        return None
    if metric in LOWER_IS_BETTER:
        return bool(train >= REL_MARGIN * trivial)
    return bool(train <= trivial + ABS_MARGIN)


@dataclass
class FoldGuard:
    """One fold's training (and validation) score next to the trivial control's."""

    metric: str
    train: float | None = None
    train_trivial: float | None = None
    val: float | None = None
    val_trivial: float | None = None
    n_train_scored: int = 0
    n_val_scored: int = 0
    did_not_learn: bool | None = None
    error: str | None = None
    #: Time spent scoring (not part of the fold's fit_predict_seconds).
    seconds: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "FoldGuard":
        known: dict[str, Any] = {k: d[k] for k in cls.__dataclass_fields__ if k in d}
        return cls(**known)


def score_rows(metric: str, model: Any, data: Any, train_y: np.ndarray) -> tuple[float, float]:
    """(model score, trivial control score) on the rows of ``data``."""
    y = data.y
    pid = data.samples["patient_id"].to_numpy()
    pred = list(np.asarray(model.predict(data)))
    triv = list(trivial_predictions(train_y, len(data), data.target_kind, data.classes))
    return (compute_metric(metric, list(y), pred, data.classes, list(pid)),
            compute_metric(metric, list(y), triv, data.classes, list(pid)))


def fold_guard(model: Any, train: Any, val: Any | None, *, metric: str, seed: int) -> FoldGuard:
    """Score a fitted model on its training rows (subsampled) and its validation rows.

    A failure here never fails the fold: the guard is then unknown, with the reason.
    """
    g = FoldGuard(metric=metric)
    started = time.perf_counter()
    try:
        rows = train.subset(guard_rows(train.sample_ids, seed))
        g.train, g.train_trivial = score_rows(metric, model, rows, train.y)
        g.n_train_scored = len(rows)
        if val is not None and len(val):
            vrows = val.subset(guard_rows(val.sample_ids, seed + 1))
            g.val, g.val_trivial = score_rows(metric, model, vrows, train.y)
            g.n_val_scored = len(vrows)
    except Exception as exc:  # noqa: BLE001 - e.g. a baseline that cannot predict a subset
        g.error = f"{type(exc).__name__}: {exc}"[:300]
    g.did_not_learn = fold_did_not_learn(metric, g.train, g.train_trivial)
    g.seconds = round(time.perf_counter() - started, 3)
    return g


@dataclass
class RunGuard:
    """A baseline x protocol's verdict of the guard, from its folds."""

    metric: str
    control: bool
    did_not_learn: bool | None
    folds_did_not_learn: int
    folds_known: int
    n_folds: int
    train: float | None
    train_trivial: float | None
    val: float | None
    val_trivial: float | None
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def status(self) -> str:
        """"true", "false" or "unknown" (the MLflow tag's value)."""
        return "unknown" if self.did_not_learn is None else str(self.did_not_learn).lower()


def _mean(values: list[float | None]) -> float | None:
    known = [v for v in values if v is not None and v == v]
    return float(np.mean(known)) if known else None


def run_guard(baseline: str, metric: str, folds: Sequence[FoldGuard | None]) -> RunGuard:
    """Combine fold guards: did not learn when most known folds did not."""
    known = [g for g in folds if g is not None and g.did_not_learn is not None]
    flagged = sum(bool(g.did_not_learn) for g in known)
    control = is_trivial_control(baseline)
    notes = []
    missing = sum(g is None for g in folds)
    if missing:
        notes.append(f"{missing} fold(s) came from a fold cache older than the guard: training score unknown "
                     "(delete the run's fold cache to refit and score them)")
    notes += [f"training score failed: {g.error}" for g in folds if g is not None and g.error]
    if control:
        verdict: bool | None = False
        notes.append("trivial control: its score is the trivial score by definition, never flagged")
    else:
        verdict = None if not known else flagged * 2 > len(known)
    present = [g for g in folds if g is not None]
    return RunGuard(
        metric=metric, control=control, did_not_learn=verdict, folds_did_not_learn=flagged,
        folds_known=len(known), n_folds=len(folds),
        train=_mean([g.train for g in present]), train_trivial=_mean([g.train_trivial for g in present]),
        val=_mean([g.val for g in present]), val_trivial=_mean([g.val_trivial for g in present]), notes=notes,
    )


def not_learned(learning: dict, *keys: tuple[str, str]) -> list[str]:
    """Of the (baseline, protocol) keys, the labels of those marked did_not_learn."""
    return [f"{b} ({p})" for b, p in keys if (learning.get((b, p)) or {}).get("did_not_learn")]
