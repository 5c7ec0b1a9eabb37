"""Every kind of bad input: the problem names the file and the reason, the rest loads."""

from __future__ import annotations

import os
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
from harness.data.brats import parse_survival
from harness.data.cache import VolumeStore
from harness.data.check import check_dataset, format_check_report
from harness.data.detect import load_cohort
from harness.data.volume import SeriesError, decode_nifti


def _series_folder(root: Path, patient: str, desc: str) -> Path:
    return next(p for p in (root / patient).glob(f"*/*-{desc}-*"))


def _load(root: Path, tmp_path: Path, layout: str | None = None):
    cohort = load_cohort(root, layout)
    store = VolumeStore(tmp_path / "cache", progress=False)
    volumes, problems = store.load_many(cohort.series)
    return cohort, volumes, problems


def _has(problems, path: Path | str, *words: str) -> bool:
    return any(p.path == str(path) and all(w in p.reason for w in words) for p in problems)


@pytest.fixture
def rem(tmp_path) -> Path:
    return write_rembrandt(tmp_path / "data", 2)


# --------------------------------------------------------------------------- DICOM files


def test_truncated_dicom_file(rem, tmp_path):
    folder = _series_folder(rem, "HF0001", "AX T2")
    victim = sorted(folder.iterdir())[0]
    data = victim.read_bytes()
    victim.write_bytes(data[: len(data) - 40])  # cut into the pixel data
    other = sorted(folder.iterdir())[1]
    other.write_bytes(other.read_bytes()[:400])  # cut into the header/elements
    c, vols, problems = _load(rem, tmp_path)
    assert _has(problems, victim, "truncated")
    assert _has(problems, other, "truncated")
    sid = "HF0001/HF0001_03-01-1997/T2"
    assert vols[sid].array.shape == (2, 8, 8)  # the other slices survive
    assert len(vols) == len(c.series)


def test_dicom_without_pixel_data(rem, tmp_path):
    folder = _series_folder(rem, "HF0002", "AX FLAIR")
    bad = write_dicom_slice(folder / "1-99.dcm", None, patient_id="HF0002",
                            study_date="19970302", series_description="AX FLAIR",
                            ipp=(-4, -4, 100.0))
    c, vols, problems = _load(rem, tmp_path)
    assert _has(problems, bad, "no pixel data")
    assert vols["HF0002/HF0002_03-02-1997/FLAIR"].array.shape == (4, 8, 8)
    assert len(vols) == len(c.series)


def test_non_dicom_file_in_series_folder(rem, tmp_path):
    folder = _series_folder(rem, "HF0001", "T1")
    junk = folder / "notes.txt"
    junk.write_text("scanner notes, not an image")
    c, vols, problems = _load(rem, tmp_path)
    assert str(junk) in c.series.set_index("series_id").loc["HF0001/HF0001_03-01-1997/T1",
                                                                "files"]
    assert _has(problems, junk, "not a DICOM file")
    assert vols["HF0001/HF0001_03-01-1997/T1"].array.shape == (4, 8, 8)


def test_series_with_slices_of_different_shapes_is_rejected(rem, tmp_path):
    folder = _series_folder(rem, "HF0001", "AX T1 POST GD")
    write_dicom_slice(folder / "1-77.dcm", np.zeros((6, 6), np.uint16), patient_id="HF0001",
                      study_date="19970301", series_description="AX T1 POST GD",
                      ipp=(-4, -4, 50.0))
    c, vols, problems = _load(rem, tmp_path)
    assert "HF0001/HF0001_03-01-1997/T1post" not in vols
    assert _has(problems, folder, "differ in shape", "8x8 (4 slices)", "6x6 (1 slices)")
    assert len(vols) == len(c.series) - 1


def test_series_of_only_bad_files_raises_series_error(tmp_path):
    folder = tmp_path / "data" / "HF0001" / "01-01-1997-x-1" / "1.000000-AX T2-1"
    write_dicom_series(folder, tiny_volume(), series_description="AX T2")
    c = load_cohort(tmp_path / "data", "rembrandt")
    for f in folder.iterdir():
        f.write_bytes(f.read_bytes()[:-40])
    with pytest.raises(SeriesError) as exc:
        VolumeStore(tmp_path / "cache", progress=False).load(c.series.iloc[0])
    assert len(exc.value.problems) == 5  # 4 slices + "no usable slices" for the folder
    assert any(p.path == str(folder) for p in exc.value.problems)


# --------------------------------------------------------------------------- slice order


