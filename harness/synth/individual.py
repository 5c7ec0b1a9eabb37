"""Individual anatomy: each synthetic patient's own head, made from the shared template.

Why: real brain MRI names a person among 215 at 99.5-100% rank-one across scans a year
apart (Takao et al. 2015). Patients that all share the MNI template apart from a small
rigid jitter are far less recognisable, so a leaky split of the synthetic cohort would
understate how much a real one leaks. Each patient therefore gets the kinds of variation
real heads show, all smooth and anatomical (no per-patient watermark):

* head size and shape: a scaling of the whole head about the grid centre (overall size
  and per-axis shape, ~4% and ~3% SD, i.e. an intracranial volume SD of ~12%) and a
  small shear;
* a smooth nonlinear deformation of the template at two scales (B-spline knots 32 mm and
  12 mm apart, ~2.5 mm and ~1 mm RMS per axis): where gyri, lobes and deep nuclei sit;
* ventricle size: the template's ventricles grown or shrunk by a radial offset (tissue
  replaced by CSF, or CSF by white matter), as ventricle volume varies several-fold
  between adults;
* the sulcal pattern: sulcal CSF widened in the cortical ribbon where a patient-specific
  smooth random field is high, scaled by a per-patient atrophy level;
* pose: the patient's rigid head position (drawn in :mod:`harness.synth.cohort`), plus a
  small repositioning (~1 degree, ~1 mm) for every later visit of a longitudinal patient.

The variation is drawn from its own seed stream (seed, flavour, patient index), never
from the labels, so ``--signal growth`` and ``--signal none`` cohorts of the same seed
have the same heads, and the tumour is simulated on the template exactly as before and
only carried into the patient's head by the same deformation as the tissue.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np
from scipy import ndimage
from scipy.spatial.transform import Rotation

from harness.synth.anatomy import Anatomy

#: Head scaling SDs (log scale): overall size and per-axis shape; the clip keeps the
#: head inside the grid's margin.
SIZE_SD = 0.04
SHAPE_SD = 0.035
SCALE_CLIP = (0.9, 1.1)
SHEAR_SD = 0.02
#: Nonlinear deformation: (B-spline knot spacing mm, RMS displacement mm per axis).
WARP_SCALES: tuple[tuple[float, float], ...] = ((32.0, 3.5), (12.0, 1.2))
#: Ventricle offset (mm): mean and SD, clipped.
VENTRICLE_MEAN_MM = 0.8
VENTRICLE_SD_MM = 1.2
VENTRICLE_CLIP_MM = (-1.5, 4.5)
#: Left-right asymmetry of the ventricles (mm, SD of the right-minus-left offset).
VENTRICLE_ASYMMETRY_SD_MM = 0.8
#: Voxels at least this deep in the brain with CSF >= 0.5 are ventricle (template).
VENTRICLE_DEPTH_MM = 12.0
#: Sulcal CSF: the pattern field's scales (knot spacing mm, weight): single sulci and
#: regional atrophy (e.g. frontal more than parietal); ribbon depth scale (mm); level range.
SULCAL_SCALES: tuple[tuple[float, float], ...] = ((8.0, 0.6), (24.0, 0.8))
SULCAL_DEPTH_MM = 6.0
SULCAL_LEVEL = (0.1, 0.6)
#: Repositioning between visits: rotation SD (degrees) and translation SD (mm).
VISIT_ROTATION_SD = 1.0
VISIT_TRANSLATION_SD = 1.0
#: Most visits a patient may have (repositionings drawn up front).
MAX_VISITS = 4


@dataclass(frozen=True)
class AnatomyParams:
    """One patient's anatomical variation (everything but the tumour and the scanner)."""

    scale: tuple[float, float, float]  # per-axis head scaling (x: left-right, y: A-P, z: S-I)
    shear: tuple[float, float, float]  # xy, xz, yz shear of the head
    ventricle_mm: float  # radial growth (+) or shrinkage (-) of the ventricles
    ventricle_asymmetry_mm: float  # right minus left ventricle offset
    sulcal_level: float  # how much sulcal CSF the pattern field adds, 0..1
    field_seed: int  # seed of the deformation and sulcal pattern fields
    visit_rotation_deg: tuple[tuple[float, float, float], ...]  # per later visit
    visit_translation_mm: tuple[tuple[float, float, float], ...]


