"""Adapter for the BraTS 2020 training release (NIfTI volumes plus two CSVs).

The CSVs have quirks this module absorbs so that nobody downstream has to:
censored survival written as "ALIVE (361 days later)", LGG survival missing by design,
and "NA" written as text in Extent_of_Resection.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from pathlib import Path

import pandas as pd

from harness.data.cohort import SERIES_COLUMNS, Cohort, Problem, empty_series_frame
from harness.data.modality_map import ModalityMap, make_modality_map

#: Exact BraTS file suffixes; anything else falls back to the modality map.
SUFFIXES: dict[str, str] = {"t1": "T1", "t1ce": "T1post", "t2": "T2", "flair": "FLAIR",
                            "seg": "SEG"}

NAME_MAPPING = "name_mapping.csv"
SURVIVAL_INFO = "survival_info.csv"
PATIENT_COLUMNS = ["patient_id", "grade", "age", "survival_days", "survival_censored",
                   "extent_of_resection", "site"]
#: name_mapping.csv columns whose IDs name the contributing site, newest first
#: ("BraTS19_TCIA02_135_1" -> "TCIA02", "Brats18_CBICA_AAB_1" -> "CBICA", "Brats18_2013_2_1" -> "2013").
SITE_ID_COLUMNS = ("BraTS_2019_subject_ID", "BraTS_2018_subject_ID", "BraTS_2017_subject_ID")

_NIFTI = re.compile(r"\.nii(\.gz)?$", re.IGNORECASE)
_CENSORED = re.compile(r"^\s*ALIVE\s*\(\s*(\d+(?:\.\d+)?)\s*days?\s*later\s*\)\s*$",
                       re.IGNORECASE)
_MISSING = {"", "NA", "N/A", "NAN", "NONE", "UNKNOWN"}


def parse_survival(value: object) -> tuple[float | None, bool | None]:
    """'361' -> (361, False); 'ALIVE (361 days later)' -> (361, True); '' / 'NA' -> (None, None).

    Raises ValueError for anything else, so the caller can report the row.
    """
    text = str(value if value is not None else "").strip()
    if text.upper() in _MISSING:
        return None, None
    m = _CENSORED.match(text)
    if m:
        return float(m.group(1)), True
    return float(text), False


def _missing_to_none(value: object) -> str | None:
    text = str(value if value is not None else "").strip()
    return None if text.upper() in _MISSING else text


def _read_csv(path: Path, required: list[str], problems: list[Problem]) -> pd.DataFrame | None:
    if not path.is_file():
        problems.append(Problem(str(path), "file not found; its labels are unknown"))
        return None
    try:
        df = pd.read_csv(path, dtype=str, keep_default_na=False)
    except Exception as exc:
        problems.append(Problem(str(path), f"unreadable CSV ({exc}); its labels are unknown"))
        return None
    df.columns = [str(c).strip() for c in df.columns]
    missing = [c for c in required if c not in df.columns]
    if missing:
        problems.append(Problem(str(path), f"missing column(s) {missing} (found "
                                           f"{list(df.columns)}); its labels are unknown"))
        return None
    return df


def _subject_modality(subject: str, filename: str, mmap: ModalityMap) -> tuple[bool, str | None]:
    stem = _NIFTI.sub("", filename)
    prefix = subject + "_"
    if stem.startswith(prefix) and stem[len(prefix):].lower() in SUFFIXES:
        return True, SUFFIXES[stem[len(prefix):].lower()]
    return mmap.match(stem)  # e.g. the real release's misnamed "W39_1998.09.19_Segm.nii"


def load_brats20(root: Path, *, modality_map: ModalityMap | Mapping | None = None) -> Cohort:
    """Index subject folders of NIfTI files and join grade and survival by subject ID."""
    root = Path(root)
    mmap = make_modality_map(modality_map)
    problems: list[Problem] = []
    rows = []
    unused = []  # volumes found but not used: still read by `data check` and `run`
    try:
        entries = [e for e in os.scandir(root) if e.is_dir() and not e.name.startswith(".")]
    except OSError as exc:
        return Cohort("brats20", root, empty_series_frame(), pd.DataFrame(columns=PATIENT_COLUMNS),
                      [Problem(str(root), f"unreadable folder: {exc.strerror or exc}")])
    for entry in sorted(entries, key=lambda e: e.name):
        subject = entry.name
        folder = Path(entry.path)
        try:
            names = sorted(n for n in os.listdir(folder) if not n.startswith("."))
        except OSError as exc:
            problems.append(Problem(str(folder), f"unreadable folder: {exc.strerror or exc}"))
            continue
        if not names:
            problems.append(Problem(str(folder), "empty folder"))
            continue
        seen: dict[str, str] = {}
        for name in names:
            path = folder / name
            if not _NIFTI.search(name) or not path.is_file():
                problems.append(Problem(str(path), "not a NIfTI file (.nii/.nii.gz); skipped"))
                continue
            matched, modality = _subject_modality(subject, name, mmap)
            if not matched:
                problems.append(Problem(str(path), f"unknown series description '{name}'; "
                                                   "skipped (add it to the modality map)"))
                unused.append(_unused_row(subject, "", name, path))
                continue
            if modality is None:
                continue
            if modality in seen:
                problems.append(Problem(str(path), f"another {modality} volume for {subject} "
                                                   f"(kept {seen[modality]}); skipped"))
                unused.append(_unused_row(subject, modality, name, path))
                continue
            seen[modality] = name
            rows.append({
                "series_id": f"{subject}/{subject}/{modality}",
                "patient_id": subject,
                "study_id": subject,
                "study_date": "",
                "modality": modality,
                "series_description": _NIFTI.sub("", name)[len(subject) + 1:]
                if name.startswith(subject + "_") else _NIFTI.sub("", name),
                "format": "nifti",
                "files": (str(path),),
                "institution": "",
            })
        if not seen:
            problems.append(Problem(str(folder), "no NIfTI volumes found for this subject"))

    series = pd.DataFrame(rows, columns=list(SERIES_COLUMNS)) if rows else empty_series_frame()
    series = series.sort_values("series_id", kind="stable").reset_index(drop=True)
    subjects = sorted(series["patient_id"].unique().tolist())
    patients = _patients(root, subjects, problems)
    # the site each subject came from, where name_mapping.csv names it (NIfTI has no InstitutionName)
    series["institution"] = series["patient_id"].map(dict(zip(patients["patient_id"], patients["site"]))).fillna("")
    skipped = pd.DataFrame(unused, columns=list(SERIES_COLUMNS)) if unused \
        else empty_series_frame()
    return Cohort("brats20", root, series, patients, problems, skipped=skipped)


def _unused_row(subject: str, modality: str, name: str, path: Path) -> dict:
    return {"series_id": f"{subject}/{subject}/{modality}/unused:{name}",
            "patient_id": subject, "study_id": subject, "study_date": "",
            "modality": modality, "series_description": _NIFTI.sub("", name),
            "format": "nifti", "files": (str(path),), "institution": ""}


def site_from_ids(row: Mapping[str, object]) -> str:
    """The contributing site named by a name_mapping.csv row's older BraTS IDs, "" when none.

    Why: BraTS NIfTI files carry no InstitutionName, yet the release's earlier IDs name the
    source (CBICA, TMC, TCIA01-TCIA08, the 2013 challenge data), and each source has its own
    scanners: the site check and ``leave_one_site_out`` need it. Cases new in 2020 have no
    earlier ID and stay unknown.
    """
    for column in SITE_ID_COLUMNS:
        text = _missing_to_none(row.get(column))
        parts = text.split("_") if text else []
        if len(parts) >= 3 and parts[1]:
            return parts[1]
    return ""


def _patients(root: Path, subjects: list[str], problems: list[Problem]) -> pd.DataFrame:
    names_csv, surv_csv = root / NAME_MAPPING, root / SURVIVAL_INFO
    grades: dict[str, str | None] = {}
    sites: dict[str, str] = {}
    nm = _read_csv(names_csv, ["Grade", "BraTS_2020_subject_ID"], problems)
    if nm is not None:
        for n, row in enumerate(nm.to_dict("records"), start=2):
            sid = str(row["BraTS_2020_subject_ID"]).strip()
            if not sid:
                continue
            sites.setdefault(sid, site_from_ids(row))
            grade = _missing_to_none(row["Grade"])
            if grade is not None and grade.upper() not in ("HGG", "LGG"):
                problems.append(Problem(str(names_csv), f"line {n}: {sid}: unrecognised grade "
                                                        f"'{grade}'; treated as missing"))
                grade = None
            grades.setdefault(sid, grade.upper() if grade else None)

    survival: dict[str, dict] = {}
    sv = _read_csv(surv_csv, ["Brats20ID", "Age", "Survival_days"], problems)
    if sv is not None:
        for n, row in enumerate(sv.to_dict("records"), start=2):
            sid = str(row["Brats20ID"]).strip()
            if not sid:
                continue
            rec: dict = {}
            try:
                rec["survival_days"], rec["survival_censored"] = parse_survival(
                    row["Survival_days"])
            except ValueError:
                problems.append(Problem(str(surv_csv), f"line {n}: {sid}: unparseable "
                                                       f"Survival_days '{row['Survival_days']}'"))
                rec["survival_days"], rec["survival_censored"] = None, None
            age = _missing_to_none(row["Age"])
            try:
                rec["age"] = float(age) if age is not None else None
            except ValueError:
                problems.append(Problem(str(surv_csv), f"line {n}: {sid}: unparseable Age "
                                                       f"'{row['Age']}'"))
                rec["age"] = None
            rec["extent_of_resection"] = _missing_to_none(row.get("Extent_of_Resection"))
            survival.setdefault(sid, rec)

    have = set(subjects)
    for sid in sorted(set(grades) - have):
        problems.append(Problem(str(names_csv), f"row for subject {sid} but no images were "
                                                "found for it"))
    for sid in sorted(set(survival) - have):
        problems.append(Problem(str(surv_csv), f"row for subject {sid} but no images were "
                                               "found for it"))
    rows = []
    for sid in subjects:
        if nm is not None and grades.get(sid) is None:
            why = "has no grade" if sid in grades else "has no row; grade unknown"
            problems.append(Problem(str(names_csv), f"subject {sid} {why}"))
        s = survival.get(sid, {})
        rows.append({
            "patient_id": sid,
            "grade": grades.get(sid),
            "age": s.get("age"),
            "survival_days": s.get("survival_days"),
            "survival_censored": s.get("survival_censored"),
            "extent_of_resection": s.get("extent_of_resection"),
            "site": sites.get(sid, ""),
        })
    df = pd.DataFrame(rows, columns=PATIENT_COLUMNS)
    df["age"] = df["age"].astype("Float64")
    df["survival_days"] = df["survival_days"].astype("Float64")
    df["survival_censored"] = df["survival_censored"].astype("boolean")
    return df
