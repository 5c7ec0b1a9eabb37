"""Write one patient's files in a flavour's on-disk layout (see docs/layouts.md).

Each ``write_<flavour>_patient`` simulates the tumour, renders the scans, writes the
DICOM series or NIfTI volumes under the patient's folder and returns the patient's
``truth.csv`` row. They are top-level functions so a process pool can call them.
"""

from __future__ import annotations

import datetime as _dt
from pathlib import Path

import numpy as np

from harness.synth.anatomy import load_anatomy
from harness.synth.cohort import PatientParams
from harness.synth.dicom_writer import SeriesInfo, StudyInfo, fake_identity, uid, write_series
from harness.synth.imaging import (
    ENHANCEMENT,
    PatientSpace,
    TumourView,
    class_signal,
    patient_space,
    render,
    thin_slices,
    tumour_view,
    wm_reference,
)
from harness.synth.nifti_writer import write_nifti
from harness.synth.tumour import GrowthSpec, TumourHistory, simulate

DAYS_PER_MONTH = 30.4375
#: Last day a BTP study may fall on (the collection spans 1989-1997).
BTP_LAST_DATE = _dt.date(1997, 12, 31)
REMBRANDT_STUDY = "MRI BRAIN W WO CONTRAST"
BTP_STUDY = "MR BRAIN PERFUSION"
#: (series number, SeriesDescription, channel) of a REMBRANDT study.
REMBRANDT_SERIES: tuple[tuple[int, str, str], ...] = (
    (3, "T1", "T1"),
    (4, "AX T2", "T2"),
    (5, "AX FLAIR", "FLAIR"),
    (7, "AX T1 POST GD", "T1post"),
)
#: (series number, SeriesDescription) of a BTP study, in the collection's order.
BTP_SERIES: tuple[tuple[int, str], ...] = (
    (2, "T1post"), (3, "dT1"), (4, "T1prereg"), (5, "FLAIRreg"), (6, "ADCreg"),
    (7, "sRCBVreg"), (8, "nRCBVreg"), (9, "nCBFreg"), (10, "T2reg"), (11, "MaskTumor"),
)


def growth_spec(p: PatientParams) -> GrowthSpec:
    """The simulation inputs of a patient."""
    return GrowthSpec(
        rho=p.rho,
        d_wm=p.d_wm,
        d_gm=p.d_gm,
        seed_u=p.seed_u,
        diagnosis_ml=p.diagnosis_ml,
        necrotic=p.regime_grade == "IV",
        resection_threshold=p.resection_threshold,
        surviving_fraction=p.surviving_fraction,
        progression_ml=p.progression_ml,
    )


def _u16(img: np.ndarray, factor: float = 1.0) -> np.ndarray:
    return np.clip(np.rint(img * np.float32(factor)), 0, 65535).astype(np.uint16)


def _tcia_date(d: _dt.date) -> str:
    return d.strftime("%m-%d-%Y")


def _truth_row(p: PatientParams, hist: TumourHistory) -> dict:
    first = hist.scans[0]
    row = {
        "patient_id": p.patient_id,
        "site": p.site.name,
        "grade": p.label_grade,
        "rho_per_month": round(p.rho, 6),
        "diffusion_wm_mm2_per_month": round(p.d_wm, 6),
        "diffusion_gm_mm2_per_month": round(p.d_gm, 6),
        "seed_x_mm": round(hist.seed_mm[0], 3),
        "seed_y_mm": round(hist.seed_mm[1], 3),
        "seed_z_mm": round(hist.seed_mm[2], 3),
        "tumour_volume_ml": round(first.visible_ml, 3),
        "interval_months": np.nan,
        "signal": p.signal,
        "regime_grade": p.regime_grade,
        "tumour_age_months": round(hist.age_months, 4),
        "core_volume_ml": round(first.enhancing_ml, 3),
    }
    if p.signal_modality is not None:
        row["signal_modality"] = p.signal_modality
    return row


def _study(p: PatientParams, date: _dt.date, description: str, j: int) -> StudyInfo:
    key = f"{p.uid_entropy}:study{j}"
    return StudyInfo(
        patient_id=p.patient_id,
        identity=fake_identity(p.uid_entropy),
        study_uid=uid(key),
        frame_uid=uid(key, "frame"),
        date=date.strftime("%Y%m%d"),
        description=description,
        study_id=str(p.folder_ids[j * 12] % 1000),
        institution=p.site.name,
    )


def _render_scan(space: PatientSpace, tv: TumourView, p: PatientParams, channels: tuple[str, ...],
                 j: int) -> dict[str, np.ndarray]:
    return {ch: render(space, tv, p, ch, p.rho, (j,)) for ch in channels}


