"""Recognise a dataset folder's layout and load it with the right adapter.

Detection looks only at names (folders, CSVs, file suffixes) and at most a few folder
names below the patients, so it is instant even on a large download.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from pathlib import Path

from harness.data.brats import NAME_MAPPING, SURVIVAL_INFO, load_brats20
from harness.data.cohort import Cohort
from harness.data.modality_map import ModalityMap
from harness.data.tcia import DEFAULT_CLINICAL_CSV, ClinicalColumns, load_btp, load_rembrandt
from harness.errors import HarnessError, NoUsableDataError

LAYOUTS: tuple[str, ...] = ("rembrandt", "btp", "brats20")

_BRATS_SUBJECT = re.compile(r"^BraTS\d*_(Training|Validation)_\d+$", re.IGNORECASE)
_BTP_PATIENT = re.compile(r"^PGBM-\d+$", re.IGNORECASE)
#: Series folder words that only BTP has (perfusion maps, registered series, tumour mask).
_BTP_WORDS = ("masktumor", "dt1", "rcbv", "ncbf", "flairreg", "t2reg", "adcreg", "t1prereg")
_NIFTI = re.compile(r"\.nii(\.gz)?$", re.IGNORECASE)


def _subdirs(folder: Path) -> list[Path]:
    try:
        return sorted(Path(e.path) for e in os.scandir(folder)
                      if e.is_dir() and not e.name.startswith("."))
    except OSError:
        return []


def _looks_like_btp(patients: list[Path], limit: int = 3) -> bool:
    """True when a few patients' series folder names carry BTP-only words."""
    for patient in patients[:limit]:
        for study in _subdirs(patient):
            names = [s.name.lower() for s in _subdirs(study)] + [study.name.lower()]
            if any(w in n for n in names for w in _BTP_WORDS):
                return True
    return False


def detect_layout(root: Path | str, *, clinical_csv: str | os.PathLike | None = None) -> str:
    """'rembrandt', 'btp' or 'brats20'; raises NoUsableDataError naming the folder."""
    root = Path(root)
    if not root.exists():
        raise NoUsableDataError(f"dataset folder {root} does not exist")
    if not root.is_dir():
        raise NoUsableDataError(f"{root} is not a folder")
    try:
        names = {e.name for e in os.scandir(root)}
    except OSError as exc:
        raise NoUsableDataError(f"cannot read dataset folder {root}: {exc.strerror or exc}")
    subdirs = _subdirs(root)
    if NAME_MAPPING in names or SURVIVAL_INFO in names or any(
            _BRATS_SUBJECT.match(d.name) for d in subdirs):
        return "brats20"
    csv_name = Path(clinical_csv).name if clinical_csv else DEFAULT_CLINICAL_CSV
    if csv_name in names:
        return "rembrandt"
    if any(_BTP_PATIENT.match(d.name) for d in subdirs) or _looks_like_btp(subdirs):
        return "btp"
    # No telltale names: NIfTI subject folders, or DICOM trees taken as single time point.
    for d in subdirs[:5]:
        try:
            if any(_NIFTI.search(n) for n in os.listdir(d)):
                return "brats20"
        except OSError:
            continue
    for d in subdirs[:5]:
        for _dirpath, _dirs, files in os.walk(d):
            if files:
                return "rembrandt"
    raise NoUsableDataError(
        f"no dataset recognised in {root}: expected TCIA DICOM patient folders "
        f"(REMBRANDT with {DEFAULT_CLINICAL_CSV}, or Brain-Tumor-Progression PGBM-NNN) or "
        "BraTS 2020 subject folders (BraTS20_Training_NNN with name_mapping.csv); "
        + ("the folder is empty" if not names else f"found {len(names)} entries, none of them "
                                                   "image folders")
    )


def load_cohort(
    root: Path | str,
    layout: str | None = None,
    *,
    modality_map: ModalityMap | Mapping[str, str | None] | None = None,
    clinical_csv: str | os.PathLike | None = None,
    clinical_columns: ClinicalColumns | Mapping[str, str] | None = None,
    allow_empty: bool = False,
) -> Cohort:
    """Index a dataset folder into a :class:`Cohort` (no pixels decoded).

    ``modality_map``: a ModalityMap or a dict of {pattern: modality} overrides tried before
    the defaults. ``clinical_csv`` / ``clinical_columns``: REMBRANDT clinical table name or
    path and its column names. Raises NoUsableDataError when no image series is found
    (unless ``allow_empty``, used by ``data check`` to report the problems instead).
    """
    root = Path(root).expanduser().resolve()
    if layout is None:
        layout = detect_layout(root, clinical_csv=clinical_csv)
    elif layout not in LAYOUTS:
        raise HarnessError(f"unknown layout {layout!r}; choose one of {', '.join(LAYOUTS)}")
    elif not root.is_dir():
        raise NoUsableDataError(f"dataset folder {root} does not exist or is not a folder")
    if layout == "rembrandt":
        cohort = load_rembrandt(root, modality_map=modality_map, clinical_csv=clinical_csv,
                                clinical_columns=clinical_columns)
    elif layout == "btp":
        cohort = load_btp(root, modality_map=modality_map)
    else:
        cohort = load_brats20(root, modality_map=modality_map)
    if cohort.series.empty and not allow_empty:
        shown = "; ".join(str(p) for p in cohort.problems[:5])
        more = f" (and {len(cohort.problems) - 5} more)" if len(cohort.problems) > 5 else ""
        raise NoUsableDataError(
            f"no usable image series in {root} (layout {layout})"
            + (f": {shown}{more}" if shown else "")
        )
    return cohort
