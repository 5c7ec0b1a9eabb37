"""The grading positive control reads the grade with patients held out, and only when the
images carry it (known truth: tiny REMBRANDT-style cohorts, 6 mm grid)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from sklearn.metrics import balanced_accuracy_score
from sklearn.model_selection import StratifiedGroupKFold

from baselines import FitContext, create_baseline
from baselines.enhancement_probe import over_head_median, tail_features
from harness.runner import RunOptions, prepare_data
from harness.suite import parse_suite
from harness.tasks import TaskData


def _task(tmp: Path, signal: str) -> TaskData:
    from harness.synth import generate_cohort

    generate_cohort("rembrandt", tmp / signal, n_patients=16, seed=3, signal=signal, grid_mm=6.0, progress=False)
    suite = parse_suite({"suite": {"name": "t", "task": "grading"}, "data": {"cohort": "rembrandt"},
                         "task": {"modalities": ["T1", "T1post", "T2", "FLAIR"]},
                         "baselines": {"default": ["majority"]}, "protocols": {"patient_kfold": {"n_splits": 4}}})
    opts = RunOptions(data=tmp / signal, cache_dir=tmp / "cache", progress=False)
    return prepare_data(suite, opts).task_data


def _patient_cv_balanced_accuracy(task: TaskData) -> float:
    """Patient 3-fold CV of the probe; one prediction per patient (all its slices agree)."""
    patients = task.samples.groupby("patient_id")["target"].first()
    truth: list[str] = []
    pred: list[str] = []
    folds = StratifiedGroupKFold(3, shuffle=True, random_state=0)
    for tr, te in folds.split(patients.index, patients.to_numpy(), patients.index):
        s = task.samples
        train = task.subset(s[s["patient_id"].isin(patients.index[tr])]["sample_id"])
        test = task.subset(s[s["patient_id"].isin(patients.index[te])]["sample_id"])
        labels = create_baseline("enhancement_probe").fit(train, None, FitContext(seed=0)).predict(test)
        per = test.samples.assign(p=labels).groupby("patient_id").agg(t=("target", "first"), p=("p", "nunique"),
                                                                        first=("p", "first"))
        assert (per["p"] == 1).all()  # a patient-level prediction
        truth += per["t"].tolist()
        pred += per["first"].tolist()
    return float(balanced_accuracy_score(truth, pred))


@pytest.mark.parametrize("signal,lo,hi", [("growth", 0.55, 1.0), ("none", 0.0, 0.45)])
def test_probe_recovers_the_grade_only_where_the_images_carry_it(tmp_path, signal, lo, hi) -> None:
    score = _patient_cv_balanced_accuracy(_task(tmp_path, signal))
    assert lo <= score <= hi, f"{signal}: patient balanced accuracy {score:.3f} (chance 0.333)"


def test_tail_features_see_a_bright_spot_and_ignore_the_air() -> None:
    rng = np.random.default_rng(0)
    image = np.concatenate([np.zeros(5000), rng.normal(100, 5, 5000)]).astype(np.float32)
    spot = image.copy()
    spot[-100:] = 250.0
    (plain, plain_head), (bright, bright_head) = (over_head_median(v) for v in (image, spot))
    assert not plain_head[:5000].any() and plain_head[5000:].mean() > 0.45  # the air is not the head
    plain_peak, plain_share = tail_features(plain, plain_head, 99.9, 1.6)
    bright_peak, bright_share = tail_features(bright, bright_head, 99.9, 1.6)
    assert bright_peak > 2.0 > plain_peak > 1.0
    assert bright_share > plain_share == 0.0
    assert np.isnan(tail_features(plain, np.zeros_like(plain_head), 99.0, 1.3)[0])