def test_slices_ordered_by_image_position_not_names_or_instance(tmp_path):
    vol = tiny_volume(3, shape=(6, 8, 8))
    folder = tmp_path / "data" / "HF0001" / "s" / "AX T2"
    # shuffled names, InstanceNumber superior->inferior, oblique-free axial IOP
    write_dicom_series(folder, vol, series_description="AX T2", seed=5)
    c = load_cohort(tmp_path / "data", "rembrandt")
    v = VolumeStore(tmp_path / "cache", progress=False).load(c.series.iloc[0])
    np.testing.assert_array_equal(v.array, vol.astype(np.float32))


def test_slice_order_uses_the_normal_of_the_orientation(tmp_path):
    """A sagittal series (IOP rows along y, columns along z): position is along x."""
    vol = tiny_volume(4, shape=(5, 8, 8))
    folder = tmp_path / "data" / "HF0001" / "s" / "SAG T1"
    for k in range(5):
        write_dicom_slice(folder / f"{(k * 3) % 5}.dcm", vol[k], series_description="SAG T1",
                          instance_number=k + 1, ipp=(10.0 - 3 * k, 0, 0),
                          iop=(0, 1, 0, 0, 0, -1))
    c = load_cohort(tmp_path / "data", "rembrandt")
    v = VolumeStore(tmp_path / "cache", progress=False).load(c.series.iloc[0])
    # normal = (0,1,0) x (0,0,-1) = (-1,0,0): position increases as x decreases
    np.testing.assert_array_equal(v.array, vol.astype(np.float32))
    assert v.spacing[0] == pytest.approx(3.0)


def test_instance_number_fallback_without_ipp(tmp_path):
    vol = tiny_volume(7, shape=(5, 8, 8))
    folder = tmp_path / "data" / "HF0001" / "s" / "AX T2"
    write_dicom_series(folder, vol, series_description="AX T2", with_ipp=False, seed=2)
    c = load_cohort(tmp_path / "data", "rembrandt")
    v = VolumeStore(tmp_path / "cache", progress=False).load(c.series.iloc[0])
    # InstanceNumber runs superior -> inferior, so ascending InstanceNumber is vol reversed
    np.testing.assert_array_equal(v.array, vol[::-1].astype(np.float32))
    assert v.spacing[0] == 2.0  # from SliceThickness


def test_rescale_slope_and_intercept_applied(tmp_path):
    vol = tiny_volume(1, shape=(2, 8, 8))
    folder = tmp_path / "data" / "HF0001" / "s" / "AX T2"
    write_dicom_series(folder, vol, series_description="AX T2", slope=0.5, intercept=-100.0)
    c = load_cohort(tmp_path / "data", "rembrandt")
    v = VolumeStore(tmp_path / "cache", progress=False).load(c.series.iloc[0])
    assert v.array.dtype == np.float32
    np.testing.assert_allclose(v.array, vol * 0.5 - 100.0)


# --------------------------------------------------------------------------- folders, CSV


def test_patient_with_no_grade(tmp_path):
    root = write_rembrandt(tmp_path / "data", 3, grades=("II", "", "IV"))
    c = load_cohort(root)
    p = c.patients.set_index("patient_id")
    assert pd.isna(p.loc["HF0002", "grade"]) and p.loc["HF0001", "grade"] == "II"
    csv = root / "REMBRANDT_clinical.csv"
    assert _has(c.problems, csv, "HF0002", "no grade")
    assert "HF0002" in c.patient_ids  # images still indexed


def test_patient_with_images_but_no_csv_row(tmp_path):
    root = write_rembrandt(tmp_path / "data", 2)
    df = pd.read_csv(root / "REMBRANDT_clinical.csv")
    df[df["Sample"] != "HF0002"].to_csv(root / "REMBRANDT_clinical.csv", index=False)
    c = load_cohort(root)
    assert pd.isna(c.patients.set_index("patient_id").loc["HF0002", "grade"])
    assert _has(c.problems, root / "REMBRANDT_clinical.csv", "no row for patient HF0002")


def test_csv_row_for_patient_without_images(tmp_path):
    root = write_rembrandt(tmp_path / "data", 2, extra_csv_rows=(("HF0999", "GBM", "IV"),))
    c = load_cohort(root)
    assert _has(c.problems, root / "REMBRANDT_clinical.csv", "HF0999", "no images")
    assert "HF0999" not in c.patients["patient_id"].tolist()
    assert c.patient_ids == ["HF0001", "HF0002"]


