"""Fast unit tests of the audit's pieces: bootstrap comparisons, identity probe,
permutation test, selection optimism, provenance flags, overfitting numbers, rendering."""

from __future__ import annotations

import numpy as np
import pandas as pd

from harness.audit import report as R
from harness.audit.identity_probe import identity_probe
from harness.audit.inflation import beats, bootstrap
from harness.audit.overfitting import curve_summary, effective_sample_size
from harness.audit.permutation import permutation_test
from harness.audit.provenance import label_provenance
from harness.audit.selection import preprocessing_scope, selection_study
from harness.metrics import estimate
from harness.splits import make_manifest


def _cohort(n_pat=12, rows=4, signal=True, seed=0):
    rng = np.random.default_rng(seed)
    pids = np.repeat([f"P{i:02d}" for i in range(n_pat)], rows)
    y_pat = rng.uniform(1, 10, n_pat)
    fingerprint = rng.normal(size=(n_pat, 6)) * 3
    x = np.repeat(fingerprint, rows, axis=0) + rng.normal(scale=0.1, size=(n_pat * rows, 6))
    y = np.repeat(y_pat, rows)
    if signal:
        x[:, 0] = y + rng.normal(scale=0.3, size=len(y))
    samples = pd.DataFrame({"sample_id": [f"s{i}" for i in range(len(y))], "patient_id": pids, "target": y})
    return x, samples


def test_bootstrap_matches_summary_estimate_and_paired_difference():
    rng = np.random.default_rng(0)
    frames = [pd.DataFrame({"patient_id": list("aabbcc"), "y_true": rng.normal(size=6), "y_pred": rng.normal(size=6)})
              for _ in range(3)]
    b = bootstrap("mae", frames, n_boot=300, seed=1)
    e = estimate("mae", frames, n_boot=300, seed=1)
    assert np.isclose(b.point, e.mean) and np.allclose(b.ci(), e.ci95)
    good = [f.assign(y_pred=f["y_true"] + 0.01) for f in frames]
    diff, better = beats("mae", good, frames, n_boot=300)
    assert better and diff.point < 0
    same, better = beats("mae", frames, frames, n_boot=300)
    assert not better and same.point == 0


def test_identity_probe_recognises_fingerprinted_patients():
    x, samples = _cohort(signal=False)
    probe = identity_probe(x, samples["patient_id"].to_numpy(), features="toy")
    assert probe.accuracy > 0.9 and probe.chance < 0.1 and "toy" in probe.sentence()
    noise = np.random.default_rng(1).normal(size=x.shape)
    assert identity_probe(noise, samples["patient_id"].to_numpy()).accuracy < 0.5


def test_permutation_p_value_small_with_signal_large_without():
    x, samples = _cohort(signal=True)
    m = {"patient_kfold": make_manifest("patient_kfold", samples, seed=0, task="regression",
                                        dataset_fingerprint="x", n_splits=3)}
    sig = permutation_test(x, samples, m, metric="mae", regression=True, n_permutations=39)[0]
    assert sig.p_value <= 0.05 and sig.observed < sig.null_mean
    x0, s0 = _cohort(signal=False, seed=3)
    m0 = {"patient_kfold": make_manifest("patient_kfold", s0, seed=0, task="regression",
                                         dataset_fingerprint="x", n_splits=3)}
    assert permutation_test(x0, s0, m0, metric="mae", regression=True, n_permutations=39)[0].p_value > 0.05


def test_permutation_null_equals_sklearn_ridge_refits_per_shuffle():
    """The null solved for all shuffles at once is the null of refitting sklearn's
    StandardScaler + Ridge / RidgeClassifier on each shuffle (classes missing from a
    training fold included)."""
    from sklearn.linear_model import Ridge, RidgeClassifier
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    from harness.audit.permutation import _fold_indices, _scores, permute_by_patient
    from harness.metrics import compute_metric

    x, samples = _cohort(n_pat=12, rows=4, signal=True)
    grades = np.array(["II", "III", "IV", "IV"])[np.arange(12) % 4]
    cls = samples.assign(target=np.repeat(grades, 4))
    for frame, regression, metric, classes in ((samples, True, "mae", None),
                                               (cls, False, "balanced_accuracy", ["II", "III", "IV"])):
        m = make_manifest("patient_kfold", frame, seed=0, task="regression" if regression else "classification",
                          dataset_fingerprint="x", n_splits=3)
        index = pd.Index(frame["sample_id"])
        folds = _fold_indices(index, m)
        rng = np.random.default_rng(2)
        ys = np.stack([frame["target"].to_numpy(), *[permute_by_patient(frame, rng) for _ in range(6)]])
        if not regression:  # a shuffle whose first training fold lacks a class
            ys = np.concatenate([ys, np.where(ys[:1] == "II", "III", ys[:1])]).astype(object)
        fast = _scores(x, ys, folds, metric, regression, classes)
        slow = []
        for yp in ys:
            per_fold = []
            for tr, te in folds:
                model = make_pipeline(StandardScaler(), Ridge(alpha=10.0) if regression else RidgeClassifier(alpha=10.0))
                pred = model.fit(x[tr], yp[tr]).predict(x[te])
                per_fold.append(compute_metric(metric, yp[te], pred, classes))
            slow.append(np.mean(per_fold))
        np.testing.assert_allclose(fast, slow, rtol=1e-9, atol=1e-12)


