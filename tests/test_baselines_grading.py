"""Grading baselines at tiny sizes: fit/predict under both profiles, and the controls."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

pytest.importorskip("timm")

from baselines import FitContext, get_baseline  # noqa: E402
from conftest import patients_subset  # noqa: E402

TINY = {
    "resnet18_grader": {"image_size": 32, "epochs": 1, "max_train_slices": 48, "max_val_slices": 16},
    "dwtdct_lstm": {"image_size": 32, "epochs": 2, "hidden": 8, "seq_len": 4},
    "efficientnet_lite0": {"image_size": 32, "epochs": 1, "dense1": 8, "dense2": 8, "max_train_samples": 48},
    "patient_memorizer": {"image_size": 32},
}


@pytest.fixture(scope="module")
def grading_data(tiny_grading):
    data, cache = tiny_grading
    pids = sorted(data.samples["patient_id"].unique())
    return patients_subset(data, pids[3:]), patients_subset(data, pids[2:3]), patients_subset(data, pids[:2]), cache


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
