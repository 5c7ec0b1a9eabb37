"""Tests of the known-truth synthetic cohort generator (tiny cohorts on coarse grids)."""

from __future__ import annotations

import hashlib
import re
from collections import Counter
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pydicom
import pytest
from scipy.stats import spearmanr

from harness.errors import HarnessError
from harness.synth import DEFAULT_PATIENTS, FLAVOURS, draw_parameters, generate_cohort
from harness.synth.anatomy import load_anatomy
from harness.synth.generate import TRUTH_COLUMNS, brats20_tables, rembrandt_clinical
from harness.synth.growth import FisherKolmogorov, initial_density
from harness.synth.patients import growth_spec
from harness.synth.tumour import simulate

GRID = 6.0
STUDY_RE = re.compile(r"^\d{2}-\d{2}-\d{4}-.+-\d{5}$")
SERIES_RE = re.compile(r"^(\d+)\.000000-(.+)-\d{5}$")
SLICE_RE = re.compile(r"^1-\d{2,3}\.dcm$")


def tree_hash(root: Path) -> str:
    h = hashlib.sha256()
    for f in sorted(p for p in root.rglob("*") if p.is_file()):
        h.update(str(f.relative_to(root)).encode())
        h.update(f.read_bytes())
    return h.hexdigest()


@pytest.fixture(scope="module")
def rembrandt(tmp_path_factory) -> Path:
    return generate_cohort("rembrandt", tmp_path_factory.mktemp("r") / "c", n_patients=3, grid_mm=GRID,
                           progress=False)


@pytest.fixture(scope="module")
def btp(tmp_path_factory) -> Path:
    return generate_cohort("btp", tmp_path_factory.mktemp("b") / "c", n_patients=2, grid_mm=GRID, progress=False)


@pytest.fixture(scope="module")
def brats(tmp_path_factory) -> Path:
    return generate_cohort("brats20", tmp_path_factory.mktemp("s") / "c", n_patients=6, grid_mm=GRID,
                           progress=False)


def series_folders(patient_dir: Path) -> dict[str, list[Path]]:
    out: dict[str, list[Path]] = {}
    for study in sorted(patient_dir.iterdir()):
        assert STUDY_RE.match(study.name), study.name
        for series in study.iterdir():
            m = SERIES_RE.match(series.name)
            assert m, series.name
            out.setdefault(m.group(2), []).append(series)
    return out


def check_series(folder: Path, patient_id: str) -> list[pydicom.Dataset]:
    files = sorted(folder.iterdir())
    assert files and all(SLICE_RE.match(f.name) for f in files)
    dss = [pydicom.dcmread(f) for f in files]
    for ds in dss:
        assert ds.SOPClassUID == pydicom.uid.MRImageStorage
        assert ds.PatientID == patient_id
        assert str(ds.PatientName).startswith("SYNTH^")
        assert ds.PatientBirthDate and ds.PatientAddress
        assert [float(v) for v in ds.ImageOrientationPatient] == [1, 0, 0, 0, 1, 0]
        assert ds.BitsAllocated == 16 and ds.pixel_array.shape == (ds.Rows, ds.Columns)
        assert len(ds.StudyDate) == 8 and ds.SeriesDescription == folder.name.split("-", 1)[1].rsplit("-", 1)[0]
        assert float(ds.PixelSpacing[0]) == GRID and float(ds.SliceThickness) == GRID
        for kw in ("StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID", "StudyDescription",
                   "SeriesNumber", "InstanceNumber", "RescaleSlope", "RescaleIntercept"):
            assert kw in ds, kw
    assert len({ds.SOPInstanceUID for ds in dss}) == len(dss)
    assert len({ds.SeriesInstanceUID for ds in dss}) == 1
    # Slices are evenly spaced along the normal; InstanceNumber runs superior -> inferior.
    by_z = sorted(dss, key=lambda d: float(d.ImagePositionPatient[2]))
    z = np.array([float(d.ImagePositionPatient[2]) for d in by_z])
    assert np.allclose(np.diff(z), GRID)
    inst = [int(d.InstanceNumber) for d in by_z]
    assert inst == sorted(inst, reverse=True) and sorted(inst) == list(range(1, len(dss) + 1))
    # File names follow InstanceNumber, so name order is not spatial order.
    assert int(files[0].stem.split("-")[1]) == int(pydicom.dcmread(files[0]).InstanceNumber)
    return by_z


