"""Per-patient parameters of a synthetic cohort, drawn from one seed without any imaging.

Every patient gets its own :class:`numpy.random.SeedSequence` child (keyed by flavour,
seed and patient index, so patient ``i`` does not depend on the cohort size). A few
cohort-level choices (exact grade proportions, which grades are left blank, which
survival times are censored) use a separate cohort stream. The ``signal`` switch only
changes labels, never images: with ``"growth"`` the label follows the simulated growth
regime; with ``"none"`` it is drawn independently of the tumour (a negative control).
"""

from __future__ import annotations

import datetime as _dt
from dataclasses import dataclass, field

import numpy as np

from harness.synth.individual import AnatomyParams, draw_anatomy

FLAVOURS: tuple[str, ...] = ("rembrandt", "btp", "brats20")
DEFAULT_PATIENTS: dict[str, int] = {"rembrandt": 40, "btp": 20, "brats20": 40}
SIGNALS: tuple[str, ...] = ("growth", "none")
#: Channels that may carry the class alone (``signal_modality``), and the flavours that allow it.
SIGNAL_MODALITIES: tuple[str, ...] = ("T1", "T1post", "T2", "FLAIR")
SIGNAL_MODALITY_FLAVOURS: tuple[str, ...] = ("rembrandt", "brats20")

#: Growth regimes: (rho range 1/month, white-matter D range mm^2/month) per WHO grade.
REGIMES: dict[str, tuple[tuple[float, float], tuple[float, float]]] = {
    "II": ((0.15, 0.35), (15.0, 35.0)),
    "III": ((0.6, 1.2), (6.0, 14.0)),
    "IV": ((1.3, 3.0), (4.0, 10.0)),
}
#: The progression cohort is all glioblastoma, with a wider proliferation range.
BTP_REGIME: tuple[tuple[float, float], tuple[float, float]] = ((1.0, 2.5), (5.0, 12.0))
#: Grade mix per flavour (REMBRANDT-like; BraTS 2020 is about 2/3 HGG).
GRADE_MIX: dict[str, dict[str, float]] = {
    "rembrandt": {"II": 0.30, "III": 0.25, "IV": 0.45},
    "btp": {"IV": 1.0},
    "brats20": {"II": 0.33, "III": 0.15, "IV": 0.52},
}
#: Scanner sites per flavour.
SITES: dict[str, tuple[str, ...]] = {
    "rembrandt": ("HF", "NCI", "UCSF", "MDA"),
    "btp": ("MCW-A", "MCW-B"),
    "brats20": ("CBICA", "TCIA01", "TCIA02", "TCIA08", "TMC"),
}
#: Interval marginal used by ``signal="none"`` (lognormal, months), fitted to "growth".
NONE_INTERVAL_LOG_MEAN = float(np.log(5.6))
NONE_INTERVAL_LOG_SD = 0.35
#: HGG survival model (days): median at a reference proliferation rate.
SURVIVAL_MEDIAN_DAYS = 420.0
SURVIVAL_RHO_REF = 1.5
SURVIVAL_RHO_EXPONENT = 0.9
SURVIVAL_LOG_SD = 0.35
#: Head pose SDs: rotation about x (left-right: nodding), y, z in degrees; translation mm.
POSE_ROTATION_SD_DEG: tuple[float, float, float] = (5.0, 3.0, 3.0)
POSE_TRANSLATION_SD_MM: tuple[float, float, float] = (4.0, 4.0, 4.0)
_FLAVOUR_CODE = {"rembrandt": 1, "btp": 2, "brats20": 3}


@dataclass(frozen=True)
class Site:
    """A scanner: global intensity scale, contrast (gamma), noise and bias strength."""

    name: str
    scale: float
    gamma: float
    noise: float
    bias: float


@dataclass
class PatientParams:
    """Everything random about one patient, drawn before any simulation."""

    index: int
    patient_id: str
    flavour: str
    signal: str
    site: Site
    regime_grade: str  # the grade the growth regime (and so the images) show
    label_grade: str  # the grade written as the label (== regime under "growth")
    rho: float
    d_wm: float
    d_gm: float
    seed_u: float
    diagnosis_ml: float
    resection_threshold: float
    surviving_fraction: float
    progression_ml: float
    rotation_deg: tuple[float, float, float]
    translation_mm: tuple[float, float, float]
    bias_coeffs: tuple[float, ...]
    modality_gain: tuple[float, ...]  # per-patient intensity idiosyncrasy, one per channel
    contrast_shift: tuple[float, float]  # per-patient grey/white contrast offsets
    noise_factor: float
    first_date: _dt.date
    none_interval_months: float  # the label interval under signal="none"
    age: float
    survival_noise: float  # standard normal draw, used by the survival model
    none_survival_days: int
    extent_of_resection: str
    disease_subtype: str  # ASTROCYTOMA / OLIGODENDROGLIOMA for II/III
    uid_entropy: str
    folder_ids: tuple[int, ...] = field(default_factory=tuple)  # 5-digit folder suffixes
    rng_state: int = 0  # seed for the image-noise stream
    #: Known-truth explainability cohorts: the one channel that shows the label (None: off).
    signal_modality: str | None = None
    #: The patient's own anatomy (head size and shape, deformation, ventricles, sulci,
    #: repositioning between visits); None: the bare template (tests, comparisons).
    anatomy: AnatomyParams | None = None


