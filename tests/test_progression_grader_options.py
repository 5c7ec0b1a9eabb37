"""Progression stage 1's grader options: lesion sampling of the scans it pseudo-grades, and its
held-out score on the auxiliary cohort (patient-grouped CV)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from harness.errors import HarnessError
from harness.tasks.base import TaskData

LESION_SLICES = range(8, 13)


def _scan_volume(bright: float) -> np.ndarray:
    """20 slices of 64 x 64 at 2 mm: an elliptic head (100) from slice 2, a bright disc (the
    lesion, ``bright``) of radius 5 px on slices 8-12 at (26, 38)."""
    rng = np.random.default_rng(0)
    vol = np.zeros((20, 64, 64), dtype=np.float32)
    yy, xx = np.mgrid[:64, :64]
    head = ((yy - 32) / 28.0) ** 2 + ((xx - 32) / 26.0) ** 2 <= 1.0
    disc = (yy - 26) ** 2 + (xx - 38) ** 2 <= 25
    for z in range(2, 20):
        vol[z][head] = 100 + rng.normal(0, 2, int(head.sum()))
    for z in LESION_SLICES:
        vol[z][disc] = bright
    return vol


def _one_scan_view() -> TaskData:
    volumes = {"S1_FLAIR": _scan_volume(250.0), "S1_T1post": _scan_volume(180.0), "S1_T2": _scan_volume(200.0)}
    rows = [{"sample_id": k, "patient_id": "P1", "study_id": "S1", "image_id": k, "modality": k.split("_")[1],
             "slice_index": -1, "target": 3.0, "study_date": "20200101"} for k in volumes]
    return TaskData("progression", "regression", pd.DataFrame(rows), None, volumes,
                    {k: f"content-{k}" for k in volumes}, spacings={k: (2.0, 2.0, 2.0) for k in volumes})


def test_pseudo_grader_samples_the_scans_as_its_training_view_was_sampled():
    from harness.tasks.progression_stages import progression_slices

    data = _one_scan_view()
    every, problems = progression_slices(data, ["T1post", "FLAIR"], 0.15)
    assert problems == []
    assert sorted(set(every.samples["slice_index"])) == list(range(2, 20))  # head slices, no air
    assert set(every.samples["modality"]) == {"T1post", "FLAIR"}
    assert every.volumes["S1_FLAIR"].shape == (20, 64, 64)

    lesion, problems = progression_slices(data, ["T1post", "FLAIR"], 0.15, slice_sampling="lesion", crop_mm=40)
    assert problems == []
    kept = lesion.samples.groupby("modality")["slice_index"].apply(list)
    assert kept["FLAIR"] == kept["T1post"] == list(LESION_SLICES)
    # cut to 40 mm (20 px at 2 mm) around the lesion, under keys of their own; T2 and the
    # caller's volumes untouched
    crop = lesion.volumes["S1_T1post"]
    assert crop.shape == (20, 20, 20)
    assert crop[10].max() == pytest.approx(180.0) and crop[10, 10, 10] == pytest.approx(180.0)
    assert lesion.content_keys["S1_T1post"] != "content-S1_T1post"
    assert lesion.content_keys["S1_T2"] == "content-S1_T2"
    assert data.volumes["S1_T1post"].shape == (20, 64, 64)


def test_pseudo_grader_keeps_every_head_slice_where_the_scan_has_no_flair():
    from harness.tasks.progression_stages import progression_slices

    data = _one_scan_view()
    no_flair = TaskData(data.task, data.target_kind, data.samples[data.samples["modality"] != "FLAIR"],
                        None, data.volumes, data.content_keys, spacings=data.spacings)
    view, problems = progression_slices(no_flair, ["T1post"], 0.15, slice_sampling="lesion", crop_mm=40)
    assert sorted(view.samples["slice_index"]) == list(range(2, 20))
    assert [p.path for p in problems] == ["S1"] and "FLAIR" in problems[0].reason
    assert view.volumes["S1_T1post"].shape == (20, 64, 64)


@pytest.mark.parametrize("options, message", [
    ({"grader_slice_sampling": "tumour"}, "grader_slice_sampling"),
    ({"grader_crop_mm": 80}, "grader_crop_mm needs"),
    ({"grader_cv_folds": 1}, "grader_cv_folds"),
])
def test_progression_task_refuses_bad_grader_options(tiny_rembrandt, options, message):
    from harness.data.detect import load_cohort
    from harness.tasks import progression_task

    cohort = load_cohort(tiny_rembrandt)
    with pytest.raises(HarnessError, match=message):
        progression_task(cohort, {}, {}, **options)


class _RecordingGrader:
    """Predicts the training majority and records which patients each fit saw."""

    fits: list[set[str]] = []

    def fit(self, train: TaskData, val, ctx) -> "_RecordingGrader":
        assert val is None
        type(self).fits.append(set(train.samples["patient_id"]))
        self.classes_ = sorted(set(train.y.astype(str)))
        self.top_ = pd.Series(train.y.astype(str)).value_counts().index[0]
        return self

    def predict_proba(self, data: TaskData) -> np.ndarray:
        out = np.zeros((len(data), len(self.classes_)))
        out[:, self.classes_.index(self.top_)] = 1.0
        return out


def _grading_view(n_patients: int) -> TaskData:
    grades = ["II", "III", "IV"]
    rows = [{"sample_id": f"P{p}#z{z}", "patient_id": f"P{p}", "study_id": f"P{p}", "image_id": f"P{p}",
             "modality": "FLAIR", "slice_index": z, "target": grades[p % 3]}
            for p in range(n_patients) for z in range(4)]
    return TaskData("grading", "classification", pd.DataFrame(rows), grades)


def test_grader_cross_validation_holds_every_auxiliary_patient_out_once():
    from harness.tasks.progression_stages import grader_cross_validation, grader_sentence

    aux = _grading_view(15)
    _RecordingGrader.fits = []
    tags = grader_cross_validation(_RecordingGrader, aux, n_folds=5, seed=0, make_ctx=lambda: None)
    patients = set(aux.samples["patient_id"])
    tested = [patients - seen for seen in _RecordingGrader.fits]
    assert len(tested) == 5 and all(t for t in tested)
    assert sorted(p for t in tested for p in t) == sorted(patients)  # each patient tested once, never trained on
    assert tags["grader_cv_patients"] == "15" and tags["grader_cv_slices"] == "60"
    assert tags["grader_cv_majority"] == "0.333"
    # a grader that answers a constant scores chance balanced accuracy on every fold
    assert tags["grader_cv_balanced_accuracy"].startswith("0.333")
    assert "5-fold patient CV" in grader_sentence(tags)


@pytest.mark.slow  # generates both default cohorts at 2 mm and cross-validates the grader: about 4 min
def test_default_progression_grader_reads_the_grade_of_held_out_auxiliary_patients(tmp_path):
    from harness.runner import RunOptions, run_suite
    from harness.suite import load_suite

    suite = load_suite("progression")
    opts = RunOptions(out=tmp_path / "out", tracking_uri="none", cache_dir=tmp_path / "cache", progress=False,
                      baselines=["mean"], protocols=["patient_kfold"])
    result = run_suite(suite, opts)
    assert result.failures == []
    tags = result.summary["stages"]["tags"]
    low = float(tags["grader_cv_balanced_accuracy"].split("[")[1].split(",")[0])
    assert low > 1 / 3, tags["grader_cv_balanced_accuracy"]  # chance for II / III / IV
    assert float(tags["grader_cv_accuracy"].split()[0]) > float(tags["grader_cv_majority"])
