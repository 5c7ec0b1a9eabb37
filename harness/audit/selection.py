"""Selection on the test set, and preprocessing scope.

Why: Valbuena et al. chose their network configuration and then their split ratio by
the test score; the chosen score is the maximum of many noisy estimates and is
optimistic by construction. Nested cross-validation picks the configuration on inner
folds only and scores it once on an untouched outer fold; the difference is the
optimism. The same surrogate model shows what fitting preprocessing statistics on all
rows (test included) instead of training rows only does to a score.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from harness.audit.inflation import LOWER_IS_BETTER
from harness.metrics import compute_metric

ALPHAS: tuple[float, ...] = (0.01, 0.1, 1.0, 10.0, 100.0, 1000.0)
TRAIN_SHARES: tuple[float, ...] = (0.9, 0.8, 0.7, 0.6, 0.5)


def _model(alpha: float, regression: bool):
    from sklearn.linear_model import Ridge, RidgeClassifier

    return Ridge(alpha=alpha) if regression else RidgeClassifier(alpha=alpha)


def _score(x, y, tr, te, alpha, regression, metric, classes, scope: str = "train") -> float:
    fit_rows = tr if scope == "train" else np.concatenate([tr, te])
    mu = x[fit_rows].mean(axis=0)
    sd = x[fit_rows].std(axis=0) + 1e-9
    z = (x - mu) / sd
    yt = y[tr].astype(float) if regression else y[tr]
    pred: Any
    if not regression and len(set(yt)) < 2:
        pred = np.full(len(te), yt[0], dtype=object)
    else:
        pred = _model(alpha, regression).fit(z[tr], yt).predict(z[te])
    return compute_metric(metric, y[te], pred, classes)


def _better(a: float, b: float, metric: str) -> bool:
    return a < b if metric in LOWER_IS_BETTER else a > b


def _patient_split(pids: np.ndarray, share: float, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    units = np.unique(pids)
    rng.shuffle(units)
    n_train = int(np.clip(round(share * len(units)), 1, len(units) - 1))
    is_train = np.isin(pids, units[:n_train])
    return np.flatnonzero(is_train), np.flatnonzero(~is_train)


@dataclass
class SelectionResult:
    metric: str
    grid: pd.DataFrame = field(repr=False)
    selected: dict
    selected_score: float
    nested_score: float
    nested_folds: list[float] = field(default_factory=list)

    @property
    def optimism(self) -> float:
        d = self.selected_score - self.nested_score
        return -d if self.metric in LOWER_IS_BETTER else d


def selection_study(x: np.ndarray | Mapping[str, np.ndarray], y: np.ndarray, pids: np.ndarray, *, metric: str,
                    regression: bool, classes: list | None = None, repeats: int = 5, outer: int = 5, seed: int = 0,
                    n_jobs: int = 1) -> SelectionResult:
    """The paper's procedure (configuration and split ratio picked by mean test score over
    ``repeats`` random patient splits) against nested patient-level CV over the same grid.

    ``x`` is one feature matrix (the grid is ridge penalty x train share) or several by
    name, e.g. one per backbone (the grid adds the name: ``features``). ``n_jobs``
    processes share the refits; the splits are drawn first, so the result does not
    depend on it."""
    from joblib import Parallel, delayed
    from sklearn.model_selection import GroupKFold

    sets = dict(x) if isinstance(x, Mapping) else {"": x}
    configs = [(name, alpha) for name in sets for alpha in ALPHAS]

    def scores(fits: list[tuple[np.ndarray, np.ndarray, tuple[str, float]]]) -> list[float]:
        return Parallel(n_jobs=max(1, n_jobs))(
            delayed(_score)(sets[c[0]], y, tr, te, c[1], regression, metric, classes) for tr, te, c in fits)

    def describe(config: tuple[str, float]) -> dict[str, Any]:
        return ({"features": config[0]} if config[0] else {}) | {"alpha": config[1]}

    pids = np.asarray(pids).astype(str)
    n_rows = len(y)
    grid_fits, rows = [], []
    for share in TRAIN_SHARES:
        rng = np.random.default_rng(seed)
        splits = [_patient_split(pids, share, rng) for _ in range(repeats)]
        for config in configs:
            rows.append({"train_share": share, **describe(config)})
            grid_fits += [(tr, te, config) for tr, te in splits]
    grid_scores = scores(grid_fits)
    for i, row in enumerate(rows):
        row["test_score"] = float(np.mean(grid_scores[i * repeats:(i + 1) * repeats]))
    grid = pd.DataFrame(rows)
    best = grid.loc[grid["test_score"].idxmin() if metric in LOWER_IS_BETTER else grid["test_score"].idxmax()]

    n_pat = len(set(pids))
    k_out = int(min(outer, n_pat))
    outer_folds, inner_fits, n_inner = [], [], []
    for tr, te in GroupKFold(n_splits=k_out).split(np.zeros(n_rows), y, pids):
        k_in = int(min(outer, len(set(pids[tr]))))
        inner = list(GroupKFold(n_splits=max(k_in, 2)).split(tr, groups=pids[tr]))
        outer_folds.append((tr, te))
        n_inner.append(len(inner))
        inner_fits += [(tr[a], tr[b], config) for config in configs for a, b in inner]
    inner_scores = iter(scores(inner_fits))
    final_fits = []
    for (tr, te), k in zip(outer_folds, n_inner):
        best_c, best_s = configs[0], None
        for config in configs:
            s = float(np.mean([next(inner_scores) for _ in range(k)]))
            if best_s is None or _better(s, best_s, metric):
                best_c, best_s = config, s
        final_fits.append((tr, te, best_c))
    nested = scores(final_fits)
    selected: dict[str, Any] = {"train_share": float(best["train_share"]), "alpha": float(best["alpha"])}
    if "features" in grid:
        selected["features"] = str(best["features"])
    return SelectionResult(metric, grid, selected, float(best["test_score"]), float(np.mean(nested)), nested)


def preprocessing_scope(x: np.ndarray, y: np.ndarray, index: pd.Index, manifests: dict, *, metric: str,
                        regression: bool, classes: list | None = None, alpha: float = 10.0) -> pd.DataFrame:
    """Surrogate score per protocol with standardisation fit on training rows vs on all rows."""
    rows = []
    for protocol, manifest in manifests.items():
        out = {}
        for scope in ("train", "all"):
            scores = []
            for fold in manifest.folds:
                tr = index.get_indexer([*fold.train, *fold.val])
                te = index.get_indexer(list(fold.test))
                tr, te = tr[tr >= 0], te[te >= 0]
                if len(tr) and len(te):
                    scores.append(_score(x, y, tr, te, alpha, regression, metric, classes, scope))
            out[scope] = float(np.mean(scores)) if scores else float("nan")
        rows.append({"protocol": protocol, "metric": metric, "fit_on_train": out["train"],
                     "fit_on_all": out["all"], "effect": out["all"] - out["train"]})
    return pd.DataFrame(rows)
