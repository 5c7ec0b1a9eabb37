"""DWT-DCT slice features (Fasihi & Mikhael 2021, reused by the capstone LSTM).

Per slice: rescale to [0, 1], resize to ``image_size``, keep a region of interest found
by 3-cluster intensity k-means, take the LL band of a 2-D DWT, apply an orthonormal
DCT-II to it and keep the ``n_coefficients`` lowest frequencies in zig-zag order.

There is one implementation here so every LSTM baseline extracts the same features.
:func:`dwtdct_features` works on a whole stack at once; :func:`dwtdct_features_loop`
is a deliberately separate one-slice-at-a-time reference for tests and benchmarks.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from functools import lru_cache

import numpy as np
import pywt
import scipy.fft
import scipy.ndimage

from harness.errors import HarnessError

#: Accepted values of :attr:`DwtDctConfig.roi`.
ROI_MODES: tuple[str, ...] = ("brightest", "foreground", "none")

#: Number of intensity clusters (the paper's "clusters of three").
N_CLUSTERS = 3

#: Slices processed together; bounds peak memory of the batched path.
_CHUNK = 64


@dataclass(frozen=True)
class DwtDctConfig:
    """Extractor settings; defaults are the paper's (256 px, Haar, 100 coefficients)."""

    image_size: int = 256
    wavelet: str = "haar"
    roi: str = "brightest"
    n_coefficients: int = 100
    kmeans_iters: int = 20

    def __post_init__(self) -> None:
        if self.image_size < 2:
            raise HarnessError(f"DWT-DCT image_size must be >= 2, got {self.image_size}")
        if self.roi not in ROI_MODES:
            raise HarnessError(f"DWT-DCT roi must be one of {ROI_MODES}, got {self.roi!r}")
        if self.wavelet not in pywt.wavelist(kind="discrete"):
            raise HarnessError(f"DWT-DCT wavelet {self.wavelet!r} is not a discrete pywt wavelet")
        if self.n_coefficients < 1:
            raise HarnessError(f"DWT-DCT n_coefficients must be >= 1, got {self.n_coefficients}")
        if self.kmeans_iters < 0:
            raise HarnessError(f"DWT-DCT kmeans_iters must be >= 0, got {self.kmeans_iters}")
        ll = ll_shape(self.image_size, self.wavelet)
        if self.n_coefficients > ll[0] * ll[1]:
            raise HarnessError(
                f"DWT-DCT n_coefficients={self.n_coefficients} exceeds the {ll[0]}x{ll[1]} "
                f"LL band of a {self.image_size}px image"
            )

    def to_dict(self) -> dict:
        """Plain dict for run params and cache keys."""
        return asdict(self)


# --------------------------------------------------------------------------- helpers


def ll_shape(image_size: int, wavelet: str) -> tuple[int, int]:
    """Shape of the LL band pywt produces for a square ``image_size`` image."""
    n = pywt.dwt_coeff_len(image_size, pywt.Wavelet(wavelet).dec_len, "symmetric")
    return (n, n)


