"""Imaging model: tissue maps + tumour state -> MR-like volumes and BraTS labels.

Each patient has their own head (size, shape, deformation, ventricles, sulci and pose;
see :mod:`harness.synth.individual`), each scan gets
a smooth bias field, a scanner-site intensity scale and contrast, a per-patient intensity
idiosyncrasy and Rician noise. These fingerprints are what a row-level split can
memorise, whatever the label. The tumour shows through cell density ``c``: above ~0.16
it is bright on T2/FLAIR, above ~0.8 it enhances on T1 post-contrast (grade III+), and a
necrotic core (grade IV) is dark on T1post.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from harness.synth.anatomy import Anatomy
from harness.synth.cohort import PatientParams
from harness.synth.growth import ENHANCING_THRESHOLD, VISIBLE_THRESHOLD
from harness.synth.individual import individual_tissue, patient_coordinates, warp
from harness.synth.tumour import Scan

#: Channel order; ``PatientParams.modality_gain`` is indexed by it.
CHANNELS: tuple[str, ...] = ("T1", "T1post", "T2", "FLAIR", "ADC", "CBV", "CBF")
#: Structural channels get a bias field and the site's contrast; maps do not.
STRUCTURAL: frozenset[str] = frozenset({"T1", "T1post", "T2", "FLAIR"})

# Tissue values per channel: (white matter, grey matter, CSF, tumour, necrosis,
# cavity, background weight of the template T1). Arbitrary units except ADC
# (10^-3 mm^2/s) and CBV/CBF (relative to grey matter).
_TISSUE: dict[str, tuple[float, float, float, float, float, float, float]] = {
    "T1": (0.80, 0.55, 0.15, 0.45, 0.25, 0.15, 0.6),
    "T1post": (0.80, 0.57, 0.15, 0.45, 0.20, 0.15, 0.6),
    "T2": (0.35, 0.50, 1.00, 0.85, 0.95, 1.00, 0.4),
    "FLAIR": (0.45, 0.60, 0.08, 0.95, 0.50, 0.08, 0.3),
    "ADC": (0.75, 0.85, 3.00, 1.30, 2.20, 3.00, 0.0),
    "CBV": (0.45, 1.00, 0.05, 0.40, 0.10, 0.05, 0.0),
    "CBF": (0.40, 1.00, 0.05, 0.40, 0.10, 0.05, 0.0),
}
#: Extra T1post signal of fully enhancing tumour.
ENHANCEMENT = 0.65


@dataclass
class PatientSpace:
    """The patient's own head at one visit: tissue maps on the scan grid (shared anatomy
    across visits, see :mod:`harness.synth.individual`)."""

    coords: np.ndarray | None  # (3, *shape) template voxel shown by each scan voxel
    gm: np.ndarray
    wm: np.ndarray
    csf: np.ndarray
    t1: np.ndarray
    brain: np.ndarray
    bias: np.ndarray  # float32 multiplicative field, mean ~1

    def warp(self, arr: np.ndarray, order: int = 1) -> np.ndarray:
        """Move a template-space array (e.g. the simulated tumour) into this patient's scan."""
        if self.coords is None:
            raise ValueError("this patient space was resampled (thin slices): warp before resampling")
        return warp(arr, self.coords, order=order)


def patient_space(anatomy: Anatomy, p: PatientParams, visit: int = 0) -> PatientSpace:
    """The patient's head at ``visit``: individual tissue maps, deformed and posed.

    The tissue changes (ventricles, sulci) are made on the template grid, then the
    template is carried into the scan by the patient's deformation, head scaling and
    pose; the tumour, simulated on the template, is carried by the same mapping.
    """
    coords = patient_coordinates(anatomy, p.rotation_deg, p.translation_mm, p.anatomy, visit)
    if p.anatomy is None:
        gm, wm, csf = anatomy.gm, anatomy.wm, anatomy.csf
    else:
        gm, wm, csf = individual_tissue(anatomy, p.anatomy)
    gm, wm, csf, t1 = (warp(a, coords) for a in (gm, wm, csf, anatomy.t1))
    brain = warp(anatomy.brain.astype(np.float32), coords) >= 0.5
    return PatientSpace(coords, gm, wm, csf, t1, brain, _bias_field(anatomy.shape, p))


