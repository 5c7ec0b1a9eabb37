"""Write NIfTI-1 ``.nii.gz`` volumes byte-for-byte reproducibly (no gzip timestamp)."""

from __future__ import annotations

import gzip
from pathlib import Path

import nibabel as nib
import numpy as np


def write_nifti(path: Path, volume: np.ndarray, affine: np.ndarray) -> Path:
    """Save ``volume`` with ``affine`` (RAS mm) as gzip-compressed NIfTI, mtime fixed at 0."""
    img = nib.Nifti1Image(volume, affine)
    img.header.set_xyzt_units("mm", "sec")
    img.set_qform(affine, code=1)
    img.set_sform(affine, code=1)
    data = img.to_bytes()
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as fh:
        # gzip.compress(mtime=0) keeps the header free of wall-clock time.
        fh.write(gzip.compress(data, compresslevel=6, mtime=0))
    return path