def test_empty_folders(tmp_path):
    root = write_rembrandt(tmp_path / "data", 2)
    (root / "HF0003").mkdir()  # an empty patient folder
    empty_series = root / "HF0001" / "03-01-1997-MRI BRAIN-10000" / "9.000000-AX T1-1"
    empty_series.mkdir()
    c = load_cohort(root)
    assert _has(c.problems, root / "HF0003", "empty folder")
    assert _has(c.problems, empty_series, "empty folder")
    assert c.patient_ids == ["HF0001", "HF0002"]


def test_folder_without_dicom_files(tmp_path):
    root = write_rembrandt(tmp_path / "data", 2)
    junk = root / "HF0001" / "03-01-1997-MRI BRAIN-10000" / "scans-as-jpeg"
    junk.mkdir()
    (junk / "a.jpg").write_bytes(b"\xff\xd8\xff\xe0 not dicom")
    c = load_cohort(root)
    assert _has(c.problems, junk, "no readable DICOM")
    assert len(c.series) == 8


@pytest.mark.skipif(os.name != "posix" or os.geteuid() == 0,
                    reason="permissions are not enforced for root")
def test_unreadable_folder(tmp_path):
    root = write_rembrandt(tmp_path / "data", 2)
    locked = root / "HF0002"
    locked.chmod(0)
    try:
        c = load_cohort(root)
        assert _has(c.problems, locked, "unreadable folder")
        assert c.patient_ids == ["HF0001"]
    finally:
        locked.chmod(0o755)


def test_unknown_series_description_is_reported_not_fatal(tmp_path):
    root = write_rembrandt(tmp_path / "data", 1)
    folder = root / "HF0001" / "03-01-1997-MRI BRAIN-10000" / "8.000000-3 PLANE LOC-1"
    write_dicom_series(folder, tiny_volume(), series_description="3 PLANE LOC")
    c = load_cohort(root)
    assert _has(c.problems, folder, "unknown series description '3 PLANE LOC'")
    assert len(c.series) == 4
    c2 = load_cohort(root, modality_map={"plane loc": None})
    assert not any("unknown series" in p.reason for p in c2.problems)


def test_nothing_usable_raises_with_the_reasons(tmp_path):
    folder = tmp_path / "HF0001" / "s" / "1.000000-X-1"
    folder.mkdir(parents=True)
    (folder / "a.dcm").write_bytes(b"garbage")
    (tmp_path / "REMBRANDT_clinical.csv").write_text("Sample,Disease,Grade\n")
    from harness.errors import NoUsableDataError
    with pytest.raises(NoUsableDataError, match="no readable DICOM"):
        load_cohort(tmp_path)


def test_check_lists_every_problem_file(rem, tmp_path):
    folder = _series_folder(rem, "HF0001", "T1")
    junk = folder / "notes.txt"
    junk.write_text("x")
    r = check_dataset(rem, store=VolumeStore(tmp_path / "cache", progress=False))
    assert r.usable and r.n_series_ok == 8
    text = format_check_report(r)
    assert f"{junk}: not a DICOM file" in text


def test_check_unusable_when_nothing_decodes(tmp_path):
    folder = tmp_path / "data" / "HF0001" / "s" / "AX T2"
    write_dicom_series(folder, tiny_volume(), series_description="AX T2")
    for f in folder.iterdir():
        f.write_bytes(f.read_bytes()[:-40])
    r = check_dataset(tmp_path / "data", layout="rembrandt",
                      store=VolumeStore(tmp_path / "cache", progress=False))
    assert not r.usable and r.n_series_failed == 1
    assert "Usable: NO" in format_check_report(r)


# --------------------------------------------------------------------------- NIfTI, BraTS


def test_nifti_with_nans(tmp_path):
    root = write_brats(tmp_path / "data", 2)
    sid = "BraTS20_Training_002"
    bad = root / sid / f"{sid}_flair.nii.gz"
    data = np.ones((6, 6, 4), np.float32)
    data[1, 2, 3] = np.nan
    write_nifti(bad, data)
    c, vols, problems = _load(root, tmp_path)
    assert _has(problems, bad, "NaN")
    assert f"{sid}/{sid}/FLAIR" not in vols
    assert len(vols) == len(c.series) - 1


