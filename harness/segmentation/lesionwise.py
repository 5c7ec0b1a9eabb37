"""BraTS 2023 lesion-wise Dice and HD95, plus the legacy whole-volume scores.

Follows the official BraTS 2023 evaluation (rachitsaluja/BraTS-2023-Metrics,
``get_lesion_wise_score``), region by region:

1. ground-truth components (cc3d, 26-connectivity) are merged into one lesion when
   their dilations touch: the mask is dilated ``dilation`` times with the 18-neighbour
   structure, components of the dilated mask are labelled, and every ground-truth voxel
   takes the label of the dilated component it lies in;
2. predicted components (26-connectivity) that touch a lesion's own dilation are its
   matches; the lesion scores Dice and HD95 against the union of its matches (a lesion
   with no match is a false negative: Dice 0, HD95 374);
3. lesions of ``min_lesion_volume`` or less are left out of the score and of the
   TP / FN counts, but predicted components that touch them are not false positives;
4. every predicted component that matches no lesion is a false positive and adds a
   Dice 0 / HD95 374 term: score = sum over kept lesions / (kept lesions + FP);
5. nothing in either mask scores Dice 1 and HD95 0.

HD95 is the official surface-element distance by default (``harness.segmentation.surface``;
``hd_method="voxel"`` gives the older boundary-voxel variant). Per-lesion work runs inside
bounding boxes, which changes no number (the official code crops to the masks' bounding
box too), so a full-size subject scores in well under a second per region. The one
default that differs from the official code is the unit of ``min_lesion_volume`` here
(voxels; ``volume_unit="mm3"`` is the official one, and ``seg-eval``'s default): the suite
runs on a 4 mm grid where 50 mm3 is less than one voxel. docs/segmentation.md has the rest.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Sequence

import cc3d
import numpy as np
from scipy import ndimage

from harness.errors import HarnessError
from harness.segmentation.labels import REGIONS, region_mask
from harness.segmentation.surface import HD95_EMPTY, check_method, hd95, union_bbox

#: Columns of one result row, in seg-eval's CSV order (after subject, region).
SCORE_COLUMNS: tuple[str, ...] = (
    "LesionWise_Score_Dice", "LesionWise_Score_HD95", "Num_TP", "Num_FP", "Num_FN",
    "Legacy_Dice", "Legacy_HD95",
)
#: BraTS 2023 glioma (GLI) parameters.
DEFAULT_DILATION = 3
DEFAULT_MIN_LESION = 50.0


@dataclass
class RegionScore:
    """Scores of one region of one subject, as the official evaluation reports them."""

    region: str
    LesionWise_Score_Dice: float
    LesionWise_Score_HD95: float
    Num_TP: int
    Num_FP: int
    Num_FN: int
    Legacy_Dice: float
    Legacy_HD95: float

    def to_dict(self) -> dict:
        return asdict(self)


def dice(a: np.ndarray, b: np.ndarray) -> float:
    """Dice of two masks; 1.0 when both are empty (the official convention)."""
    sa, sb = int(np.count_nonzero(a)), int(np.count_nonzero(b))
    if sa + sb == 0:
        return 1.0
    return 2.0 * int(np.count_nonzero(a & b)) / (sa + sb)


def _finite(d: float) -> float:
    return HD95_EMPTY if not np.isfinite(d) else float(d)


def _dilate(mask: np.ndarray, iterations: int) -> np.ndarray:
    if iterations <= 0:
        return mask
    return ndimage.binary_dilation(mask, structure=ndimage.generate_binary_structure(3, 2),
                                   iterations=iterations)


def merged_lesions(gt: np.ndarray, dilation: int = DEFAULT_DILATION) -> np.ndarray:
    """Ground-truth lesion labels after merging components whose dilations touch."""
    out = np.zeros(gt.shape, dtype=np.uint32)
    box0 = _box(gt)
    if box0 is None:
        return out
    box = union_bbox([box0], gt.shape, margin=dilation + 1)
    dilated_cc = cc3d.connected_components(_dilate(gt[box], dilation), connectivity=26)
    out[box] = np.where(gt[box], dilated_cc, 0)
    return out


def _box(mask: np.ndarray) -> tuple[slice, ...] | None:
    found = ndimage.find_objects(mask.view(np.uint8) if mask.dtype == bool else mask.astype(np.uint8))
    return tuple(found[0]) if found and found[0] is not None else None


def lesionwise_region(
    pred: np.ndarray,
    gt: np.ndarray,
    *,
    spacing: Sequence[float] = (1.0, 1.0, 1.0),
    dilation: int = DEFAULT_DILATION,
    min_lesion_volume: float = DEFAULT_MIN_LESION,
    volume_unit: str = "voxels",
    hd_method: str = "surface",
) -> tuple[float, float, int, int, int]:
    """(lesion-wise Dice, lesion-wise HD95, TP, FP, FN) for one region's two masks."""
    check_method(hd_method)
    if volume_unit not in ("voxels", "mm3"):
        raise HarnessError(f"volume_unit must be 'voxels' or 'mm3', not {volume_unit!r}")
    voxel_volume = float(np.prod(spacing)) if volume_unit == "mm3" else 1.0
    pred = np.asarray(pred, dtype=bool)
    gt = np.asarray(gt, dtype=bool)
    pred_cc = cc3d.connected_components(pred, connectivity=26)
    lesions = merged_lesions(gt, dilation)
    n_pred = int(pred_cc.max())
    pred_boxes = ndimage.find_objects(pred_cc) if n_pred else []
    matched: set[int] = set()
    kept_dice: list[float] = []
    kept_hd: list[float] = []
    tp = fn = 0
    for index, lesion_box in enumerate(ndimage.find_objects(lesions), start=1):
        if lesion_box is None:
            continue
        roi = union_bbox([lesion_box], gt.shape, margin=dilation + 1)
        lesion = lesions[roi] == index
        hits = [int(h) for h in np.unique(pred_cc[roi][_dilate(lesion, dilation)]) if h]
        matched.update(hits)
        volume = int(lesion.sum()) * voxel_volume
        if volume <= min_lesion_volume:
            continue
        if not hits:
            fn += 1
            kept_dice.append(0.0)
            kept_hd.append(HD95_EMPTY)
            continue
        tp += 1
        box = union_bbox([lesion_box] + [pred_boxes[h - 1] for h in hits], gt.shape, margin=1)
        lesion_full = lesions[box] == index
        pred_union = np.isin(pred_cc[box], hits)
        kept_dice.append(dice(pred_union, lesion_full))
        kept_hd.append(_finite(hd95(lesion_full, pred_union, spacing, method=hd_method)))
    n_fp = len(set(range(1, n_pred + 1)) - matched) if n_pred else 0
    denominator = len(kept_dice) + n_fp
    if denominator == 0:
        return 1.0, 0.0, tp, n_fp, fn
    score_dice = sum(kept_dice) / denominator
    score_hd = (sum(kept_hd) + n_fp * HD95_EMPTY) / denominator
    return float(score_dice), float(score_hd), tp, n_fp, fn


