"""Label-permutation test under each protocol.

Why: a score means something only if it is unlikely under labels that carry no signal.
Targets are shuffled *between patients* (each patient keeps one target for all its
rows, as in the real data), the model is refitted on every fold, and the p-value is the
share of shuffles scoring at least as well as the real labels. Under a row-level split
a patient recogniser scores as well on shuffled labels as on real ones, so a large
p-value there says the score is memorisation, not signal.

Refitting the benchmarked networks hundreds of times is out of reach on a CPU, so the
test refits a fast surrogate on the same features: ridge regression (regression) or a
ridge classifier (classification) on standardised features. Every shuffle of a fold has
the same features, so all of them are solved with one factorisation (the fits of
sklearn's ``Ridge`` / ``RidgeClassifier``, checked against them in the tests).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
import scipy.linalg

from harness.audit.inflation import LOWER_IS_BETTER
from harness.metrics import compute_metric
from harness.splits import SplitManifest


@dataclass
class PermutationResult:
    protocol: str
    metric: str
    observed: float
    null: np.ndarray = field(repr=False)
    p_value: float = float("nan")

    @property
    def null_mean(self) -> float:
        return float(np.mean(self.null)) if len(self.null) else float("nan")


#: The surrogate's ridge penalty (sklearn's ``Ridge`` / ``RidgeClassifier`` ``alpha``).
ALPHA = 10.0


def _fold_indices(index: pd.Index, manifest: SplitManifest) -> list[tuple[np.ndarray, np.ndarray]]:
    """(training + validation rows, test rows) per fold, folds with an empty side dropped."""
    out = []
    for fold in manifest.folds:
        tr = index.get_indexer([*fold.train, *fold.val])
        te = index.get_indexer(list(fold.test))
        tr, te = tr[tr >= 0], te[te >= 0]
        if len(tr) and len(te):
            out.append((tr, te))
    return out


def _ridge_decisions(x_tr: np.ndarray, x_te: np.ndarray, targets: np.ndarray) -> np.ndarray:
    """Test-row outputs of ridge fits on standardised features, one per target column.

    The fits that ``StandardScaler`` then ``Ridge(alpha=ALPHA)`` (fitted intercept, the
    Cholesky solve of sklearn) would make, for every column of ``targets`` (n_tr, m) at
    once: the features are the same for every shuffle, so one factorisation serves all.
    """
    mean = x_tr.mean(axis=0)
    scale = x_tr.std(axis=0)
    scale[scale < 10 * np.finfo(scale.dtype).eps] = 1.0  # constant features, as StandardScaler
    a = (x_tr - mean) / scale
    b = (x_te - mean) / scale
    a_mean = a.mean(axis=0)
    a = a - a_mean
    t_mean = targets.mean(axis=0)
    gram = a.T @ a
    gram.flat[:: gram.shape[0] + 1] += ALPHA
    w = scipy.linalg.solve(gram, a.T @ (targets - t_mean), assume_a="pos")
    return (b - a_mean) @ w + t_mean


def _scores(x: np.ndarray, ys: np.ndarray, folds: list[tuple[np.ndarray, np.ndarray]], metric: str,
            regression: bool, classes: list | None) -> np.ndarray:
    """Mean fold score of the surrogate for each row of ``ys`` (targets, one set per row).

    Classification follows ``RidgeClassifier``: one +1/-1 column per class seen in the
    training rows, the largest output wins (ties: the first class), a single training
    class is predicted everywhere.
    """
    per_fold = np.full((len(folds), len(ys)), np.nan)
    if not regression:
        labels = np.unique(ys)
        codes = np.searchsorted(labels, ys)
        k = len(labels)
    for f, (tr, te) in enumerate(folds):
        preds: list[Any]
        if regression:
            out = _ridge_decisions(x[tr], x[te], ys[:, tr].astype(float).T)
            preds = [out[:, i] for i in range(len(ys))]
        else:
            onehot = np.where(codes[:, tr, None] == np.arange(k), 1.0, -1.0)  # (P, n_tr, k)
            out = _ridge_decisions(x[tr], x[te], onehot.transpose(1, 0, 2).reshape(len(tr), -1))
            out = out.reshape(len(te), len(ys), k)
            preds = []
            for i in range(len(ys)):
                seen = np.isin(np.arange(k), codes[i, tr])
                if seen.sum() < 2:
                    preds.append(np.full(len(te), ys[i, tr][0], dtype=object))
                    continue
                decision = np.where(seen, out[:, i, :], -np.inf)
                preds.append(labels[decision.argmax(axis=1)])
        for i, pred in enumerate(preds):
            per_fold[f, i] = compute_metric(metric, ys[i, te], pred, classes)
    return per_fold.mean(axis=0) if len(folds) else np.full(len(ys), np.nan)


def permute_by_patient(samples: pd.DataFrame, rng: np.random.Generator) -> np.ndarray:
    """Targets shuffled between patients; rows of a patient keep one (its new) target."""
    pids = samples["patient_id"].astype(str).to_numpy()
    first = samples.assign(p=pids).groupby("p", sort=True)["target"].first()
    shuffled = pd.Series(rng.permutation(first.to_numpy()), index=first.index)
    constant = bool((samples.assign(p=pids).groupby("p")["target"].nunique() <= 1).all())
    if constant:
        return shuffled.reindex(pids).to_numpy()
    return rng.permutation(samples["target"].to_numpy())  # targets vary within patients: rows


def permutation_test(
    x: np.ndarray, samples: pd.DataFrame, manifests: dict[str, SplitManifest], *,
    metric: str, regression: bool, classes: list | None = None, n_permutations: int = 99, seed: int = 0,
) -> list[PermutationResult]:
    """Observed surrogate score and its permutation null under each protocol.

    The shuffles are drawn up front from ``seed``; the observed labels and every shuffle
    are fitted together, fold by fold (one solve per fold, whatever the number of shuffles).
    """
    index = pd.Index(samples["sample_id"].astype(str))
    y = samples["target"].to_numpy()
    rng = np.random.default_rng(seed)
    perms = [permute_by_patient(samples, rng) for _ in range(n_permutations)]
    ys = np.stack([y, *perms]) if regression else np.stack([y, *perms]).astype(object)
    x = np.asarray(x, dtype=np.float64)
    out = []
    for protocol, manifest in manifests.items():
        scores = _scores(x, ys, _fold_indices(index, manifest), metric, regression, classes)
        observed, null = float(scores[0]), scores[1:]
        better = null <= observed if metric in LOWER_IS_BETTER else null >= observed
        p = (1 + int(np.sum(better))) / (1 + len(null))
        out.append(PermutationResult(protocol, metric, observed, null, p))
    return out