def test_public_api() -> None:
    assert FLAVOURS == ("rembrandt", "btp", "brats20")
    assert DEFAULT_PATIENTS == {"rembrandt": 40, "btp": 20, "brats20": 40}


def test_rembrandt_layout_and_tags(rembrandt: Path) -> None:
    clinical = pd.read_csv(rembrandt / "REMBRANDT_clinical.csv", dtype=str, keep_default_na=False)
    assert list(clinical.columns) == ["Sample", "Disease", "Grade"]
    assert list(clinical.Sample) == ["HF0001", "HF0002", "HF0003"]
    truth = pd.read_csv(rembrandt / "truth.csv")
    assert list(truth.columns[: len(TRUTH_COLUMNS)]) == list(TRUTH_COLUMNS)
    for pid in clinical.Sample:
        folders = series_folders(rembrandt / pid)
        assert set(folders) == {"T1", "AX T1 POST GD", "AX T2", "AX FLAIR"}
        shapes = set()
        for desc, (folder,) in folders.items():
            dss = check_series(folder, pid)
            shapes.add((len(dss), dss[0].Rows, dss[0].Columns))
            assert dss[0].StudyDescription and dss[0].SeriesDescription == desc
        assert len(shapes) == 1
        raw = next((rembrandt / pid).rglob("*.dcm")).read_bytes()
        assert b"SYNTH^" in raw  # the fake name is really in the files


def test_rembrandt_clinical_blanks_and_mix() -> None:
    params = draw_parameters("rembrandt", 40, seed=3)
    table = rembrandt_clinical(params, seed=3)
    grades = table.Grade.tolist()
    assert 1 <= grades.count("") <= 4
    assert set(grades) <= {"II", "III", "IV", ""}
    counts = Counter(p.label_grade for p in params)
    assert counts["IV"] > counts["II"] > 0 and counts["III"] > 0
    gbm = table[table.Grade == "IV"].Disease
    assert (gbm == "GBM").all()
    assert set(table[table.Grade.isin(["II", "III"])].Disease) <= {"ASTROCYTOMA", "OLIGODENDROGLIOMA"}
    assert rembrandt_clinical(draw_parameters("rembrandt", 10, seed=0), 0).Grade.eq("").sum() >= 1


def test_signal_none_keeps_proportions_breaks_link() -> None:
    growth = draw_parameters("rembrandt", 60, seed=1, signal="growth")
    none = draw_parameters("rembrandt", 60, seed=1, signal="none")
    assert all(p.label_grade == p.regime_grade for p in growth)
    assert Counter(p.label_grade for p in none) == Counter(p.label_grade for p in growth)
    assert any(p.label_grade != p.regime_grade for p in none)
    # Images are driven by the same parameters in both modes.
    assert [p.rho for p in none] == [p.rho for p in growth]


def test_determinism(tmp_path: Path) -> None:
    a = generate_cohort("rembrandt", tmp_path / "a", n_patients=2, seed=5, grid_mm=GRID, progress=False, jobs=1)
    b = generate_cohort("rembrandt", tmp_path / "b", n_patients=2, seed=5, grid_mm=GRID, progress=False, jobs=2)
    c = generate_cohort("rembrandt", tmp_path / "c", n_patients=2, seed=6, grid_mm=GRID, progress=False, jobs=1)
    assert tree_hash(a) == tree_hash(b)
    assert tree_hash(a) != tree_hash(c)
    n1 = generate_cohort("brats20", tmp_path / "n1", n_patients=2, seed=5, grid_mm=GRID, progress=False, jobs=1)
    n2 = generate_cohort("brats20", tmp_path / "n2", n_patients=2, seed=5, grid_mm=GRID, progress=False, jobs=1)
    assert tree_hash(n1) == tree_hash(n2)


