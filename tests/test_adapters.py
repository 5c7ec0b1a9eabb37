"""Adapters: layout detection, indexing of the three layouts, modality map, check report."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from fixture_writers import (
    FAKE_ADDRESS,
    FAKE_BIRTH,
    FAKE_NAME,
    write_brats,
    write_btp,
    write_dicom_series,
    write_rembrandt,
    write_tcia_study,
    tiny_volume,
)
from harness.data.cache import VolumeStore
from harness.data.check import check_dataset, format_check_report
from harness.data.cohort import MODALITIES, SERIES_COLUMNS
from harness.data.detect import detect_layout, load_cohort
from harness.data.modality_map import ModalityMap, make_modality_map
from harness.errors import HarnessError, NoUsableDataError


@pytest.fixture(scope="module")
def rembrandt(tmp_path_factory) -> Path:
    return write_rembrandt(tmp_path_factory.mktemp("rembrandt"))


@pytest.fixture(scope="module")
def btp(tmp_path_factory) -> Path:
    return write_btp(tmp_path_factory.mktemp("btp"))


@pytest.fixture(scope="module")
def brats(tmp_path_factory) -> Path:
    return write_brats(tmp_path_factory.mktemp("brats"))


# --------------------------------------------------------------------------- modality map


@pytest.mark.parametrize("desc,expected", [
    ("AX T1 POST GD", "T1post"), ("AX T2", "T2"), ("AX FLAIR", "FLAIR"), ("T1", "T1"),
    ("t1post", "T1post"), ("T1+C", "T1post"), ("dT1", "dT1"), ("T1prereg", "T1"),
    ("FLAIRreg", "FLAIR"), ("ADCreg", "ADC"), ("sRCBVreg", "sRCBV"), ("nRCBVreg", "nRCBV"),
    ("nCBFreg", "nCBF"), ("T2reg", "T2"), ("MaskTumor", "MASK"), ("T2 FLAIR", "FLAIR"),
    ("Localizer", None),
])
def test_default_modality_map(desc, expected):
    assert make_modality_map().lookup(desc) == expected


def test_modality_overrides_take_precedence_and_are_validated():
    m = make_modality_map({"SAG MPRAGE": "T1", "AX T2": "FLAIR", "localizer": None})
    assert m.lookup("sag mprage") == "T1"
    assert m.lookup("AX T2") == "FLAIR"
    assert m.match("3-plane LOCALIZER") == (True, None)  # ignored on purpose, not unknown
    assert make_modality_map(m) is m
    with pytest.raises(HarnessError, match="unknown modality"):
        make_modality_map({"x": "T7"})
    assert all(mod in MODALITIES for _, mod in ModalityMap().rules)


# --------------------------------------------------------------------------- detection


def test_detect_layouts(rembrandt, btp, brats):
    assert detect_layout(rembrandt) == "rembrandt"
    assert detect_layout(btp) == "btp"
    assert detect_layout(brats) == "brats20"


def test_detect_btp_without_pgbm_names(tmp_path):
    write_tcia_study(tmp_path, "P7", "19900101", (("dT1", 3), ("MaskTumor", 4)))
    assert detect_layout(tmp_path) == "btp"


def test_unknown_or_empty_folder_raises_naming_it(tmp_path):
    with pytest.raises(NoUsableDataError, match=str(tmp_path)):
        load_cohort(tmp_path)
    (tmp_path / "readme.txt").write_text("hello")
    with pytest.raises(NoUsableDataError, match=str(tmp_path)):
        detect_layout(tmp_path)
    with pytest.raises(NoUsableDataError, match="does not exist"):
        load_cohort(tmp_path / "nope")
    with pytest.raises(HarnessError, match="unknown layout"):
        load_cohort(tmp_path, "nifti-zoo")


# --------------------------------------------------------------------------- REMBRANDT


def test_rembrandt_index(rembrandt):
    c = load_cohort(rembrandt)
    assert c.layout == "rembrandt"
    assert list(c.series.columns) == list(SERIES_COLUMNS)
    assert c.series["series_id"].is_unique
    assert c.patient_ids == ["HF0001", "HF0002", "HF0003"]
    row = c.series[c.series["series_id"] == "HF0001/HF0001_03-01-1997/T1post"].iloc[0]
    assert row["study_date"] == "1997-03-01"
    assert row["series_description"] == "AX T1 POST GD"
    assert row["format"] == "dicom"
    assert isinstance(row["files"], tuple) and len(row["files"]) == 4
    assert sorted(c.series["modality"].unique()) == ["FLAIR", "T1", "T1post", "T2"]
    p = c.patients.set_index("patient_id")
    assert list(c.patients.columns) == ["patient_id", "grade", "disease"]
    assert p.loc["HF0001", "grade"] == "II" and p.loc["HF0003", "grade"] == "IV"
    assert p.loc["HF0003", "disease"] == "GBM"
    assert c.problems == []


def test_configurable_clinical_csv_and_columns(tmp_path):
    write_rembrandt(tmp_path, 2)
    df = pd.read_csv(tmp_path / "REMBRANDT_clinical.csv")
    (tmp_path / "REMBRANDT_clinical.csv").unlink()
    df.rename(columns={"Sample": "PatientID", "Grade": "WHO"}).to_csv(
        tmp_path / "clin.csv", index=False)
    c = load_cohort(tmp_path, "rembrandt", clinical_csv="clin.csv",
                    clinical_columns={"patient": "PatientID", "grade": "WHO"})
    assert c.patients["grade"].tolist() == ["II", "III"]
    assert c.problems == []


def test_missing_clinical_csv_is_a_problem_not_fatal(tmp_path):
    write_rembrandt(tmp_path, 2)
    (tmp_path / "REMBRANDT_clinical.csv").unlink()
    c = load_cohort(tmp_path, "rembrandt")
    assert c.patients["grade"].isna().all()
    assert any("REMBRANDT_clinical.csv" in p.path and "not found" in p.reason
               for p in c.problems)


def test_duplicate_modality_in_study_keeps_first(tmp_path):
    write_tcia_study(tmp_path, "HF0001", "19970301", (("AX T2", 3), ("T2 FSE", 9)))
    c = load_cohort(tmp_path, "rembrandt")
    assert len(c.series) == 1
    assert c.series.iloc[0]["series_description"] == "AX T2"
    assert any("T2 FSE" in p.path and "another T2 series" in p.reason for p in c.problems)


def test_header_fields_win_over_folder_names_and_any_depth(tmp_path):
    # series folder two levels deeper than usual, folder names uninformative
    folder = tmp_path / "HF0042" / "x" / "y" / "z"
    write_dicom_series(folder, tiny_volume(), patient_id="HF0042", study_date="19960704",
                       series_description="AX FLAIR")
    c = load_cohort(tmp_path, "rembrandt")
    row = c.series.iloc[0]
    assert row["series_id"] == "HF0042/HF0042_07-04-1996/FLAIR"
    assert row["study_date"] == "1996-07-04"


# --------------------------------------------------------------------------- BTP


def test_btp_index(btp):
    c = load_cohort(btp)
    assert c.layout == "btp"
    assert c.patient_ids == ["PGBM-001", "PGBM-002"]
    assert set(c.series["modality"]) == {"T1post", "FLAIR", "MASK"}
    assert c.series.groupby("patient_id")["study_id"].nunique().tolist() == [2, 2]
    p = c.patients.set_index("patient_id")
    assert p.loc["PGBM-001", "study_dates"] == ("1990-01-01", "1990-06-11")
    assert p.loc["PGBM-001", "interval_days"] == 161
    assert c.problems == []


def test_btp_patient_with_one_study_is_reported_and_kept(tmp_path):
    write_btp(tmp_path, 2)
    shutil.rmtree(next((tmp_path / "PGBM-002").glob("06-*")))
    c = load_cohort(tmp_path)
    assert "PGBM-002" in c.patient_ids
    p = c.patients.set_index("patient_id")
    assert p.loc["PGBM-002", "n_studies"] == 1 and pd.isna(p.loc["PGBM-002", "interval_days"])
    assert any("PGBM-002" in pr.path and "expected 2 studies" in pr.reason
               for pr in c.problems)


# --------------------------------------------------------------------------- BraTS


def test_brats_index(brats):
    c = load_cohort(brats)
    assert c.layout == "brats20"
    assert c.patient_ids == [f"BraTS20_Training_{i:03d}" for i in (1, 2, 3)]
    assert sorted(c.series["modality"].unique()) == ["FLAIR", "SEG", "T1", "T1post", "T2"]
    assert (c.series["format"] == "nifti").all()
    row = c.series[c.series["series_id"] == "BraTS20_Training_001/BraTS20_Training_001/T1post"]
    assert row.iloc[0]["series_description"] == "t1ce"
    assert list(c.patients.columns) == ["patient_id", "grade", "age", "survival_days",
                                        "survival_censored", "extent_of_resection", "site"]
    assert c.problems == []
    assert (c.patients["site"] == "").all() and (c.series["institution"] == "").all()  # no older IDs given


def test_brats_site_comes_from_the_older_subject_ids():
    from harness.data.brats import site_from_ids

    assert site_from_ids({"BraTS_2019_subject_ID": "BraTS19_TCIA02_135_1",
                          "BraTS_2018_subject_ID": "Brats18_TCIA02_135_1"}) == "TCIA02"
    assert site_from_ids({"BraTS_2019_subject_ID": "NA", "BraTS_2018_subject_ID": "Brats18_CBICA_AAB_1"}) == "CBICA"
    assert site_from_ids({"BraTS_2017_subject_ID": "Brats17_2013_2_1"}) == "2013"
    assert site_from_ids({"BraTS_2019_subject_ID": "", "TCGA_TCIA_subject_ID": "TCGA-02-0006"}) == ""


def test_brats_series_carry_the_site_of_their_subject(tmp_path):
    write_brats(tmp_path, 2)
    names = pd.read_csv(tmp_path / "name_mapping.csv", dtype=str, keep_default_na=False)
    names["BraTS_2019_subject_ID"] = ["BraTS19_CBICA_AAB_1", "NA"]
    names.to_csv(tmp_path / "name_mapping.csv", index=False)
    c = load_cohort(tmp_path)
    sites = c.series.groupby("patient_id")["institution"].unique().to_dict()
    assert list(sites["BraTS20_Training_001"]) == ["CBICA"] and list(sites["BraTS20_Training_002"]) == [""]
    assert c.patients.set_index("patient_id")["site"].to_dict() == {"BraTS20_Training_001": "CBICA",
                                                                     "BraTS20_Training_002": ""}


def test_brats_misnamed_seg_file_is_mapped(tmp_path):
    write_brats(tmp_path, 1)
    sid = "BraTS20_Training_001"
    (tmp_path / sid / f"{sid}_seg.nii.gz").rename(tmp_path / sid / "W39_1998.09.19_Segm.nii.gz")
    c = load_cohort(tmp_path)
    assert "SEG" in set(c.series["modality"])


# --------------------------------------------------------------------------- privacy + check


def test_no_identifying_fields_anywhere(rembrandt, tmp_path):
    c = load_cohort(rembrandt)
    report = format_check_report(check_dataset(rembrandt,
                                               store=VolumeStore(tmp_path, progress=False)))
    text = "\n".join([c.series.to_csv(), c.patients.to_csv(), repr(c.problems), report])
    for secret in (FAKE_NAME, "Leakmeister", FAKE_BIRTH, FAKE_ADDRESS):
        assert secret not in text


def test_check_report_good_dataset(brats, tmp_path):
    r = check_dataset(brats, store=VolumeStore(tmp_path, progress=False))
    assert r.usable and r.layout == "brats20"
    assert r.n_patients == 3 and r.n_studies == 3
    assert r.series_by_modality == {"T1": 3, "T1post": 3, "T2": 3, "FLAIR": 3, "SEG": 3}
    labels = {lab.name: lab for lab in r.labels}
    assert labels["grade"].values == {"HGG": 2, "LGG": 1}
    assert labels["survival_days"].missing == 1
    text = format_check_report(r)
    assert "Usable: yes" in text and "survival_days: 2 present, 1 missing" in text


def test_check_report_unusable_folder(tmp_path):
    r = check_dataset(tmp_path / "nothing-here")
    assert not r.usable and "does not exist" in r.error
    text = format_check_report(r)
    assert "Usable: NO" in text


def test_check_without_decoding_does_not_touch_pixels(rembrandt, tmp_path):
    r = check_dataset(rembrandt, decode=False)
    assert r.usable and not r.decoded and r.n_series_ok == 0
    assert "not checked" in format_check_report(r)


def test_volume_orientation_matches_between_dicom_and_nifti(tmp_path):
    """Both formats give (z, y, x) with z inferior->superior."""
    vol = tiny_volume(shape=(3, 4, 5))
    write_dicom_series(tmp_path / "P1" / "s" / "AX T1", vol)
    c = load_cohort(tmp_path, "rembrandt")
    v = VolumeStore(tmp_path / "cache", progress=False).load(c.series.iloc[0])
    np.testing.assert_array_equal(v.array, vol.astype(np.float32))
    assert v.spacing == (2.0, 1.0, 1.0)


# --------------------------------------------------------------------------- synthetic cohorts

try:
    from harness.synth import generate_cohort
    _SYNTH_ERROR = None
except Exception as exc:  # pragma: no cover - depends on a sibling package
    generate_cohort = None
    _SYNTH_ERROR = f"harness.synth cannot be imported: {exc}"

needs_synth = pytest.mark.skipif(generate_cohort is None, reason=_SYNTH_ERROR or "")


@pytest.fixture(scope="module")
def synth_root(tmp_path_factory):
    made: dict[str, Path] = {}

    def make(flavour: str) -> Path:
        if flavour not in made:
            out = tmp_path_factory.mktemp("synth") / flavour
            made[flavour] = generate_cohort(flavour, out, n_patients=2, seed=0, grid_mm=6.0,
                                            progress=False) or out
        return made[flavour]

    return make


@needs_synth
@pytest.mark.parametrize("flavour", ["rembrandt", "btp", "brats20"])
def test_synthetic_cohorts_load_and_decode(flavour, synth_root, tmp_path):
    root = synth_root(flavour)
    assert detect_layout(root) == flavour
    c = load_cohort(root)
    assert c.layout == flavour and len(c.patient_ids) == 2
    assert c.series["series_id"].is_unique
    assert not [p for p in c.problems if "unknown series" in p.reason], c.problems
    store = VolumeStore(tmp_path / "cache", progress=False)
    vols, problems = store.load_many(c.series)
    assert problems == [] and len(vols) == len(c.series)
    for v in vols.values():
        assert v.array.ndim == 3 and v.array.dtype == np.float32
        assert np.isfinite(v.array).all()
    again = VolumeStore(tmp_path / "cache", progress=False)
    again.load_many(c.series)
    assert again.n_decoded == 0 and again.n_cache_hits == len(c.series)
    expected = {"rembrandt": {"T1", "T1post", "T2", "FLAIR"},
                "btp": {"T1post", "dT1", "T1", "FLAIR", "ADC", "sRCBV", "nRCBV", "nCBF",
                        "T2", "MASK"},
                "brats20": {"T1", "T1post", "T2", "FLAIR", "SEG"}}[flavour]
    assert set(c.series["modality"]) == expected
    if flavour == "btp":
        assert (c.patients["n_studies"] == 2).all()
        assert c.patients["interval_days"].notna().all()
    else:
        assert "grade" in c.patients.columns
    text = "\n".join([c.series.to_csv(), c.patients.to_csv(), repr(c.problems),
                      format_check_report(check_dataset(root, store=store))])
    assert "SYNTH^" not in text
