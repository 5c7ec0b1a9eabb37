"""The segmentation suite end to end on a tiny cohort: tables, summary, report, resume.

Segmentation runs through the runner's one driver (its plugin: harness.segmentation.task),
so the same seed must give the same per-arm, per-region table serially, with ``--jobs 2``,
from a supplied ``--split-manifest`` and after an interrupted run is resumed.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("torch")

from harness.runner import RunOptions, run_suite  # noqa: E402
from harness.suite import parse_suite  # noqa: E402

TINY_SUITE = {
    "suite": {"name": "segmentation-tiny", "task": "segmentation"},
    "data": {"cohort": "brats20", "patients": 6, "seed": 3, "signal": "growth", "grid_mm": 8.0},
    "task": {"max_dust": 2, "min_lesion": 2, "n_examples": 2,
             "ablations": {"preprocessing": ["none", "zscore_rescale"], "losses": ["dice_focal_edge005"]},
             "transfer": {"patients": 4, "seed": 5, "grid_mm": 10.0, "n_splits": 2, "finetune_epochs": 1,
                          "freeze": ["decoder"]}},
    "baselines": {"default": ["unet3d"],
                  "params": {"unet3d": {"widths": [4, 8], "epochs": 1, "batch_size": 2, "patience": 1}}},
    "protocols": {"patient_kfold": {"n_splits": 2, "val_fraction": 0.2}},
    "metrics": {"n_boot": 50},
}


def _run(tmp_path: Path, out: str, tracking: str = "none", cache: str = "cache", **options):
    suite = parse_suite(TINY_SUITE)
    opts = RunOptions(out=tmp_path / out, cache_dir=tmp_path / cache, tracking_uri=tracking, progress=False,
                      **options)
    return run_suite(suite, opts)


def _table(out_dir: Path) -> dict:
    """Per arm x metric (regions included): mean, CI and the fold values."""
    summary = json.loads((out_dir / "summary.json").read_text())
    return {(r["baseline"], r["protocol"], r["metric"]): (r["mean"], r["ci95"], r["fold_values"])
            for r in summary["results"]}


class Killed(BaseException):
    """Stands in for the process being stopped between two folds."""


@pytest.fixture(scope="module")
def serial_run(tmp_path_factory):
    """One uninterrupted serial run: the reference table."""
    tmp = tmp_path_factory.mktemp("serial")
    result = _run(tmp, "out")
    assert not result.failures, result.failures
    return tmp / "out", result


def test_interrupted_run_resumes_its_finished_folds_to_the_same_table(tmp_path, serial_run, monkeypatch):
    from harness.segmentation.task import SegmentationTask, run_seg_fold_job

    reference, first = serial_run
    calls = []

    def stop_after_three(job, cases):
        if len(calls) == 3:
            raise Killed()
        calls.append(job)
        return run_seg_fold_job(job, cases)

    monkeypatch.setattr(SegmentationTask, "job_fn", staticmethod(stop_after_three))
    with pytest.raises(Killed):
        _run(tmp_path, "killed")
    finished = sum(len(job.run_indices) for job in calls)  # arms sharing a fit share its job
    monkeypatch.undo()
    resumed = _run(tmp_path, "resumed")
    assert not resumed.failures, resumed.failures
    assert resumed.folds_reused == finished > 0
    assert resumed.folds_fitted == first.folds_fitted - 3
    assert _table(tmp_path / "resumed") == _table(reference)
    assert (tmp_path / "resumed" / "report.md").read_text().split("Run time")[0] == \
        (reference / "report.md").read_text().split("Run time")[0]
    # the runner's leakage and overfitting reports, now for segmentation too
    audit = json.loads((tmp_path / "resumed" / "reports" / "audit.json").read_text())
    assert set(audit["variants"]) == {"", "transfer"}
    assert not any(v["undeclared_flags"] for v in audit["variants"].values())
    assert (tmp_path / "resumed" / "reports" / "overfitting.md").exists()


def test_two_jobs_and_a_supplied_manifest_give_the_same_table(tmp_path, serial_run):
    reference, first = serial_run
    result = _run(tmp_path, "jobs2", jobs=2, split_manifest=reference / "manifests" / "patient_kfold.json")
    assert not result.failures, result.failures
    assert result.folds_fitted == first.folds_fitted
    assert _table(tmp_path / "jobs2") == _table(reference)


def test_segmentation_has_no_driver_of_its_own():
    from harness.runner import OWN_COMMAND_SUITES, TASK_PLUGINS

    assert set(OWN_COMMAND_SUITES) == {"explain"}
    assert TASK_PLUGINS["segmentation"].startswith("harness.segmentation.task:")


@pytest.mark.slow  # ~30 s on an idle 2-core machine: 10 tiny trainings
def test_tiny_suite_writes_tables_summary_and_report(tmp_path):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    result = _run(tmp_path, "a", tracking=uri)
    assert not result.failures, result.failures
    summary = json.loads((tmp_path / "a" / "summary.json").read_text())
    assert set(summary["dataset"]) >= {"name", "fingerprint", "n_patients", "n_samples"}
    assert summary["dataset"]["n_patients"] == 6
    baselines = {r["baseline"] for r in summary["results"]}
    assert {"unet3d/pre-none", "unet3d/pre-zscore_rescale", "unet3d/loss-dice_focal_edge005",
            "unet3d/post-none", "unet3d/post-dust", "unet3d/tl-source_only", "unet3d/tl-target_only",
            "unet3d/tl-freeze_decoder"} <= baselines
    entry = next(r for r in summary["results"] if r["metric"] == "lesionwise_dice_mean")
    assert {"mean", "ci95", "n_patients", "n_samples", "n_folds", "protocol"} <= set(entry)
    assert entry["n_folds"] == 2 and entry["n_patients"] == 6
    assert 0.0 <= entry["mean"] <= 1.0
    assert set(summary["manifests"]) == {"patient_kfold", "transfer"}
    md = (tmp_path / "a" / "report.md").read_text()
    for title in ("Pre-processing", "Loss functions", "Post-processing", "Transfer learning"):
        assert title in md
    html = (tmp_path / "a" / "report.html").read_text()
    assert "data:image/png;base64," in html
    # the default arm shares its model with the post-processing arms: same raw predictions
    assert result.folds_fitted == 2 * 2 + 3 * 2  # 2 train configs x 2 folds + 3 trained transfer arms x 2 folds
    # the same seed gives the same numbers, and a rerun resumes every fold from the cache
    again = _run(tmp_path, "b")
    # every arm x fold comes from the fold cache (arms that shared a fit each have their own)
    assert again.folds_fitted == 0 and again.folds_reused == len(baselines) * 2
    s2 = json.loads((tmp_path / "b" / "summary.json").read_text())
    a = {(r["baseline"], r["metric"]): r["mean"] for r in summary["results"]}
    b = {(r["baseline"], r["metric"]): r["mean"] for r in s2["results"]}
    assert a == b


def test_same_seed_same_weights():
    import torch

    from baselines.unet3d import UNet3D
    from harness.segmentation.data import SegCase
    from harness.segmentation.training import TrainConfig, seed_everything, train_model

    rng = np.random.default_rng(0)
    cases = []
    for i in range(2):
        lab = np.zeros((8, 8, 8), np.uint8)
        lab[2:6, 2:6, 2:6] = 2
        lab[3:5, 3:5, 3:5] = 3
        img = rng.normal(size=(4, 8, 8, 8)).astype(np.float32) + lab[None]
        cases.append(SegCase(f"p{i}", img, lab, (1.0, 1.0, 1.0)))
    weights = []
    for _ in range(2):
        seed_everything(7)
        model, hist = train_model(UNet3D(4, 3, (4, 8)), cases, cases[:1], TrainConfig(epochs=2, seed=7))
        weights.append(torch.cat([p.detach().flatten() for p in model.parameters()]))
    assert torch.equal(weights[0], weights[1])
    assert len(hist) == 2 and np.isfinite(hist[0]["train_loss"])


def test_segmentation_audit_flags_a_patient_on_both_sides_and_a_copied_volume(tmp_path):
    from types import SimpleNamespace

    from harness.audit.segmentation import write_segmentation_audit
    from harness.segmentation.data import SegCase
    from harness.segmentation.task import case_view
    from harness.splits import Fold, SplitManifest

    rng = np.random.default_rng(0)
    cases = [SegCase(f"p{i}", rng.normal(size=(4, 6, 6, 6)).astype(np.float32), np.zeros((6, 6, 6), np.uint8),
                     (1.0, 1.0, 1.0)) for i in range(4)]
    cases[3] = SegCase("p3", cases[0].image.copy(), cases[0].labels, (1.0, 1.0, 1.0))  # p0's scan again
    view = case_view(cases)
    data = SimpleNamespace(views={"": view})
    clean = Fold(0, ["p0", "p1"], [], ["p2"])
    leaky = Fold(1, ["p0", "p1"], [], ["p1", "p3"])
    manifests = {"": {"patient_kfold": SplitManifest("patient_kfold", False, 0, {}, "classification", "x",
                                                     [clean, leaky])}}
    result = SimpleNamespace(out_dir=tmp_path, runs=[], summary={"dataset": {"name": "d", "n_patients": 4}})
    write_segmentation_audit(suite=SimpleNamespace(name="s"), data=data, manifests=manifests, result=result,
                             log=lambda _: None)
    flags = json.loads((tmp_path / "reports" / "audit.json").read_text())["variants"][""]["undeclared_flags"]
    assert {f["fold"] for f in flags} == {1}
    kinds = " ".join(f["kind"] for f in flags)
    assert "patient" in kinds and "duplicate" in kinds, flags


def test_weights_give_every_fit_its_start(tmp_path):
    """``--weights unet3d=FILE`` is used, not dropped: other start, other folds, other scores."""
    import copy

    import torch

    from baselines.unet3d import UNet3D

    mini = copy.deepcopy(TINY_SUITE)
    mini["task"]["ablations"] = {"preprocessing": ["none"], "losses": [], "postprocessing": False}
    mini["task"]["transfer"] = {"enabled": False}
    torch.manual_seed(123)
    path = tmp_path / "start.pt"
    torch.save(UNet3D(4, 3, (4, 8)).state_dict(), path)
    tables = []
    for name, weights in (("plain", {}), ("weights", {"unet3d": path})):
        opts = RunOptions(out=tmp_path / name, cache_dir=tmp_path / "cache", tracking_uri="none", progress=False,
                          weights=weights)
        result = run_suite(parse_suite(mini), opts)
        assert not result.failures and result.folds_fitted == 2, result.failures
        tables.append(_table(tmp_path / name))
    assert tables[0].keys() == tables[1].keys()
    assert tables[0] != tables[1]


def test_the_suites_metrics_choose_the_scored_columns():
    from harness.errors import HarnessError
    from harness.segmentation.task import suite_metrics
    from harness.suite import load_suite

    names = suite_metrics(load_suite("segmentation").metrics)
    assert len(names) == 17  # 4 families x (mean, ET, TC, WT), and ET on the patients with ET
    assert names[-1] == "lesionwise_dice_ET_present"
    assert suite_metrics(["legacy_dice", "lesionwise_hd95_WT"]) == [
        "legacy_dice_mean", "legacy_dice_ET", "legacy_dice_TC", "legacy_dice_WT", "lesionwise_hd95_WT"]
    with pytest.raises(HarnessError, match="unknown segmentation metric"):
        suite_metrics(["dice"])


def test_run_suite_explain_names_the_explain_command():
    from harness.errors import HarnessError
    from harness.runner import RunOptions, run_suite
    from harness.suite import load_suite

    with pytest.raises(HarnessError, match="python -m harness explain --suite"):
        run_suite(load_suite("explain"), RunOptions(tracking_uri="none", progress=False))
