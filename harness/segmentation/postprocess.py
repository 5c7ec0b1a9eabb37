"""Post-processing of Ren et al. 2.6: remove "dust", fill the holes it leaves.

In order: connected components (26-connectivity) of ET of ``max_dust`` voxels or fewer
become background; holes this opens inside TC become NCR; TC dust is removed; holes
opened inside WT become ED; WT dust is removed. A hole is a background region fully
enclosed by the region (scipy ``binary_fill_holes``); only voxels this function removed
are ever filled, so genuine oedema inside the core is left alone.
"""

from __future__ import annotations

import cc3d
import numpy as np
from scipy import ndimage

from harness.segmentation.labels import region_mask

DEFAULT_MAX_DUST = 50


def _dust(mask: np.ndarray, max_dust: int) -> np.ndarray:
    """Voxels in components of ``max_dust`` voxels or fewer."""
    if not mask.any():
        return np.zeros_like(mask)
    kept = cc3d.dust(mask, threshold=max_dust + 1, connectivity=26, in_place=False)
    return mask & ~kept.astype(bool)


def remove_dust(labels: np.ndarray, max_dust: int = DEFAULT_MAX_DUST) -> np.ndarray:
    """The post-processed copy of a 2023-convention label map."""
    out = np.asarray(labels).astype(np.uint8, copy=True)
    removed = np.zeros(out.shape, dtype=bool)
    for region, fill_label in (("ET", 1), ("TC", 2), ("WT", None)):
        dust = _dust(region_mask(out, region), max_dust)
        out[dust] = 0
        removed |= dust
        if fill_label is None:
            break
        outer = "TC" if region == "ET" else "WT"
        mask = region_mask(out, outer)
        holes = ndimage.binary_fill_holes(mask) & ~mask & removed
        out[holes] = fill_label
        removed &= ~holes
    return out
