"""One patient's tumour history: seed, growth to diagnosis, treatment, regrowth.

Turns a patient's growth parameters into cell-density maps on the working grid at each
scan, plus the derived masks (necrosis, resection cavity) and the simulated interval to
progression. No imaging here: that is :mod:`harness.synth.imaging`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from harness.synth.anatomy import Anatomy
from harness.synth.growth import (
    ENHANCING_THRESHOLD,
    VISIBLE_THRESHOLD,
    FisherKolmogorov,
    StopRule,
    box_around,
    diffusion_map,
    initial_density,
)

#: Half-width of the simulation box around the seed, in mm.
BOX_HALF_WIDTH_MM = 60.0
#: Seeds sit in white matter at least this deep inside the brain, in mm.
SEED_DEPTH_MM = 20.0
#: Longest simulated growth phase, in months (a guard, rarely reached).
MAX_MONTHS = 120.0


@dataclass
class GrowthSpec:
    """What the simulation needs from a patient's parameters."""

    rho: float  # proliferation rate, 1/month
    d_wm: float  # diffusivity in white matter, mm^2/month
    d_gm: float  # diffusivity in grey matter, mm^2/month
    seed_u: float  # uniform draw in [0, 1) choosing the seed among white-matter voxels
    diagnosis_ml: float  # visible (c >= 0.16) volume at the (first) scan
    necrotic: bool  # whether the core necroses (grade IV regime)
    # Progression cohort only: treatment and the progression rule.
    resection_threshold: float = 0.5  # cells above this density are resected
    surviving_fraction: float = 0.4  # fraction of the remaining cells surviving therapy
    progression_ml: float = 2.0  # enhancing volume (ml) that defines progression


@dataclass
class Scan:
    """Tumour state at one scan, on the full working grid."""

    density: np.ndarray  # float32 cell density c
    necrosis: np.ndarray  # bool
    cavity: np.ndarray  # bool, resection cavity (fluid) not refilled by tumour
    oedema: np.ndarray | None  # float32 in [0, 1]: treatment-related hyperintensity left
    visible_ml: float
    enhancing_ml: float


@dataclass
class TumourHistory:
    """The scans of one patient and the simulated timings (months)."""

    seed_idx: tuple[int, int, int]
    seed_mm: tuple[float, float, float]
    scans: list[Scan]
    age_months: float  # time from seeding to the first scan
    interval_months: float | None  # first (post-treatment) scan to progression, btp only


_SEED_CANDIDATES: dict[tuple, np.ndarray] = {}


def seed_candidates(anatomy: Anatomy) -> np.ndarray:
    """Deep white-matter voxel indices (cached per grid): where tumours are seeded."""
    key = (anatomy.spacing, anatomy.shape)
    if key not in _SEED_CANDIDATES:
        depth = ndimage.distance_transform_edt(anatomy.brain) * anatomy.spacing
        ok = (anatomy.wm >= 0.8) & (depth >= SEED_DEPTH_MM)
        if not ok.any():
            ok = anatomy.wm >= anatomy.wm.max() * 0.8
        _SEED_CANDIDATES[key] = np.argwhere(ok)
    return _SEED_CANDIDATES[key]


def choose_seed(anatomy: Anatomy, u: float) -> tuple[int, int, int]:
    """Pick a deep white-matter voxel, deterministically from ``u``."""
    cand = seed_candidates(anatomy)
    i = min(int(u * len(cand)), len(cand) - 1)
    return tuple(int(v) for v in cand[i])  # type: ignore[return-value]


def _necrosis(density: np.ndarray, spacing: float) -> np.ndarray:
    """Inner part of the enhancing core: voxels deep inside the c >= 0.8 region."""
    core = density >= ENHANCING_THRESHOLD
    if not core.any():
        return core
    depth = ndimage.distance_transform_edt(core) * spacing
    deepest = float(depth.max())
    return core & (depth > max(spacing * 1.01, 0.5 * deepest))


def _scan(c_box: np.ndarray, box_slices, shape, spacing: float, necrotic: bool,
          cavity: np.ndarray | None, oedema: np.ndarray | None = None) -> Scan:
    full = np.zeros(shape, dtype=np.float32)
    full[box_slices] = c_box
    oed = None
    if oedema is not None:
        oed = np.zeros(shape, dtype=np.float32)
        oed[box_slices] = oedema
    voxel_ml = spacing**3 / 1000.0
    nec = _necrosis(full, spacing) if necrotic else np.zeros(shape, dtype=bool)
    cav = np.zeros(shape, dtype=bool)
    if cavity is not None:
        cav[box_slices] = cavity & (c_box < VISIBLE_THRESHOLD)
    visible = full >= VISIBLE_THRESHOLD
    if oed is not None:
        visible |= (oed >= VISIBLE_THRESHOLD) & ~cav
    return Scan(
        density=full,
        necrosis=nec,
        cavity=cav,
        oedema=oed,
        visible_ml=float(np.count_nonzero(visible)) * voxel_ml,
        enhancing_ml=float(np.count_nonzero(full >= ENHANCING_THRESHOLD)) * voxel_ml,
    )


def simulate(anatomy: Anatomy, spec: GrowthSpec, progression: bool = False) -> TumourHistory:
    """Grow the tumour to its diagnosis size; for ``progression``, treat and regrow.

    Without ``progression`` there is one scan (at diagnosis). With it there are two: the
    post-treatment baseline (resection of dense tumour, then a surviving fraction of the
    rest) and the scan at progression, when the enhancing volume reaches
    ``progression_ml``; the interval between them is the simulated time to progression.
    """
    h = anatomy.spacing
    seed = choose_seed(anatomy, spec.seed_u)
    d = diffusion_map(anatomy.gm, anatomy.wm, anatomy.brain, spec.d_wm, spec.d_gm)
    box = box_around(seed, int(round(BOX_HALF_WIDTH_MM / h)), anatomy.shape)
    solver = FisherKolmogorov(d[box.slices], spec.rho, h)
    shape_box = tuple(b - a for a, b in zip(box.lo, box.hi))
    centre = tuple(s - lo for s, lo in zip(seed, box.lo))
    c = initial_density(shape_box, centre, h, radius_mm=4.0, peak=1.0)  # type: ignore[arg-type]
    c *= solver.inside
    voxel_ml = h**3 / 1000.0
    age = solver.run_until(c, StopRule(VISIBLE_THRESHOLD, spec.diagnosis_ml, voxel_ml), MAX_MONTHS)
    seed_mm = tuple(float(v) for v in (anatomy.affine @ np.array([*seed, 1.0]))[:3])

    if not progression:
        scan = _scan(c, box.slices, anatomy.shape, h, spec.necrotic, None)
        return TumourHistory(seed, seed_mm, [scan], age, None)  # type: ignore[arg-type]

    cavity = c >= spec.resection_threshold
    # Oedema and treatment effects outlast the cells: the baseline FLAIR stays bright.
    oedema = np.where(cavity, 0.0, 0.8 * c).astype(np.float32)
    c[cavity] = 0.0
    c *= spec.surviving_fraction
    baseline = _scan(c, box.slices, anatomy.shape, h, spec.necrotic, cavity, oedema)
    interval = solver.run_until(
        c, StopRule(ENHANCING_THRESHOLD, spec.progression_ml, voxel_ml), MAX_MONTHS, 0.1
    )
    oedema *= np.float32(0.5)  # resolving treatment effects
    at_progression = _scan(c, box.slices, anatomy.shape, h, spec.necrotic, cavity, oedema)
    return TumourHistory(seed, seed_mm, [baseline, at_progression], age, interval)  # type: ignore[arg-type]
