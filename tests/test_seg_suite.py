"""The segmentation suite end to end on a tiny cohort: tables, summary, report, resume."""

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


def _run(tmp_path: Path, out: str, tracking: str = "none"):
    suite = parse_suite(TINY_SUITE)
    opts = RunOptions(out=tmp_path / out, cache_dir=tmp_path / "cache", tracking_uri=tracking, progress=False)
    return run_suite(suite, opts)


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
    assert again.folds_fitted == 0 and again.folds_reused == result.folds_fitted
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
