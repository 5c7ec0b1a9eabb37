"""Grading baselines at tiny sizes: fit/predict under both profiles, and the controls."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

pytest.importorskip("timm")

from baselines import FitContext, get_baseline  # noqa: E402

TINY = {
    "resnet18_grader": {"image_size": 32, "epochs": 1, "max_train_slices": 48, "max_val_slices": 16},
    "dwtdct_lstm": {"image_size": 32, "epochs": 2, "hidden": 8, "seq_len": 4},
    "efficientnet_lite0": {"image_size": 32, "epochs": 1, "dense1": 8, "dense2": 8, "max_train_samples": 48},
    "patient_memorizer": {"image_size": 32},
}


@pytest.fixture(scope="module")
def grading_data(tiny_rembrandt, tmp_path_factory):
    from harness.runner import RunOptions, prepare_data
    from harness.suite import parse_suite

    suite = parse_suite({"suite": {"name": "g", "task": "grading"}, "data": {"cohort": "rembrandt"},
                         "task": {"modalities": ["T1post", "FLAIR"], "slice_step": 3}})
    cache = tmp_path_factory.mktemp("cache")
    data = prepare_data(suite, RunOptions(data=tiny_rembrandt, cache_dir=cache, progress=False)).task_data
    pids = sorted(data.samples["patient_id"].unique())
    test_p = set(pids[:2])
    val_p = {pids[2]}
    pick = lambda ps: data.subset(data.samples.loc[data.samples["patient_id"].isin(ps), "sample_id"])
    return (pick(set(pids) - test_p - val_p), pick(val_p), pick(test_p), cache)


@pytest.mark.parametrize("profile", ["quick", "paper"])
@pytest.mark.parametrize("name", sorted(TINY))
def test_fit_predict(grading_data, name, profile):
    train, val, test, cache = grading_data
    model = get_baseline(name)(profile=profile, **TINY[name])
    ctx = FitContext(seed=0, work_dir=cache, log=lambda _: None)
    assert model.fit(train, val, ctx) is model
    pred = model.predict(test)
    assert len(pred) == len(test) and set(pred) <= set(train.classes)
    if name != "patient_memorizer":
        assert ctx.history and {"train_loss", "val_loss"} <= set(ctx.history[0])


def test_dwtdct_lstm_gives_one_grade_per_series(grading_data):
    train, val, test, cache = grading_data
    model = get_baseline("dwtdct_lstm")(**TINY["dwtdct_lstm"]).fit(train, val, FitContext(work_dir=cache))
    frame = test.samples.assign(pred=model.predict(test))
    assert (frame.groupby("image_id")["pred"].nunique() == 1).all()


def test_memorizer_recognises_patients_and_median_ignores_images():
    from harness.tasks import TaskData

    rng = np.random.default_rng(0)
    # each patient has its own pattern (a fingerprint); slices differ by a little noise
    vols = {f"p{i}": (rng.random((1, 32, 32)) + 0.02 * rng.random((3, 32, 32))).astype(np.float32)
            for i in range(4)}
    rows = [{"sample_id": f"p{i}#z{z}", "patient_id": f"p{i}", "image_id": f"p{i}", "slice_index": z,
             "target": float(i)} for i in range(4) for z in range(3)]
    data = TaskData("progression", "regression", pd.DataFrame(rows), None, vols, {})
    train = data.subset([r["sample_id"] for r in rows if not r["sample_id"].endswith("z2")])
    test = data.subset([r["sample_id"] for r in rows if r["sample_id"].endswith("z2")])
    mem = get_baseline("patient_memorizer")(image_size=32).fit(train, None, FitContext())
    assert np.allclose(mem.predict(test), [0, 1, 2, 3])  # row-level: it finds the patient
    med = get_baseline("median")().fit(train, None, FitContext())
    assert np.allclose(med.predict(test), 1.5)