def test_selection_on_test_set_is_optimistic_and_scope_is_reported():
    x, samples = _cohort(signal=False, n_pat=10)
    res = selection_study(x, samples["target"].to_numpy(), samples["patient_id"].to_numpy(),
                          metric="mae", regression=True, repeats=3, outer=5)
    assert len(res.grid) == 30 and res.optimism > 0  # picking the best of 30 noisy scores flatters
    m = {"row_random": make_manifest("row_random", samples, seed=0, task="regression", dataset_fingerprint="x",
                                     ratios=[0.8, 0.0, 0.2])}
    scope = preprocessing_scope(x, samples["target"].to_numpy(), pd.Index(samples["sample_id"]), m,
                                metric="mae", regression=True)
    assert list(scope.columns) == ["protocol", "metric", "fit_on_train", "fit_on_all", "effect"]


def test_selection_over_named_feature_sets_picks_among_them_and_keeps_the_name():
    """A grid of backbones: the set that carries the target wins the test-set choice, and
    the result (and its cached form) names it."""
    from harness.audit.cache import selection_decode, selection_encode

    rng = np.random.default_rng(0)
    pids = np.repeat(np.arange(20), 4).astype(str)
    y = np.repeat(rng.integers(0, 2, 20), 4).astype(str)
    signal = np.c_[(y == "1") * 2.0 + rng.normal(0, 1, len(y)), rng.normal(0, 1, (len(y), 3))]
    noise = rng.normal(0, 1, (len(y), 4))
    res = selection_study({"noise": noise, "signal": signal}, y, pids, metric="accuracy", regression=False,
                          repeats=2, outer=4)
    assert len(res.grid) == 2 * 6 * 5 and set(res.grid["features"]) == {"noise", "signal"}
    assert res.selected["features"] == "signal" and res.nested_score > 0.6
    back = selection_decode(selection_encode(res))
    assert back.selected == res.selected and back.nested_score == res.nested_score
    single = selection_study(signal, y, pids, metric="accuracy", regression=False, repeats=2, outer=4)
    assert "features" not in single.grid and "features" not in single.selected  # one set: the grid as before


def test_provenance_flags_single_class_pseudo_labels_imputation_and_sibling_labels():
    from harness.tasks import TaskData

    grades = pd.DataFrame({"pseudo_grade": ["IV"] * 20})
    samples = pd.DataFrame({"patient_id": list("abcdef"), "target": ["long", "long", "short", "mid", "long", "short"],
                            "imputed": [True, True, False, False, True, False]})
    grade = TaskData("survival", "classification", samples.assign(target=["LGG", "LGG", "HGG", "HGG", "LGG", "HGG"]),
                     None)
    surv = TaskData("survival", "classification", samples, None)
    prov = label_provenance({"pseudo_grades": grades}, samples, {"grade": grade, "survival_class": surv})
    flagged = " ".join(prov.loc[prov["flag"], "message"])
    assert "100% of 20 scans the grade IV" in flagged
    assert "class 'long': 100%" in flagged
    assert "grade is predicted from survival_class alone for 100%" in flagged


def test_overfitting_numbers():
    h = pd.DataFrame({"epoch": range(5), "train_loss": [1, .5, .3, .2, .1], "val_loss": [1, .6, .5, .7, .9]})
    c = curve_summary(h)
    assert c["best_epoch"] == 2 and c["last_epoch"] == 4 and np.isclose(c["gap_at_best"], 0.2)
    assert effective_sample_size(60, 6, 1.0) == 6 and effective_sample_size(60, 6, 0.0) == 60


def test_report_html_is_self_contained_with_figures(tmp_path):
    rows = [{"baseline": b, "protocol": p, "mean": v, "ci95": (v - .1, v + .1)}
            for b, p, v in [("mean", "row", 1.0), ("mean", "lopo", 1.1), ("lstm", "row", .5), ("lstm", "lopo", 1.3)]]
    rep = R.Report("t", sections=[R.Section("s", ["text"], [("cap", pd.DataFrame(rows))],
                                            [R.Figure("bars", R.bars_with_ci(rows, group="baseline", bar="protocol"), "c")],
                                            ["a flag"])])
    paths = rep.write(tmp_path, "x")
    html = (tmp_path / "x.html").read_text()
    assert html.count("data:image/png;base64,") == 1 and "FLAG: a flag" in html
    md = (tmp_path / "x.md").read_text()
    assert "![c](figures/x-bars.png)" in md and (tmp_path / "figures" / "x-bars.png").exists()
    assert len(paths) == 2
