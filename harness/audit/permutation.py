"""Label-permutation test under each protocol.

Why: a score means something only if it is unlikely under labels that carry no signal.
Targets are shuffled *between patients* (each patient keeps one target for all its
rows, as in the real data), the model is refitted on every fold, and the p-value is the
share of shuffles scoring at least as well as the real labels. Under a row-level split
a patient recogniser scores as well on shuffled labels as on real ones, so a large
p-value there says the score is memorisation, not signal.

Refitting the benchmarked networks hundreds of times is out of reach on a CPU, so the
test refits a fast surrogate on the same features: ridge regression (regression) or a
ridge classifier (classification) on standardised features.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

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


def _fold_score(x: np.ndarray, y: np.ndarray, index: pd.Index, manifest: SplitManifest,
                metric: str, regression: bool, classes: list | None) -> float:
    from sklearn.linear_model import Ridge, RidgeClassifier
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    scores = []
    for fold in manifest.folds:
        tr = index.get_indexer([*fold.train, *fold.val])
        te = index.get_indexer(list(fold.test))
        tr, te = tr[tr >= 0], te[te >= 0]
        if len(tr) == 0 or len(te) == 0:
            continue
        if regression:
            model = make_pipeline(StandardScaler(), Ridge(alpha=10.0))
            pred = model.fit(x[tr], y[tr].astype(float)).predict(x[te])
        elif len(set(y[tr])) < 2:
            pred = np.full(len(te), y[tr][0], dtype=object)
        else:
            model = make_pipeline(StandardScaler(), RidgeClassifier(alpha=10.0))
            pred = model.fit(x[tr], y[tr]).predict(x[te])
        scores.append(compute_metric(metric, y[te], pred, classes))
    return float(np.mean(scores)) if scores else float("nan")


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
    n_jobs: int = 1,
) -> list[PermutationResult]:
    """Observed surrogate score and its permutation null under each protocol.

    ``n_jobs`` processes refit the null (the run's ``--jobs``); the shuffles are drawn
    up front from ``seed``, so the null does not depend on it.
    """
    from joblib import Parallel, delayed

    index = pd.Index(samples["sample_id"].astype(str))
    y = samples["target"].to_numpy()
    rng = np.random.default_rng(seed)
    perms = [permute_by_patient(samples, rng) for _ in range(n_permutations)]
    out = []
    for protocol, manifest in manifests.items():
        observed = _fold_score(x, y, index, manifest, metric, regression, classes)
        null = np.array(Parallel(n_jobs=max(1, n_jobs))(
            delayed(_fold_score)(x, yp, index, manifest, metric, regression, classes) for yp in perms))
        better = null <= observed if metric in LOWER_IS_BETTER else null >= observed
        p = (1 + int(np.sum(better))) / (1 + len(null))
        out.append(PermutationResult(protocol, metric, observed, null, p))
    return out
