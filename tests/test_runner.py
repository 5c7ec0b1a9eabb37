"""End to end on a tiny cohort: splits, folds, summary.json, MLflow runs, manifests."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from harness.errors import LeakySplitError
from harness.runner import RunOptions, run_suite
from harness.splits import SplitManifest
from harness.suite import parse_suite

TINY_SUITE = {
    "suite": {"name": "tiny-grading", "task": "grading"},
    "data": {"cohort": "rembrandt"},
    "task": {"modalities": ["T1post", "FLAIR"], "min_foreground": 0.15, "slice_step": 2},
    "baselines": {"default": ["majority", "logreg_dwtdct"],
                  "params": {"logreg_dwtdct": {"image_size": 32}}},
    "protocols": {"row_random": {"ratios": [0.8, 0.1, 0.1]}, "patient_kfold": {"n_splits": 3}},
    "metrics": {"names": ["accuracy", "balanced_accuracy", "macro_f1"], "n_boot": 200},
}


def tiny_suite():
    return parse_suite(json.loads(json.dumps(TINY_SUITE)))


def run_tiny(cohort: Path, cache: Path, out: Path, tracking: str = "none", **kw):
    opts = RunOptions(data=cohort, out=out, tracking_uri=tracking, cache_dir=cache, progress=False, **kw)
    return run_suite(tiny_suite(), opts)


def test_summary_has_every_baseline_protocol_metric(tiny_rembrandt, session_cache, tmp_path, capsys):
    result = run_tiny(tiny_rembrandt, session_cache, tmp_path / "out")
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert summary["suite"] == "tiny-grading"
    assert set(summary["dataset"]) >= {"name", "fingerprint", "n_patients", "n_samples"}
    assert summary["dataset"]["n_patients"] >= 6  # 8 patients, at most a couple without grade
    keys = {(r["baseline"], r["protocol"], r["metric"]) for r in summary["results"]}
    assert keys == {
        (b, p, m)
        for b in ("majority", "logreg_dwtdct")
        for p in ("row_random", "patient_kfold")
        for m in ("accuracy", "balanced_accuracy", "macro_f1")
    }
    for r in summary["results"]:
        assert r["ci95"][0] <= r["mean"] <= r["ci95"][1]
        assert r["n_folds"] == (1 if r["protocol"] == "row_random" else 3)
        assert r["leaky_protocol"] == (r["protocol"] == "row_random")
    assert set(summary["manifests"]) == {"row_random", "patient_kfold"}
    for protocol, sha in summary["manifests"].items():
        manifest = SplitManifest.load(tmp_path / "out" / "manifests" / f"{protocol}.json")
        assert manifest.sha256 == sha
    # the table printed after the run puts both protocols side by side
    table = capsys.readouterr().out
    assert "row_random (LEAKY)" in table and "patient_kfold" in table
    # predictions: every sample of the patient-level protocol predicted exactly once
    preds = (tmp_path / "out" / "predictions" / "majority__patient_kfold.csv").read_text().splitlines()
    assert len(preds) - 1 == summary["dataset"]["n_samples"]
    assert result.failures == []


def test_same_seed_same_metrics_and_manifest_reused(tiny_rembrandt, tmp_path):
    a = run_tiny(tiny_rembrandt, tmp_path / "cache", tmp_path / "a", seed=11)
    b = run_tiny(tiny_rembrandt, tmp_path / "cache", tmp_path / "b", seed=11)
    assert b.folds_fitted == 0 and b.folds_reused == a.folds_fitted
    # a fresh cache refits everything and still gets the same numbers
    c = run_tiny(tiny_rembrandt, tmp_path / "cache2", tmp_path / "c", seed=11)
    assert c.folds_fitted == a.folds_fitted
    strip = lambda s: [(r["baseline"], r["protocol"], r["metric"], r["mean"], r["ci95"]) for r in s["results"]]
    assert strip(a.summary) == strip(b.summary) == strip(c.summary)
    assert a.summary["manifests"] == c.summary["manifests"]
    d = run_tiny(tiny_rembrandt, tmp_path / "cache", tmp_path / "d", seed=12)
    assert d.summary["manifests"] != a.summary["manifests"]


def test_supplied_manifest_with_patient_on_both_sides_is_refused(tiny_rembrandt, session_cache, tmp_path):
    run_tiny(tiny_rembrandt, session_cache, tmp_path / "out", protocols=["patient_kfold"])
    manifest = SplitManifest.load(tmp_path / "out" / "manifests" / "patient_kfold.json")
    fold = manifest.folds[0]
    moved = fold.train[0]  # a training sample of some patient, also put into test
    fold.test.append(moved)
    fold.train.remove(moved)
    leaky_path = tmp_path / "tampered.json"
    manifest.save(leaky_path)
    patient = moved.split("/")[0]
    with pytest.raises(LeakySplitError, match=patient):
        run_tiny(tiny_rembrandt, session_cache, tmp_path / "out2", split_manifest=leaky_path)
    # the same manifest declared as the leaky published protocol runs, labelled leaky
    manifest.protocol = "row_random"
    manifest.save(leaky_path)
    result = run_tiny(tiny_rembrandt, session_cache, tmp_path / "out3", split_manifest=leaky_path,
                      baselines=["majority"])
    assert all(r["leaky_protocol"] for r in result.summary["results"])


def test_bad_files_are_named_and_the_rest_of_the_cohort_is_used(tiny_rembrandt, tmp_path):
    import shutil

    cohort = tmp_path / "cohort"
    shutil.copytree(tiny_rembrandt, cohort)
    # series the tiny suite reads (T1post and FLAIR)
    series_dirs = sorted({p.parent for p in cohort.rglob("*.dcm") if "POST" in p.parent.name or "FLAIR" in p.parent.name})
    truncated = sorted(series_dirs[0].glob("*.dcm"))[3]
    truncated.write_bytes(truncated.read_bytes()[:300])
    not_dicom = series_dirs[1] / "notes.dcm"
    not_dicom.write_text("this is not a DICOM file")
    odd_patient = series_dirs[2].parts[len(cohort.parts)]
    result = run_tiny(cohort, tmp_path / "cache", tmp_path / "out", baselines=["majority"])
    problems = (tmp_path / "out" / "problems.csv").read_text()
    assert truncated.name in problems and str(truncated.parent.name) in problems
    assert "notes.dcm" in problems
    assert result.failures == []
    # every patient with images and a grade still takes part
    preds = (tmp_path / "out" / "predictions" / "majority__patient_kfold.csv").read_text()
    assert odd_patient in preds


PLUGIN_BASELINE = '''
import numpy as np
from baselines.registry import Baseline


class ConstantGrade(Baseline):
    """Predicts one fixed grade (a stand-in for a baseline whose code gets fixed)."""

    name = "constant_grade"
    tasks = frozenset({"grading"})
    target_kinds = frozenset({"classification"})
    profiles = {"quick": {}, "paper": {}}

    def fit(self, train, val, ctx):
        return self

    def predict(self, data):
        return np.full(len(data), GRADE, dtype=object)
'''


def test_changed_baseline_code_refits_instead_of_reusing_cached_folds(tiny_rembrandt, tmp_path, monkeypatch):
    """Same name, same params, other code: the fold cache must not hand back the old predictions."""
    from baselines.registry import baseline_code_digest

    module = tmp_path / "plugin_constant_grade.py"
    module.write_text(PLUGIN_BASELINE.replace("GRADE", "'II'"))
    monkeypatch.syspath_prepend(str(tmp_path))
    suite = json.loads(json.dumps(TINY_SUITE))
    suite["baselines"] = {"default": ["plugin_constant_grade:ConstantGrade"]}
    suite["protocols"] = {"patient_kfold": {"n_splits": 3}}

    def run(out: str):
        baseline_code_digest.cache_clear()
        import importlib
        import sys
        sys.modules.pop("plugin_constant_grade", None)
        importlib.invalidate_caches()
        opts = RunOptions(data=tiny_rembrandt, out=tmp_path / out, tracking_uri="none", cache_dir=tmp_path / "cache",
                          progress=False)
        return run_suite(parse_suite(suite), opts)

    first = run("a")
    assert first.folds_fitted == 3
    assert run("b").folds_reused == 3  # unchanged code: from the cache
    module.write_text(PLUGIN_BASELINE.replace("GRADE", "'IV'"))
    fixed = run("c")
    assert fixed.folds_fitted == 3 and fixed.folds_reused == 0
    preds = (tmp_path / "c" / "predictions").glob("*.csv")
    assert {line.rsplit(",", 1)[-1] for p in preds for line in p.read_text().splitlines()[1:]} == {"IV"}
    baseline_code_digest.cache_clear()
