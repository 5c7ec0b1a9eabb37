"""The did-not-learn guard: its rule on fixed numbers, and end to end on a tiny cohort
where one baseline cannot learn and others do."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from harness.audit.progression_mae import audit_numbers, verdict
from harness.guard import (
    ABS_MARGIN,
    MAX_GUARD_ROWS,
    FoldGuard,
    fold_did_not_learn,
    guard_metric,
    guard_rows,
    is_trivial_control,
    run_guard,
)
from harness.runner import RunOptions, run_suite
from harness.suite import parse_suite
from test_runner import TINY_SUITE

HELPERS = Path(__file__).parent / "helpers"
UNTRAINED = "untrained_baseline:UntrainedGrader"


# --------------------------------------------------------------------------- the rule


def test_fold_rule_margins():
    assert fold_did_not_learn("accuracy", 0.5 + ABS_MARGIN, 0.5)  # not clearly above
    assert not fold_did_not_learn("accuracy", 0.5 + ABS_MARGIN + 0.01, 0.5)
    assert fold_did_not_learn("accuracy", 0.3, 0.47)  # below the majority class
    assert fold_did_not_learn("mae", 0.9, 1.0) and not fold_did_not_learn("mae", 0.89, 1.0)
    assert fold_did_not_learn("accuracy", None, 0.5) is None


def test_run_rule_is_most_known_folds_and_controls_are_exempt():
    def g(flag):
        return FoldGuard("accuracy", train=0.4 if flag else 0.9, train_trivial=0.5, did_not_learn=flag)

    assert run_guard("cnn", "accuracy", [g(True), g(True), g(False)]).did_not_learn is True
    assert run_guard("cnn", "accuracy", [g(True), g(False)]).did_not_learn is False  # half is not most
    unknown = run_guard("cnn", "accuracy", [None, None])
    assert unknown.did_not_learn is None and unknown.status() == "unknown"
    assert "older than the guard" in unknown.notes[0]
    partly = run_guard("cnn", "accuracy", [None, g(True)])  # the known fold decides
    assert partly.did_not_learn is True and partly.folds_known == 1
    control = run_guard("majority", "accuracy", [g(True)])
    assert control.control and control.did_not_learn is False
    assert is_trivial_control("mean") and not is_trivial_control("patient_memorizer")


def test_guard_metric_and_rows_are_deterministic():
    assert guard_metric(["balanced_accuracy", "accuracy"], "classification") == "balanced_accuracy"
    assert guard_metric(["mae", "rmse"], "regression") == "mae"
    assert guard_metric([], "regression") == "mae"
    ids = [f"s{i}" for i in range(5000)]
    a, b = guard_rows(ids, seed=3), guard_rows(ids, seed=3)
    assert a == b and len(a) == MAX_GUARD_ROWS and a == sorted(a, key=ids.index)
    assert guard_rows(ids[:10], seed=3) == ids[:10]


def _frames(offset: float, n_pat: int = 6, seed: int = 0) -> list[pd.DataFrame]:
    rng = np.random.default_rng(seed)
    y = np.repeat(rng.uniform(2, 20, n_pat), 3)
    pid = np.repeat([f"p{i}" for i in range(n_pat)], 3)
    return [pd.DataFrame({"patient_id": pid, "y_true": y, "y_pred": y + offset + rng.normal(0, 0.1, len(y))})]


def test_progression_verdict_is_inconclusive_when_the_model_did_not_learn():
    preds = {("cnn_lstm", "row_random"): _frames(0.0), ("cnn_lstm", "patient_kfold"): _frames(0.1),
             ("mean", "row_random"): _frames(5.0), ("mean", "patient_kfold"): _frames(5.0)}
    learned = verdict(audit_numbers(preds, n_boot=100))
    assert "Inconclusive" not in " ".join(learned)
    flag = {"did_not_learn": True, "metric": "mae", "train": 4.9, "train_trivial": 5.0}
    numbers = audit_numbers(preds, n_boot=100, learning={("cnn_lstm", "row_random"): flag})
    lines = verdict(numbers)
    assert len(lines) == 1 and lines[0].startswith("**Inconclusive: cnn_lstm did not learn**")
    assert ("cnn_lstm", "row_random") not in numbers["vs_mean"]  # no comparison drawn from it


# --------------------------------------------------------------------------- end to end


def _suite(baselines: list[str], params: dict | None = None, protocols: list[str] | None = None) -> dict:
    d = json.loads(json.dumps(TINY_SUITE))
    d["baselines"] = {"default": baselines, "params": params or {}}
    d["metrics"]["names"] = ["accuracy", "balanced_accuracy", "patient_accuracy", "patient_balanced_accuracy"]
    if protocols:
        d["protocols"] = {p: d["protocols"][p] for p in protocols}
    d["audit"] = {"n_permutations": 9, "selection": False}  # the guard's sections, not the audit's cost
    return d


def _run(suite: dict, cohort: Path, out: Path, cache: Path, uri: str = "none"):
    with pytest.MonkeyPatch.context() as mp:
        mp.syspath_prepend(str(HELPERS))
        return run_suite(parse_suite(suite), RunOptions(data=cohort, out=out, tracking_uri=uri, cache_dir=cache,
                                                        progress=False))


@pytest.fixture(scope="module")
def guarded_run(tiny_rembrandt, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("guard")
    suite = _suite(["majority", "logreg_dwtdct", "patient_memorizer", UNTRAINED],
                   {"logreg_dwtdct": {"image_size": 32}, "patient_memorizer": {"image_size": 32}})
    return _run(suite, tiny_rembrandt, tmp / "out", tmp / "cache"), tmp, suite


def test_untrained_model_is_flagged_and_learners_are_not(guarded_run, capsys):
    result, tmp, _ = guarded_run
    assert result.failures == []
    learning = {(g["baseline"], g["protocol"]): g for g in result.summary["learning"]}
    assert len(learning) == 8
    for protocol in ("row_random", "patient_kfold"):
        bad = learning[(UNTRAINED, protocol)]
        assert bad["did_not_learn"] is True and bad["train"] <= bad["train_trivial"] + ABS_MARGIN
        for b in ("logreg_dwtdct", "patient_memorizer"):
            good = learning[(b, protocol)]
            assert good["did_not_learn"] is False and good["train"] > good["train_trivial"] + ABS_MARGIN
            assert good["val"] is not None and good["val_trivial"] is not None
        ctl = learning[("majority", protocol)]
        assert ctl["control"] is True and ctl["did_not_learn"] is False
    # every result row carries its run's flag; the patient metrics are there too
    for r in result.summary["results"]:
        assert r["did_not_learn"] is (r["baseline"] == UNTRAINED)
    assert {r["metric"] for r in result.summary["results"]} >= {"patient_accuracy", "patient_balanced_accuracy"}
    assert "did_not_learn" in json.loads((tmp / "out" / "summary.json").read_text())["results"][0]


def test_reports_withhold_comparisons_from_the_untrained_model(guarded_run):
    result, tmp, _ = guarded_run
    reports = tmp / "out" / "reports"
    leak = (reports / "leakage.md").read_text()
    assert f"inflation not computed: {UNTRAINED} did not learn" in leak
    assert "one prediction per patient and fold (patient_accuracy)" in leak
    over = (reports / "overfitting.md").read_text()
    assert f"{UNTRAINED} | patient_kfold: did not learn" in over and "Rule: a fold did not learn" in over
    audit = json.loads((reports / "audit.json").read_text())["variants"][""]
    assert sorted(audit["did_not_learn"]) == [f"{UNTRAINED} | patient_kfold", f"{UNTRAINED} | row_random"]
    assert "Site and target:" in leak and "site" in audit  # the site-confound check ran (or says why not)
    from harness.audit.inflation import inflation_table, read_predictions

    preds = read_predictions(tmp / "out", "classification")
    table = inflation_table(preds, {"row_random": True, "patient_kfold": False}, "accuracy", n_boot=50,
                            did_not_learn={(UNTRAINED, "row_random")})
    assert UNTRAINED not in set(table["baseline"]) and "logreg_dwtdct" in set(table["baseline"])


def test_printed_table(guarded_run):
    result, _, _ = guarded_run
    from harness.summary import format_table

    table = format_table(result.summary)
    assert f"{UNTRAINED} (did not learn)" in table and "logreg_dwtdct (did not learn" not in table
    assert "DID NOT LEARN" in table


def test_mlflow_tags_and_metrics(guarded_run, tiny_rembrandt, tmp_path):
    """Folds taken from the guarded run's cache are logged with their cached guard."""
    _, tmp, _ = guarded_run
    suite = _suite(["majority", "logreg_dwtdct", UNTRAINED], {"logreg_dwtdct": {"image_size": 32}}, ["row_random"])
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    result = _run(suite, tiny_rembrandt, tmp_path / "out", tmp / "cache", uri)
    assert result.folds_fitted == 0 and result.failures == []
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=uri)
    exp = client.get_experiment_by_name("harness/tiny-grading")
    runs = client.search_runs([exp.experiment_id], max_results=500)
    parents = {(r.data.tags["baseline"], r.data.tags["protocol"]): r for r in runs
               if "mlflow.parentRunId" not in r.data.tags}
    assert parents[(UNTRAINED, "row_random")].data.tags["harness.did_not_learn"] == "true"
    assert parents[("logreg_dwtdct", "row_random")].data.tags["harness.did_not_learn"] == "false"
    assert parents[("majority", "row_random")].data.tags["harness.did_not_learn"] == "false"
    m = parents[("logreg_dwtdct", "row_random")].data.metrics
    assert m["train_accuracy"] > m["train_trivial_accuracy"] and "val_accuracy" in m and "patient_accuracy" in m
    folds = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parents[(UNTRAINED, "row_random")].info.run_id]
    assert folds and all("train_accuracy" in f.data.metrics for f in folds)
    assert all(f.data.tags["harness.did_not_learn"] == "true" for f in folds)


