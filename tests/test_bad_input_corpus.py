"""A corpus of bad inputs (issue 15): every kind is named with its file and its reason,
and the rest of the work goes on.

Each DICOM/label/NIfTI kind damages one small fixture tree in one place and asks
``data check`` (index + decode, the first thing a user runs) for the problem; the combined
test puts every DICOM and label kind into one tree at once. Folder, suite and split kinds
go through the entry points a user hits (CLI, suite loader, manifest validation).
``test_nothing_lost`` runs a tiny suite with and without added bad files and compares the
good patients' predictions.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from fixture_writers import (
    tiny_volume,
    write_brats,
    write_dicom_series,
    write_dicom_slice,
    write_nifti,
    write_rembrandt,
)
from harness.cli import main
from harness.data.cache import VolumeStore
from harness.data.check import check_dataset, format_check_report
from harness.errors import HarnessError, LeakySplitError
from harness.splits import SplitManifest, make_manifest, validate_manifest
from harness.suite import load_suite

N = 3  # patients in the DICOM fixture; HF0001..HF0003, 4 series each


def _series(root: Path, patient: str, desc: str) -> Path:
    return next(p for p in (root / patient).glob(f"*/*-{desc}-*"))


def _named(problems, path: Path | str, *words: str) -> bool:
    return any(p.path == str(path) and all(w in p.reason for w in words) for p in problems)


# --------------------------------------------------------------------------- DICOM / labels
# Each damage function takes the tree root and returns (path that must be named, words in
# the reason, number of series that must still decode out of 4 * N).


def truncated_file(root: Path):
    victim = sorted(_series(root, "HF0001", "AX T2").iterdir())[0]
    victim.write_bytes(victim.read_bytes()[:-40])
    return victim, ("file is truncated",), 4 * N


def no_pixel_data(root: Path):
    folder = _series(root, "HF0002", "AX FLAIR")
    bad = write_dicom_slice(folder / "1-99.dcm", None, patient_id="HF0002", study_date="19970302",
                            series_description="AX FLAIR", ipp=(-4, -4, 100.0))
    return bad, ("no pixel data",), 4 * N


def not_dicom(root: Path):
    junk = _series(root, "HF0001", "T1") / "notes.dcm"
    junk.write_text("scanner notes, not an image")
    return junk, ("not a DICOM file",), 4 * N


def mixed_shapes(root: Path):
    folder = _series(root, "HF0003", "AX T1 POST GD")
    write_dicom_slice(folder / "1-77.dcm", np.zeros((6, 6), np.uint16), patient_id="HF0003",
                      study_date="19970303", series_description="AX T1 POST GD",
                      ipp=(-4, -4, 50.0))
    return folder, ("slices differ in shape", "8x8 (4 slices)", "6x6 (1 slices)"), 4 * N - 1


def missing_slice(root: Path):
    folder = _series(root, "HF0002", "AX T2")
    middle = next(p for p in folder.iterdir()
                  if float(__import__("pydicom").dcmread(p).ImagePositionPatient[2]) == -8.0)
    middle.unlink()
    return folder, ("a slice may be missing",), 4 * N


def inconsistent_spacing(root: Path):
    folder = _series(root, "HF0003", "AX FLAIR")
    shutil.rmtree(folder)
    vol = tiny_volume(5, (5, 8, 8))
    for k, z in enumerate((0.0, 2.0, 4.6, 6.6, 8.6)):  # one gap of 2.6 mm among 2.0 mm
        write_dicom_slice(folder / f"1-{k}.dcm", vol[k], patient_id="HF0003",
                          study_date="19970303", series_description="AX FLAIR", ipp=(-4, -4, z))
    return folder, ("inconsistent slice spacing", "2.00 to 2.60"), 4 * N


def inconsistent_pixel_spacing(root: Path):
    folder = _series(root, "HF0001", "AX FLAIR")
    odd = sorted(folder.iterdir())[1]
    import pydicom

    ds = pydicom.dcmread(odd)
    ds.PixelSpacing = [0.5, 0.5]
    ds.save_as(odd)
    return odd, ("PixelSpacing 0.5x0.5 mm differs",), 4 * N


def truncated_in_skipped_series(root: Path):
    study = _series(root, "HF0002", "T1").parent
    second = study / "9.000000-T1-29999"
    files = write_dicom_series(second, tiny_volume(9), patient_id="HF0002", study_date="19970302",
                               series_description="T1", series_number=9)
    victim = sorted(files)[2]
    victim.write_bytes(victim.read_bytes()[:-40])
    return victim, ("file is truncated", "not used"), 4 * N


def _csv(root: Path) -> Path:
    return root / "REMBRANDT_clinical.csv"


def _set_grade(root: Path, patient: str, grade: str) -> None:
    df = pd.read_csv(_csv(root), dtype=str, keep_default_na=False)
    df.loc[df["Sample"] == patient, "Grade"] = grade
    df.to_csv(_csv(root), index=False)


def missing_grade(root: Path):
    _set_grade(root, "HF0002", "")
    return _csv(root), ("patient HF0002 has no grade",), 4 * N


def unknown_grade(root: Path):
    _set_grade(root, "HF0003", "V")
    return _csv(root), ("patient HF0003", "unrecognised grade 'V'"), 4 * N


def orphan_row(root: Path):
    with open(_csv(root), "a") as fh:
        fh.write("HF0999,GBM,IV\n")
    return _csv(root), ("row for patient HF0999 but no images",), 4 * N


DICOM_AND_LABEL_KINDS: dict[str, Callable] = {
    "dicom: truncated file": truncated_file,
    "dicom: no pixel data": no_pixel_data,
    "dicom: not DICOM": not_dicom,
    "dicom: mixed slice shapes": mixed_shapes,
    "dicom: missing slice": missing_slice,
    "dicom: inconsistent slice spacing": inconsistent_spacing,
    "dicom: inconsistent pixel spacing": inconsistent_pixel_spacing,
    "dicom: truncated file in a skipped series": truncated_in_skipped_series,
    "labels: missing grade": missing_grade,
    "labels: unknown grade value": unknown_grade,
    "labels: orphan CSV row": orphan_row,
}


@pytest.mark.parametrize("kind", list(DICOM_AND_LABEL_KINDS))
def test_each_dicom_and_label_kind_is_named(kind, tmp_path):
    root = write_rembrandt(tmp_path / "data", N)
    path, words, n_ok = DICOM_AND_LABEL_KINDS[kind](root)
    report = check_dataset(root, store=VolumeStore(tmp_path / "cache", progress=False))
    assert _named(report.problems, path, *words), format_check_report(report)
    assert report.n_series_ok == n_ok  # the rest goes on
    assert report.usable and report.n_usable_patients == N


def test_every_dicom_and_label_kind_at_once(tmp_path):
    root = write_rembrandt(tmp_path / "data", N)
    expected = {kind: damage(root) for kind, damage in DICOM_AND_LABEL_KINDS.items()}
    report = check_dataset(root, store=VolumeStore(tmp_path / "cache", progress=False))
    text = format_check_report(report)
    for kind, (path, words, _) in expected.items():
        assert _named(report.problems, path, *words), f"{kind} not named:\n{text}"
        assert f"{path}: " in text
    assert report.n_series_ok == 4 * N - 1  # only the mixed-shape series is rejected
    assert report.n_usable_patients == N


# --------------------------------------------------------------------------- NIfTI


@pytest.mark.parametrize("kind", ["nan", "inf", "2-d", "4-d"])
def test_each_nifti_kind_is_named(kind, tmp_path):
    root = write_brats(tmp_path / "data", 2)
    sid = "BraTS20_Training_002"
    bad = root / sid / f"{sid}_flair.nii.gz"
    if kind in ("nan", "inf"):
        data = np.ones((6, 6, 4), np.float32)
        data[1, 2, 3] = np.nan if kind == "nan" else np.inf
        data[0, 0, 0] = -np.inf
        write_nifti(bad, data)
        words: tuple[str, ...] = ("2 NaN/inf voxels", "rejected")
    else:
        write_nifti(bad, np.ones((6, 6) if kind == "2-d" else (6, 6, 4, 2), np.float32))
        words = ("expected a 3-D volume", "2 dimensions" if kind == "2-d" else "4 dimensions")
    report = check_dataset(root, store=VolumeStore(tmp_path / "cache", progress=False))
    assert _named(report.problems, bad, *words), format_check_report(report)
    assert report.n_series_ok == 2 * 5 - 1
    assert report.n_usable_patients == 2


# --------------------------------------------------------------------------- folders, suites


def test_empty_folder_inside_a_dataset_is_named(tmp_path):
    root = write_rembrandt(tmp_path / "data", N)
    (root / "HF0009").mkdir()
    report = check_dataset(root, store=VolumeStore(tmp_path / "cache", progress=False))
    assert _named(report.problems, root / "HF0009", "empty folder")
    assert report.n_usable_patients == N


def test_empty_dataset_folder_is_a_message_not_a_traceback(tmp_path, capsys):
    empty = tmp_path / "empty"
    empty.mkdir()
    assert main(["data", "check", str(empty), "--cache-dir", str(tmp_path / "c"),
                 "--no-progress"]) == 1
    out, err = capsys.readouterr()
    assert "Usable: NO" in out and str(empty) in err and "Traceback" not in err
    rc = main(["run", "--suite", "grading", "--data", str(empty), "--tracking-uri", "none",
               "--cache-dir", str(tmp_path / "c"), "--out", str(tmp_path / "o"), "--no-progress"])
    out, err = capsys.readouterr()
    assert rc == 2 and "error: " in err and str(empty) in err and "Traceback" not in err


def test_malformed_suite_toml_is_named(tmp_path, capsys):
    bad = tmp_path / "bad.toml"
    bad.write_text('[suite]\nname = "x"\ntask = grading\n')  # unquoted string
    with pytest.raises(HarnessError, match="cannot read suite file") as exc:
        load_suite(str(bad))
    assert str(bad) in str(exc.value)
    assert main(["run", "--suite", str(bad), "--tracking-uri", "none",
                 "--cache-dir", str(tmp_path / "c"), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert str(bad) in err and "Traceback" not in err


# --------------------------------------------------------------------------- splits


def _samples(n_patients: int = 4, per: int = 3) -> pd.DataFrame:
    rows = [{"sample_id": f"P{p}/s{k}", "patient_id": f"P{p}", "target": p % 2}
            for p in range(n_patients) for k in range(per)]
    return pd.DataFrame(rows)


def _manifest(tmp_path: Path, samples: pd.DataFrame) -> SplitManifest:
    return make_manifest("patient_kfold", samples, seed=0, task="classification",
                         dataset_fingerprint="abc", n_splits=2)


def test_leaky_manifest_is_refused_naming_file_and_patient(tmp_path):
    samples = _samples()
    m = _manifest(tmp_path, samples)
    moved = m.folds[0].train[0]
    m.folds[0].train.remove(moved)
    m.folds[0].test.append(moved)
    path = tmp_path / "leaky.json"
    m.save(path)
    with pytest.raises(LeakySplitError) as exc:
        validate_manifest(SplitManifest.load(path), samples, dataset_fingerprint="abc")
    assert str(path) in str(exc.value) and moved.split("/")[0] in str(exc.value)


def test_manifest_of_another_dataset_is_refused_naming_file(tmp_path):
    samples = _samples()
    path = tmp_path / "other.json"
    _manifest(tmp_path, samples).save(path)
    with pytest.raises(HarnessError, match="was made for dataset 'abc'") as exc:
        validate_manifest(SplitManifest.load(path), samples, dataset_fingerprint="def")
    assert str(path) in str(exc.value)
    validate_manifest(SplitManifest.load(path), samples, dataset_fingerprint="abc")  # fits


# --------------------------------------------------------------------------- nothing lost


TINY = {
    "suite": {"name": "corpus", "task": "grading"},
    "data": {"cohort": "rembrandt"},
    "task": {"modalities": ["T1post", "FLAIR"], "min_foreground": 0.15, "slice_step": 2},
    "baselines": {"default": ["logreg_dwtdct"], "params": {"logreg_dwtdct": {"image_size": 32}}},
    "protocols": {"patient_kfold": {"n_splits": 3}},
    "metrics": {"names": ["accuracy"], "n_boot": 20},
}


def _add_bad_files(root: Path) -> list[Path]:
    """Bad files that must not change what the good patients get."""
    from fixture_writers import write_tcia_study

    import pydicom

    used = sorted(p for p in root.rglob("*") if p.is_dir() and "AX FLAIR" in p.name)[0]
    junk = used / "notes.dcm"
    junk.write_text("not an image")  # in a series that is used
    second = used.parent / "99.000000-AX FLAIR-99999"  # a second FLAIR series in the study
    for f in sorted(used.glob("*.dcm")):
        if f != junk:
            ds = pydicom.dcmread(f)
            ds.SeriesNumber = 99
            second.mkdir(exist_ok=True)
            ds.save_as(second / f.name)
    victim = sorted(second.iterdir())[0]
    victim.write_bytes(victim.read_bytes()[:-30])
    # a patient whose every file is bad: contributes no sample, so no fold changes
    broken = write_tcia_study(root, "HF9999", "19990101", (("AX FLAIR", 4),), seed=7)
    for f in broken["AX FLAIR"].iterdir():
        f.write_bytes(f.read_bytes()[:200])
    with open(root / "REMBRANDT_clinical.csv", "a") as fh:
        fh.write("HF9999,GBM,IV\nHF8888,GBM,IV\n")  # the second one is an orphan row
    (root / "HF7777").mkdir()  # an empty patient folder
    return [junk, victim]


@pytest.mark.slow
def test_nothing_lost(tiny_rembrandt, tmp_path):
    from harness.runner import RunOptions, run_suite
    from harness.suite import parse_suite

    clean, dirty = tmp_path / "clean", tmp_path / "dirty"
    shutil.copytree(tiny_rembrandt, clean)
    shutil.copytree(tiny_rembrandt, dirty)
    named = _add_bad_files(dirty)
    out = {}
    for name, root in (("clean", clean), ("dirty", dirty)):
        res = run_suite(parse_suite(json.loads(json.dumps(TINY))),
                        RunOptions(data=root, out=tmp_path / f"out-{name}", tracking_uri="none",
                                   cache_dir=tmp_path / "cache", progress=False, jobs=1))
        assert res.failures == []
        out[name] = tmp_path / f"out-{name}"
    problems = pd.read_csv(out["dirty"] / "problems.csv")
    for path in named:
        assert str(path) in set(problems["path"]), problems.to_string()
    assert (problems["path"].str.contains("HF9999")).any()
    pred = "predictions/logreg_dwtdct__patient_kfold.csv"
    a, b = pd.read_csv(out["clean"] / pred), pd.read_csv(out["dirty"] / pred)
    assert len(a) > 0
    pd.testing.assert_frame_equal(a, b)
