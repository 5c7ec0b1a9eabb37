"""Slices where the lesion is visible, found in the images themselves (no mask, no label).

Why: a grading pipeline that samples every head slice asks most slices a question they
cannot answer (about 70% of a glioma patient's axial slices show no tumour), and a
patient's vote is then cast mostly by tumour-free slices. Many published pipelines train
and test on the slices that show the tumour; BraTS users pick them from the masks. The
harness has no masks for TCIA data and must not read the truth, so it finds the lesion as
a radiologist's first look does: the FLAIR hyperintensity. The rule is the same for every
split and every sample, training or test, and never sees a label or a grade.

The rule (`lesion_slices`): the head (voxels above the harness's head threshold, holes
filled per slice), eroded by ``erode_mm`` so that the scalp's bright rim does not count;
the image over the median of that inner head, smoothed in-plane over ``smooth_mm``;
voxels above ``ratio`` inside the inner head; the largest 3-D connected component of
those (a glioma is one blob; scattered bright voxels are noise or grey matter); the slices
where that component covers at least ``min_area_mm2``.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Mapping

import numpy as np
import pandas as pd

from harness.data.cohort import Problem
from harness.hashing import json_digest
from harness.tasks.base import head_threshold

#: Voxel spacing (z, y, x) in mm assumed where a series' spacing is unknown (the synthetic grid).
DEFAULT_SPACING_MM = (2.0, 2.0, 2.0)


@dataclass(frozen=True)
class LesionRule:
    """Parameters of the image-only lesion finder (defaults chosen on FLAIR at 2 mm)."""

    ratio: float = 1.4
    erode_mm: float = 10.0
    smooth_mm: float = 10.0
    min_area_mm2: float = 80.0
    #: Fewer lesion slices than this and the finder is not trusted for the series.
    min_slices: int = 3


def mm_to_pixels(mm: float, spacing_mm: tuple[float, float, float], least: int = 1) -> int:
    """``mm`` in in-plane pixels (the finer of the two in-plane spacings), at least ``least``."""
    return max(least, int(round(mm / max(min(float(spacing_mm[1]), float(spacing_mm[2])), 1e-6))))


def lesion_mask(volume: np.ndarray, spacing_mm: tuple[float, float, float], rule: LesionRule) -> np.ndarray:
    """The largest connected hyperintense component inside the eroded head, as a boolean volume."""
    from scipy import ndimage as ndi

    v = np.asarray(volume, dtype=np.float32)
    if v.ndim != 3 or v.size == 0:
        return np.zeros(v.shape, dtype=bool)
    dy, dx = float(spacing_mm[1]), float(spacing_mm[2])
    head = v > head_threshold(v)
    head = np.stack([ndi.binary_fill_holes(plane) for plane in head])
    erode_px = mm_to_pixels(rule.erode_mm, spacing_mm)
    inner = ndi.binary_erosion(head, structure=np.ones((1, 3, 3), bool), iterations=erode_px)
    if not inner.any():
        return np.zeros(v.shape, dtype=bool)
    reference = float(np.median(v[inner]))
    if reference <= 0:
        return np.zeros(v.shape, dtype=bool)
    size = (1, max(1, int(round(rule.smooth_mm / dy))), max(1, int(round(rule.smooth_mm / dx))))
    bright = (ndi.uniform_filter(v / reference, size=size) > rule.ratio) & inner
    labels, count = ndi.label(bright)
    if count == 0:
        return bright
    sizes = ndi.sum(bright, labels, index=np.arange(1, count + 1))
    return np.asarray(labels == 1 + int(np.argmax(sizes)))


def lesion_slices(volume: np.ndarray, spacing_mm: tuple[float, float, float],
                  rule: LesionRule = LesionRule()) -> np.ndarray:
    """Indices of the axial slices where the lesion covers at least ``rule.min_area_mm2``."""
    return find_scan_lesion(volume, spacing_mm, rule).slices


@dataclass(frozen=True)
class ScanLesion:
    """What the finder saw in one scan: its lesion slices and the lesion's in-plane centre."""

    slices: np.ndarray
    n_slices: int
    centre_yx: tuple[float, float]


def find_scan_lesion(volume: np.ndarray, spacing_mm: tuple[float, float, float],
                     rule: LesionRule = LesionRule()) -> ScanLesion:
    """The lesion slices of ``volume`` and the in-plane centroid of its lesion (the volume's
    centre where no lesion is found)."""
    mask = lesion_mask(volume, spacing_mm, rule)
    if mask.ndim != 3:
        return ScanLesion(np.zeros(0, dtype=int), 0, (0.0, 0.0))
    pixel_mm2 = float(spacing_mm[1]) * float(spacing_mm[2])
    area = mask.reshape(mask.shape[0], -1).sum(axis=1) * pixel_mm2
    if mask.any():
        yy, xx = np.nonzero(mask.any(axis=0))
        centre = (float(yy.mean()), float(xx.mean()))
    else:
        centre = ((mask.shape[1] - 1) / 2.0, (mask.shape[2] - 1) / 2.0)
    return ScanLesion(np.flatnonzero(area >= rule.min_area_mm2), mask.shape[0], centre)


