"""Progression suite at tiny sizes: cnn_lstm stages, stage-1 isolation, protocol manifests."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

pytest.importorskip("torch")

from harness.runner import RunOptions, run_suite  # noqa: E402
from harness.splits import SplitManifest, patient_overlaps  # noqa: E402
from harness.suite import parse_suite  # noqa: E402

TINY_PROGRESSION = {
    "suite": {"name": "tiny-progression", "task": "progression"},
    "data": {"cohort": "btp"},
    "task": {"modalities": ["T1post", "FLAIR", "T2"], "eligibility": "grade_rise",
             "min_eligible_patients": 3, "on_too_few": "use_all"},
    "baselines": {
        "default": ["cnn_lstm", "mean", "median", "patient_memorizer"],
        "params": {"cnn_lstm": {"image_size": 32, "epochs": 3, "hidden": 16},
                   "patient_memorizer": {"image_size": 32},
                   "resnet18_grader": {"image_size": 32, "epochs": 1, "max_train_slices": 48,
                                       "max_val_slices": 16}},
    },
    "protocols": {"row_random": {"ratios": [0.8, 0.0, 0.2]}, "leave_one_patient_out": {},
                  "patient_kfold": {"n_splits": 3}},
    "metrics": {"names": ["mae", "rmse", "r2"], "n_boot": 100},
}


@pytest.fixture(scope="module")
def tiny_btp(tmp_path_factory) -> Path:
    from harness.synth import generate_cohort

    out = tmp_path_factory.mktemp("cohorts") / "btp"
    generate_cohort("btp", out, n_patients=5, seed=1, signal="growth", grid_mm=8.0, progress=False)
    return out


@pytest.fixture(scope="module")
def tiny_aux(tmp_path_factory) -> Path:
    from harness.synth import generate_cohort

    out = tmp_path_factory.mktemp("cohorts") / "rembrandt"
    generate_cohort("rembrandt", out, n_patients=6, seed=2, signal="growth", grid_mm=8.0, progress=False)
    return out


@pytest.fixture(scope="module")
def tiny_run(tiny_btp, tiny_aux, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("progression-run")
    opts = RunOptions(data=tiny_btp, aux_data=tiny_aux, out=tmp / "out", tracking_uri=f"sqlite:///{tmp}/m.db",
                      cache_dir=tmp / "cache", progress=False)
    return run_suite(parse_suite(json.loads(json.dumps(TINY_PROGRESSION))), opts), tmp


def test_summary_has_every_baseline_under_every_protocol(tiny_run):
    result, _ = tiny_run
    keys = {(r["baseline"], r["protocol"], r["metric"]) for r in result.summary["results"]}
    assert keys == {(b, p, m) for b in TINY_PROGRESSION["baselines"]["default"]
                    for p in TINY_PROGRESSION["protocols"] for m in ("mae", "rmse", "r2")}
    assert result.failures == []
    for r in result.summary["results"]:
        assert r["n_patients"] == 5
        assert r["ci95"][0] is None or r["ci95"][0] <= r["mean"] <= r["ci95"][1]


def test_stage_tables_and_aux_fingerprint_are_recorded(tiny_run):
    result, tmp = tiny_run
    out = result.out_dir
    grades = pd.read_csv(out / "stages" / "pseudo_grades.csv")
    assert len(grades) == 10  # 5 patients x 2 scans
    assert set(grades["pseudo_grade"]) <= {"II", "III", "IV"}
    elig = pd.read_csv(out / "stages" / "eligibility.csv")
    assert set(elig.columns) >= {"patient_id", "baseline_grade", "followup_grade", "grade_rises"}
    tags = result.summary["stages"]["tags"]
    assert len(tags["aux_dataset_fingerprint"]) == 64
    assert "eligibility" in tags["eligibility_outcome"]
    import mlflow

    mlflow.set_tracking_uri(f"sqlite:///{tmp}/m.db")
    runs = mlflow.search_runs(experiment_names=["harness/tiny-progression"],
                              filter_string="tags.baseline = 'cnn_lstm'")
    assert (runs["tags.aux_dataset_fingerprint"] == tags["aux_dataset_fingerprint"]).any()
    assert {"row_random", "leave_one_patient_out", "patient_kfold"} <= set(runs["tags.comparison"].dropna())


def test_every_row_of_a_patient_has_the_same_target_in_months(tiny_btp):
    from harness.data.detect import load_cohort
    from harness.tasks import progression_task

    cohort = load_cohort(tiny_btp)
    vols = {s: np.zeros((2, 2, 2)) for s in cohort.series["series_id"]}
    data, _ = progression_task(cohort, vols, {}, modalities=["T1post", "FLAIR"])
    per = data.samples.groupby("patient_id")["target"].nunique()
    assert (per == 1).all()
    months = cohort.patients.set_index("patient_id")["interval_days"].astype(float) / 30.4375
    got = data.samples.groupby("patient_id")["target"].first()
    assert np.allclose(got.to_numpy(), months.loc[got.index].to_numpy())
    assert set(data.samples["visit"]) == {"baseline", "followup"}
    # the acquiring site (DICOM InstitutionName), one per patient, for the site-confound check
    assert (data.samples["site"] != "").all() and (data.samples.groupby("patient_id")["site"].nunique() == 1).all()


def test_stage1_grader_never_sees_a_progression_patient(tiny_btp, tiny_aux, tmp_path):
    from harness.tasks.progression_stages import aux_grading_data, check_isolation
    from harness.data.detect import load_cohort
    from harness.errors import HarnessError
    from harness.tasks import progression_task

    aux, fp, _ = aux_grading_data(tiny_aux, tmp_path, modalities=["T1post", "FLAIR"], slice_step=2,
                                  min_foreground=0.15, progress=False)
    cohort = load_cohort(tiny_btp)
    vols = {s: np.zeros((2, 2, 2)) for s in cohort.series["series_id"]}
    prog, _ = progression_task(cohort, vols, {})
    assert set(aux.samples["patient_id"]) & set(prog.samples["patient_id"]) == set()
    check_isolation(aux, prog)
    leaked = prog.samples.copy()
    leaked.loc[0, "patient_id"] = aux.samples["patient_id"].iloc[0]
    with pytest.raises(HarnessError, match="never see a progression patient"):
        check_isolation(aux, type(prog)(prog.task, prog.target_kind, leaked, None))


def test_manifests_have_the_properties_they_claim(tiny_run):
    result, _ = tiny_run
    out = result.out_dir
    samples = pd.concat([pd.read_csv(p, dtype=str) for p in (out / "predictions").glob("mean__patient_kfold.csv")])
    lopo = SplitManifest.load(out / "manifests" / "leave_one_patient_out.json")
    kfold = SplitManifest.load(out / "manifests" / "patient_kfold.json")
    row = SplitManifest.load(out / "manifests" / "row_random.json")
    frame = samples[["sample_id", "patient_id"]].drop_duplicates()
    pid = frame.set_index("sample_id")["patient_id"]
    assert patient_overlaps(lopo, frame) == [] and patient_overlaps(kfold, frame) == []
    assert len(lopo.folds) == 5
    assert all(pid.loc[f.test].nunique() == 1 for f in lopo.folds)
    tested = [s for f in kfold.folds for s in f.test]
    assert sorted(tested) == sorted(frame["sample_id"])  # every row tested exactly once
    assert row.leaky and len(row.folds) == 1
    n = len(frame)
    assert len(row.folds[0].test) == round(0.2 * n) and len(row.folds[0].train) == n - round(0.2 * n)
    assert patient_overlaps(row, frame)  # the paper's split puts patients on both sides


def test_eligibility_rule():
    from harness.errors import NoUsableDataError
    from harness.tasks import TaskData
    from harness.tasks.progression import eligibility_table, scan_grades, select_eligible

    slices = pd.DataFrame({
        "patient_id": ["A"] * 4 + ["B"] * 4, "study_id": ["a1", "a1", "a2", "a2", "b1", "b1", "b2", "b2"],
        "study_date": ["2000-01-01", "2000-01-01", "2001-01-01", "2001-01-01"] * 2,
        "grade": ["II", "II", "IV", "III", "III", "III", "III", "II"],
        "modality": "T1post",
    })
    table = eligibility_table(scan_grades(slices))
    assert table.set_index("patient_id")["grade_rises"].to_dict() == {"A": True, "B": False}
    samples = pd.DataFrame({"sample_id": ["a", "b"], "patient_id": ["A", "B"], "target": [1.0, 2.0]})
    data = TaskData("progression", "regression", samples, None)
    kept, msg = select_eligible(data, table, rule="grade_rise", min_patients=1, on_too_few="fail")
    assert list(kept.samples["patient_id"]) == ["A"] and "kept 1 of 2" in msg
    same, msg = select_eligible(data, table, rule="grade_rise", min_patients=2, on_too_few="use_all")
    assert len(same) == 2 and "TOO FEW" in msg
    with pytest.raises(NoUsableDataError, match="only 1 of 2"):
        select_eligible(data, table, rule="grade_rise", min_patients=2, on_too_few="fail")


def test_cnn_lstm_paper_profile_fits_at_tiny_size(tiny_run, tiny_btp):
    """The paper profile's settings run (sizes overridden to stay tiny) and are deterministic."""
    from baselines import FitContext, get_baseline
    from harness.runner import prepare_data

    suite = parse_suite(json.loads(json.dumps({**TINY_PROGRESSION, "task": {
        "modalities": ["T1post", "FLAIR"], "eligibility": "all"}})))
    _, tmp = tiny_run
    data = prepare_data(suite, RunOptions(data=tiny_btp, cache_dir=tmp / "cache", progress=False,
                                          baselines=["mean"])).task_data
    cls = get_baseline("cnn_lstm")
    preds = []
    for _ in range(2):
        model = cls(profile="paper", image_size=32, epochs=2)
        assert model.params["hidden"] == 128 and model.params["min_delta"] == 0.01
        model.fit(data, None, FitContext(seed=5, work_dir=tmp / "cache"))
        preds.append(model.predict(data))
    assert preds[0].shape == (len(data),) and np.isfinite(preds[0]).all()
    assert np.array_equal(preds[0], preds[1])