def patient_id(flavour: str, index: int) -> str:
    """The dataset's own patient ID for patient ``index`` (0-based)."""
    if flavour == "rembrandt":
        return f"HF{index + 1:04d}"
    if flavour == "btp":
        return f"PGBM-{index + 1:03d}"
    if flavour == "brats20":
        return f"BraTS20_Training_{index + 1:03d}"
    raise ValueError(f"unknown flavour {flavour!r}; expected one of {FLAVOURS}")


def make_sites(flavour: str, seed: int) -> list[Site]:
    """Scanner sites of a flavour; their effects are fixed by the seed."""
    rng = np.random.default_rng(np.random.SeedSequence([seed, _FLAVOUR_CODE[flavour], 7]))
    sites = []
    for name in SITES[flavour]:
        sites.append(
            Site(
                name=name,
                scale=float(rng.uniform(800.0, 3000.0)),
                gamma=float(rng.uniform(0.85, 1.15)),
                noise=float(rng.uniform(0.01, 0.035)),
                bias=float(rng.uniform(0.05, 0.2)),
            )
        )
    return sites


def _exact_mix(mix: dict[str, float], n: int, rng: np.random.Generator) -> list[str]:
    """``n`` grades in the given proportions (largest remainders), shuffled."""
    grades = list(mix)
    raw = np.array([mix[g] * n for g in grades])
    counts = np.floor(raw).astype(int)
    for i in np.argsort(-(raw - counts), kind="stable")[: n - counts.sum()]:
        counts[i] += 1
    out = [g for g, k in zip(grades, counts) for _ in range(k)]
    rng.shuffle(out)
    return out


def cohort_rng(flavour: str, seed: int) -> np.random.Generator:
    """The cohort-level stream (grade mix, blanks, censoring)."""
    return np.random.default_rng(np.random.SeedSequence([seed, _FLAVOUR_CODE[flavour], 1]))