def _known_truth_view(space: PatientSpace, scan, p: PatientParams) -> tuple[TumourView, np.ndarray | None]:
    """``signal_modality`` cohorts: a grade-blind tumour view plus the one channel's signal.

    No channel enhances by itself; the label's grade (high: anything but II) adds an
    enhancement-like core to ``p.signal_modality`` only, and marks it enhancing (ET) in
    the labels, so the masks still outline the tumour every channel shows.
    """
    tv = tumour_view(space, scan, enhances=False)
    if p.label_grade == "II":
        return tv, None
    sig = class_signal(tv)
    tv.labels[(sig >= 0.5) & space.brain] = 3
    return tv, np.float32(ENHANCEMENT) * sig


def _render_known_truth(space: PatientSpace, scan, p: PatientParams, channels: tuple[str, ...]
                        ) -> tuple[TumourView, dict[str, np.ndarray]]:
    tv, extra = _known_truth_view(space, scan, p)
    imgs = {ch: render(space, tv, p, ch, p.rho, (0,), extra=extra if ch == p.signal_modality else None)
            for ch in channels}
    return tv, imgs


def _render_thin(space: PatientSpace, scan, p: PatientParams, channels: tuple[str, ...], affine: np.ndarray,
                 n_slices: int) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """Full-size cohorts: the same scan rendered on ``n_slices`` thinner axial slices."""
    if p.signal_modality is not None:
        tv, extra = _known_truth_view(space, scan, p)
    else:
        tv, extra = tumour_view(space, scan, enhances=p.regime_grade != "II"), None
    space, tv, extra, affine = thin_slices(space, tv, extra, affine, n_slices)
    imgs = {ch: render(space, tv, p, ch, p.rho, (0,), extra=extra if ch == p.signal_modality else None)
            for ch in channels}
    return imgs, affine


def write_rembrandt_patient(p: PatientParams, grid_mm: float, root: str,
                            slices_per_series: int | None = None) -> dict:
    """One REMBRANDT patient: one study with T1, T2, FLAIR and T1 post-contrast series.

    ``slices_per_series`` (opt-in, for full-size cohorts) writes each series with that many
    thinner axial slices over the same extent (see :func:`harness.synth.imaging.thin_slices`);
    ``None`` writes one slice per grid plane, as always.
    """
    anatomy = load_anatomy(grid_mm)
    hist = simulate(anatomy, growth_spec(p))
    space = patient_space(anatomy, p)
    channels = ("T1", "T1post", "T2", "FLAIR")
    affine = anatomy.affine
    if slices_per_series is not None:
        imgs, affine = _render_thin(space, hist.scans[0], p, channels, anatomy.affine, slices_per_series)
    elif p.signal_modality is not None:
        tv, imgs = _render_known_truth(space, hist.scans[0], p, channels)
    else:
        tv = tumour_view(space, hist.scans[0], enhances=p.regime_grade != "II")
        imgs = _render_scan(space, tv, p, channels, 0)
    study = _study(p, p.first_date, REMBRANDT_STUDY, 0)
    study_dir = Path(root) / p.patient_id / f"{_tcia_date(p.first_date)}-{REMBRANDT_STUDY}-{p.folder_ids[0]}"
    for s, (number, desc, ch) in enumerate(REMBRANDT_SERIES):
        info = SeriesInfo(uid(p.uid_entropy, "study0", desc), number, desc)
        folder = study_dir / f"{number}.000000-{desc}-{p.folder_ids[1 + s]}"
        write_series(folder, _u16(imgs.pop(ch)), affine, study, info)
    return _truth_row(p, hist)


def btp_dates(p: PatientParams, interval_months: float) -> tuple[_dt.date, _dt.date, float]:
    """Baseline and progression dates whose difference is the interval (within 1989-1997)."""
    days = max(1, int(round(interval_months * DAYS_PER_MONTH)))
    first = min(p.first_date, BTP_LAST_DATE - _dt.timedelta(days=days))
    return first, first + _dt.timedelta(days=days), days / DAYS_PER_MONTH


def _btp_series(space: PatientSpace, tv: TumourView, imgs: dict[str, np.ndarray]
                ) -> dict[str, tuple[np.ndarray, float]]:
    """The ten BTP series as (pixel array, RescaleSlope)."""
    t1 = _u16(imgs["T1"])
    t1post = _u16(imgs["T1post"])
    cbv_ref = wm_reference(space, imgs["CBV"], tv.labels)
    cbf_ref = wm_reference(space, imgs["CBF"], tv.labels)
    dt1 = np.clip(t1post.astype(np.int32) - t1.astype(np.int32), -32768, 32767).astype(np.int16)
    return {
        "T1post": (t1post, 1.0),
        "dT1": (dt1, 1.0),
        "T1prereg": (t1, 1.0),
        "FLAIRreg": (_u16(imgs["FLAIR"]), 1.0),
        "ADCreg": (_u16(imgs["ADC"], 1000.0), 1.0),  # 10^-6 mm^2/s
        "sRCBVreg": (_u16(imgs["CBV"], 1000.0), 1.0),
        "nRCBVreg": (_u16(imgs["CBV"] / max(cbv_ref, 1e-6), 1000.0), 0.001),
        "nCBFreg": (_u16(imgs["CBF"] / max(cbf_ref, 1e-6), 1000.0), 0.001),
        "T2reg": (_u16(imgs["T2"]), 1.0),
        "MaskTumor": ((tv.labels > 0).astype(np.uint16), 1.0),
    }


