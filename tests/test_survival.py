"""Survival suite at tiny sizes: both targets, imputation modes, three cuts, both protocols."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

pytest.importorskip("timm")

from harness.runner import RunOptions, run_suite  # noqa: E402
from harness.splits import SplitManifest, patient_overlaps  # noqa: E402
from harness.suite import parse_suite  # noqa: E402

TINY_SURVIVAL = {
    "suite": {"name": "tiny-survival", "task": "survival"},
    "data": {"cohort": "brats20"},
    "task": {"targets": ["grade", "survival_class"], "modalities": ["T1", "T1post", "T2", "FLAIR"],
             "impute_lgg_survival": "paper"},
    "baselines": {"default": ["resnet18", "majority", "patient_memorizer"],
                  "params": {"resnet18": {"image_size": 32, "epochs": 2, "dense1": 8, "dense2": 8},
                             "patient_memorizer": {"image_size": 32}}},
    "protocols": {"image_level": {"ratios": [0.8, 0.0, 0.2]}, "patient_kfold": {"n_splits": 2}},
    "metrics": {"names": ["accuracy", "macro_f1"], "n_boot": 100},
}


@pytest.fixture(scope="module")
def tiny_brats(tmp_path_factory) -> Path:
    from harness.synth import generate_cohort

    out = tmp_path_factory.mktemp("cohorts") / "brats20"
    generate_cohort("brats20", out, n_patients=6, seed=4, signal="growth", grid_mm=8.0, progress=False)
    return out


@pytest.fixture(scope="module")
def tiny_run(tiny_brats, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("survival-run")
    opts = RunOptions(data=tiny_brats, out=tmp / "out", tracking_uri="none", cache_dir=tmp / "cache",
                      progress=False)
    return run_suite(parse_suite(json.loads(json.dumps(TINY_SURVIVAL))), opts)


def test_every_baseline_under_every_protocol_for_both_targets(tiny_run):
    assert tiny_run.failures == []
    keys = {(r["target"], r["baseline"], r["protocol"]) for r in tiny_run.summary["results"]}
    assert keys == {(t, b, p) for t in ("grade", "survival_class")
                    for b in ("resnet18", "majority", "patient_memorizer")
                    for p in ("image_level", "patient_kfold")}
    assert set(tiny_run.summary["targets"]) == {"grade", "survival_class"}


def test_image_level_splits_patients_and_patient_kfold_does_not(tiny_run):
    out = tiny_run.out_dir
    preds = pd.read_csv(out / "predictions" / "majority__patient_kfold__grade.csv", dtype=str)
    frame = preds[["sample_id", "patient_id"]]
    img = SplitManifest.load(out / "manifests" / "grade-image_level.json")
    kf = SplitManifest.load(out / "manifests" / "grade-patient_kfold.json")
    assert img.leaky and patient_overlaps(kf, frame) == []
    # one sample per modality image; 80/20 over images
    assert frame["sample_id"].str.rsplit("/", n=1).str[-1].isin(["T1", "T1post", "T2", "FLAIR"]).all()
    n = len(frame)
    assert len(img.folds[0].test) == round(0.2 * n)


def test_imputation_modes(tiny_brats):
    from harness.data.detect import load_cohort
    from harness.tasks import survival_task
    from harness.tasks.survival import survival_class

    cohort = load_cohort(tiny_brats)
    vols = {s: np.zeros((2, 2, 2)) for s in cohort.series["series_id"]}
    paper, _ = survival_task(cohort, vols, {}, target="survival_class", impute_lgg_survival="paper")
    lgg = set(cohort.patients.loc[cohort.patients["grade"] == "LGG", "patient_id"])
    rows = paper.samples[paper.samples["patient_id"].isin(lgg)]
    assert rows["imputed"].all() and rows["target"].isin(["mid", "long"]).all()
    assert ((rows["survival_days"] >= 4 * 365.25) & (rows["survival_days"] <= 7 * 365.25)).all()
    drop, _ = survival_task(cohort, vols, {}, target="survival_class", impute_lgg_survival="drop")
    assert not set(drop.samples["patient_id"]) & lgg and not drop.samples["imputed"].any()
    assert [survival_class(d) for d in (100, 400, 1900)] == ["short", "mid", "long"]


def test_three_cuts_are_30mm_apart():
    from baselines.torch_inputs import three_cuts

    vol = np.zeros((40, 8, 8), np.float32)
    vol[5:35, 2:8, 2:8] = 100.0  # the head spans slices 5..34; its centre is slice 20
    vol[:, 0, 0] = np.arange(40)  # each slice carries its own index
    cuts = three_cuts(vol, spacing_z=2.0)  # 30 mm at 2 mm per slice = 15 slices
    assert list(cuts[:, 0, 0].astype(int)) == [5, 20, 35]
    assert list(three_cuts(vol, spacing_z=1.0)[:, 0, 0].astype(int)) == [0, 20, 39]  # clipped


def test_random_weights_are_stated(tiny_brats, tmp_path):
    from baselines import FitContext, get_baseline
    from harness.runner import prepare_data

    suite = parse_suite(json.loads(json.dumps({**TINY_SURVIVAL, "task": {"target": "grade"}})))
    data = prepare_data(suite, RunOptions(data=tiny_brats, cache_dir=tmp_path, progress=False)).task_data
    said: list[str] = []
    ctx = FitContext(seed=0, log=said.append)
    model = get_baseline("resnet18")(profile="paper", image_size=32, epochs=1, dense1=8, dense2=8)
    model.fit(data, None, ctx)
    assert len(model.predict(data)) == len(data)
    assert "random" in ctx.tags["resnet18.weights"] and any("random weights" in s for s in said)


def test_survival_claim_audit_scores_real_labels_apart(tiny_brats, tmp_path):
    """The Valbuena survival claim's audit states the imputed share and the real-label score."""
    from dataclasses import replace

    from harness.audit import claim_audit
    from harness.audit.claims import get_claim

    claim = replace(get_claim("valbuena-survival-accuracy"), baseline="patient_memorizer",
                    trivial_baselines=("majority",))
    record, _ = claim_audit.run_claim(claim, claim_audit.ClaimOptions(
        data=tiny_brats, out=tmp_path / "a", tracking_uri="none", cache_dir=tmp_path / "cache", progress=False))
    scopes = {e["protocol"]: e for e in record["label_provenance"]}
    assert set(scopes) == {"image_level", "patient_kfold"}
    for e in scopes.values():
        assert 0.0 <= e["imputed_share"] <= 1.0
        assert e["real_labels"]["n_samples"] == round(e["n_test_rows"] * (1 - e["imputed_share"]))
    md = (tmp_path / "a" / "audit.md").read_text()
    assert "Label provenance: real labels only" in md
    study = record["test_set_selection"]
    assert study["optimism"] == pytest.approx(study["selected_score"] - study["nested_score"])
    assert "Test-set selection" in md
    grid = record["test_set_selection_backbones"]  # the paper's kind of grid: real ImageNet backbones
    assert grid["backbones"] and grid["selected"]["features"] in grid["backbones"]
    assert grid["optimism"] == pytest.approx(grid["selected_score"] - grid["nested_score"])
    assert "Test-set selection over backbones" in md
    assert grid["image_size"] is None  # the audited baseline is no backbone: the quick profile's size