def test_stage_one_scores_the_grader_on_training_and_on_every_held_out_slice(tiny_grading):
    """The stage-1 tags put the grader's accuracy beside the commonest grade's share on the
    same rows, for its training slices and for all slices of the held-out patients."""
    from harness.tasks.progression_stages import grader_scores, grader_sentence

    data, _ = tiny_grading
    pids = sorted(data.samples["patient_id"].unique())
    train = data.subset(data.samples.loc[~data.samples["patient_id"].isin(pids[:2]), "sample_id"])
    val = data.subset(data.samples.loc[data.samples["patient_id"].isin(pids[:2]), "sample_id"])

    class Constant:
        def __init__(self, grade: str) -> None:
            self.grade = grade

        def predict(self, d):
            return np.array([self.grade] * len(d), dtype=object)

    commonest = pd.Series(train.y.astype(str)).value_counts().index[0]
    tags = grader_scores(Constant(commonest), train, val, seed=0)
    assert tags["grader_train_accuracy"] == tags["grader_train_majority"]  # a constant answer: the bar, no more
    assert int(tags["grader_val_slices"]) == len(val) and tags["grader_val_patients"] == "2"
    share = float(np.mean(val.y.astype(str) == commonest))
    assert float(tags["grader_val_accuracy"]) == pytest.approx(share, abs=1e-3)
    assert float(tags["grader_val_majority"]) >= float(tags["grader_val_accuracy"])
    text = grader_sentence({**tags, "grader_val_history": "0.400, 0.500"})
    assert f"on all {len(val)} slices of the 2 held-out auxiliary patients" in text and "0.400, 0.500" in text
    assert grader_sentence({}) == "grader scores not recorded"