def draw_anatomy(rng: np.random.Generator) -> AnatomyParams:
    """Draw one patient's variation from its own generator."""
    size = float(rng.normal(0.0, SIZE_SD))
    scale = np.clip(np.exp(size + rng.normal(0.0, SHAPE_SD, 3)), *SCALE_CLIP)
    shear = rng.normal(0.0, SHEAR_SD, 3)
    vent = float(np.clip(rng.normal(VENTRICLE_MEAN_MM, VENTRICLE_SD_MM), *VENTRICLE_CLIP_MM))
    asym = float(rng.normal(0.0, VENTRICLE_ASYMMETRY_SD_MM))
    level = float(rng.uniform(*SULCAL_LEVEL))
    field_seed = int(rng.integers(2**63 - 1))
    rot = rng.normal(0.0, VISIT_ROTATION_SD, (MAX_VISITS - 1, 3))
    trans = rng.normal(0.0, VISIT_TRANSLATION_SD, (MAX_VISITS - 1, 3))
    return AnatomyParams(
        scale=tuple(float(v) for v in scale),  # type: ignore[arg-type]
        shear=tuple(float(v) for v in shear),  # type: ignore[arg-type]
        ventricle_mm=vent,
        ventricle_asymmetry_mm=asym,
        sulcal_level=level,
        field_seed=field_seed,
        visit_rotation_deg=tuple(tuple(float(v) for v in r) for r in rot),  # type: ignore[misc]
        visit_translation_mm=tuple(tuple(float(v) for v in t) for t in trans),  # type: ignore[misc]
    )


# --------------------------------------------------------------------------- smooth fields


def _cubic_bspline(t: np.ndarray) -> np.ndarray:
    a = np.abs(t)
    return np.where(a < 1, 2 / 3 - a**2 + a**3 / 2, np.where(a < 2, (2 - a) ** 3 / 6, 0.0))


@lru_cache(maxsize=64)
def _bspline_basis(n: int, knot_vox: float) -> np.ndarray:
    """(n, n_knots) cubic B-spline basis on one axis, rows scaled to unit norm.

    With i.i.d. standard-normal knot coefficients the field then has unit variance at
    every voxel; the unit-norm rows make that exact despite the knots' phase.
    """
    x = np.arange(n, dtype=np.float64)
    knots = np.arange(-2.0 * knot_vox, n - 1 + 2.0 * knot_vox + 1e-9, knot_vox)
    b = _cubic_bspline((x[:, None] - knots[None, :]) / knot_vox)
    b /= np.sqrt((b**2).sum(axis=1, keepdims=True))
    out = b.astype(np.float32)
    out.setflags(write=False)
    return out


def smooth_field(shape: tuple[int, ...], knot_vox: float, rng: np.random.Generator, n: int = 1) -> np.ndarray:
    """``n`` smooth unit-variance random fields on ``shape`` ((n, *shape) float32).

    A cubic B-spline with i.i.d. normal coefficients on knots ``knot_vox`` voxels apart,
    evaluated separably (three small matrix products, no 3-D interpolation).
    """
    knot_vox = max(float(knot_vox), 1.0)
    bx, by, bz = (_bspline_basis(int(s), knot_vox) for s in shape)
    coef = rng.standard_normal((n, bx.shape[1], by.shape[1], bz.shape[1]), dtype=np.float32)
    out = np.einsum("ia,nabc->nibc", bx, coef, optimize=True)
    out = np.einsum("jb,nibc->nijc", by, out, optimize=True)
    return np.einsum("kc,nijc->nijk", bz, out, optimize=True).astype(np.float32)


# --------------------------------------------------------------------------- template maps


@dataclass(frozen=True)
class TemplateMaps:
    """Maps of the template the variations need (cached per grid)."""

    ventricle_sd: np.ndarray  # signed distance to the ventricle surface, mm (negative inside)
    periventricular: np.ndarray  # bool: where the ventricle may grow or shrink
    ribbon: np.ndarray  # float32 weight of the cortical ribbon, exp(-depth / SULCAL_DEPTH_MM)
    side: np.ndarray  # float32 in the periventricular zone: -1 left hemisphere .. +1 right