def test_lesion_crop_cuts_every_image_of_a_scan_around_one_window(tiny_brats):
    """``lesion_crop_mm``: each image cut in-plane and in depth around its scan's lesion,
    the same window for the scan's four images, under cache keys of their own."""
    from harness.data.cache import VolumeStore
    from harness.data.detect import load_cohort
    from harness.tasks import survival_task
    from harness.tasks.lesion import LesionRule, lesions_per_scan, crop_series

    cohort = load_cohort(tiny_brats)
    store = VolumeStore(tiny_brats.parent / "arrays", progress=False)
    vols, _ = store.load_many(cohort.series)
    arrays = {k: v.array for k, v in vols.items()}
    keys = {k: v.content_key for k, v in vols.items()}
    spacings = {k: (8.0, 8.0, 8.0) for k in arrays}
    whole, _ = survival_task(cohort, arrays, keys)
    cut, problems = survival_task(cohort, arrays, keys, lesion_crop_mm=80, lesion_half_depth_mm=24,
                                  spacings=spacings)
    assert cut.samples.equals(whole.samples)  # same rows; only the pixels change
    lesions, _ = lesions_per_scan(cohort.series, arrays, "FLAIR", spacings, LesionRule())
    for rec in cut.samples.itertuples():
        image = np.asarray(cut.volumes[rec.image_id])
        assert image.shape[1:] == (10, 10) and image.shape[0] <= 7  # 80 mm square, 24 mm either side
        assert cut.content_keys[rec.image_id] != keys[rec.image_id]
        expected, key = crop_series(arrays[rec.image_id], keys[rec.image_id], lesions[str(rec.study_id)], 80,
                                    (8.0, 8.0, 8.0), 24)
        assert np.array_equal(image, expected) and cut.content_keys[rec.image_id] == key
    assert all("lesion finder" in p.reason for p in problems)  # coarse 8 mm scans: named where it gave up


def test_crop_series_depth_window_is_centred_on_the_lesion():
    from harness.tasks.lesion import ScanLesion, crop_series

    volume = np.arange(30 * 20 * 20, dtype=np.float32).reshape(30, 20, 20)
    lesion = ScanLesion(np.arange(18, 23), 30, (9.5, 9.5))
    cut, key = crop_series(volume, "k", lesion, 20.0, (2.0, 2.0, 2.0), half_depth_mm=6.0)
    assert cut.shape == (7, 10, 10)  # slices 17..23 (the median 20 +- 3), 10 px
    assert np.array_equal(cut, volume[17:24, 5:15, 5:15])
    flat, flat_key = crop_series(volume, "k", lesion, 20.0, (2.0, 2.0, 2.0))
    assert flat.shape == (30, 10, 10) and flat_key != key