def legacy_region(pred: np.ndarray, gt: np.ndarray, spacing: Sequence[float] = (1.0, 1.0, 1.0),
                  hd_method: str = "surface") -> tuple[float, float]:
    """Whole-volume Dice and HD95 (374 when exactly one mask is empty, 0 when both are)."""
    pred = np.asarray(pred, dtype=bool)
    gt = np.asarray(gt, dtype=bool)
    return dice(pred, gt), _finite(hd95(gt, pred, spacing, method=hd_method))


def score_regions(
    pred_labels: np.ndarray,
    ref_labels: np.ndarray,
    *,
    spacing: Sequence[float] = (1.0, 1.0, 1.0),
    dilation: int = DEFAULT_DILATION,
    min_lesion_volume: float = DEFAULT_MIN_LESION,
    volume_unit: str = "voxels",
    regions: Sequence[str] = REGIONS,
    hd_method: str = "surface",
) -> list[RegionScore]:
    """Lesion-wise and legacy scores for each region of two 2023-convention label maps."""
    if pred_labels.shape != ref_labels.shape:
        raise HarnessError(f"shape mismatch: prediction {tuple(pred_labels.shape)} vs reference {tuple(ref_labels.shape)}")
    out = []
    for region in regions:
        p, g = region_mask(pred_labels, region), region_mask(ref_labels, region)
        lw_dice, lw_hd, tp, fp, fn = lesionwise_region(
            p, g, spacing=spacing, dilation=dilation, min_lesion_volume=min_lesion_volume,
            volume_unit=volume_unit, hd_method=hd_method)
        leg_dice, leg_hd = legacy_region(p, g, spacing, hd_method=hd_method)
        out.append(RegionScore(region, lw_dice, lw_hd, tp, fp, fn, leg_dice, leg_hd))
    return out
