"""Metrics: sklearn-equal point estimates and an honest patient-level bootstrap CI."""

from __future__ import annotations

import math
import time
import warnings

import numpy as np
import pandas as pd
import pytest
from sklearn import metrics as skm

from harness.errors import HarnessError
from harness.metrics import (
    CLASSIFICATION_METRICS,
    REGRESSION_METRICS,
    compute_metric,
    estimate,
)


def _sk(name: str, y_true, y_pred, classes=None) -> float:
    if name == "accuracy":
        return skm.accuracy_score(y_true, y_pred)
    if name == "balanced_accuracy":
        with warnings.catch_warnings():  # "y_pred contains classes not in y_true"
            warnings.simplefilter("ignore", UserWarning)
            return skm.balanced_accuracy_score(y_true, y_pred)
    if name == "macro_f1":
        return skm.f1_score(y_true, y_pred, labels=classes, average="macro", zero_division=0)
    if name == "mae":
        return skm.mean_absolute_error(y_true, y_pred)
    if name == "rmse":
        return skm.root_mean_squared_error(y_true, y_pred)
    return skm.r2_score(y_true, y_pred)


def _cls_folds(
    n_folds: int, n_patients: int, per_patient: int, seed: int, acc: float = 0.7
) -> list[pd.DataFrame]:
    """Folds where each patient has one class and a patient-specific accuracy."""
    rng = np.random.default_rng(seed)
    folds = []
    for k in range(n_folds):
        pid = np.repeat(np.arange(n_patients) + 1000 * k, per_patient)
        y = np.repeat(rng.integers(0, 3, n_patients), per_patient)
        p_ok = np.repeat(np.clip(rng.normal(acc, 0.2, n_patients), 0, 1), per_patient)
        pred = np.where(rng.random(len(y)) < p_ok, y, rng.integers(0, 3, len(y)))
        folds.append(pd.DataFrame({"patient_id": pid, "y_true": y, "y_pred": pred}))
    return folds


@pytest.mark.parametrize("seed", range(5))
@pytest.mark.parametrize("name", CLASSIFICATION_METRICS)
def test_classification_matches_sklearn(name: str, seed: int) -> None:
    rng = np.random.default_rng(seed)
    n = int(rng.integers(5, 60))
    labels = np.array(["a", "b", "c", "d"])
    y_true = labels[rng.integers(0, 3, n)]  # "d" never true
    y_pred = labels[rng.integers(0, 4, n)]
    classes = ["a", "b", "c", "d", "e"]  # "e" in neither: F1 counts it as 0
    assert compute_metric(name, y_true, y_pred, classes) == pytest.approx(
        _sk(name, y_true, y_pred, classes), abs=1e-12
    )
    # default classes: the union of y_true and y_pred, like sklearn
    assert compute_metric(name, y_true, y_pred) == pytest.approx(
        _sk(name, y_true, y_pred), abs=1e-12
    )


@pytest.mark.parametrize("seed", range(5))
@pytest.mark.parametrize("name", REGRESSION_METRICS)
def test_regression_matches_sklearn(name: str, seed: int) -> None:
    rng = np.random.default_rng(seed)
    n = int(rng.integers(2, 80))
    y_true = rng.normal(1e4, 2.0, n)  # large offset: checks numerical stability of r2
    y_pred = y_true + rng.normal(0, 1.0, n)
    assert compute_metric(name, y_true, y_pred) == pytest.approx(
        _sk(name, y_true, y_pred), rel=1e-9, abs=1e-9
    )


def test_r2_constant_truth_follows_sklearn() -> None:
    assert compute_metric("r2", [3.0, 3.0], [3.0, 3.0]) == skm.r2_score([3.0, 3.0], [3.0, 3.0])
    assert compute_metric("r2", [3.0, 3.0], [3.0, 4.0]) == skm.r2_score([3.0, 3.0], [3.0, 4.0])


def test_fold_values_and_mean_are_per_fold_sklearn() -> None:
    folds = _cls_folds(4, 12, 5, seed=1)
    est = estimate("macro_f1", folds, classes=[0, 1, 2], n_boot=50)
    expected = [
        skm.f1_score(f.y_true, f.y_pred, labels=[0, 1, 2], average="macro", zero_division=0)
        for f in folds
    ]
    np.testing.assert_allclose(est.fold_values, expected)
    assert est.mean == pytest.approx(np.mean(expected))
    assert (est.n_folds, est.n_patients, est.n_samples) == (4, 48, 240)