def _bias_field(shape: tuple[int, ...], p: PatientParams) -> np.ndarray:
    """Smooth multiplicative field: exp of a random quadratic polynomial, about +-20%."""
    axes = [np.linspace(-1.0, 1.0, n, dtype=np.float32) for n in shape]
    x, y, z = np.meshgrid(*axes, indexing="ij", sparse=True)
    terms = (x, y, z, x * x - 1 / 3, y * y - 1 / 3, z * z - 1 / 3, x * y, y * z, x * z)
    log_b = sum(np.float32(c) * t for c, t in zip(p.bias_coeffs, terms))
    return np.exp(np.float32(p.site.bias * 0.5) * log_b).astype(np.float32)


def _logistic(x: np.ndarray, centre: float, width: float) -> np.ndarray:
    return (1.0 / (1.0 + np.exp(-(x - np.float32(centre)) / np.float32(width)))).astype(np.float32)


@dataclass
class TumourView:
    """One scan's tumour fields in patient space, and its BraTS labels (1 NCR, 2 ED, 3 ET)."""

    visible: np.ndarray  # float32 [0, 1], T2/FLAIR hyperintensity
    enhancing: np.ndarray  # float32 [0, 1], T1post enhancement (0 for grade II)
    density: np.ndarray
    necrosis: np.ndarray  # bool
    cavity: np.ndarray  # bool
    labels: np.ndarray  # uint8


def tumour_view(space: PatientSpace, scan: Scan, enhances: bool) -> TumourView:
    """Warp the tumour state into patient space and derive soft maps and hard labels."""
    c = np.clip(space.warp(scan.density), 0, 1) * space.brain
    nec = (space.warp(scan.necrosis.astype(np.float32)) >= 0.5) & space.brain
    cav = (space.warp(scan.cavity.astype(np.float32)) >= 0.5) & space.brain
    oed = None if scan.oedema is None else np.clip(space.warp(scan.oedema), 0, 1) * space.brain
    vis_field = c if oed is None else np.maximum(c, oed)
    visible = _logistic(vis_field, VISIBLE_THRESHOLD, 0.03) * ~cav
    enh = _logistic(c, ENHANCING_THRESHOLD, 0.04) * ~nec if enhances else np.zeros_like(c)
    core = (c >= ENHANCING_THRESHOLD) & space.brain
    labels = np.zeros(c.shape, dtype=np.uint8)
    labels[(vis_field >= VISIBLE_THRESHOLD) & ~cav & space.brain] = 2
    if enhances:
        labels[core] = 3
        labels[nec] = 1
    else:
        labels[core | nec] = 1  # non-enhancing tumour core
    return TumourView(visible, enh.astype(np.float32), c, nec, cav, labels)


def class_signal(tv: TumourView) -> np.ndarray:
    """Known-truth cohorts: an enhancement-like map of the tumour core, whatever the regime.

    The threshold is relative to the tumour's own peak density (capped at the usual
    enhancing threshold), so every tumour, diffuse or compact, shows it.
    """
    peak = float(tv.density.max()) if tv.density.size else 0.0
    centre = min(ENHANCING_THRESHOLD, VISIBLE_THRESHOLD + 0.6 * max(peak - VISIBLE_THRESHOLD, 0.0))
    return (_logistic(tv.density, centre, 0.04) * ~tv.necrosis).astype(np.float32)