def test_refuses_non_empty_dir(tmp_path: Path) -> None:
    (tmp_path / "x.txt").write_text("x")
    with pytest.raises(HarnessError):
        generate_cohort("btp", tmp_path, n_patients=1, grid_mm=GRID, progress=False)
    with pytest.raises(HarnessError):
        generate_cohort("nope", tmp_path / "new", n_patients=1, grid_mm=GRID, progress=False)


def test_btp_layout(btp: Path) -> None:
    truth = pd.read_csv(btp / "truth.csv")
    assert list(truth.patient_id) == ["PGBM-001", "PGBM-002"]
    expected = {"T1post", "dT1", "T1prereg", "FLAIRreg", "ADCreg", "sRCBVreg", "nRCBVreg", "nCBFreg",
                "T2reg", "MaskTumor"}
    for row in truth.itertuples():
        studies = sorted((btp / row.patient_id).iterdir())
        assert len(studies) == 2
        folders = series_folders(btp / row.patient_id)
        assert set(folders) == expected and all(len(v) == 2 for v in folders.values())
        dates = []
        for study in studies:
            dss = check_series(next(study.glob("*-MaskTumor-*")), row.patient_id)
            assert set(np.unique(np.stack([d.pixel_array for d in dss])).tolist()) <= {0, 1}
            dt1 = check_series(next(study.glob("*-dT1-*")), row.patient_id)
            assert dt1[0].PixelRepresentation == 1
            dates.append(pd.Timestamp(dss[0].StudyDate))
        d1, d2 = sorted(dates)
        assert pd.Timestamp("1989-01-01") <= d1 < d2 <= pd.Timestamp("1997-12-31")
        assert abs((d2 - d1).days / 30.4375 - row.interval_months) < 1e-3
        assert row.study_dates == f"{d1.date()};{d2.date()}"


def test_brats20_layout_and_tables(brats: Path) -> None:
    mapping = pd.read_csv(brats / "name_mapping.csv")
    assert list(mapping.columns) == ["Grade", "BraTS_2017_subject_ID", "BraTS_2018_subject_ID",
                                     "TCGA_TCIA_subject_ID", "BraTS_2019_subject_ID", "BraTS_2020_subject_ID"]
    surv = pd.read_csv(brats / "survival_info.csv")
    assert list(surv.columns) == ["Brats20ID", "Age", "Survival_days", "Extent_of_Resection"]
    assert set(mapping.Grade) <= {"HGG", "LGG"}
    lgg = set(mapping.loc[mapping.Grade == "LGG", "BraTS_2020_subject_ID"])
    assert lgg and not lgg & set(surv.Brats20ID)
    assert set(surv.Brats20ID) == set(mapping.loc[mapping.Grade == "HGG", "BraTS_2020_subject_ID"])
    for sid in mapping.BraTS_2020_subject_ID:
        files = sorted(p.name for p in (brats / sid).iterdir())
        assert files == sorted(f"{sid}_{s}.nii.gz" for s in ("t1", "t1ce", "t2", "flair", "seg"))
        seg = np.asarray(nib.load(brats / sid / f"{sid}_seg.nii.gz").dataobj)
        assert set(np.unique(seg).tolist()) <= {0, 1, 2, 4} and (seg > 0).any()
        t1 = nib.load(brats / sid / f"{sid}_t1.nii.gz")
        assert t1.shape == seg.shape and np.allclose(np.diag(t1.affine)[:3], GRID)