def test_per_scan_input_is_shared_by_a_scans_rows_whatever_the_split_keeps(tiny_run, tiny_btp):
    """row_input='patient_date': every row of one scan gets the same vector, the mean of all the
    scan's series, also when a split keeps only some of its rows; other scans get other vectors."""
    from baselines import FitContext, get_baseline
    from harness.errors import HarnessError
    from harness.features.dwtdct import DwtDctConfig
    from harness.features.series import sample_dwtdct, study_dwtdct
    from harness.runner import prepare_data

    suite = parse_suite(json.loads(json.dumps({**TINY_PROGRESSION, "task": {
        "modalities": ["T1post", "FLAIR", "T2"], "eligibility": "all"}})))
    _, tmp = tiny_run
    data = prepare_data(suite, RunOptions(data=tiny_btp, cache_dir=tmp / "cache", progress=False,
                                          baselines=["mean"])).task_data
    cfg = DwtDctConfig(image_size=32, n_coefficients=20)
    per_series = sample_dwtdct(data, None, cfg)
    per_scan = study_dwtdct(data, None, cfg)
    for study, rows in data.samples.groupby("study_id").groups.items():
        idx = data.samples.index.get_indexer(rows)
        assert len(idx) == 3
        assert np.allclose(per_scan[idx], per_series[idx].mean(axis=0), atol=1e-5)
        assert not np.allclose(per_series[idx[0]], per_series[idx[1]])  # the series themselves differ
    assert len({tuple(np.round(v, 4)) for v in per_scan}) == data.samples["study_id"].nunique()

    one_row_per_scan = data.subset(data.samples.drop_duplicates("study_id")["sample_id"])
    kept = data.samples.index.get_indexer(data.samples.drop_duplicates("study_id").index)
    assert np.allclose(study_dwtdct(one_row_per_scan, None, cfg), per_scan[kept], atol=1e-6)

    model = get_baseline("cnn_lstm")(image_size=32, epochs=2, hidden=8, row_input="patient_date")
    model.fit(data, None, FitContext(seed=0, work_dir=tmp / "cache"))
    preds = model.predict(data)
    for rows in data.samples.groupby("study_id").groups.values():
        assert np.ptp(preds[data.samples.index.get_indexer(rows)]) < 1e-5  # one input, one prediction
    with pytest.raises(HarnessError, match="row_input"):
        get_baseline("cnn_lstm")(row_input="scan").fit(data, None, FitContext(seed=0))
    from dataclasses import replace
    with pytest.raises(HarnessError, match="series of each scan"):
        study_dwtdct(replace(data, study_series={}), None, cfg)