@pytest.mark.parametrize("shape", [(6, 6), (6, 6, 4, 2)])
def test_nifti_with_wrong_number_of_dimensions(tmp_path, shape):
    root = write_brats(tmp_path / "data", 2)
    sid = "BraTS20_Training_001"
    bad = root / sid / f"{sid}_t2.nii.gz"
    write_nifti(bad, np.ones(shape, np.float32))
    c, vols, problems = _load(root, tmp_path)
    assert _has(problems, bad, "expected a 3-D volume", str(len(shape)))
    assert len(vols) == len(c.series) - 1


def test_corrupt_nifti_file(tmp_path):
    root = write_brats(tmp_path / "data", 1)
    sid = "BraTS20_Training_001"
    bad = root / sid / f"{sid}_t1.nii.gz"
    bad.write_bytes(bad.read_bytes()[:30])
    c, vols, problems = _load(root, tmp_path)
    assert any(p.path == str(bad) for p in problems)
    assert len(vols) == len(c.series) - 1


def test_nifti_reoriented_to_zyx(tmp_path):
    data = np.arange(4 * 5 * 3, dtype=np.float32).reshape(4, 5, 3)  # x, y, z on disk
    affine = np.diag([2.0, 3.0, 4.0, 1.0])  # RAS, voxel sizes 2, 3, 4
    p = write_nifti(tmp_path / "v.nii.gz", data, affine)
    dec = decode_nifti(p.read_bytes())
    # LPS: x and y flipped, then (x, y, z) -> (z, y, x)
    np.testing.assert_array_equal(dec.array, data[::-1, ::-1, :].transpose(2, 1, 0))
    assert dec.spacing == (4.0, 3.0, 2.0)


@pytest.mark.parametrize("raw,expected", [
    ("289", (289.0, False)),
    ("ALIVE (361 days later)", (361.0, True)),
    ("alive (45 days later)", (45.0, True)),
    ("", (None, None)),
    ("NA", (None, None)),
])
def test_parse_survival(raw, expected):
    assert parse_survival(raw) == expected


def test_brats_survival_quirks(tmp_path):
    root = write_brats(tmp_path / "data", 4, grades=("HGG", "HGG", "LGG", "HGG"), survival={
        "BraTS20_Training_001": ("60.5", "289", "GTR"),
        "BraTS20_Training_002": ("52.0", "ALIVE (361 days later)", "NA"),
        "BraTS20_Training_004": ("70", "three weeks", "STR"),
    })
    c = load_cohort(root)
    p = c.patients.set_index("patient_id")
    assert p.loc["BraTS20_Training_001", "survival_days"] == 289
    assert not p.loc["BraTS20_Training_001", "survival_censored"]
    assert p.loc["BraTS20_Training_002", "survival_days"] == 361
    assert p.loc["BraTS20_Training_002", "survival_censored"]
    assert pd.isna(p.loc["BraTS20_Training_002", "extent_of_resection"])
    assert p.loc["BraTS20_Training_001", "extent_of_resection"] == "GTR"
    # LGG: survival missing by design
    assert p.loc["BraTS20_Training_003", "grade"] == "LGG"
    assert pd.isna(p.loc["BraTS20_Training_003", "survival_days"])
    assert pd.isna(p.loc["BraTS20_Training_003", "survival_censored"])
    assert pd.isna(p.loc["BraTS20_Training_003", "age"])
    # unparseable survival: reported with file and line, patient kept
    assert pd.isna(p.loc["BraTS20_Training_004", "survival_days"])
    assert p.loc["BraTS20_Training_004", "age"] == 70
    assert _has(c.problems, root / "survival_info.csv", "line 4", "three weeks")


def test_brats_subject_without_grade_and_rows_without_images(tmp_path):
    root = write_brats(tmp_path / "data", 2)
    with open(root / "name_mapping.csv", "a") as fh:
        fh.write("HGG,,,,,BraTS20_Training_369\n")
    nm = pd.read_csv(root / "name_mapping.csv", dtype=str, keep_default_na=False)
    nm.loc[nm["BraTS_2020_subject_ID"] == "BraTS20_Training_002", "Grade"] = ""
    nm.to_csv(root / "name_mapping.csv", index=False)
    c = load_cohort(root)
    assert pd.isna(c.patients.set_index("patient_id").loc["BraTS20_Training_002", "grade"])
    assert _has(c.problems, root / "name_mapping.csv", "BraTS20_Training_002", "no grade")
    assert _has(c.problems, root / "name_mapping.csv", "BraTS20_Training_369", "no images")