_TEMPLATE_MAPS: dict[tuple, TemplateMaps] = {}


def template_maps(anatomy: Anatomy) -> TemplateMaps:
    """The maps of :class:`TemplateMaps` for this grid (computed once per process)."""
    key = (anatomy.spacing, anatomy.shape)
    if key not in _TEMPLATE_MAPS:
        _TEMPLATE_MAPS[key] = _template_maps(anatomy)
    return _TEMPLATE_MAPS[key]


def _template_maps(anatomy: Anatomy) -> TemplateMaps:
    h = anatomy.spacing
    depth = ndimage.distance_transform_edt(anatomy.brain).astype(np.float32) * np.float32(h)
    vent = (anatomy.csf >= 0.5) & (depth >= VENTRICLE_DEPTH_MM)
    if vent.any():
        sd = (ndimage.distance_transform_edt(~vent) - ndimage.distance_transform_edt(vent)).astype(np.float32)
        sd *= np.float32(h)
    else:  # a grid too coarse to show ventricles: nothing to grow
        sd = np.full(anatomy.shape, np.inf, dtype=np.float32)
    # The ventricle may only grow into deep tissue, never out to the cortex.
    peri = (sd <= VENTRICLE_CLIP_MM[1] + 2.0 * h) & (depth >= 0.5 * VENTRICLE_DEPTH_MM)
    ribbon = np.where(anatomy.brain, np.exp(-depth / np.float32(SULCAL_DEPTH_MM)), 0.0).astype(np.float32)
    x_mm = anatomy.affine[0, 0] * np.arange(anatomy.shape[0]) + anatomy.affine[0, 3]  # RAS: + is right
    side = np.broadcast_to(np.tanh(x_mm / 4.0).astype(np.float32)[:, None, None], anatomy.shape)[peri]
    for arr in (sd, peri, ribbon, side):
        arr.setflags(write=False)
    return TemplateMaps(sd, peri, ribbon, side)


def _logistic(x: np.ndarray, width: float) -> np.ndarray:
    return (1.0 / (1.0 + np.exp(-x / np.float32(width)))).astype(np.float32)


