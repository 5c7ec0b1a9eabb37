"""A fold's predictions carry the classifier's probabilities, checked before they are kept."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest

from baselines import Baseline, FitContext
from harness.errors import HarnessError
from harness.folds import fit_predict_fold
from harness.metrics import proba_column


class _ProbaEcho(Baseline):
    """Test double (not registered): probabilities of a shape the test sets."""

    name = "_test_proba_echo"
    tasks = frozenset({"grading"})
    target_kinds = frozenset({"classification"})
    shape_offset = 0

    def fit(self, train, val, ctx):
        self.classes_ = list(train.classes)
        return self

    def predict_proba(self, data):
        rng = np.random.default_rng(0)
        return rng.dirichlet(np.ones(len(self.classes_)), size=len(data) + self.shape_offset)

    def predict(self, data):
        raise AssertionError("the runner takes the labels from predict_proba")


def _fold(data):
    pids = sorted(data.samples["patient_id"].unique())
    rows = data.samples
    test = rows.loc[rows["patient_id"] == pids[0], "sample_id"].tolist()
    train = rows.loc[rows["patient_id"] != pids[0], "sample_id"].tolist()
    return SimpleNamespace(index=0, train=train, val=[], test=test)


def test_fold_frame_holds_a_probability_column_per_class(tiny_grading, tmp_path):
    data, _ = tiny_grading
    model = _ProbaEcho()
    frame, _ = fit_predict_fold(model, data, _fold(data), FitContext(work_dir=tmp_path, log=lambda _: None))
    cols = [proba_column(c) for c in data.classes]
    assert list(frame.columns[-len(cols):]) == cols
    proba = frame[cols].to_numpy()
    assert np.allclose(proba.sum(axis=1), 1.0)
    assert frame["y_pred"].tolist() == [data.classes[i] for i in proba.argmax(axis=1)]


def test_probabilities_of_the_wrong_shape_are_refused(tiny_grading, tmp_path):
    data, _ = tiny_grading
    model = _ProbaEcho()
    model.shape_offset = 1
    with pytest.raises(HarnessError, match="_test_proba_echo.*predict_proba returned shape"):
        fit_predict_fold(model, data, _fold(data), FitContext(work_dir=tmp_path, log=lambda _: None))
