"""DWT-DCT extractor: batch equals the per-slice reference, and the features behave."""

from __future__ import annotations

import numpy as np
import pytest

from harness.errors import HarnessError
from harness.features.dwtdct import (
    DwtDctConfig,
    dwtdct_features,
    dwtdct_features_loop,
    zigzag_indices,
)

SMALL = DwtDctConfig(image_size=64, n_coefficients=100)


def _phantom(n: int, h: int = 80, w: int = 72, seed: int = 0) -> np.ndarray:
    """Noisy 'brains' (a disc) with a brighter 'tumour' blob at a random place."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:h, :w]
    brain = ((yy - h / 2) ** 2 / (0.4 * h) ** 2 + (xx - w / 2) ** 2 / (0.4 * w) ** 2) < 1
    out = np.empty((n, h, w))
    for i in range(n):
        cy, cx = rng.integers(h // 3, 2 * h // 3), rng.integers(w // 3, 2 * w // 3)
        blob = (yy - cy) ** 2 + (xx - cx) ** 2 < rng.integers(16, 64)
        out[i] = 100 * brain + 150 * blob + rng.normal(0, 10, (h, w))
    return out


@pytest.mark.parametrize("roi", ["brightest", "foreground", "none"])
def test_batch_matches_loop(roi: str) -> None:
    slices = _phantom(6)
    slices[2] = 0.0  # a blank slice in the middle of the batch
    cfg = DwtDctConfig(image_size=64, roi=roi, wavelet="db2", n_coefficients=37)
    np.testing.assert_allclose(
        dwtdct_features(slices, cfg), dwtdct_features_loop(slices, cfg), rtol=1e-5, atol=1e-5
    )


def test_output_shape_dtype_and_default_config() -> None:
    feats = dwtdct_features(_phantom(3, 40, 40), SMALL)
    assert feats.shape == (3, 100) and feats.dtype == np.float32
    assert DwtDctConfig().to_dict() == {
        "image_size": 256,
        "wavelet": "haar",
        "roi": "brightest",
        "n_coefficients": 100,
        "kmeans_iters": 20,
    }
    assert dwtdct_features(np.zeros((0, 10, 10)), SMALL).shape == (0, 100)


def test_zigzag_order_follows_jpeg_scan() -> None:
    rows, cols = zigzag_indices(4, 4, 16)
    expected = [
        (0, 0), (0, 1), (1, 0), (2, 0), (1, 1), (0, 2), (0, 3), (1, 2),
        (2, 1), (3, 0), (3, 1), (2, 2), (1, 3), (2, 3), (3, 2), (3, 3),
    ]  # fmt: skip
    assert list(zip(rows.tolist(), cols.tolist())) == expected
    r7, c7 = zigzag_indices(4, 4, 7)  # not a perfect square: a prefix of the scan
    assert list(zip(r7.tolist(), c7.tolist())) == expected[:7]
    with pytest.raises(HarnessError):
        zigzag_indices(4, 4, 17)


def test_first_feature_is_dc_of_ll_band() -> None:
    img = np.random.default_rng(1).random((1, 32, 32))
    cfg = DwtDctConfig(image_size=32, roi="none", n_coefficients=5)
    ll = (img[0, 0::2, 0::2] + img[0, 1::2, 0::2] + img[0, 0::2, 1::2] + img[0, 1::2, 1::2]) / 2
    rescaled = (ll - img.min() * 2) / (img.max() - img.min())  # haar LL of the rescaled image
    assert dwtdct_features(img, cfg)[0, 0] == pytest.approx(rescaled.sum() / 16, rel=1e-5)


def test_roi_options_give_different_features() -> None:
    slices = _phantom(2)
    feats = {
        roi: dwtdct_features(slices, DwtDctConfig(image_size=64, roi=roi))
        for roi in ("brightest", "foreground", "none")
    }
    assert not np.allclose(feats["brightest"], feats["foreground"])
    assert not np.allclose(feats["foreground"], feats["none"])
    # keeping fewer pixels lowers the DC term
    assert (feats["brightest"][:, 0] < feats["foreground"][:, 0]).all()
    assert (feats["foreground"][:, 0] <= feats["none"][:, 0]).all()


def test_bright_blob_changes_features() -> None:
    rng = np.random.default_rng(3)
    base = 100 + rng.normal(0, 5, (1, 64, 64))
    blob = base.copy()
    blob[0, 10:20, 40:50] += 200
    a, b = dwtdct_features(np.concatenate([base, blob]), SMALL)
    assert np.abs(a - b).max() > 0.1


def test_blank_and_constant_slices_are_finite_zeros() -> None:
    slices = np.stack([np.zeros((50, 50)), np.full((50, 50), 7.0)])
    for fn in (dwtdct_features, dwtdct_features_loop):
        feats = fn(slices, SMALL)
        assert np.isfinite(feats).all()
        np.testing.assert_array_equal(feats, 0.0)


def test_invariant_to_intensity_scale_and_offset() -> None:
    slices = _phantom(3)
    np.testing.assert_allclose(
        dwtdct_features(slices, SMALL),
        dwtdct_features(slices * 37.5 + 1000.0, SMALL),
        rtol=1e-4,
        atol=1e-4,
    )


def test_deterministic() -> None:
    slices = _phantom(4)
    np.testing.assert_array_equal(dwtdct_features(slices, SMALL), dwtdct_features(slices, SMALL))


def test_bad_input_and_config_raise_harness_error() -> None:
    with pytest.raises(HarnessError, match="B, H, W"):
        dwtdct_features(np.zeros((10, 10)), SMALL)
    with pytest.raises(HarnessError, match="NaN"):
        dwtdct_features(np.full((1, 10, 10), np.nan), SMALL)
    with pytest.raises(HarnessError, match="roi"):
        DwtDctConfig(roi="tumour")
    with pytest.raises(HarnessError, match="wavelet"):
        DwtDctConfig(wavelet="nope")
    with pytest.raises(HarnessError, match="LL band"):
        DwtDctConfig(image_size=16, n_coefficients=100)