def test_ci_contains_mean_on_typical_data() -> None:
    for name in CLASSIFICATION_METRICS:
        est = estimate(name, _cls_folds(5, 30, 8, seed=2), n_boot=300)
        assert est.ci95[0] <= est.mean <= est.ci95[1]
    rng = np.random.default_rng(3)
    y = rng.normal(size=400)
    frame = pd.DataFrame(
        {"patient_id": np.repeat(np.arange(80), 5), "y_true": y, "y_pred": y + rng.normal(0, 0.5, 400)}
    )
    for name in REGRESSION_METRICS:
        est = estimate(name, [frame], n_boot=300)
        assert est.ci95[0] <= est.mean <= est.ci95[1]


def test_ci_shrinks_with_more_patients() -> None:
    def width(n_patients: int) -> float:
        lo, hi = estimate("accuracy", _cls_folds(3, n_patients, 6, seed=4), n_boot=400).ci95
        return hi - lo

    assert width(200) < 0.6 * width(20)


def test_cluster_bootstrap_is_wider_than_row_bootstrap_for_correlated_samples() -> None:
    # 6 patients x 200 slices; correctness is a patient trait, not a slice one
    rng = np.random.default_rng(5)
    pid = np.repeat(np.arange(6), 200)
    ok = np.repeat([0.95, 0.9, 0.3, 0.2, 0.85, 0.4], 200) > rng.random(1200)
    y = np.zeros(1200, dtype=int)
    frame = pd.DataFrame({"patient_id": pid, "y_true": y, "y_pred": np.where(ok, 0, 1)})
    rows = frame.assign(patient_id=np.arange(1200))  # every row its own "patient"
    cluster = estimate("accuracy", [frame], classes=[0, 1], n_boot=500).ci95
    naive = estimate("accuracy", [rows], classes=[0, 1], n_boot=500).ci95
    assert cluster[1] - cluster[0] > 4 * (naive[1] - naive[0])


def test_single_patient_gives_no_fake_narrow_interval() -> None:
    frame = pd.DataFrame({"patient_id": "P1", "y_true": [0, 1] * 500, "y_pred": [0] * 1000})
    est = estimate("accuracy", [frame], n_boot=200)
    assert est.mean == 0.5 and est.n_patients == 1 and est.n_samples == 1000
    assert all(math.isnan(v) for v in est.ci95)


def test_leave_one_patient_out_folds_are_pooled() -> None:
    rng = np.random.default_rng(6)
    folds = [
        pd.DataFrame({"patient_id": f"P{i}", "y_true": [c] * 4, "y_pred": rng.integers(0, 3, 4)})
        for i, c in enumerate([0, 1, 2] * 4)
    ]
    pooled = pd.concat(folds)
    est = estimate("macro_f1", folds, classes=[0, 1, 2], n_boot=300)
    assert est.mean == pytest.approx(compute_metric("macro_f1", pooled.y_true, pooled.y_pred, [0, 1, 2]))
    assert len(est.fold_values) == 12 and est.ci95[0] < est.mean < est.ci95[1]
    unpooled = estimate("macro_f1", folds, classes=[0, 1, 2], n_boot=10, pool=False)
    assert unpooled.mean == pytest.approx(np.mean(est.fold_values))


def test_deterministic_given_seed() -> None:
    folds = _cls_folds(3, 15, 4, seed=7)
    a = estimate("balanced_accuracy", folds, n_boot=200, seed=11)
    b = estimate("balanced_accuracy", folds, n_boot=200, seed=11)
    c = estimate("balanced_accuracy", folds, n_boot=200, seed=12)
    assert a == b
    assert a.ci95 != c.ci95


def test_fast_enough_for_1000_replicates() -> None:
    folds = _cls_folds(5, 400, 25, seed=8)  # 5 x 10k rows
    start = time.perf_counter()
    for name in ("accuracy", "macro_f1"):
        estimate(name, folds, n_boot=1000)
    assert time.perf_counter() - start < 1.0


def test_bad_input_raises_harness_error() -> None:
    frame = pd.DataFrame({"patient_id": [1, 2], "y_true": [0, 1], "y_pred": [0, 2]})
    with pytest.raises(HarnessError, match="unknown metric"):
        compute_metric("auc", [0], [0])
    with pytest.raises(HarnessError, match="not among the classes"):
        estimate("accuracy", [frame], classes=[0, 1])
    with pytest.raises(HarnessError, match="lacks columns"):
        estimate("accuracy", [frame.drop(columns="y_pred")])
    with pytest.raises(HarnessError, match="no folds"):
        estimate("accuracy", [])
    assert estimate("accuracy", [frame]).to_dict()["ci95"][0] <= 0.5