def render(space: PatientSpace, tv: TumourView, p: PatientParams, channel: str, rho: float,
           noise_seed: tuple[int, ...], extra: np.ndarray | None = None) -> np.ndarray:
    """One channel as float32 in scanner units (structural) or physical units (maps).

    ``extra`` (known-truth cohorts only) is added to the tissue signal before the scanner
    effects: the class signal of the one channel that carries it.
    """
    wm_v, gm_v, csf_v, tum_v, nec_v, cav_v, bg_w = _TISSUE[channel]
    shift_gm, shift_wm = p.contrast_shift
    base = space.wm * np.float32(wm_v + shift_wm) + space.gm * np.float32(gm_v + shift_gm) + space.csf * np.float32(csf_v)
    v = tv.visible
    img = base + (np.float32(tum_v) - base) * v
    if channel == "ADC":
        # Dense tumour restricts diffusion; infiltrated oedema raises ADC.
        img = img - np.float32(0.55) * tv.density * v
    if channel in ("CBV", "CBF"):
        angio = (0.5 + 0.8 * rho) * (1.2 if channel == "CBF" else 1.0)
        img = img + np.float32(angio) * tv.enhancing
    if channel == "T1post":
        img = img + np.float32(ENHANCEMENT) * tv.enhancing
    if extra is not None:
        img = img + extra
    img = np.where(tv.necrosis, np.float32(nec_v), img)
    img = np.where(tv.cavity, np.float32(cav_v), img)
    img = img * space.brain + np.float32(bg_w) * space.t1 * ~space.brain
    gain = np.float32(p.modality_gain[CHANNELS.index(channel)])
    rng = np.random.default_rng(np.random.SeedSequence([p.rng_state, *noise_seed, CHANNELS.index(channel)]))
    if channel in STRUCTURAL:
        img = np.power(np.maximum(img * space.bias, 0), np.float32(p.site.gamma)) * np.float32(p.site.scale) * gain
        sigma = np.float32(p.site.noise * p.noise_factor * p.site.scale)
    else:
        img = img * gain
        sigma = np.float32(0.01 * p.noise_factor * (3.0 if channel == "ADC" else 1.0))
    n1 = rng.standard_normal(img.shape, dtype=np.float32) * sigma
    n2 = rng.standard_normal(img.shape, dtype=np.float32) * sigma
    return np.sqrt((img + n1) ** 2 + n2**2).astype(np.float32)  # Rician magnitude


def wm_reference(space: PatientSpace, img: np.ndarray, labels: np.ndarray) -> float:
    """Mean value in normal-appearing white matter (for normalised perfusion maps)."""
    sel = (space.wm >= 0.9) & (labels == 0)
    return float(img[sel].mean()) if sel.any() else float(img.mean())


def _z_interp(arr: np.ndarray, n: int) -> np.ndarray:
    """Linear interpolation along the last (axial) axis to ``n`` evenly spaced samples
    spanning the same extent (first and last slice positions unchanged)."""
    nz = arr.shape[2]
    pos = np.linspace(0.0, nz - 1.0, n)
    i0 = np.clip(np.floor(pos).astype(int), 0, max(nz - 2, 0))
    i1 = np.minimum(i0 + 1, nz - 1)
    w = (pos - i0).astype(np.float32)
    a = arr.astype(np.float32, copy=False)
    return (a[:, :, i0] * (np.float32(1.0) - w) + a[:, :, i1] * w).astype(np.float32)


def thin_slices(space: PatientSpace, tv: TumourView, extra: np.ndarray | None, affine: np.ndarray,
                n_slices: int) -> tuple[PatientSpace, TumourView, np.ndarray | None, np.ndarray]:
    """The same anatomy and tumour resampled to ``n_slices`` axial slices over the same extent.

    Used for full-size cohorts (``slices_per_series``): tissue fractions, bias field and
    tumour maps are interpolated linearly along z (masks re-thresholded at 0.5, labels by
    nearest slice) *before* rendering, so every thin slice gets its own Rician noise
    rather than being a blend of two noisy slices. Returns the new space, view, extra
    signal and the affine with the new slice spacing.
    """
    nz = space.wm.shape[2]
    if n_slices < 2 or nz < 2:
        raise ValueError(f"need at least 2 slices on both grids, got {n_slices} from {nz}")

    def f(a: np.ndarray) -> np.ndarray:
        return _z_interp(a, n_slices)

    def m(a: np.ndarray) -> np.ndarray:
        return f(a) >= 0.5

    nearest = np.rint(np.linspace(0.0, nz - 1.0, n_slices)).astype(int)
    new_space = PatientSpace(None, f(space.gm), f(space.wm), f(space.csf),
                             f(space.t1), m(space.brain), f(space.bias))
    new_tv = TumourView(f(tv.visible), f(tv.enhancing), f(tv.density), m(tv.necrosis),
                        m(tv.cavity), tv.labels[:, :, nearest])
    new_affine = np.array(affine, dtype=float)
    new_affine[2, 2] = affine[2, 2] * (nz - 1) / (n_slices - 1)
    return new_space, new_tv, (None if extra is None else f(extra)), new_affine
