"""Patient-level metrics: one prediction per patient and fold (mean probability where the
rows carry probabilities, else a vote), scored and bootstrapped by patient."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import accuracy_score, balanced_accuracy_score, f1_score

from harness.audit.inflation import bootstrap
from harness.errors import HarnessError
from harness.metrics import SOFT_VOTE_NOTE, VOTE_NOTE, compute_metric, estimate, patient_votes, proba_column

CLASSES = ["II", "III", "IV"]

#: a: 2 of 3 rows say II (true II) -> II, right. b: one III, one IV (true IV) -> tie,
#: class order gives III, wrong. c: II, II, III, III (true III) -> tie -> II, wrong.
#: d: IV, IV, II (true IV) -> IV, right.
HAND = pd.DataFrame({
    "patient_id": ["a"] * 3 + ["b"] * 2 + ["c"] * 4 + ["d"] * 3,
    "y_true": ["II"] * 3 + ["IV"] * 2 + ["III"] * 4 + ["IV"] * 3,
    "y_pred": ["II", "IV", "II", "III", "IV", "II", "II", "III", "III", "IV", "IV", "II"],
})


def test_votes_on_hand_made_predictions():
    v = patient_votes(HAND, CLASSES)
    assert v["patient_id"].tolist() == ["a", "b", "c", "d"]
    assert v["y_pred"].tolist() == ["II", "III", "II", "IV"]
    assert v["y_true"].tolist() == ["II", "IV", "III", "IV"]
    assert v["n_rows"].tolist() == [3, 2, 4, 3]
    assert not v["label_mixed"].any()


def test_patient_metrics_known_answers():
    kw = dict(classes=CLASSES, patient_ids=HAND["patient_id"])
    y, p = HAND["y_true"], HAND["y_pred"]
    assert compute_metric("patient_accuracy", y, p, **kw) == pytest.approx(0.5)  # a and d right
    # recall: II 1/1, III 0/1, IV 1/2 -> 0.5
    assert compute_metric("patient_balanced_accuracy", y, p, **kw) == pytest.approx(0.5)
    # F1: II 2*1/(1+2)=2/3, III 0, IV 2*1/(2+1)=2/3 -> 4/9
    assert compute_metric("patient_macro_f1", y, p, **kw) == pytest.approx(4 / 9)
    # the row-level accuracy of the same rows differs (7 of 12 right)
    assert compute_metric("accuracy", y, p, CLASSES) == pytest.approx(7 / 12)


def test_one_row_per_patient_equals_sklearn_row_metrics():
    rng = np.random.default_rng(4)
    y = rng.choice(CLASSES, 40)
    p = np.where(rng.random(40) < 0.6, y, rng.choice(CLASSES, 40))
    pid = [f"p{i}" for i in range(40)]
    kw = dict(classes=CLASSES, patient_ids=pid)
    assert compute_metric("patient_accuracy", y, p, **kw) == pytest.approx(accuracy_score(y, p))
    assert compute_metric("patient_balanced_accuracy", y, p, **kw) == pytest.approx(balanced_accuracy_score(y, p))
    assert compute_metric("patient_macro_f1", y, p, **kw) == pytest.approx(
        f1_score(y, p, average="macro", labels=CLASSES, zero_division=0))


def test_each_patient_is_one_unit_of_the_bootstrap():
    """Repeating every row 5 times changes neither the patient metric nor its CI."""
    rng = np.random.default_rng(0)
    frames = []
    for _ in range(3):
        n = 10
        y = rng.choice(CLASSES, n)
        frames.append(pd.DataFrame({"patient_id": [f"p{i}" for i in range(n)], "y_true": y,
                                    "y_pred": np.where(rng.random(n) < 0.7, y, rng.choice(CLASSES, n))}))
    repeated = [f.loc[f.index.repeat(5)].reset_index(drop=True) for f in frames]
    a = estimate("patient_accuracy", frames, classes=CLASSES, n_boot=400, seed=2)
    b = estimate("patient_accuracy", repeated, classes=CLASSES, n_boot=400, seed=2)
    assert a.mean == pytest.approx(b.mean) and a.ci95 == pytest.approx(b.ci95)
    assert a.ci95[0] < a.mean < a.ci95[1]
    assert b.n_samples == 5 * a.n_samples and b.n_patients == a.n_patients == 10
    # the audit's bootstrap gives the same estimate and interval
    boot = bootstrap("patient_accuracy", repeated, classes=CLASSES, n_boot=400, seed=2)
    assert boot.point == pytest.approx(b.mean) and boot.ci() == pytest.approx(b.ci95)


def test_leave_one_patient_out_pools_patient_votes():
    folds = [HAND[HAND["patient_id"] == p].reset_index(drop=True) for p in "abcd"]
    e = estimate("patient_accuracy", folds, classes=CLASSES, n_boot=200)
    assert e.mean == pytest.approx(0.5) and e.fold_values == [1.0, 0.0, 0.0, 1.0]
    assert e.ci95[0] <= 0.5 <= e.ci95[1]


def test_mixed_labels_use_the_mode_and_say_so():
    f = pd.DataFrame({"patient_id": ["a", "a", "a", "b"], "y_true": ["II", "II", "IV", "IV"],
                      "y_pred": ["II", "II", "II", "IV"]})
    v = patient_votes(f, CLASSES)
    assert v["y_true"].tolist() == ["II", "IV"] and v["label_mixed"].tolist() == [True, False]
    e = estimate("patient_accuracy", [f], classes=CLASSES, n_boot=50)
    assert e.mean == 1.0 and e.notes and "most frequent label" in e.notes[0]
    assert estimate("accuracy", [f], classes=CLASSES, n_boot=50).notes == []


def test_patient_metric_needs_patient_ids():
    with pytest.raises(HarnessError, match="patient id"):
        compute_metric("patient_accuracy", ["II"], ["II"], CLASSES)


def _with_proba(frame: pd.DataFrame, proba: np.ndarray, classes=CLASSES) -> pd.DataFrame:
    cols = pd.DataFrame(proba, columns=[proba_column(c) for c in classes])
    return pd.concat([frame.reset_index(drop=True), cols], axis=1)


def test_mean_probability_lets_confident_rows_outweigh_a_majority_of_unsure_ones():
    """Patient e: two unsure rows lean II, one sure row says IV; the vote says II, the mean
    probability IV (II 0.283, III 0.25, IV 0.467). Truth IV."""
    f = pd.DataFrame({"patient_id": ["e"] * 3, "y_true": ["IV"] * 3, "y_pred": ["II", "II", "IV"]})
    proba = np.array([[0.40, 0.35, 0.25], [0.40, 0.35, 0.25], [0.05, 0.05, 0.90]])
    soft = _with_proba(f, proba)
    assert patient_votes(f, CLASSES)["y_pred"].tolist() == ["II"]
    assert patient_votes(soft, CLASSES)["y_pred"].tolist() == ["IV"]
    kw = dict(classes=CLASSES, patient_ids=f["patient_id"])
    assert compute_metric("patient_accuracy", f["y_true"], f["y_pred"], **kw) == 0.0
    assert compute_metric("patient_accuracy", f["y_true"], f["y_pred"], **kw,
                          proba=soft.filter(like="proba:")) == 1.0
    # the row metrics do not use the probabilities
    assert compute_metric("accuracy", f["y_true"], f["y_pred"], CLASSES) == pytest.approx(1 / 3)
    assert estimate("patient_accuracy", [soft], classes=CLASSES, n_boot=20).notes == [SOFT_VOTE_NOTE]
    assert estimate("patient_accuracy", [f], classes=CLASSES, n_boot=20).notes == [VOTE_NOTE]
    mixed = estimate("patient_accuracy", [soft, f], classes=CLASSES, n_boot=20).notes
    assert len(mixed) == 1 and "in 1 fold(s)" in mixed[0]


def test_mean_probability_equals_sklearn_on_patient_means():
    """The patient prediction is the argmax of the patient's mean probability row, scored
    like scikit-learn scores one row per patient; a class the model never saw counts 0."""
    rng = np.random.default_rng(7)
    pid = rng.choice([f"p{i}" for i in range(25)], 200)
    truth = {p: rng.choice(CLASSES) for p in np.unique(pid)}
    y = np.array([truth[p] for p in pid])
    seen = ["II", "IV"]  # this model never saw III
    proba = rng.dirichlet([1.0, 1.0], size=len(y))
    f = pd.DataFrame({"patient_id": pid, "y_true": y, "y_pred": np.array(seen)[proba.argmax(1)]})
    soft = _with_proba(f, proba, seen)
    means = pd.DataFrame(proba, columns=seen).groupby(pid).mean()
    expected_pred = means.idxmax(axis=1)
    expected_true = pd.Series(truth).loc[means.index]
    got = compute_metric("patient_balanced_accuracy", y, f["y_pred"], CLASSES, pid, proba=soft.filter(like="proba:"))
    assert got == pytest.approx(balanced_accuracy_score(expected_true, expected_pred))
    assert patient_votes(soft, CLASSES)["y_pred"].tolist() == expected_pred.tolist()


def test_probabilities_for_an_unknown_class_are_refused():
    f = _with_proba(HAND.iloc[:2], np.array([[1.0], [1.0]]), ["V"])
    with pytest.raises(HarnessError, match="not among"):
        estimate("patient_accuracy", [f], classes=CLASSES, n_boot=10)