def crop_in_plane(volume: np.ndarray, centre_yx: tuple[float, float], size_px: int) -> np.ndarray:
    """A ``size_px`` x ``size_px`` window of every slice, centred on ``centre_yx``; outside
    the field of view is filled with the volume's minimum (air)."""
    v = np.asarray(volume)
    out = np.full((v.shape[0], size_px, size_px), v.min() if v.size else 0, dtype=v.dtype)
    y0 = int(round(centre_yx[0])) - size_px // 2
    x0 = int(round(centre_yx[1])) - size_px // 2
    sy0, sx0 = max(y0, 0), max(x0, 0)
    sy1, sx1 = min(y0 + size_px, v.shape[1]), min(x0 + size_px, v.shape[2])
    if sy1 > sy0 and sx1 > sx0:
        out[:, sy0 - y0:sy1 - y0, sx0 - x0:sx1 - x0] = v[:, sy0:sy1, sx0:sx1]
    return out


def lesions_per_scan(
    series: pd.DataFrame, volumes: Mapping[str, np.ndarray], modality: str,
    spacings: Mapping[str, tuple[float, float, float]], rule: LesionRule = LesionRule(),
    id_column: str = "series_id",
) -> tuple[dict[str, ScanLesion], list[Problem]]:
    """``study_id`` -> what the finder saw in the scan's ``modality`` series (``series``: rows
    with ``study_id``, ``modality`` and the series' key in ``id_column``, e.g. a cohort's
    ``series_id`` or a view's ``image_id``); where it found too few slices to be trusted,
    every slice of the scan (its centre still places a crop)."""
    found: dict[str, ScanLesion] = {}
    problems: list[Problem] = []
    for study_id, scan in series.groupby("study_id", sort=False):
        finders = [s for s in scan.loc[scan["modality"] == modality, id_column] if s in volumes]
        if not finders:
            problems.append(Problem(str(study_id), f"the lesion finder needs a decoded {modality} "
                                    "series in the scan; none, so every head slice of the scan kept, uncut"))
            continue
        lesion = find_scan_lesion(np.asarray(volumes[finders[0]]), spacings.get(finders[0], DEFAULT_SPACING_MM), rule)
        if lesion.slices.size < rule.min_slices:
            problems.append(Problem(str(finders[0]), f"the lesion finder found {lesion.slices.size} lesion "
                                    f"slice(s), fewer than {rule.min_slices}: every head slice of the scan kept"))
            lesion = replace(lesion, slices=np.arange(lesion.n_slices))
        found[str(study_id)] = lesion
    return found, problems


def crop_series(volume: np.ndarray, content_key: str, lesion: ScanLesion, crop_mm: float,
                spacing_mm: tuple[float, float, float], half_depth_mm: float = 0.0) -> tuple[np.ndarray, str]:
    """A series cut to ``crop_mm`` around its scan's lesion (and, with ``half_depth_mm``, to
    the slices within that distance of the lesion's axial centre), and the crop's cache key
    (the series' content key and the window), so crops never share a cache entry with the series."""
    size = mm_to_pixels(crop_mm, spacing_mm, least=8)
    v = np.asarray(volume)
    window: list[float] = [*lesion.centre_yx, size]
    if half_depth_mm > 0 and len(v):
        centre_z = int(round(float(np.median(lesion.slices)))) if lesion.slices.size else len(v) // 2
        half = max(1, int(round(half_depth_mm / max(float(spacing_mm[0]), 1e-6))))
        z0, z1 = max(0, centre_z - half), min(len(v), centre_z + half + 1)
        v = v[z0:z1]
        window += [z0, z1]
    key = json_digest({"series": content_key, "crop": window}, 32)
    return crop_in_plane(v, lesion.centre_yx, size), key


@dataclass
class SeriesLesionView:
    """One series under lesion sampling: the slices kept and, when cropped, the crop and its key."""

    keep: np.ndarray
    crop: tuple[np.ndarray, str] | None = None
    problem: Problem | None = None

    def record(self, series_id: str, volumes: dict[str, np.ndarray], keys: dict[str, str],
               problems: list[Problem]) -> None:
        """Put the crop (if any) in ``volumes``/``keys`` under ``series_id`` and the problem
        (if any) in ``problems``: what every caller does with a view."""
        if self.crop is not None:
            volumes[series_id], keys[series_id] = self.crop
        if self.problem is not None:
            problems.append(self.problem)


def series_lesion_view(series_id: str, volume: np.ndarray, keep: np.ndarray, lesion: ScanLesion | None, *,
                       crop_mm: float, content_key: str, spacing_mm: tuple[float, float, float],
                       modality: str = "FLAIR", half_depth_mm: float = 0.0,
                       narrow: bool = True) -> SeriesLesionView:
    """``keep`` (the series' head slices) narrowed to its scan's lesion slices, and cut to
    ``crop_mm`` around the lesion when asked (in depth too, with ``half_depth_mm``; with
    ``narrow = False`` every head slice is kept and only cut); a series
    whose slice count differs from the
    finder's series keeps ``keep`` uncut, with a problem naming it. Why one function: the
    grading view and the progression pseudo-grader must sample a scan the same way."""
    if lesion is None:
        return SeriesLesionView(keep)
    if len(volume) != lesion.n_slices:
        return SeriesLesionView(keep, problem=Problem(
            str(series_id), f"{len(volume)} slices, not the {lesion.n_slices} of the scan's {modality} series: "
            "lesion slices not mapped, every head slice kept" + (", not cropped" if crop_mm else "")))
    narrowed = np.intersect1d(keep, lesion.slices) if narrow else keep
    crop = crop_series(volume, content_key, lesion, crop_mm, spacing_mm, half_depth_mm) if crop_mm else None
    return SeriesLesionView(narrowed, crop)