def draw_parameters(flavour: str, n_patients: int, seed: int = 0, signal: str = "growth",
                    signal_modality: str | None = None) -> list[PatientParams]:
    """Draw all patients' parameters (cheap: no anatomy, no simulation).

    With ``signal_modality`` (opt-in, for explainability audits) the label is drawn
    independently of the growth regime, as under ``"none"``, and only that channel will
    show it (see :mod:`harness.synth.imaging`); without it nothing changes.
    """
    if flavour not in FLAVOURS:
        raise ValueError(f"unknown flavour {flavour!r}; expected one of {FLAVOURS}")
    if signal_modality is not None:
        if signal_modality not in SIGNAL_MODALITIES:
            raise ValueError(f"unknown signal_modality {signal_modality!r}; expected one of {SIGNAL_MODALITIES}")
        if flavour not in SIGNAL_MODALITY_FLAVOURS:
            raise ValueError(f"signal_modality needs a grading flavour {SIGNAL_MODALITY_FLAVOURS}, not {flavour!r}")
    if signal not in SIGNALS:
        raise ValueError(f"unknown signal {signal!r}; expected one of {SIGNALS}")
    if n_patients < 1:
        raise ValueError("n_patients must be >= 1")
    crng = cohort_rng(flavour, seed)
    regimes = _exact_mix(GRADE_MIX[flavour], n_patients, crng)
    # "none": labels are an independent shuffle of the same multiset (same proportions).
    shuffled = list(regimes)
    crng.shuffle(shuffled)
    labels = regimes if signal == "growth" and signal_modality is None else shuffled
    sites = make_sites(flavour, seed)
    root = np.random.SeedSequence([seed, _FLAVOUR_CODE[flavour], 2])
    # Anatomy has its own stream: adding it left every other draw as it was.
    anatomy_root = np.random.SeedSequence([seed, _FLAVOUR_CODE[flavour], 5])
    out = []
    for i in range(n_patients):
        ss = np.random.SeedSequence(root.entropy, spawn_key=(*root.spawn_key, i))
        rng = np.random.default_rng(ss)
        anatomy_rng = np.random.default_rng(
            np.random.SeedSequence(anatomy_root.entropy, spawn_key=(*anatomy_root.spawn_key, i)))
        regime = regimes[i]
        (r_lo, r_hi), (d_lo, d_hi) = BTP_REGIME if flavour == "btp" else REGIMES[regime]
        rho = float(rng.uniform(r_lo, r_hi))
        d_wm = float(rng.uniform(d_lo, d_hi))
        d_gm = d_wm / float(rng.uniform(4.0, 6.0))
        start = _dt.date(1989, 1, 1) if flavour == "btp" else _dt.date(1996, 1, 1)
        first = start + _dt.timedelta(days=int(rng.integers(0, 365 * 7)))
        out.append(
            PatientParams(
                index=i,
                patient_id=patient_id(flavour, i),
                flavour=flavour,
                signal=signal,
                site=sites[int(rng.integers(len(sites)))],
                regime_grade=regime,
                label_grade=labels[i],
                rho=rho,
                d_wm=d_wm,
                d_gm=d_gm,
                seed_u=float(rng.random()),
                diagnosis_ml=float(np.clip(rng.lognormal(np.log(40.0), 0.35), 15.0, 90.0)),
                resection_threshold=float(rng.uniform(0.4, 0.7)),
                surviving_fraction=float(10 ** rng.uniform(-4.0, -2.0)),
                progression_ml=float(rng.uniform(2.0, 6.0)),
                # Head pose in the coil: nodding (about left-right) varies most.
                rotation_deg=tuple(float(v) for v in rng.normal(0.0, POSE_ROTATION_SD_DEG)),  # type: ignore[arg-type]
                translation_mm=tuple(float(v) for v in rng.normal(0.0, POSE_TRANSLATION_SD_MM)),  # type: ignore[arg-type]
                bias_coeffs=tuple(float(v) for v in rng.normal(0.0, 1.0, 9)),
                modality_gain=tuple(float(v) for v in rng.normal(1.0, 0.06, 10)),
                contrast_shift=(float(rng.normal(0.0, 0.03)), float(rng.normal(0.0, 0.03))),
                noise_factor=float(rng.uniform(0.7, 1.4)),
                first_date=first,
                none_interval_months=float(
                    np.clip(rng.lognormal(NONE_INTERVAL_LOG_MEAN, NONE_INTERVAL_LOG_SD), 1.0, 30.0)
                ),
                age=float(np.clip(rng.normal(57.0, 13.0), 18.0, 87.0)),
                survival_noise=float(rng.normal()),
                none_survival_days=int(
                    max(5, round(SURVIVAL_MEDIAN_DAYS * np.exp(rng.normal(0.0, 0.5))))
                ),
                extent_of_resection=str(rng.choice(["GTR", "STR", "NA"], p=[0.55, 0.1, 0.35])),
                disease_subtype=str(rng.choice(["ASTROCYTOMA", "OLIGODENDROGLIOMA"], p=[0.65, 0.35])),
                uid_entropy=f"synth:{flavour}:{seed}:{i}",
                folder_ids=tuple(int(v) for v in rng.integers(10000, 100000, 24)),
                rng_state=int(rng.integers(2**63 - 1)),
                signal_modality=signal_modality,
                anatomy=draw_anatomy(anatomy_rng),
            )
        )
    return out


def survival_days(p: PatientParams) -> int:
    """HGG overall survival: shorter with faster proliferation under "growth"."""
    if p.signal == "none":
        return p.none_survival_days
    median = SURVIVAL_MEDIAN_DAYS * (SURVIVAL_RHO_REF / p.rho) ** SURVIVAL_RHO_EXPONENT
    return int(max(5, round(median * np.exp(SURVIVAL_LOG_SD * p.survival_noise))))


def blank_grades(n_patients: int, seed: int) -> set[int]:
    """Indices whose REMBRANDT grade is left empty: ~5%, at least one when n >= 10."""
    k = int(round(0.05 * n_patients))
    if n_patients >= 10:
        k = max(k, 1)
    rng = np.random.default_rng(np.random.SeedSequence([seed, _FLAVOUR_CODE["rembrandt"], 3]))
    return set(int(v) for v in rng.choice(n_patients, size=k, replace=False)) if k else set()


def censored(hgg_indices: list[int], seed: int) -> set[int]:
    """Which HGG survival entries are censored: ~10%, at least one when >= 5 HGG."""
    n = len(hgg_indices)
    k = int(round(0.1 * n))
    if n >= 5:
        k = max(k, 1)
    rng = np.random.default_rng(np.random.SeedSequence([seed, _FLAVOUR_CODE["brats20"], 4]))
    return set(int(v) for v in rng.choice(hgg_indices, size=k, replace=False)) if k else set()
