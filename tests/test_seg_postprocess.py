"""Post-processing: dust removal in ET, TC, WT order, holes refilled as NCR / ED."""

from __future__ import annotations

import numpy as np

from harness.segmentation.postprocess import remove_dust


def base() -> np.ndarray:
    lab = np.zeros((40, 40, 40), dtype=np.uint8)
    lab[5:25, 5:25, 5:25] = 2          # oedema, 8000 voxels
    lab[8:22, 8:22, 8:22] = 1          # necrotic core
    lab[10:16, 10:16, 10:16] = 3       # a real ET lesion, 216 voxels
    return lab


def test_large_components_untouched():
    assert np.array_equal(remove_dust(base()), base())


def test_et_speck_inside_core_becomes_ncr():
    lab = base()
    lab[18:20, 18:20, 18:20] = 3       # 8-voxel ET speck inside NCR
    out = remove_dust(lab)
    assert (out[18:20, 18:20, 18:20] == 1).all()
    assert (out[10:16, 10:16, 10:16] == 3).all()


def test_et_speck_in_oedema_becomes_oedema():
    lab = base()
    lab[6:8, 6:8, 6:8] = 3             # ET speck in oedema (outside the core)
    out = remove_dust(lab)
    assert (out[6:8, 6:8, 6:8] == 2).all()


def test_isolated_specks_removed_in_every_region():
    lab = base()
    lab[30:32, 30:32, 30:32] = 3       # lone ET speck
    lab[30:33, 5:8, 5:8] = 1           # lone NCR speck (27)
    lab[5:8, 30:33, 30:33] = 2         # lone ED speck (27)
    out = remove_dust(lab)
    assert np.array_equal(out, base())


def test_threshold_is_inclusive_at_50_voxels():
    lab = np.zeros((30, 30, 30), dtype=np.uint8)
    lab[2:7, 2:7, 2:4] = 2             # exactly 50 voxels: removed
    lab[15:20, 15:20, 15:17] = 2
    lab[15, 15, 17] = 2                # 51 voxels: kept
    out = remove_dust(lab)
    assert out[2:7, 2:7, 2:4].sum() == 0
    assert (out == 2).sum() == 51
    assert (remove_dust(lab, max_dust=60) == 0).all()


def test_tc_speck_in_oedema_refilled_as_oedema():
    lab = base()
    lab[5:25, 30:38, 5:25] = 2         # a second oedema block
    lab[12:15, 32:35, 12:15] = 1       # a 27-voxel NCR speck inside it
    out = remove_dust(lab)
    assert (out[12:15, 32:35, 12:15] == 2).all()
