"""Adapters for TCIA DICOM downloads: REMBRANDT (one time point) and Brain-Tumor-Progression.

Indexing reads ONE header per series (pixels are decoded later, once, by the cache),
so indexing a large download takes seconds. Only identifiers and dates are read from
headers (PatientID, StudyDate, descriptions, SeriesNumber): names, birth dates and
addresses are never parsed, so they cannot leak into frames, problems or logs.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date
from pathlib import Path

import pandas as pd

from harness.data.cohort import SERIES_COLUMNS, Cohort, Problem, empty_series_frame
from harness.data.modality_map import ModalityMap, make_modality_map

#: The only header fields indexing reads.
_HEADER_TAGS = ["PatientID", "StudyDate", "StudyDescription", "SeriesDescription",
                "SeriesNumber", "StudyInstanceUID", "SeriesInstanceUID", "InstitutionName"]

_FOLDER_DATE = re.compile(r"^(\d{2})-(\d{2})-(\d{4})")
_SERIES_FOLDER = re.compile(r"^\d+(?:\.\d+)?-(.+?)(?:-\d{3,})?$")

DEFAULT_CLINICAL_CSV = "REMBRANDT_clinical.csv"


@dataclass(frozen=True)
class ClinicalColumns:
    """Column names of the REMBRANDT clinical CSV (configurable for other exports)."""

    patient: str = "Sample"
    grade: str = "Grade"
    disease: str = "Disease"


@dataclass
class _SeriesRecord:
    patient_id: str
    patient_folder: Path
    study_id: str
    study_date: str
    modality: str
    series_description: str
    series_number: float
    folder: Path
    files: tuple[str, ...]
    institution: str = ""


def _read_header(path: Path):
    import pydicom

    return pydicom.dcmread(path, stop_before_pixels=True, specific_tags=_HEADER_TAGS)


def _first_header(folder: Path, files: list[str]):
    """Header of the first file in ``folder`` that parses as DICOM, or None."""
    from pydicom.errors import InvalidDicomError

    for name in files:
        try:
            return _read_header(folder / name)
        except (InvalidDicomError, OSError, ValueError, EOFError, AttributeError,
                KeyError, TypeError):
            continue
    return None


def _iso_from_dicom_date(value: object) -> str:
    text = str(value or "").strip()
    if len(text) >= 8 and text[:8].isdigit():
        try:
            return date(int(text[:4]), int(text[4:6]), int(text[6:8])).isoformat()
        except ValueError:
            return ""
    return ""


def _iso_from_folders(parts: tuple[str, ...]) -> str:
    for part in parts:
        m = _FOLDER_DATE.match(part)
        if m:
            try:
                return date(int(m.group(3)), int(m.group(1)), int(m.group(2))).isoformat()
            except ValueError:
                continue
    return ""


def _description_from_folder(name: str) -> str:
    m = _SERIES_FOLDER.match(name)
    return m.group(1) if m else name


def _is_hidden(name: str) -> bool:
    return name.startswith(".")


def index_dicom_tree(root: Path, modality_map: ModalityMap, skipped: list[_SeriesRecord] | None = None
                     ) -> tuple[list[_SeriesRecord], dict[str, Path], list[Problem]]:
    """Find every series folder under ``root`` (any depth) and read one header each.

    Returns the series (one per patient/study/modality), the folder of each patient,
    and problems: empty or unreadable folders, folders without DICOM, unknown series
    descriptions, duplicate modalities within a study. Series folders that are found but
    not used are appended to ``skipped`` (when given), so their files can still be checked.
    """
    problems: list[Problem] = []
    records: list[_SeriesRecord] = []
    unused: list[_SeriesRecord] = skipped if skipped is not None else []
    patient_folders: dict[str, Path] = {}
    folders_with_series: set[Path] = set()
    top_folders: list[Path] = []
    empty: set[Path] = set()

    def onerror(exc: OSError) -> None:
        problems.append(Problem(str(exc.filename or root),
                                f"unreadable folder: {exc.strerror or exc}"))

    for dirpath, dirnames, filenames in os.walk(root, onerror=onerror):
        dirnames[:] = sorted(d for d in dirnames if not _is_hidden(d))
        folder = Path(dirpath)
        prefix = str(folder) + os.sep  # string joins: one Path per file was most of indexing
        rel = folder.relative_to(root).parts
        if not rel:
            top_folders = [folder / d for d in dirnames]
            continue  # files at the root are CSVs, licences, truth tables
        files = sorted(f for f in filenames if not _is_hidden(f))
        if not files:
            if not dirnames:
                empty.add(folder)
                problems.append(Problem(str(folder), "empty folder"))
            continue
        ds = _first_header(folder, files)
        top = root / rel[0]
        if ds is None:
            problems.append(Problem(str(folder),
                                    f"no readable DICOM file among {len(files)} file(s)"))
            unused.append(_SeriesRecord(rel[0], top, f"{rel[0]}_{folder.name}", "", "",
                                        folder.name, float("inf"), folder,
                                        tuple(prefix + f for f in files)))
            continue
        patient_id = str(getattr(ds, "PatientID", "") or "").strip() or rel[0]
        study_date = _iso_from_dicom_date(getattr(ds, "StudyDate", "")) \
            or _iso_from_folders(rel[1:-1] or rel)
        study_folder = rel[-2] if len(rel) >= 2 else "study"
        if study_date:
            y, m, d = study_date.split("-")
            study_id = f"{patient_id}_{m}-{d}-{y}"
        else:
            study_id = f"{patient_id}_{study_folder}"
        desc = str(getattr(ds, "SeriesDescription", "") or "").strip() \
            or _description_from_folder(folder.name)
        try:
            series_number = float(ds.SeriesNumber)
        except (AttributeError, TypeError, ValueError):
            series_number = float("inf")
        folders_with_series.add(top)
        patient_folders.setdefault(patient_id, top)
        matched, modality = modality_map.match(desc)
        if not matched:
            problems.append(Problem(str(folder), f"unknown series description '{desc}'; "
                                                 "series skipped (add it to the modality map)"))
            unused.append(_SeriesRecord(patient_id, top, study_id, study_date, "", desc,
                                        series_number, folder, tuple(prefix + f for f in files)))
            continue
        if modality is None:
            continue  # ignored on purpose by the user's map
        records.append(_SeriesRecord(patient_id, top, study_id, study_date, modality, desc,
                                     series_number, folder,
                                     tuple(prefix + f for f in files),
                                     str(getattr(ds, "InstitutionName", "") or "").strip()))

    for top in top_folders:
        if top not in folders_with_series and top not in empty:
            problems.append(Problem(str(top), "no DICOM image series found for this patient"))

    # One series per (patient, study, modality): keep the lowest series number.
    records.sort(key=lambda r: (r.patient_id, r.study_id, r.modality, r.series_number,
                                str(r.folder)))
    kept: list[_SeriesRecord] = []
    for r in records:
        if kept and (kept[-1].patient_id, kept[-1].study_id, kept[-1].modality) == \
                (r.patient_id, r.study_id, r.modality):
            problems.append(Problem(str(r.folder), f"another {r.modality} series in study "
                                                   f"{r.study_id} (kept {kept[-1].folder.name}); "
                                                   "series skipped"))
            unused.append(r)
            continue
        kept.append(r)
    return kept, patient_folders, problems


def series_frame(records: list[_SeriesRecord], fmt: str = "dicom", *, unused: bool = False
                 ) -> pd.DataFrame:
    """One row per series; ``unused`` series get an id naming their folder (still unique)."""
    if not records:
        return empty_series_frame()
    rows = [{
        "series_id": f"{r.patient_id}/{r.study_id}/{r.modality}"
        + (f"/unused:{r.folder.name}" if unused else ""),
        "patient_id": r.patient_id,
        "study_id": r.study_id,
        "study_date": r.study_date,
        "modality": r.modality,
        "series_description": r.series_description,
        "format": fmt,
        "files": r.files,
        "institution": r.institution,
    } for r in records]
    df = pd.DataFrame(rows, columns=list(SERIES_COLUMNS))
    return df.sort_values("series_id", kind="stable").reset_index(drop=True)


# --------------------------------------------------------------------------- REMBRANDT

_GRADES = {"II": "II", "2": "II", "III": "III", "3": "III", "IV": "IV", "4": "IV",
           "I": "I", "1": "I"}


def normalise_grade(value: str) -> str | None:
    """'II', '2', 'Grade II', '2.0' -> 'II'; anything else -> None."""
    text = re.sub(r"^GRADE\s*", "", str(value).strip().upper())
    if text.endswith(".0"):
        text = text[:-2]
    return _GRADES.get(text)


def _resolve_csv(root: Path, clinical_csv: str | os.PathLike | None) -> Path:
    if clinical_csv is None:
        return root / DEFAULT_CLINICAL_CSV
    p = Path(clinical_csv)
    return p if p.is_absolute() or p.exists() else root / p


def read_rembrandt_clinical(
    csv_path: Path, columns: ClinicalColumns
) -> tuple[dict[str, tuple[str | None, str | None]] | None, list[Problem]]:
    """patient_id -> (grade or None, disease or None); None when the CSV is unusable."""
    problems: list[Problem] = []
    if not csv_path.is_file():
        return None, [Problem(str(csv_path), "clinical CSV not found; all grades unknown")]
    try:
        df = pd.read_csv(csv_path, dtype=str, keep_default_na=False)
    except Exception as exc:
        return None, [Problem(str(csv_path), f"unreadable clinical CSV ({exc}); "
                                             "all grades unknown")]
    df.columns = [str(c).strip() for c in df.columns]
    missing = [c for c in (columns.patient, columns.grade) if c not in df.columns]
    if missing:
        return None, [Problem(str(csv_path), f"missing column(s) {missing} (found "
                                             f"{list(df.columns)}); all grades unknown")]
    out: dict[str, tuple[str | None, str | None]] = {}
    for n, row in enumerate(df.to_dict("records"), start=2):
        pid = str(row[columns.patient]).strip()
        if not pid:
            continue
        raw = str(row[columns.grade]).strip()
        grade = normalise_grade(raw) if raw else None
        if raw and grade is None:
            problems.append(Problem(str(csv_path), f"line {n}: patient {pid}: unrecognised "
                                                   f"grade '{raw}'; treated as missing"))
        disease = str(row.get(columns.disease, "") or "").strip() or None
        if pid in out:
            if out[pid] != (grade, disease):
                problems.append(Problem(str(csv_path), f"line {n}: patient {pid} listed "
                                                       "again with different values; first kept"))
            continue
        out[pid] = (grade, disease)
    return out, problems


def load_rembrandt(root: Path, *, modality_map: ModalityMap | Mapping | None = None,
                   clinical_csv: str | os.PathLike | None = None,
                   clinical_columns: ClinicalColumns | Mapping[str, str] | None = None
                   ) -> Cohort:
    """REMBRANDT: DICOM series plus grades from the clinical CSV, joined by patient."""
    root = Path(root)
    cols = clinical_columns if isinstance(clinical_columns, ClinicalColumns) \
        else ClinicalColumns(**dict(clinical_columns or {}))
    skipped: list[_SeriesRecord] = []
    records, folders, problems = index_dicom_tree(root, make_modality_map(modality_map), skipped)
    csv_path = _resolve_csv(root, clinical_csv)
    clinical, csv_problems = read_rembrandt_clinical(csv_path, cols)
    problems += csv_problems
    with_images = sorted({r.patient_id for r in records})
    rows = []
    for pid in with_images:
        grade, disease = (clinical or {}).get(pid, (None, None))
        if clinical is not None and pid not in clinical:
            problems.append(Problem(str(csv_path), f"no row for patient {pid} (who has "
                                                   "images); grade unknown"))
        elif clinical is not None and grade is None:
            problems.append(Problem(str(csv_path), f"patient {pid} has no grade"))
        rows.append({"patient_id": pid, "grade": grade, "disease": disease})
    for pid in sorted(set(clinical or {}) - set(with_images)):
        problems.append(Problem(str(csv_path), f"row for patient {pid} but no images were "
                                               f"found for this patient under {root}"))
    patients = pd.DataFrame(rows, columns=["patient_id", "grade", "disease"])
    return Cohort("rembrandt", root, series_frame(records), patients, problems,
                  skipped=series_frame(skipped, unused=True))


# --------------------------------------------------------------------------- BTP


def load_btp(root: Path, *, modality_map: ModalityMap | Mapping | None = None) -> Cohort:
    """Brain-Tumor-Progression: two studies per patient; their dates are the labels."""
    root = Path(root)
    skipped: list[_SeriesRecord] = []
    records, folders, problems = index_dicom_tree(root, make_modality_map(modality_map), skipped)
    studies: dict[str, dict[str, str]] = {}
    for r in records:
        studies.setdefault(r.patient_id, {})[r.study_id] = r.study_date
    rows = []
    for pid in sorted(studies):
        dates = sorted(d for d in studies[pid].values() if d)
        n = len(studies[pid])
        if n != 2:
            problems.append(Problem(str(folders.get(pid, root / pid)),
                                    f"patient {pid}: expected 2 studies (baseline and "
                                    f"progression), found {n}; kept"))
        if len(dates) < n:
            problems.append(Problem(str(folders.get(pid, root / pid)),
                                    f"patient {pid}: {n - len(dates)} study(ies) without a date"))
        two = len(dates) == 2 and n == 2
        interval = (date.fromisoformat(dates[1]) - date.fromisoformat(dates[0])).days \
            if two else None
        rows.append({
            "patient_id": pid,
            "n_studies": n,
            "study_dates": tuple(dates),
            "baseline_date": dates[0] if two else None,
            "followup_date": dates[1] if two else None,
            "interval_days": interval,
        })
    patients = pd.DataFrame(rows, columns=["patient_id", "n_studies", "study_dates",
                                           "baseline_date", "followup_date",
                                           "interval_days"])
    patients["interval_days"] = patients["interval_days"].astype("Int64")
    return Cohort("btp", root, series_frame(records), patients, problems,
                  skipped=series_frame(skipped, unused=True))
