"""Score a folder of predicted label maps against a folder of references (``seg-eval``).

Subjects are matched by ID: a file's name without ``.nii``/``.nii.gz`` and without a
trailing ``_seg``/``-seg``/``_pred``/``-pred``, found anywhere below the folder (so
both ``BraTS20_Training_001/BraTS20_Training_001_seg.nii.gz`` and a flat
``BraTS20_Training_001.nii.gz`` work). Image files (``_t1``, ``_flair``, ``-t2f``...)
next to the labels are ignored. One bad subject (missing prediction, unreadable
file, shape mismatch, unknown label value) becomes a problem row naming the file and
the reason; every other subject is still scored.

Defaults are the official BraTS 2023 (GLI) evaluation's: HD95 between surface elements,
dilation 3, lesions of 50 mm3 or less left out.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable

import numpy as np
import pandas as pd

from harness.data.cohort import Problem
from harness.data.volume import decode_nifti
from harness.errors import HarnessError
from harness.segmentation.labels import REGIONS, LabelError, check_convention, to_brats2023
from harness.segmentation.lesionwise import (
    DEFAULT_DILATION,
    DEFAULT_MIN_LESION,
    SCORE_COLUMNS,
    score_regions,
)
from harness.segmentation.surface import check_method

RESULT_COLUMNS: tuple[str, ...] = ("subject", "region", *SCORE_COLUMNS)
_NIFTI = re.compile(r"^(?P<stem>.+?)\.nii(\.gz)?$", re.IGNORECASE)
_LABEL_SUFFIX = re.compile(r"[_-](seg|pred|prediction|label|labels)$", re.IGNORECASE)
_IMAGE_SUFFIX = re.compile(r"[_-](t1|t1ce|t1c|t1n|t1gd|t2|t2w|t2f|flair)$", re.IGNORECASE)


@dataclass
class EvalResult:
    """Per subject x region scores, and the subjects that could not be scored."""

    scores: pd.DataFrame
    problems: list[tuple[str, Problem]] = field(default_factory=list)  # (subject, problem)

    @property
    def n_subjects(self) -> int:
        return int(self.scores["subject"].nunique()) if len(self.scores) else 0


def subject_id(path: Path) -> str | None:
    """Subject ID of a label file, or None for a non-NIfTI or image (modality) file."""
    m = _NIFTI.match(path.name)
    if not m:
        return None
    stem = m.group("stem")
    if _IMAGE_SUFFIX.search(stem):
        return None
    return _LABEL_SUFFIX.sub("", stem)


def index_folder(folder: Path) -> tuple[dict[str, Path], list[tuple[str, Problem]]]:
    """Subject ID -> label file below ``folder``; two files for one ID are a problem."""
    folder = Path(folder)
    if not folder.is_dir():
        raise HarnessError(f"{folder}: not a folder")
    found: dict[str, list[Path]] = {}
    for path in sorted(folder.rglob("*")):
        if path.is_file():
            sid = subject_id(path)
            if sid is not None:
                found.setdefault(sid, []).append(path)
    index, problems = {}, []
    for sid, paths in found.items():
        if len(paths) > 1:
            problems.append((sid, Problem(str(paths[0].parent), f"{len(paths)} label files for subject {sid}: "
                                          + ", ".join(p.name for p in paths))))
        else:
            index[sid] = paths[0]
    return index, problems


def read_labels(path: Path, convention: str) -> tuple[np.ndarray, tuple[float, float, float]]:
    """A label file as a 2023-convention (z, y, x) uint8 array plus its spacing in mm."""
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise HarnessError(f"cannot read file: {exc.strerror or exc}") from exc
    decoded = decode_nifti(data)
    if decoded.array is None:
        raise HarnessError("; ".join(reason for _, reason in decoded.problems) or "unreadable NIfTI")
    return to_brats2023(decoded.array, convention), decoded.spacing


def score_subject(pred_path: Path, ref_path: Path, *, convention: str = "brats2023",
                  dilation: int = DEFAULT_DILATION, min_lesion_volume: float = DEFAULT_MIN_LESION,
                  volume_unit: str = "mm3", hd_method: str = "surface") -> list[dict]:
    """Rows (one per region) for one subject; raises HarnessError naming the file at fault."""
    try:
        ref, spacing = read_labels(ref_path, convention)
    except (HarnessError, LabelError) as exc:
        raise HarnessError(f"{ref_path}: {exc}") from exc
    try:
        pred, pred_spacing = read_labels(pred_path, convention)
    except (HarnessError, LabelError) as exc:
        raise HarnessError(f"{pred_path}: {exc}") from exc
    if pred.shape != ref.shape:
        raise HarnessError(f"{pred_path}: shape mismatch: prediction {pred.shape} vs reference {ref.shape} ({ref_path})")
    scores = score_regions(pred, ref, spacing=spacing, dilation=dilation,
                           min_lesion_volume=min_lesion_volume, volume_unit=volume_unit, hd_method=hd_method)
    return [s.to_dict() for s in scores]


def evaluate_folders(pred_dir: Path, ref_dir: Path, *, convention: str = "brats2023",
                     dilation: int = DEFAULT_DILATION, min_lesion_volume: float = DEFAULT_MIN_LESION,
                     volume_unit: str = "mm3", hd_method: str = "surface",
                     on_subject: Callable[[str], None] | None = None) -> EvalResult:
    """Score every reference subject; predictions without a reference are reported too."""
    check_convention(convention)
    check_method(hd_method)
    refs, problems = index_folder(ref_dir)
    preds, pred_problems = index_folder(pred_dir)
    problems += pred_problems
    if not refs:
        raise HarnessError(f"{ref_dir}: no reference label files (.nii / .nii.gz) found")
    bad = {sid for sid, _ in problems}
    rows: list[dict] = []
    for sid in sorted(refs):
        if on_subject is not None:
            on_subject(sid)
        if sid in bad:
            continue
        if sid not in preds:
            problems.append((sid, Problem(str(Path(pred_dir)), f"no prediction for subject {sid} "
                                          f"(reference {refs[sid].name})")))
            continue
        try:
            subject_rows = score_subject(preds[sid], refs[sid], convention=convention, dilation=dilation,
                                         min_lesion_volume=min_lesion_volume, volume_unit=volume_unit,
                                         hd_method=hd_method)
        except HarnessError as exc:
            path, _, reason = str(exc).partition(": ")
            problems.append((sid, Problem(path, reason or str(exc))))
            continue
        rows += [{"subject": sid, **r} for r in subject_rows]
    for sid in sorted(set(preds) - set(refs)):
        problems.append((sid, Problem(str(preds[sid]), f"prediction for subject {sid} has no reference")))
    scores = pd.DataFrame(rows, columns=list(RESULT_COLUMNS))
    return EvalResult(scores=scores, problems=problems)


def region_means(scores: pd.DataFrame) -> pd.DataFrame:
    """Mean of every score column per region (the BraTS leaderboard view)."""
    if scores.empty:
        return pd.DataFrame(columns=["region", *SCORE_COLUMNS])
    out = scores.groupby("region")[list(SCORE_COLUMNS)].mean()
    return out.reindex([r for r in REGIONS if r in out.index]).reset_index()


def problems_frame(problems: Iterable[tuple[str, Problem]]) -> pd.DataFrame:
    return pd.DataFrame([{"subject": s, "path": p.path, "reason": p.reason} for s, p in problems],
                        columns=["subject", "path", "reason"])
