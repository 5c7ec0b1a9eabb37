"""Label conventions and conversions between disjoint labels and overlapping regions.

BraTS label maps carry disjoint labels: 0 background, 1 NCR (necrotic core), 2 ED
(oedema) and ET (enhancing tumour), written 4 in BraTS 2020 and 3 from BraTS 2023. The
evaluation and the network work on the overlapping regions ET, TC = ET+NCR, WT = all.
Everything inside this package uses the 2023 convention (ET = 3); files are converted
at the edges.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping

import numpy as np

from harness.errors import HarnessError

#: Region order used for network channels and result rows.
REGIONS: tuple[str, ...] = ("ET", "TC", "WT")
#: Disjoint labels (2023 convention) that make up each region.
REGION_LABELS: dict[str, tuple[int, ...]] = {"ET": (3,), "TC": (1, 3), "WT": (1, 2, 3)}
#: The label values each convention allows; ``ET`` is the enhancing-tumour value.
CONVENTIONS: dict[str, dict[str, object]] = {
    "brats2023": {"values": (0, 1, 2, 3), "ET": 3},
    "brats2020": {"values": (0, 1, 2, 4), "ET": 4},
}
#: Default inference thresholds of Ren et al. (after the optimized U-Net, their ref. 9).
DEFAULT_THRESHOLDS: dict[str, float] = {"WT": 0.45, "TC": 0.4, "ET": 0.45}


class LabelError(HarnessError):
    """A label map with values its convention does not allow."""


def check_convention(convention: str) -> dict[str, object]:
    if convention not in CONVENTIONS:
        raise HarnessError(f"unknown label convention {convention!r}; known: {', '.join(CONVENTIONS)}")
    return CONVENTIONS[convention]


def to_brats2023(labels: np.ndarray, convention: str = "brats2023") -> np.ndarray:
    """Label map in ``convention`` -> uint8 map in the 2023 convention (ET = 3).

    Values must be whole numbers from the convention; anything else raises LabelError
    naming the unexpected values (a 2020 file read as 2023 shows up as "4").
    """
    spec = check_convention(convention)
    arr = np.asarray(labels)
    if arr.dtype.kind == "f":
        rounded = np.rint(arr)
        if not np.array_equal(rounded, arr):
            raise LabelError("label map has non-integer values")
        arr = rounded
    present = np.unique(arr)
    bad = sorted(set(present.tolist()) - set(spec["values"]))  # type: ignore[arg-type, call-overload]
    if bad:
        shown = ", ".join(str(int(v)) if float(v).is_integer() else str(v) for v in bad[:5])
        raise LabelError(
            f"unknown label value(s) {shown} for the {convention} convention "
            f"(allowed {list(spec['values'])})"  # type: ignore[call-overload]
        )
    out = arr.astype(np.uint8)
    if spec["ET"] != 3:
        out[arr == spec["ET"]] = 3
    return out


def from_brats2023(labels: np.ndarray, convention: str = "brats2023") -> np.ndarray:
    """2023-convention map -> ``convention`` (e.g. ET back to 4 for a 2020 file)."""
    spec = check_convention(convention)
    out = np.asarray(labels).astype(np.uint8)
    if spec["ET"] != 3:
        out = out.copy()
        out[out == 3] = int(spec["ET"])  # type: ignore[call-overload]
    return out


def region_mask(labels: np.ndarray, region: str) -> np.ndarray:
    """Boolean mask of one overlapping region of a 2023-convention label map."""
    if region not in REGION_LABELS:
        raise HarnessError(f"unknown region {region!r}; known: {', '.join(REGIONS)}")
    lut = np.zeros(256, dtype=bool)
    lut[list(REGION_LABELS[region])] = True
    labels = np.asarray(labels)
    if labels.dtype == np.uint8:
        return lut[labels]
    return np.isin(labels, REGION_LABELS[region])


def labels_to_regions(labels: np.ndarray) -> np.ndarray:
    """(…) label map -> (3, …) float32 channels ET, TC, WT (the network's targets)."""
    return np.stack([region_mask(labels, r) for r in REGIONS]).astype(np.float32)


@dataclass(frozen=True)
class Thresholds:
    """Probability thresholds turning region probabilities into disjoint labels."""

    WT: float = DEFAULT_THRESHOLDS["WT"]
    TC: float = DEFAULT_THRESHOLDS["TC"]
    ET: float = DEFAULT_THRESHOLDS["ET"]

    @classmethod
    def from_mapping(cls, values: Mapping[str, float] | None) -> "Thresholds":
        values = dict(values or {})
        unknown = set(values) - set(REGIONS)
        if unknown:
            raise HarnessError(f"unknown threshold region(s) {sorted(unknown)}; known: {list(REGIONS)}")
        return cls(**{k: float(v) for k, v in values.items()})


def probabilities_to_labels(probs: np.ndarray, thresholds: Thresholds | None = None) -> np.ndarray:
    """(3, …) probabilities in ET, TC, WT order -> disjoint 2023 labels (uint8).

    Nested as in Ren et al. 2.5: below the WT threshold -> 0; else below TC -> 2 (ED);
    else below ET -> 1 (NCR); else 3 (ET). A voxel is ET only if it is also TC and WT.
    """
    t = thresholds or Thresholds()
    probs = np.asarray(probs)
    if probs.shape[0] != 3:
        raise HarnessError(f"expected 3 probability channels (ET, TC, WT), got shape {probs.shape}")
    et, tc, wt = probs[0] >= t.ET, probs[1] >= t.TC, probs[2] >= t.WT
    out = np.zeros(probs.shape[1:], dtype=np.uint8)
    out[wt] = 2
    out[wt & tc] = 1
    out[wt & tc & et] = 3
    return out
