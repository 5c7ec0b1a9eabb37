"""Injected leaks are caught; a clean patient-level split raises no flag (in-memory cohorts)."""

from __future__ import annotations

import copy

import numpy as np
import pandas as pd
import pytest

from harness.audit.images import fingerprints
from harness.audit.leakage import check_leakage
from harness.splits import make_manifest
from harness.tasks import TaskData


def make_data(n_patients: int = 8, constant_target: bool = True, seed: int = 0) -> TaskData:
    """Series-level samples: 2 studies x 2 modalities per patient, smooth random volumes."""
    from scipy import ndimage

    rng = np.random.default_rng(seed)
    rows, volumes = [], {}
    for p in range(n_patients):
        pid = f"P{p:02d}"
        target = float(rng.uniform(1, 10))
        for visit, date in enumerate(("2000-01-01", "2000-07-01")):
            for mod in ("T1", "FLAIR"):
                sid = f"{pid}/s{visit}/{mod}"
                volumes[sid] = ndimage.gaussian_filter(rng.normal(size=(8, 24, 24)), 1.5).astype(np.float32)
                rows.append({"sample_id": sid, "patient_id": pid, "study_id": f"{pid}_s{visit}", "image_id": sid,
                             "modality": mod, "slice_index": -1,
                             "target": target if constant_target else float(rng.uniform(1, 10)),
                             "study_date": date})
    return TaskData("progression", "regression", pd.DataFrame(rows), None, volumes, {})


def kfold(data: TaskData, seed: int = 0):
    return make_manifest("patient_kfold", data.samples, seed=seed, task="regression",
                         dataset_fingerprint="x", n_splits=4)


def kinds(result, declared: bool | None = None) -> set[str]:
    return {f.kind for f in result.findings if declared is None or f.declared == declared}


def test_clean_patient_kfold_raises_no_flag():
    data = make_data()
    res = check_leakage(data.samples, "regression", {"patient_kfold": kfold(data)}, fingerprints(data))
    assert res.findings == []
    assert (res.folds[["patients_both_sides", "studies_both_sides", "exact_duplicates", "near_duplicates"]] == 0).all().all()
    assert res.target["constant_within_patient"] and res.target["within_patient"] == 0
    assert "32 rows, 8 patients, 8 distinct targets, within-patient variance 0" in res.target["sentence"]


def test_patient_copied_into_two_folds_is_caught():
    data = make_data()
    manifest = kfold(data)
    bad = copy.deepcopy(manifest)
    moved = bad.folds[0].train[0]
    bad.folds[0].train.remove(moved)
    bad.folds[0].test.append(moved)  # one of a training patient's rows now tested
    res = check_leakage(data.samples, "regression", {"patient_kfold": bad}, fingerprints(data))
    found = {f.kind for f in res.undeclared()}
    assert {"patients on both sides", "studies on both sides", "target constant within patients"} <= found
    patient = moved.split("/")[0]
    assert any(patient in f.message and f.fold == 0 for f in res.undeclared())


@pytest.mark.parametrize("noise", [0.0, 0.02])
def test_image_duplicated_under_a_new_patient_id_is_caught(noise):
    data = make_data()
    src = data.samples[data.samples["patient_id"] == "P00"]
    rng = np.random.default_rng(1)
    extra, vols = [], dict(data.volumes)
    for rec in src.to_dict("records"):
        sid = rec["sample_id"].replace("P00", "ZZ99")
        v = np.asarray(data.volumes[rec["image_id"]])
        vols[sid] = v + noise * float(v.std()) * rng.normal(size=v.shape).astype(np.float32) if noise else v
        extra.append({**rec, "sample_id": sid, "image_id": sid, "patient_id": "ZZ99",
                      "study_id": rec["study_id"].replace("P00", "ZZ99")})
    data = TaskData("progression", "regression", pd.concat([data.samples, pd.DataFrame(extra)], ignore_index=True),
                    None, vols, {})
    manifest = kfold(data, seed=2)
    split_apart = any(("P00/s0/T1" in f.test) != ("ZZ99/s0/T1" in f.test) for f in manifest.folds)
    assert split_apart
    res = check_leakage(data.samples, "regression", {"patient_kfold": manifest}, fingerprints(data))
    expected = "exact duplicate image" if noise == 0 else "near-duplicate image"
    assert expected in kinds(res, declared=False)
    assert "patients on both sides" not in kinds(res)  # the IDs alone look clean


def test_target_constant_within_patients_is_caught_under_a_row_split():
    data = make_data()
    row = make_manifest("row_random", data.samples, seed=0, task="regression", dataset_fingerprint="x",
                        ratios=[0.8, 0.0, 0.2])
    res = check_leakage(data.samples, "regression", {"row_random": row}, fingerprints(data))
    hit = [f for f in res.findings if f.kind == "target constant within patients"]
    assert hit and hit[0].declared  # row_random is leaky by design: reported as declared
    assert res.target["oracle"]["row_random"]["test_rows_patient_seen"] > 0.5
    assert "later scan trains earlier" in kinds(res) or res.folds["later_scan_trains_earlier"].sum() == 0
    varying = make_data(constant_target=False)
    res2 = check_leakage(varying.samples, "regression", {"row_random": row}, fingerprints(varying))
    assert "target constant within patients" not in kinds(res2)
    assert not res2.target["constant_within_patient"]


def test_later_scan_training_an_earlier_one_is_caught():
    data = make_data()
    manifest = kfold(data)
    bad = copy.deepcopy(manifest)
    fold = bad.folds[0]
    pid = fold.test[0].split("/")[0]
    later = f"{pid}/s1/T1"
    fold.test.remove(later)
    fold.train.append(later)  # the follow-up scan trains, the baseline scan is tested
    res = check_leakage(data.samples, "regression", {"patient_kfold": bad}, fingerprints(data))
    assert "later scan trains earlier" in kinds(res, declared=False)
