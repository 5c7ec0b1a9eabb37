"""Write a volume as a TCIA-style DICOM series: one MR Image Storage file per axial slice.

Files are deterministic (UIDs hashed from a fixed entropy string under pydicom's UID root,
fixed times, fixed implementation UID), carry a fake patient identity so tests can check
it never leaks, and are numbered superior to inferior so file names do not give the
spatial order (readers must sort by ImagePositionPatient).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from pydicom.dataset import FileDataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, MRImageStorage, generate_uid

#: pydicom's registered root; our entropy strings make every UID deterministic.
UID_PREFIX = "1.2.826.0.1.3680043.8.498."
IMPLEMENTATION_UID = generate_uid(prefix=UID_PREFIX, entropy_srcs=["harness.synth implementation"])
_SURNAMES = (
    "ABERNATHY", "BALDWIN", "CARVALHO", "DUBOIS", "EKSTROM", "FAIRWEATHER", "GALLAGHER",
    "HOLLOWAY", "IVANOV", "JANSSEN", "KOWALSKI", "LINDQVIST", "MORIARTY", "NAKAMURA",
    "OYELARAN", "PETERSEN", "QUINTERO", "ROSSETTI", "SANTOS", "THORNBURY", "UMBERTO",
    "VANDERMEER", "WHITTAKER", "YAMAMOTO", "ZIELINSKI",
)


def uid(*parts: object) -> str:
    """A deterministic DICOM UID from the given parts."""
    return generate_uid(prefix=UID_PREFIX, entropy_srcs=[str(p) for p in parts])


@dataclass(frozen=True)
class FakeIdentity:
    """Identifying fields that must never leave the DICOM files."""

    name: str
    birth_date: str
    address: str


def fake_identity(key: str) -> FakeIdentity:
    """A fake but plausible identity, fixed by ``key``."""
    h = hashlib.sha256(key.encode()).digest()
    surname = _SURNAMES[h[0] % len(_SURNAMES)]
    year = 1920 + h[1] % 60
    month = 1 + h[2] % 12
    day = 1 + h[3] % 28
    return FakeIdentity(
        name=f"SYNTH^{surname}",
        birth_date=f"{year:04d}{month:02d}{day:02d}",
        address=f"{10 + h[4]} {surname.title()} Lane, Faketown",
    )


@dataclass(frozen=True)
class StudyInfo:
    """Study-level tags shared by a study's series."""

    patient_id: str
    identity: FakeIdentity
    study_uid: str
    frame_uid: str
    date: str  # YYYYMMDD
    description: str
    study_id: str
    institution: str


@dataclass(frozen=True)
class SeriesInfo:
    """Series-level tags."""

    series_uid: str
    number: int
    description: str
    slope: float = 1.0
    intercept: float = 0.0


def write_series(folder: Path, volume: np.ndarray, affine: np.ndarray, study: StudyInfo,
                 series: SeriesInfo) -> list[Path]:
    """Write ``volume`` (a RAS voxel grid, k = axial slice) as one file per slice in ``folder``.

    ``volume`` must be uint16 or int16 and axis-aligned with ``affine`` (RAS, isotropic
    or not); slices are written in LPS with ImageOrientationPatient (1,0,0,0,1,0).
    """
    if volume.dtype not in (np.uint16, np.int16):
        raise TypeError(f"volume must be uint16 or int16, got {volume.dtype}")
    folder.mkdir(parents=True, exist_ok=True)
    nx, ny, nz = volume.shape
    sx, sy, sz = (float(abs(affine[i, i])) for i in range(3))
    ox, oy, oz = (float(affine[i, 3]) for i in range(3))
    ipp_x = -(ox + (nx - 1) * sx)
    ipp_y = -(oy + (ny - 1) * sy)
    signed = volume.dtype == np.int16
    flipped = volume[::-1, ::-1, :]
    paths = []
    for k in range(nz):
        instance = nz - k  # superior slice first
        sop_uid = uid(series.series_uid, "slice", k)
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID = MRImageStorage
        meta.MediaStorageSOPInstanceUID = sop_uid  # type: ignore[assignment]  # pydicom coerces str
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        meta.ImplementationClassUID = IMPLEMENTATION_UID
        meta.ImplementationVersionName = "HARNESS_SYNTH"
        path = folder / f"1-{instance:02d}.dcm"
        ds = FileDataset(str(path), {}, file_meta=meta, preamble=b"\0" * 128)
        ds.SpecificCharacterSet = "ISO_IR 100"
        ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
        ds.SOPClassUID = MRImageStorage
        ds.SOPInstanceUID = sop_uid
        ds.StudyDate = study.date
        ds.SeriesDate = study.date
        ds.ContentDate = study.date
        ds.StudyTime = "120000"
        ds.SeriesTime = f"{120000 + series.number * 100:06d}"
        ds.AccessionNumber = ""
        ds.Modality = "MR"
        ds.Manufacturer = "SYNTH"
        ds.InstitutionName = study.institution
        ds.StudyDescription = study.description
        ds.SeriesDescription = series.description
        ds.PatientName = study.identity.name
        ds.PatientID = study.patient_id
        ds.PatientBirthDate = study.identity.birth_date
        ds.PatientAddress = study.identity.address
        ds.PatientSex = "O"
        ds.SliceThickness = f"{sz:g}"
        ds.SpacingBetweenSlices = f"{sz:g}"
        ds.StudyInstanceUID = study.study_uid
        ds.SeriesInstanceUID = series.series_uid
        ds.StudyID = study.study_id
        ds.SeriesNumber = series.number
        ds.InstanceNumber = instance
        z = oz + k * sz
        ds.ImagePositionPatient = [f"{ipp_x:g}", f"{ipp_y:g}", f"{z:g}"]
        ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
        ds.FrameOfReferenceUID = study.frame_uid
        ds.SliceLocation = f"{z:g}"
        ds.SamplesPerPixel = 1
        ds.PhotometricInterpretation = "MONOCHROME2"
        ds.Rows = ny
        ds.Columns = nx
        ds.PixelSpacing = [f"{sy:g}", f"{sx:g}"]
        ds.BitsAllocated = 16
        ds.BitsStored = 16
        ds.HighBit = 15
        ds.PixelRepresentation = 1 if signed else 0
        ds.RescaleIntercept = f"{series.intercept:g}"
        ds.RescaleSlope = f"{series.slope:g}"
        ds.RescaleType = "US"
        pixels = np.ascontiguousarray(flipped[:, :, k].T)
        ds.PixelData = pixels.astype("<i2" if signed else "<u2", copy=False).tobytes()
        ds.save_as(path, enforce_file_format=True)
        paths.append(path)
    return paths