def write_btp_patient(p: PatientParams, grid_mm: float, root: str) -> dict:
    """One BTP patient: post-treatment baseline and progression studies, ten series each."""
    anatomy = load_anatomy(grid_mm)
    hist = simulate(anatomy, growth_spec(p), progression=True)
    simulated = float(hist.interval_months or 0.0)
    label = simulated if p.signal == "growth" else p.none_interval_months
    first, second, interval = btp_dates(p, label)
    channels = ("T1", "T1post", "T2", "FLAIR", "ADC", "CBV", "CBF")
    for j, (scan, date) in enumerate(zip(hist.scans, (first, second))):
        space = patient_space(anatomy, p, visit=j)  # the same head, repositioned at each visit
        tv = tumour_view(space, scan, enhances=True)
        imgs = _render_scan(space, tv, p, channels, j)
        series = _btp_series(space, tv, imgs)
        del imgs
        study = _study(p, date, BTP_STUDY, j)
        study_dir = Path(root) / p.patient_id / f"{_tcia_date(date)}-{BTP_STUDY}-{p.folder_ids[j * 12]}"
        for s, (number, desc) in enumerate(BTP_SERIES):
            arr, slope = series[desc]
            info = SeriesInfo(uid(p.uid_entropy, f"study{j}", desc), number, desc, slope=slope)
            folder = study_dir / f"{number}.000000-{desc}-{p.folder_ids[j * 12 + 1 + s]}"
            write_series(folder, arr, anatomy.affine, study, info)
    row = _truth_row(p, hist)
    row["tumour_volume_ml"] = round(hist.scans[0].visible_ml, 3)
    row["interval_months"] = round(interval, 6)
    row["study_dates"] = f"{first.isoformat()};{second.isoformat()}"
    row["simulated_interval_months"] = round(simulated, 6)
    row["progression_volume_ml"] = round(hist.scans[1].visible_ml, 3)
    row["progression_core_volume_ml"] = round(hist.scans[1].enhancing_ml, 3)
    return row


def write_brats20_patient(p: PatientParams, grid_mm: float, root: str) -> dict:
    """One BraTS 2020 subject: skull-stripped t1, t1ce, t2, flair and seg (ET = 4)."""
    anatomy = load_anatomy(grid_mm)
    hist = simulate(anatomy, growth_spec(p))
    space = patient_space(anatomy, p)
    channels = (("t1", "T1"), ("t1ce", "T1post"), ("t2", "T2"), ("flair", "FLAIR"))
    if p.signal_modality is not None:
        tv, imgs = _render_known_truth(space, hist.scans[0], p, tuple(ch for _, ch in channels))
    else:
        tv = tumour_view(space, hist.scans[0], enhances=p.regime_grade != "II")
        imgs = {}
    folder = Path(root) / p.patient_id
    for suffix, ch in channels:
        raw = imgs[ch] if ch in imgs else render(space, tv, p, ch, p.rho, (0,))
        img = raw * space.brain  # skull-stripped: 0 outside
        arr = np.clip(np.rint(img), 0, 32767).astype(np.int16)
        write_nifti(folder / f"{p.patient_id}_{suffix}.nii.gz", arr, anatomy.affine)
    seg = tv.labels.copy()
    seg[seg == 3] = 4
    write_nifti(folder / f"{p.patient_id}_seg.nii.gz", seg, anatomy.affine)
    return _truth_row(p, hist)


WRITERS = {
    "rembrandt": write_rembrandt_patient,
    "btp": write_btp_patient,
    "brats20": write_brats20_patient,
}


def write_patient(args: tuple) -> dict:
    """Pool entry point: ``(flavour, params, grid_mm, root[, slices_per_series])`` -> truth row."""
    flavour, p, grid_mm, root, *rest = args
    if rest and rest[0] is not None:
        if flavour != "rembrandt":
            raise ValueError(f"slices_per_series is only implemented for rembrandt, not {flavour!r}")
        return write_rembrandt_patient(p, grid_mm, root, rest[0])
    return WRITERS[flavour](p, grid_mm, root)
