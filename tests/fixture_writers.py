"""Tiny writers for DICOM / NIfTI test data, independent of harness.synth.

Volumes are a few 8x8 slices, so a whole fixture cohort is written in milliseconds.
Every DICOM file carries a fake PatientName / BirthDate / Address so tests can prove
that none of them leaks into frames, problems or reports.
"""

from __future__ import annotations

import gzip
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
from pydicom.dataset import FileDataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, MRImageStorage, generate_uid

FAKE_NAME = "SYNTH^Leakmeister"
FAKE_BIRTH = "19450101"
FAKE_ADDRESS = "1 Secret Lane, Nowhere"
UID_ROOT = "1.2.826.0.1.3680043.8.498."


def _uid(*parts: object) -> str:
    return generate_uid(prefix=UID_ROOT, entropy_srcs=[str(p) for p in parts])


def write_dicom_slice(
    path: Path,
    pixels: np.ndarray | None,
    *,
    patient_id: str = "HF0001",
    study_date: str = "19970305",
    study_description: str = "MRI BRAIN",
    series_description: str = "AX T1",
    series_number: int = 1,
    instance_number: int | None = 1,
    ipp: tuple[float, float, float] | None = (0.0, 0.0, 0.0),
    iop: tuple[float, ...] | None = (1, 0, 0, 0, 1, 0),
    pixel_spacing: tuple[float, float] = (1.0, 1.0),
    slice_thickness: float = 2.0,
    slope: float = 1.0,
    intercept: float = 0.0,
    rows_cols: tuple[int, int] | None = None,
) -> Path:
    """One MR slice. ``pixels=None`` writes a file without PixelData."""
    path.parent.mkdir(parents=True, exist_ok=True)
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = MRImageStorage
    sop = _uid(path.name, patient_id, series_description, instance_number, study_date)
    meta.MediaStorageSOPInstanceUID = sop
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = FileDataset(str(path), {}, file_meta=meta, preamble=b"\0" * 128)
    ds.SOPClassUID = MRImageStorage
    ds.SOPInstanceUID = sop
    ds.PatientID = patient_id
    ds.PatientName = FAKE_NAME
    ds.PatientBirthDate = FAKE_BIRTH
    ds.PatientAddress = FAKE_ADDRESS
    ds.StudyDate = study_date
    ds.StudyDescription = study_description
    ds.SeriesDescription = series_description
    ds.SeriesNumber = series_number
    ds.StudyInstanceUID = _uid("study", patient_id, study_date)
    ds.SeriesInstanceUID = _uid("series", patient_id, study_date, series_description)
    ds.Modality = "MR"
    if instance_number is not None:
        ds.InstanceNumber = instance_number
    if ipp is not None:
        ds.ImagePositionPatient = [float(v) for v in ipp]
    if iop is not None:
        ds.ImageOrientationPatient = [float(v) for v in iop]
    ds.PixelSpacing = [float(v) for v in pixel_spacing]
    ds.SliceThickness = slice_thickness
    ds.RescaleSlope = slope
    ds.RescaleIntercept = intercept
    if pixels is not None or rows_cols is not None:
        shape = pixels.shape if pixels is not None else rows_cols
        ds.Rows, ds.Columns = int(shape[0]), int(shape[1])
        ds.SamplesPerPixel = 1
        ds.PhotometricInterpretation = "MONOCHROME2"
        ds.BitsAllocated = 16
        ds.BitsStored = 16
        ds.HighBit = 15
        ds.PixelRepresentation = 0
    if pixels is not None:
        ds.PixelData = np.ascontiguousarray(pixels, dtype="<u2").tobytes()
    ds.save_as(path, enforce_file_format=True)
    return path


def write_dicom_series(
    folder: Path,
    volume: np.ndarray,
    *,
    dz: float = 2.0,
    z0: float = -10.0,
    shuffle_names: bool = True,
    with_ipp: bool = True,
    with_instance: bool = True,
    seed: int = 0,
    **kw,
) -> list[Path]:
    """Slices of ``volume`` (z, y, x; z = inferior -> superior) in one folder.

    InstanceNumber runs superior -> inferior and file names are shuffled, so only
    ImagePositionPatient gives the right order (as in the synthetic TCIA layouts).
    """
    nz = volume.shape[0]
    names = [f"1-{i + 1:02d}.dcm" for i in range(nz)]
    if shuffle_names:
        names = list(np.random.default_rng(seed).permutation(names))
    paths = []
    for k in range(nz):
        p = folder / names[k]
        write_dicom_slice(
            p, volume[k],
            instance_number=(nz - k) if with_instance else None,
            ipp=(-4.0, -4.0, z0 + k * dz) if with_ipp else None,
            slice_thickness=dz,
            **kw,
        )
        paths.append(p)
    return paths


def tiny_volume(seed: int = 0, shape: tuple[int, int, int] = (4, 8, 8)) -> np.ndarray:
    """Distinct, recognisable slices: slice k holds values 100*k + small noise."""
    rng = np.random.default_rng(seed)
    vol = rng.integers(0, 50, size=shape).astype(np.uint16)
    vol += (np.arange(shape[0], dtype=np.uint16) * 100)[:, None, None]
    return vol


