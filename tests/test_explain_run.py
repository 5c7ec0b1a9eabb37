"""End-to-end explain runs on tiny known-truth cohorts: only T1post carries the grade."""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

import harness.cli as cli
from harness.errors import HarnessError
from harness.explain.data import load_cases
from harness.synth import generate_cohort

TINY_SUITE = """
[suite]
name = "explain-tiny"
task = "explain"

[data]
cohort = "brats20"
patients = 16
seed = 1
grid_mm = 5.0
signal_modality = "T1post"

[explain]
cases = 2
epochs = 40
size = 32
slices_per_patient = 5

[explain.config]
ig_steps = 16
smoothgrad_samples = 4
gradshap_samples = 4
lime_samples = 40
kernelshap_samples = 40
shapley_samples = 1
n_segments = 8
occlusion_window = 6
occlusion_stride = 6
deletion_steps = 8
"""


def test_known_truth_cohort_shows_grade_on_t1post_only(known_truth: Path) -> None:
    """Tumour-to-brain contrast differs by grade on T1post and not on the other channels."""
    truth = {r.split(",")[0]: r.split(",")[2] for r in (known_truth / "truth.csv").read_text().splitlines()[1:]}
    contrast: dict[str, dict[str, list[float]]] = {}
    for pid, grade in truth.items():
        seg = nib.load(known_truth / pid / f"{pid}_seg.nii.gz").get_fdata()
        for suffix in ("t1", "t1ce", "t2", "flair"):
            img = nib.load(known_truth / pid / f"{pid}_{suffix}.nii.gz").get_fdata()
            ratio = img[seg > 0].max() / np.median(img[(img > 0) & (seg == 0)])
            contrast.setdefault(suffix, {}).setdefault(grade, []).append(ratio)
    assert {"HGG", "LGG"} <= set(contrast["t1ce"])
    assert min(contrast["t1ce"]["HGG"]) > max(contrast["t1ce"]["LGG"])
    for suffix in ("t1", "t2", "flair"):  # overlapping: grade-blind
        assert min(contrast[suffix]["HGG"]) < max(contrast[suffix]["LGG"])


def test_signal_modality_is_validated(tmp_path: Path) -> None:
    with pytest.raises(HarnessError, match="signal_modality"):
        generate_cohort("brats20", tmp_path / "x", n_patients=2, grid_mm=6.0, signal_modality="ADC", progress=False)
    with pytest.raises(HarnessError, match="grading flavour"):
        generate_cohort("btp", tmp_path / "y", n_patients=2, grid_mm=6.0, signal_modality="T1post", progress=False)
    assert not (tmp_path / "x").exists()


def test_load_cases_2d_and_3d(known_truth: Path, tmp_path: Path) -> None:
    cases, problems = load_cases(known_truth, dims=2, size=20, slices_per_patient=3, cache_dir=tmp_path,
                                 progress=False)
    assert cases.x.shape[1:] == (4, 20, 20) and cases.mask is not None and cases.mask.shape[1:] == (20, 20)
    assert cases.is_key.sum() == 8 and cases.modalities == ["T1", "T1post", "T2", "FLAIR"]
    assert all(cases.mask[i].any() for i in np.flatnonzero(cases.is_key))
    vol, _ = load_cases(known_truth, dims=3, size=12, cache_dir=tmp_path, progress=False)
    assert vol.x.shape == (8, 4, 12, 12, 12)


def test_explain_command_ranks_the_known_modality_first_and_writes_the_report(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    suite = tmp_path / "explain-tiny.toml"
    suite.write_text(TINY_SUITE)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(cli, "PLUGIN_COMMAND_MODULES", ("harness.explain.cli",))
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    rc = cli.main(["explain", "--suite", str(suite), "--cache-dir", str(tmp_path / "cache"), "--out",
                   str(tmp_path / "rep"), "--tracking-uri", uri, "--no-progress"])
    assert rc == 0
    result = json.loads((tmp_path / "rep" / "explain.json").read_text())
    imp = result["modality_importance"]
    assert max(imp, key=imp.get) == "T1post"
    assert len(result["summary"]) == 16
    ig = result["summary"]["integrated_gradients"]
    assert ig["completeness_error"] < 0.2
    assert ig["completeness_error"] <= ig["completeness_error_max"] < 1.0  # the worst case, reported beside the mean
    assert result["summary"]["gradient"]["randomisation_pass"] == 1.0
    html = (tmp_path / "rep" / "report.html").read_text()
    assert "<table" in html and html.count("data:image/png;base64,") >= 2 + 2  # cases + curves + timings
    assert "ranks T1post first: PASS" in html
    assert "http" not in html.split("<body>")[1]  # self-contained: nothing fetched

    from mlflow.tracking import MlflowClient

    client = MlflowClient(uri)
    exp = client.get_experiment_by_name("harness/explain-tiny")
    (run,) = client.search_runs([exp.experiment_id])
    assert run.info.status == "FINISHED"
    assert "T1post" in str(run.data.metrics) and "gradient.msfi" in run.data.metrics
    assert {a.path for a in client.list_artifacts(run.info.run_id, "explain")} >= {"explain/report.html"}


def test_unknown_model_is_a_clear_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    suite = tmp_path / "s.toml"
    suite.write_text(TINY_SUITE)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(cli, "PLUGIN_COMMAND_MODULES", ("harness.explain.cli",))
    rc = cli.main(["explain", "--suite", str(suite), "--baseline", "nope", "--tracking-uri", "none",
                   "--cache-dir", str(tmp_path / "c"), "--no-progress"])
    assert rc == 2
