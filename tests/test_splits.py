"""Split protocols and manifests: patient-level splits never leak, leaky ones do."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from harness.errors import HarnessError, LeakySplitError
from harness.splits import (
    PROTOCOLS,
    Fold,
    SplitManifest,
    get_protocol,
    load_or_create_manifest,
    make_manifest,
    patient_overlaps,
    ratio_counts,
    validate_manifest,
)

PATIENT_LEVEL = ("patient_kfold", "leave_one_patient_out")


def _cohort(n_patients: int = 30, images: int = 3, slices: int = 8, seed: int = 0) -> pd.DataFrame:
    """Patients with one class each, several images per patient, many slices per image."""
    rng = np.random.default_rng(seed)
    rows = []
    for p in range(n_patients):
        label = ["LGG", "GBM", "MET"][int(rng.integers(0, 3))]
        for i in range(images):
            for s in range(slices):
                rows.append((f"P{p:03d}/I{i}/S{s:02d}", f"P{p:03d}", f"P{p:03d}/I{i}", label, f"site{p % 4}"))
    return pd.DataFrame(rows, columns=["sample_id", "patient_id", "image_id", "target", "site"])


def _manifest(protocol: str, samples: pd.DataFrame, seed: int = 0, **params) -> SplitManifest:
    return make_manifest(
        protocol, samples, seed=seed, task="classification", dataset_fingerprint="fp", **params
    )


def _patients(samples: pd.DataFrame, ids: list[str]) -> set[str]:
    return set(samples.set_index("sample_id").loc[ids, "patient_id"])


@pytest.mark.parametrize("protocol", PATIENT_LEVEL)
def test_no_patient_crosses_a_patient_level_split(protocol: str) -> None:
    samples = _cohort(n_patients=12 if protocol == "leave_one_patient_out" else 30)
    manifest = _manifest(protocol, samples)
    assert not manifest.leaky
    assert patient_overlaps(manifest, samples) == []
    for fold in manifest.folds:
        tr, va, te = (_patients(samples, ids) for ids in (fold.train, fold.val, fold.test))
        assert not (tr & te or va & te or tr & va)
        assert tr and va and te
        assert len(fold.train) + len(fold.val) + len(fold.test) == len(samples)
    validate_manifest(manifest, samples, dataset_fingerprint="fp")


@pytest.mark.parametrize("protocol", PATIENT_LEVEL)
def test_every_sample_in_exactly_one_test_fold(protocol: str) -> None:
    samples = _cohort(n_patients=10)
    manifest = _manifest(protocol, samples)
    tests = [s for f in manifest.folds for s in f.test]
    assert sorted(tests) == sorted(samples["sample_id"])
    if protocol == "leave_one_patient_out":
        assert len(manifest.folds) == 10
        assert all(len(_patients(samples, f.test)) == 1 for f in manifest.folds)


def test_patient_kfold_stratifies_and_sizes_validation() -> None:
    samples = _cohort(n_patients=50)
    manifest = _manifest("patient_kfold", samples, n_splits=5)
    overall = samples.groupby("patient_id")["target"].first().value_counts(normalize=True)
    for fold in manifest.folds:
        test = samples[samples.sample_id.isin(fold.test)]
        share = test.groupby("patient_id")["target"].first().value_counts(normalize=True)
        assert (share.reindex(overall.index, fill_value=0) - overall).abs().max() < 0.15
        n_val, n_train = len(_patients(samples, fold.val)), len(_patients(samples, fold.train))
        assert n_val == pytest.approx((n_val + n_train) / 4, abs=1)  # val_fraction = 1/(k-1)


def test_patient_kfold_regression_and_rare_classes_fall_back_gracefully() -> None:
    samples = _cohort(n_patients=20)
    samples["target"] = samples["patient_id"].str[1:].astype(float) * 1.5  # per-patient float
    reg = make_manifest(
        "patient_kfold", samples, seed=0, task="regression", dataset_fingerprint="fp"
    )
    assert len(reg.folds) == 5 and patient_overlaps(reg, samples) == []
    rare = _cohort(n_patients=12)
    rare.loc[rare.patient_id == "P000", "target"] = "RARE"  # one patient of its class
    manifest = _manifest("patient_kfold", rare, n_splits=4)
    assert len(manifest.folds) == 4 and patient_overlaps(manifest, rare) == []
    with pytest.raises(HarnessError, match="n_splits"):
        _manifest("patient_kfold", _cohort(n_patients=3), n_splits=5)


@pytest.mark.parametrize("protocol", ["row_random", "image_level"])
def test_leaky_protocols_do_leak(protocol: str) -> None:
    samples = _cohort(n_patients=20)
    manifest = _manifest(protocol, samples)
    assert manifest.leaky and PROTOCOLS[protocol].leaky
    kinds = {k for _, _, k in patient_overlaps(manifest, samples)}
    assert "train/test" in kinds
    validate_manifest(manifest, samples)  # leaky by declaration: no error


def test_row_random_proportions_and_counts() -> None:
    samples = _cohort(n_patients=25, images=2, slices=20)  # 1000 rows
    fold = _manifest("row_random", samples).folds[0]
    assert (len(fold.train), len(fold.val), len(fold.test)) == (800, 100, 100)
    small = samples.sample(60, random_state=0)
    folds = _manifest("row_random", small, ratios=(48, 0, 12), n_repeats=3).folds
    assert len(folds) == 3
    for f in folds:
        assert (len(f.train), len(f.val), len(f.test)) == (48, 0, 12)
        assert set(f.train) | set(f.test) == set(small.sample_id)
    assert folds[0].test != folds[1].test  # repeats differ
    assert ratio_counts((0.7, 0.0, 0.3), 10) == (7, 0, 3)
    with pytest.raises(HarnessError, match="neither fractions"):
        ratio_counts((48, 0, 10), 60)


def test_row_random_stratifies_by_target() -> None:
    samples = _cohort(n_patients=40, images=1, slices=10)
    fold = _manifest("row_random", samples, ratios=(0.5, 0.0, 0.5)).folds[0]
    by_id = samples.set_index("sample_id")["target"]
    a = by_id[fold.train].value_counts().sort_index()
    b = by_id[fold.test].value_counts().sort_index()
    assert (a - b).abs().max() <= 1


def test_image_level_keeps_images_whole_but_splits_patients() -> None:
    samples = _cohort(n_patients=20, images=4)
    manifest = _manifest("image_level", samples)
    image_of = samples.set_index("sample_id")["image_id"]
    fold = manifest.folds[0]
    train_imgs, test_imgs = set(image_of[fold.train]), set(image_of[fold.test])
    assert not train_imgs & test_imgs
    assert len(test_imgs) == 16 and fold.val == []  # 20% of 80 images
    assert patient_overlaps(manifest, samples)  # a patient's images land on both sides


def test_determinism_and_seed_sensitivity() -> None:
    samples = _cohort()
    for protocol in PROTOCOLS:
        a, b = _manifest(protocol, samples, seed=3), _manifest(protocol, samples, seed=3)
        assert a.sha256 == b.sha256
        assert a.sha256 != _manifest(protocol, samples, seed=4).sha256
    shuffled = samples.sample(frac=1.0, random_state=1)
    assert _manifest("patient_kfold", shuffled, seed=3).sha256 == _manifest(
        "patient_kfold", samples, seed=3
    ).sha256


def test_manifest_roundtrip_and_canonical_json(tmp_path: Path) -> None:
    samples = _cohort(n_patients=10)
    manifest = _manifest("row_random", samples, ratios=(0.6, 0.2, 0.2))
    path = tmp_path / "sub" / "manifest.json"
    manifest.save(path)
    loaded = SplitManifest.load(path)
    assert loaded == manifest
    assert loaded.sha256 == manifest.sha256
    assert path.read_text() == manifest.to_json()
    data = json.loads(path.read_text())
    assert data["params"] == {"ratios": [0.6, 0.2, 0.2], "n_repeats": 1}
    assert data["folds"][0]["test"] == sorted(data["folds"][0]["test"])
    # id order in memory does not change the hash
    manifest.folds[0].train.reverse()
    assert manifest.sha256 == loaded.sha256


def test_load_bad_manifest_names_the_file(tmp_path: Path) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(HarnessError, match="bad.json"):
        SplitManifest.load(bad)
    bad.write_text(json.dumps({"protocol": "row_random"}))
    with pytest.raises(HarnessError, match=r"bad.json.*missing keys"):
        SplitManifest.load(bad)


def _tamper(manifest: SplitManifest, samples: pd.DataFrame) -> tuple[SplitManifest, str]:
    """Move one slice of a test patient into training."""
    data = json.loads(manifest.to_json())
    moved = data["folds"][0]["test"][0]
    data["folds"][0]["test"].remove(moved)
    data["folds"][0]["train"].append(moved)
    patient = samples.set_index("sample_id").loc[moved, "patient_id"]
    return SplitManifest.from_dict(data), patient


def test_tampered_patient_manifest_raises_leaky_split_error() -> None:
    samples = _cohort(n_patients=15)
    tampered, patient = _tamper(_manifest("patient_kfold", samples), samples)
    assert patient_overlaps(tampered, samples) == [(0, patient, "train/test")]
    with pytest.raises(LeakySplitError, match=rf"{patient}.*fold 0"):
        validate_manifest(tampered, samples)
    # claiming the manifest is leaky makes the overlap acceptable
    tampered.leaky = True
    validate_manifest(tampered, samples)


def test_same_tampering_under_row_random_passes() -> None:
    samples = _cohort(n_patients=15)
    tampered, _ = _tamper(_manifest("row_random", samples), samples)
    tampered.leaky = False  # the registry still knows row_random is leaky
    validate_manifest(tampered, samples)


def test_validate_rejects_unknown_ids_double_roles_and_wrong_dataset() -> None:
    samples = _cohort(n_patients=10)
    manifest = _manifest("patient_kfold", samples)
    manifest.folds[1].test.append("ghost-1")
    with pytest.raises(HarnessError, match="ghost-1"):
        validate_manifest(manifest, samples)
    manifest.folds[1].test.remove("ghost-1")
    manifest.folds[2].val.append(manifest.folds[2].train[0])
    with pytest.raises(HarnessError, match="more than once"):
        validate_manifest(manifest, samples)
    manifest.folds[2].val.pop()
    with pytest.raises(HarnessError, match="dataset"):
        validate_manifest(manifest, samples, dataset_fingerprint="other")


def test_protocol_registry() -> None:
    assert set(PROTOCOLS) == {"patient_kfold", "leave_one_patient_out", "leave_one_site_out", "row_random",
                              "image_level"}
    with pytest.raises(HarnessError, match="patient_kfold"):
        get_protocol("random_slices")
    with pytest.raises(HarnessError, match="no parameter"):
        _manifest("patient_kfold", _cohort(), ratios=(1, 0, 0))
    fold = Fold(0, ["b", "a"], [], ["c"])
    assert fold.to_dict() == {"index": 0, "train": ["a", "b"], "val": [], "test": ["c"]}


def test_load_or_create_reuses_matching_manifest(tmp_path: Path) -> None:
    samples = _cohort(n_patients=10)
    path = tmp_path / "splits" / "patient_kfold.json"
    kw = dict(seed=1, task="classification", dataset_fingerprint="fp", n_splits=3)
    first, reused = load_or_create_manifest(path, "patient_kfold", samples, **kw)
    assert not reused and path.exists()
    second, reused = load_or_create_manifest(path, "patient_kfold", samples, **kw)
    assert reused and second.sha256 == first.sha256
    third, reused = load_or_create_manifest(path, "patient_kfold", samples, **{**kw, "seed": 2})
    assert not reused and third.sha256 != first.sha256
    assert SplitManifest.load(path).sha256 == third.sha256


def test_load_or_create_refuses_a_leaky_supplied_manifest(tmp_path: Path) -> None:
    samples = _cohort(n_patients=10)
    kw = dict(seed=1, task="classification", dataset_fingerprint="fp")
    tampered, patient = _tamper(_manifest("patient_kfold", samples, seed=1), samples)
    path = tmp_path / "m.json"
    tampered.save(path)
    with pytest.raises(LeakySplitError, match=patient):
        load_or_create_manifest(path, "patient_kfold", samples, **kw)