@lru_cache(maxsize=32)
def zigzag_indices(height: int, width: int, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Row and column indices of the first ``n`` cells of a JPEG zig-zag scan.

    Anti-diagonals ``i + j = d`` in increasing order; odd ``d`` runs top-right to
    bottom-left (row increasing), even ``d`` the other way, so (0,0),(0,1),(1,0),(2,0)...
    Works for any ``n`` up to ``height * width``, not only perfect squares.
    """
    if not 0 < n <= height * width:
        raise HarnessError(f"zig-zag needs 0 < n <= {height * width}, got {n}")
    rows, cols = np.indices((height, width)).reshape(2, -1)
    diag = rows + cols
    within = np.where(diag % 2 == 1, rows, -rows)
    order = np.lexsort((within, diag))[:n]
    r, c = rows[order], cols[order]
    r.setflags(write=False)
    c.setflags(write=False)
    return r, c


def _check_stack(slices: np.ndarray) -> np.ndarray:
    """Validate a (B, H, W) stack of finite pixels and return it as float64."""
    arr = np.asarray(slices)
    if arr.ndim != 3:
        raise HarnessError(f"DWT-DCT expects a (B, H, W) stack of slices, got shape {arr.shape}")
    if arr.shape[1] < 2 or arr.shape[2] < 2:
        raise HarnessError(f"DWT-DCT slices must be at least 2x2, got {arr.shape[1:]}")
    arr = arr.astype(np.float64, copy=False)
    if not np.isfinite(arr).all():
        raise HarnessError("DWT-DCT input contains NaN or infinite pixel values")
    return arr


def rescale_unit(x: np.ndarray) -> np.ndarray:
    """Min-max rescale each slice to [0, 1]; a constant slice becomes all zeros.

    Makes the features independent of scanner intensity scale.
    """
    lo = x.min(axis=(-2, -1), keepdims=True)
    span = x.max(axis=(-2, -1), keepdims=True) - lo
    out = x - lo
    out /= np.where(span > 0, span, np.inf)  # constant slice: 0 / inf = 0
    return out


def resize_stack(x: np.ndarray, size: int) -> np.ndarray:
    """Bilinear, corner-aligned resize of every slice of a (B, H, W) stack to size x size.

    One ``scipy.ndimage.zoom`` call on the whole stack; the zoom factor along the batch
    axis is exactly 1, so slices do not mix and the result equals a per-slice zoom.
    """
    h, w = x.shape[-2:]
    if (h, w) == (size, size):
        return x
    return scipy.ndimage.zoom(
        x, (1.0, size / h, size / w), order=1, grid_mode=False, mode="nearest"
    )


def kmeans_labels(x: np.ndarray, iters: int) -> np.ndarray:
    """Batched 1-D k-means (k=3) on each slice's intensities; labels sorted dark->bright.

    Centres start at the 1/6, 1/2 and 5/6 quantiles. In 1-D, Lloyd's assignment step
    is a pair of thresholds (midpoints between sorted centres), so each slice is sorted
    once and every iteration only needs a batched binary search plus prefix sums, which
    costs nothing per pixel. An empty cluster keeps its centre. Returns int labels with
    the shape of ``x``.
    """
    b = x.shape[0]
    flat = x.reshape(b, -1)
    ordered = np.sort(flat, axis=1)
    prefix = np.concatenate([np.zeros((b, 1)), np.cumsum(ordered, axis=1)], axis=1)
    centres = np.quantile(ordered, [1 / 6, 1 / 2, 5 / 6], axis=1).T  # (B, 3)
    n = flat.shape[1]
    rows = np.arange(b)[:, None]
    for _ in range(iters):
        mids = (centres[:, :-1] + centres[:, 1:]) / 2.0
        cut = _count_at_most(ordered, mids)  # (B, 2): pixels <= each midpoint
        bounds = np.column_stack([np.zeros(b, dtype=np.intp), cut, np.full(b, n)])
        counts = np.diff(bounds, axis=1)
        sums = np.diff(prefix[rows, bounds], axis=1)
        means = sums / np.maximum(counts, 1)
        centres = np.sort(np.where(counts > 0, means, centres), axis=1)
    return _assign(flat, centres).reshape(x.shape)


def _count_at_most(ordered: np.ndarray, values: np.ndarray) -> np.ndarray:
    """Per-row ``searchsorted(side='right')``: a binary search over all rows at once."""
    rows = np.arange(ordered.shape[0])[:, None]
    lo = np.zeros(values.shape, dtype=np.intp)
    hi = np.full(values.shape, ordered.shape[1], dtype=np.intp)
    while np.any(lo < hi):
        mid = (lo + hi) // 2
        go_right = ordered[rows, np.minimum(mid, ordered.shape[1] - 1)] <= values
        active = lo < hi
        lo = np.where(active & go_right, mid + 1, lo)
        hi = np.where(active & ~go_right, mid, hi)
    return lo


def _assign(flat: np.ndarray, centres: np.ndarray) -> np.ndarray:
    """Nearest sorted centre via midpoints; ties go to the darker cluster."""
    mids = (centres[:, :-1] + centres[:, 1:]) / 2.0
    return (flat > mids[:, 0:1]).astype(np.intp) + (flat > mids[:, 1:2])


def roi_mask(labels: np.ndarray, roi: str) -> np.ndarray | None:
    """Pixels kept by the ROI option, or None when everything is kept."""
    if roi == "brightest":
        return labels == N_CLUSTERS - 1
    if roi == "foreground":
        return labels >= 1
    return None


def ll_dct(x: np.ndarray, wavelet: str) -> np.ndarray:
    """Orthonormal DCT-II of the DWT LL band over the last two axes."""
    ll, _details = pywt.dwt2(x, wavelet, axes=(-2, -1))
    return scipy.fft.dctn(ll, type=2, norm="ortho", axes=(-2, -1))


# --------------------------------------------------------------------------- public API


def dwtdct_features(slices: np.ndarray, config: DwtDctConfig = DwtDctConfig()) -> np.ndarray:
    """(B, H, W) slices -> (B, n_coefficients) float32 features, vectorised over the batch."""
    arr = _check_stack(slices)
    out = np.empty((arr.shape[0], config.n_coefficients), dtype=np.float32)
    for start in range(0, arr.shape[0], _CHUNK):
        out[start : start + _CHUNK] = _features_chunk(arr[start : start + _CHUNK], config)
    return out


def _features_chunk(x: np.ndarray, config: DwtDctConfig) -> np.ndarray:
    """The whole pipeline on one chunk of slices."""
    x = resize_stack(rescale_unit(x), config.image_size)
    if config.roi != "none":
        mask = roi_mask(kmeans_labels(x, config.kmeans_iters), config.roi)
        if mask is not None:
            x = np.where(mask, x, 0.0)
    coeffs = ll_dct(x, config.wavelet)
    r, c = zigzag_indices(coeffs.shape[-2], coeffs.shape[-1], config.n_coefficients)
    return coeffs[:, r, c]


def dwtdct_features_loop(
    slices: np.ndarray, config: DwtDctConfig = DwtDctConfig()
) -> np.ndarray:
    """Reference: the same features one slice at a time, with independent per-slice code."""
    arr = _check_stack(slices)
    out = np.empty((arr.shape[0], config.n_coefficients), dtype=np.float32)
    for i, img in enumerate(arr):
        out[i] = _features_one(img, config)
    return out


def _features_one(img: np.ndarray, config: DwtDctConfig) -> np.ndarray:
    """One (H, W) slice through the pipeline, written without batching tricks."""
    lo, hi = img.min(), img.max()
    img = (img - lo) / (hi - lo) if hi > lo else np.zeros_like(img)
    if img.shape != (config.image_size, config.image_size):
        factors = (config.image_size / img.shape[0], config.image_size / img.shape[1])
        img = scipy.ndimage.zoom(img, factors, order=1, grid_mode=False, mode="nearest")
    if config.roi != "none":
        labels = _kmeans_one(img.ravel(), config.kmeans_iters).reshape(img.shape)
        keep = labels == 2 if config.roi == "brightest" else labels >= 1
        img = np.where(keep, img, 0.0)
    ll, _details = pywt.dwt2(img, config.wavelet)
    coeffs = scipy.fft.dctn(ll, type=2, norm="ortho")
    r, c = zigzag_indices(coeffs.shape[0], coeffs.shape[1], config.n_coefficients)
    return coeffs[r, c]


def _kmeans_one(values: np.ndarray, iters: int) -> np.ndarray:
    """Plain Lloyd's k-means (k=3) on one slice, nearest centre by argmin distance."""
    centres = np.quantile(values, [1 / 6, 1 / 2, 5 / 6])
    for _ in range(iters):
        labels = np.argmin(np.abs(values[:, None] - centres[None, :]), axis=1)
        new = centres.copy()
        for k in range(N_CLUSTERS):
            members = values[labels == k]
            if members.size:
                new[k] = members.mean()
        centres = np.sort(new)
    return np.argmin(np.abs(values[:, None] - centres[None, :]), axis=1)