def test_stage1_grader_options_reach_the_run(tiny_btp, tiny_aux, tmp_path):
    """A suite that grades with the frozen EfficientNet on lesion crops and scores it with
    auxiliary patients held out: the stage tags name the grader, its sampling and its
    held-out scores, and the summary keeps them."""
    suite = json.loads(json.dumps(TINY_PROGRESSION))
    suite["task"].update({"grader": "efficientnet_lite0", "grader_slice_sampling": "lesion",
                          "grader_crop_mm": 80, "grader_cv_folds": 2, "aux_slice_step": 1})
    suite["baselines"]["default"] = ["cnn_lstm", "mean"]
    suite["baselines"]["params"]["efficientnet_lite0"] = {"image_size": 32, "epochs": 2}
    suite["protocols"] = {"patient_kfold": {"n_splits": 2}}
    opts = RunOptions(data=tiny_btp, aux_data=tiny_aux, out=tmp_path / "out", tracking_uri="none",
                      cache_dir=tmp_path / "cache", progress=False)
    result = run_suite(parse_suite(suite), opts)
    tags = json.loads((result.out_dir / "summary.json").read_text())["stages"]["tags"]
    assert tags["grader"] == "efficientnet_lite0"
    assert tags["grader_slices"] == "lesion, cut to 80 mm around the lesion"
    assert tags["grader_cv_folds"] == "2" and int(tags["grader_cv_patients"]) >= 4
    assert tags["grader_cv_balanced_accuracy"].count("[") == 1
    assert "efficientnet_lite0.weights" in tags