REMBRANDT_SERIES = (("T1", 1), ("AX T1 POST GD", 2), ("AX T2", 3), ("AX FLAIR", 4))


def write_tcia_study(root: Path, patient_id: str, study_date: str, series: tuple,
                     *, seed: int = 0, study_description: str = "MRI BRAIN",
                     shape: tuple[int, int, int] = (4, 8, 8)) -> dict[str, Path]:
    """One study in TCIA's folder layout; returns {series description: folder}."""
    mm_dd_yyyy = f"{study_date[4:6]}-{study_date[6:8]}-{study_date[:4]}"
    study = root / patient_id / f"{mm_dd_yyyy}-{study_description}-{10000 + seed:05d}"
    out = {}
    for j, (desc, number) in enumerate(series):
        folder = study / f"{number}.000000-{desc}-{20000 + 37 * j + seed:05d}"
        write_dicom_series(folder, tiny_volume(seed * 10 + j, shape), patient_id=patient_id,
                           study_date=study_date, study_description=study_description,
                           series_description=desc, series_number=number, seed=seed + j)
        out[desc] = folder
    return out


def write_rembrandt(root: Path, n_patients: int = 3, *, grades=("II", "III", "IV"),
                    extra_csv_rows: tuple[tuple[str, str, str], ...] = ()) -> Path:
    """A tiny REMBRANDT tree with its clinical CSV (grade '' means missing)."""
    rows = []
    for i in range(n_patients):
        pid = f"HF{i + 1:04d}"
        write_tcia_study(root, pid, f"1997030{i + 1}", REMBRANDT_SERIES, seed=i)
        g = grades[i % len(grades)]
        rows.append((pid, "GBM" if g == "IV" else "ASTROCYTOMA", g))
    rows += list(extra_csv_rows)
    pd.DataFrame(rows, columns=["Sample", "Disease", "Grade"]).to_csv(
        root / "REMBRANDT_clinical.csv", index=False)
    return root


BTP_SERIES = (("T1post", 5), ("FLAIRreg", 7), ("MaskTumor", 12))


def write_btp(root: Path, n_patients: int = 2) -> Path:
    """A tiny Brain-Tumor-Progression tree: two studies per patient."""
    for i in range(n_patients):
        pid = f"PGBM-{i + 1:03d}"
        write_tcia_study(root, pid, f"1990010{i + 1}", BTP_SERIES, seed=2 * i,
                         study_description="MR RCBV SEQUENCE")
        write_tcia_study(root, pid, f"1990061{i + 1}", BTP_SERIES, seed=2 * i + 1,
                         study_description="MR RCBV SEQUENCE")
    return root


def write_nifti(path: Path, data: np.ndarray, affine: np.ndarray | None = None,
                *, gz: bool = True) -> Path:
    """A NIfTI-1 file (x, y, z data as stored on disk)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    img = nib.Nifti1Image(np.asarray(data), np.eye(4) if affine is None else affine)
    raw = img.to_bytes()
    path.write_bytes(gzip.compress(raw, mtime=0) if gz else raw)
    return path


BRATS_SUFFIXES = ("t1", "t1ce", "t2", "flair", "seg")


def write_brats(root: Path, n_subjects: int = 3, *, grades=("HGG", "HGG", "LGG"),
                survival: dict[str, tuple[str, str, str]] | None = None,
                shape: tuple[int, int, int] = (6, 6, 4)) -> Path:
    """A tiny BraTS 2020 tree; ``survival``: subject -> (Age, Survival_days, EOR)."""
    names = []
    for i in range(n_subjects):
        sid = f"BraTS20_Training_{i + 1:03d}"
        rng = np.random.default_rng(i)
        for suffix in BRATS_SUFFIXES:
            if suffix == "seg":
                data = rng.choice(np.array([0, 1, 2, 4], dtype=np.uint8), size=shape)
            else:
                data = rng.normal(100, 10, size=shape).astype(np.float32)
            write_nifti(root / sid / f"{sid}_{suffix}.nii.gz", data)
        names.append((grades[i % len(grades)], "", "", "", "", sid))
    pd.DataFrame(names, columns=["Grade", "BraTS_2017_subject_ID", "BraTS_2018_subject_ID",
                                 "TCGA_TCIA_subject_ID", "BraTS_2019_subject_ID",
                                 "BraTS_2020_subject_ID"]).to_csv(root / "name_mapping.csv",
                                                                  index=False)
    if survival is None:
        survival = {"BraTS20_Training_001": ("60.5", "289", "GTR"),
                    "BraTS20_Training_002": ("52.0", "ALIVE (361 days later)", "NA")}
    lines = ["Brats20ID,Age,Survival_days,Extent_of_Resection"]
    lines += [f"{sid},{a},{s},{e}" for sid, (a, s, e) in survival.items()]
    (root / "survival_info.csv").write_text("\n".join(lines) + "\n")
    return root