def test_fold_cache_without_guard_files_still_loads_as_unknown(guarded_run, tiny_rembrandt):
    result, tmp, suite = guarded_run
    cache = tmp / "old-cache"
    shutil.copytree(tmp / "cache", cache)
    removed = list((cache / "folds").rglob("fold*-guard.json"))
    assert removed
    for path in removed:
        path.unlink()  # as a fold cache written before the guard existed
    again = _run(suite, tiny_rembrandt, tmp / "again", cache)
    assert again.folds_fitted == 0 and again.failures == []
    learning = {(g["baseline"], g["protocol"]): g for g in again.summary["learning"]}
    assert learning[(UNTRAINED, "row_random")]["did_not_learn"] is None
    assert "older than the guard" in learning[(UNTRAINED, "row_random")]["notes"][0]
    assert learning[("majority", "row_random")]["did_not_learn"] is False  # a control needs no score
    # same predictions, same metrics as the run that wrote the cache
    strip = lambda s: [(r["baseline"], r["protocol"], r["metric"], r["mean"], r["ci95"]) for r in s["results"]]
    assert strip(again.summary) == strip(result.summary)
    from harness.summary import format_table

    assert "LEARNING UNKNOWN" in format_table(again.summary)


@pytest.mark.slow  # a torch CNN fit: about 15 s on two shared cores
def test_resnet18_with_zero_learning_rate_is_flagged(tiny_rembrandt, tmp_path):
    """The real CNN, unable to learn (learning rate 0): flagged, its inflation withheld."""
    # row_random only: on this 8-patient cohort a patient_kfold fold leaves a training batch
    # of one slice, which BatchNorm refuses (a resnet18_grader limitation, not the guard's)
    suite = _suite(["resnet18_grader"], {"resnet18_grader": {"lr": 0.0, "image_size": 32, "epochs": 2}}, ["row_random"])
    result = _run(suite, tiny_rembrandt, tmp_path / "out", tmp_path / "cache")
    assert result.failures == []
    (g,) = result.summary["learning"]
    assert g["did_not_learn"] is True and g["train"] <= g["train_trivial"] + ABS_MARGIN
    assert all(r["did_not_learn"] for r in result.summary["results"])
    assert "resnet18_grader | row_random: did not learn" in (tmp_path / "out" / "reports" / "overfitting.md").read_text()
