"""A claim's score on real labels only: imputed share and the metric without imputed rows."""

from __future__ import annotations

import pandas as pd
import pytest

from harness.audit.real_labels import label_scope_section, real_label_scores
from harness.errors import HarnessError
from harness.predictions import pooled_predictions_path


def _predictions() -> pd.DataFrame:
    # p1, p2: real labels, predicted wrong; p3, p4: imputed labels, predicted right.
    rows = []
    for pid, fold, y, pred in (("p1", 0, "short", "long"), ("p2", 1, "mid", "long"),
                               ("p3", 0, "long", "long"), ("p4", 1, "long", "long")):
        for k in range(2):
            rows.append({"sample_id": f"{pid}/{k}", "patient_id": pid, "fold": fold, "y_true": y, "y_pred": pred})
    return pd.DataFrame(rows)


def _imputed() -> pd.Series:
    frame = _predictions()
    return pd.Series(frame["patient_id"].isin(["p3", "p4"]).to_numpy(), index=frame["sample_id"])


def test_imputed_share_and_real_label_score():
    out = real_label_scores(_predictions(), _imputed(), "accuracy", ["short", "mid", "long"], n_boot=50)
    assert out["imputed_share"] == pytest.approx(0.5)
    assert out["all_labels"]["mean"] == pytest.approx(0.5)
    assert out["real_labels"]["mean"] == pytest.approx(0.0)
    assert out["real_labels"]["n_patients"] == 2


def test_only_imputed_rows_leave_no_real_score():
    frame = _predictions()
    everything = pd.Series(True, index=frame["sample_id"])
    out = real_label_scores(frame, everything, "accuracy", None, n_boot=10)
    assert out["imputed_share"] == 1.0 and out["real_labels"]["mean"] is None


def test_a_sample_missing_from_the_view_is_named():
    with pytest.raises(HarnessError, match="p1/0"):
        real_label_scores(_predictions(), _imputed().drop("p1/0"), "accuracy", None)


def test_section_reads_the_runner_prediction_files(tmp_path):
    path = pooled_predictions_path(tmp_path, "efficientnet_lite0", "image_level", "survival_class")
    path.parent.mkdir(parents=True)
    _predictions().to_csv(path, index=False)
    samples = pd.DataFrame({"sample_id": _imputed().index, "imputed": _imputed().to_numpy()})
    runs = [("efficientnet_lite0", "image_level"), ("efficientnet_lite0", "patient_kfold")]
    out = label_scope_section(tmp_path, samples, runs, "accuracy", ["short", "mid", "long"], variant="survival_class")
    assert [e["protocol"] for e in out] == ["image_level"]  # no file for the other run
    assert out[0]["real_labels"]["mean"] == pytest.approx(0.0)