def test_brats20_censoring_and_survival() -> None:
    params = draw_parameters("brats20", 40, seed=0)
    mapping, surv = brats20_tables(params, seed=0)
    assert 0.55 <= (mapping.Grade == "HGG").mean() <= 0.75
    assert surv.Survival_days.str.startswith("ALIVE (").any()
    assert surv.Survival_days.str.fullmatch(r"\d+|ALIVE \(\d+ days later\)").all()
    assert set(surv.Extent_of_Resection) <= {"GTR", "STR", "NA"}
    # Under "growth", survival shortens with proliferation.
    from harness.synth.cohort import survival_days

    hgg = [p for p in draw_parameters("brats20", 200, seed=1) if p.label_grade != "II"]
    assert spearmanr([p.rho for p in hgg], [survival_days(p) for p in hgg])[0] < -0.4
    hgg_none = [p for p in draw_parameters("brats20", 200, seed=1, signal="none") if p.label_grade != "II"]
    assert abs(spearmanr([p.rho for p in hgg_none], [survival_days(p) for p in hgg_none])[0]) < 0.25


def _spread(d_left: float, d_right: float, rho: float = 1.0) -> tuple[int, int, float]:
    """Grow from the centre of a two-tissue slab; extents (voxels) to the left and right."""
    n = 41
    d = np.empty((n, 9, 9), dtype=np.float32)
    d[: n // 2] = d_left
    d[n // 2:] = d_right
    solver = FisherKolmogorov(d, rho, 1.0)
    c = initial_density(d.shape, (n // 2, 4, 4), 1.0, radius_mm=1.5, peak=1.0)
    t = 0.0
    while t < 6.0:
        solver.step(c, solver.dt)
        t += solver.dt
    line = c[:, 4, 4] >= 0.16
    idx = np.flatnonzero(line)
    return n // 2 - int(idx.min()), int(idx.max()) - n // 2, float(c.sum())


def test_white_matter_spreads_faster_than_grey() -> None:
    left, right, _ = _spread(d_left=5.0, d_right=1.0)  # white | grey
    assert left > right + 2


def test_higher_rho_grows_larger() -> None:
    *_, slow = _spread(2.0, 2.0, rho=0.5)
    *_, fast = _spread(2.0, 2.0, rho=1.5)
    assert fast > 1.5 * slow


def test_zero_flux_outside_brain() -> None:
    d = np.ones((15, 15, 15), dtype=np.float32)
    d[:, :, :3] = 0.0  # "outside the brain"
    solver = FisherKolmogorov(d, 1.0, 1.0)
    c = initial_density(d.shape, (7, 7, 6), 1.0, radius_mm=1.5, peak=1.0) * solver.inside
    for _ in range(200):
        solver.step(c, solver.dt)
    assert c[:, :, :3].max() == 0.0


def test_interval_follows_growth_only_under_growth_signal() -> None:
    anatomy = load_anatomy(GRID)
    params = draw_parameters("btp", 14, seed=2)
    intervals = [simulate(anatomy, growth_spec(p), progression=True).interval_months for p in params]
    rhos = [p.rho for p in params]
    assert all(0.5 < i < 40 for i in intervals)
    assert spearmanr(rhos, intervals)[0] < -0.5
    none = draw_parameters("btp", 300, seed=2, signal="none")
    assert abs(spearmanr([p.rho for p in none], [p.none_interval_months for p in none])[0]) < 0.2
    assert 2.0 < float(np.median([p.none_interval_months for p in none])) < 12.0


def test_tumour_grade_regimes_show_in_simulation() -> None:
    anatomy = load_anatomy(GRID)
    params = draw_parameters("rembrandt", 6, seed=0)
    for p in params:
        hist = simulate(anatomy, growth_spec(p))
        scan = hist.scans[0]
        assert scan.visible_ml > 5.0
        if p.regime_grade != "IV":
            assert not scan.necrosis.any()  # only grade IV necroses
    iv = [simulate(anatomy, growth_spec(p)).scans[0] for p in params if p.regime_grade == "IV"]
    lo = [simulate(anatomy, growth_spec(p)).scans[0] for p in params if p.regime_grade == "II"]
    assert iv and lo
    # Steep high-grade fronts: a dense core fills more of the visible tumour.
    assert min(s.enhancing_ml / s.visible_ml for s in iv) > max(s.enhancing_ml / s.visible_ml for s in lo)