def test_unreadable_folder_reported_even_as_root(tmp_path, monkeypatch):
    """Same as above via a failing scandir, so it also runs where chmod is not enforced."""
    root = write_rembrandt(tmp_path / "data", 2)
    locked = root / "HF0002"
    real = os.scandir

    def scandir(path="."):
        if Path(path) == locked:
            raise PermissionError(13, "Permission denied", str(locked))
        return real(path)

    monkeypatch.setattr(os, "scandir", scandir)
    c = load_cohort(root, "rembrandt")
    assert _has(c.problems, locked, "unreadable folder", "Permission denied")
    assert c.patient_ids == ["HF0001"]


# --------------------------------------------------------------------------- skipped series


def test_truncated_file_in_a_skipped_series_is_named(rem, tmp_path):
    """A second T1 series in a study is skipped, but its files are still read and named."""
    from harness.data.check import unused_series_problems
    from fixture_writers import write_dicom_series

    study = _series_folder(rem, "HF0001", "T1").parent
    second = study / "9.000000-T1-29999"
    files = write_dicom_series(second, tiny_volume(9), patient_id="HF0001",
                               study_date="19970301", series_description="T1", series_number=9)
    victim = sorted(files)[0]
    victim.write_bytes(victim.read_bytes()[:-40])
    r = check_dataset(rem, store=VolumeStore(tmp_path / "cache", progress=False))
    assert _has(r.problems, second, "another T1 series", "series skipped")
    assert _has(r.problems, victim, "truncated", "not used")
    assert f"{victim}: file is truncated" in format_check_report(r)
    assert r.n_series_ok == 8  # the used series are unaffected
    # run: the same problem, from the series it does not decode
    c = load_cohort(rem)
    with VolumeStore(tmp_path / "cache", progress=False) as store:
        probs = unused_series_problems(c, c.series[c.series["modality"] == "T2"], store)
    assert _has(probs, victim, "truncated", "not used")


def test_bad_file_in_an_unknown_series_and_unparseable_folder_is_named(tmp_path):
    root = write_rembrandt(tmp_path / "data", 1)
    study = next((root / "HF0001").iterdir())
    loc = study / "8.000000-3 PLANE LOC-1"
    files = write_dicom_series(loc, tiny_volume(), series_description="3 PLANE LOC")
    files[0].write_bytes(b"not dicom at all")
    junk = study / "scans-as-jpeg"
    junk.mkdir()
    (junk / "a.jpg").write_bytes(b"\xff\xd8\xff\xe0 not dicom")
    r = check_dataset(root, store=VolumeStore(tmp_path / "cache", progress=False))
    assert _has(r.problems, files[0], "not a DICOM file", "not used")
    assert _has(r.problems, junk / "a.jpg", "not a DICOM file")


def test_duplicate_nifti_volume_is_read_and_named(tmp_path):
    root = write_brats(tmp_path / "data", 1)
    sid = "BraTS20_Training_001"
    dup = write_nifti(root / sid / "t2_copy.nii.gz", np.ones((6, 6), np.float32))
    r = check_dataset(root, store=VolumeStore(tmp_path / "cache", progress=False),
                      modality_map={"t2_copy": "T2"})
    assert _has(r.problems, dup, "another T2 volume")
    assert _has(r.problems, dup, "expected a 3-D volume", "not used")


def test_unused_series_checked_once_and_the_same_with_workers(tmp_path):
    """Checked in a pool like decoding; a rerun finds the problems without reading a file."""
    root = write_rembrandt(tmp_path / "data", 2)
    bad = []
    for pid in ("HF0001", "HF0002"):
        study = _series_folder(root, pid, "T1").parent
        files = write_dicom_series(study / "9.000000-T1-29999", tiny_volume(9), patient_id=pid,
                                   study_date="1997030" + pid[-1], series_description="T1",
                                   series_number=9)
        victim = sorted(files)[1]
        victim.write_bytes(victim.read_bytes()[:-40])
        bad.append(victim)
    for p in root.rglob("*"):
        os.utime(p, (1_500_000_000, 1_500_000_000))  # older than the memo's racy window
    c = load_cohort(root)
    assert len(c.skipped) == 2
    with VolumeStore(tmp_path / "c1", progress=False) as serial, \
            VolumeStore(tmp_path / "c2", progress=False, workers=2) as pooled:
        one, two = serial.check_many(c.skipped), pooled.check_many(c.skipped)
    assert list(map(str, one)) == list(map(str, two))
    assert all(_has(one, v, "truncated", "not used") for v in bad)
    with VolumeStore(tmp_path / "c1", progress=False) as again:
        assert list(map(str, again.check_many(c.skipped))) == list(map(str, one))
        assert again.n_files_read == 0