def individual_tissue(anatomy: Anatomy, a: AnatomyParams) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The patient's (gm, wm, csf) fractions in template space: ventricles and sulci changed.

    Fractions still sum to 1 inside the brain. The brain outline is unchanged here (head
    size and shape come from the deformation).
    """
    maps = template_maps(anatomy)
    gm, wm, csf = anatomy.gm.copy(), anatomy.wm.copy(), anatomy.csf.copy()
    h = anatomy.spacing
    if np.isfinite(maps.ventricle_sd).any():
        zone = maps.periventricular
        offset = np.clip(np.float32(a.ventricle_mm) + np.float32(0.5 * a.ventricle_asymmetry_mm) * maps.side,
                         *VENTRICLE_CLIP_MM).astype(np.float32)
        v = _logistic(offset - maps.ventricle_sd[zone], 0.35 * h)
        old = csf[zone]
        new = np.where(offset > 0, np.maximum(old, v), np.minimum(old, v))
        tissue_old = gm[zone] + wm[zone]
        tissue_new = 1.0 - new
        ratio = np.where(tissue_old > 1e-3, tissue_new / np.maximum(tissue_old, 1e-3), 0.0)
        gm[zone] = gm[zone] * ratio
        # CSF turned into tissue (shrinking ventricles) becomes periventricular white matter.
        wm[zone] = np.where(tissue_old > 1e-3, wm[zone] * ratio, tissue_new)
        csf[zone] = new
    rng = np.random.default_rng(np.random.SeedSequence([a.field_seed, 2]))
    pattern = sum(np.float32(w) * smooth_field(anatomy.shape, k / h, rng)[0] for k, w in SULCAL_SCALES)
    pattern /= np.float32(np.sqrt(sum(w * w for _, w in SULCAL_SCALES)))  # unit variance
    add = np.float32(a.sulcal_level) * _logistic(pattern - np.float32(0.3), 0.25) * maps.ribbon
    add *= gm / np.maximum(gm + wm, np.float32(1e-3))  # sulci open in grey matter, not deep white
    take = 1.0 - add
    gm *= take
    wm *= take
    csf = np.where(anatomy.brain, 1.0 - gm - wm, 0.0).astype(np.float32)
    return gm.astype(np.float32), wm.astype(np.float32), csf


# --------------------------------------------------------------------------- the mapping


def patient_coordinates(anatomy: Anatomy, rotation_deg, translation_mm, a: AnatomyParams | None,
                        visit: int = 0) -> np.ndarray:
    """(3, *shape) float32: the template voxel each voxel of the patient's scan shows.

    Forward (template -> scan): nonlinear deformation, then head scaling and shear about
    the grid centre, then the rigid pose; a later ``visit`` (>= 1) adds its small
    repositioning on top. This is the inverse, evaluated on the scan grid. The
    displacement field lives on the first visit's scan grid, so at visit 0 it needs no
    resampling and every visit of one patient shows exactly the same head.
    ``a=None`` is the template head with the rigid pose only.
    """
    shape = anatomy.shape
    h = np.float32(anatomy.spacing)
    ctr = (np.array(shape, dtype=np.float64) - 1.0) / 2.0
    rot0 = Rotation.from_euler("xyz", rotation_deg, degrees=True).as_matrix()
    t0 = np.asarray(translation_mm, dtype=np.float64) / h
    scale_inv = np.eye(3)
    if a is not None:
        sx, sy, sz = a.scale
        kxy, kxz, kyz = a.shear
        scale_inv = np.linalg.inv(np.array([[sx, kxy, kxz], [0.0, sy, kyz], [0.0, 0.0, sz]]))
    # Visit 0: template x = c + S^-1 R0^T (o0 - c - t0) + u(o0).
    lin0 = scale_inv @ rot0.T
    off0 = ctr - lin0 @ (ctr + t0)
    if a is None or visit == 0:
        coords = _affine_grid(shape, lin0, off0)
        if a is not None:
            coords += _displacement(anatomy, a)
        return coords
    # Later visit: o0 = Rv^T (o - c - t0 - tv) + c + t0, the same head repositioned.
    rot_v = Rotation.from_euler("xyz", a.visit_rotation_deg[visit - 1], degrees=True).as_matrix()
    t_v = np.asarray(a.visit_translation_mm[visit - 1], dtype=np.float64) / h
    b = ctr + t0 - rot_v.T @ (ctr + t0 + t_v)
    first_visit = _affine_grid(shape, rot_v.T, b)
    disp = _displacement(anatomy, a)
    coords = _affine_grid(shape, lin0 @ rot_v.T, lin0 @ b + off0)
    for r in range(3):
        coords[r] += ndimage.map_coordinates(disp[r], first_visit, order=1, mode="nearest", output=np.float32)
    return coords


def _affine_grid(shape: tuple[int, ...], lin: np.ndarray, off: np.ndarray) -> np.ndarray:
    """(3, *shape) float32 coordinates ``lin @ o + off`` of every voxel ``o``."""
    axes = [np.arange(n, dtype=np.float32) for n in shape]
    out = np.empty((3, *shape), dtype=np.float32)
    for r in range(3):
        out[r] = (lin[r, 0] * axes[0][:, None, None] + lin[r, 1] * axes[1][None, :, None]
                  + lin[r, 2] * axes[2][None, None, :] + np.float32(off[r]))
    return out


def _displacement(anatomy: Anatomy, a: AnatomyParams) -> np.ndarray:
    """The nonlinear part, in template voxels: sum of the smooth fields at each scale."""
    rng = np.random.default_rng(np.random.SeedSequence([a.field_seed, 1]))
    h = anatomy.spacing
    disp = np.zeros((3, *anatomy.shape), dtype=np.float32)
    for knots_mm, rms_mm in WARP_SCALES:
        disp += smooth_field(anatomy.shape, knots_mm / h, rng, n=3) * np.float32(rms_mm / h)
    return disp


def warp(arr: np.ndarray, coords: np.ndarray, order: int = 1) -> np.ndarray:
    """Sample a template-space array at the patient's coordinates (0 outside the grid)."""
    return ndimage.map_coordinates(arr.astype(np.float32, copy=False), coords, order=order,
                                   mode="constant", cval=0.0, output=np.float32)
