"""Registered torch baselines in the explain run: fit on the explain cohort, then adapt.

A baseline is explainable when its class has ``explain_inputs`` (case dims -> sample
unit) and ``explain_adapter(modalities, dims)`` (see :mod:`harness.explain.adapters`).
The run fits it through its normal ``fit(train, val, ctx)`` on the explain cohort's
training patients, as its task would give them:

- ``slices``: 2D cases as grading samples, one per (patient, slice, modality); each
  (patient, modality) is a series of that patient's selected slices.
- ``series``: 3D cases as grading samples, one per axial slice of each
  (patient, modality) volume (every slice: the explained sequence is the whole volume).
- ``volumes``: 3D cases, one sample per (patient, modality) volume (slice_index -1).
- ``segmentation``: 3D cases as segmentation cases (4 channels and the label map).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np
import pandas as pd

from harness.errors import HarnessError
from harness.explain.adapters import ExplainAdapter
from harness.explain.data import CaseSet, patient_split

SAMPLE_UNITS = ("slices", "series", "volumes", "segmentation")


@dataclass
class FittedBaseline:
    baseline: Any
    adapter: ExplainAdapter
    meta: dict[str, Any] = field(default_factory=dict)


def explainable_baseline(name: str) -> Any:
    """The registered baseline class ``name``, if explain can take it; a clear error if not."""
    from baselines import get_baseline

    cls = get_baseline(name)
    inputs = getattr(cls, "explain_inputs", None)
    if not inputs or not callable(getattr(cls, "explain_adapter", None)):
        raise HarnessError(f"baseline {name!r} has no torch module to explain (it is not a torch baseline, or "
                           "exposes no explain_adapter); explain takes the torch baselines "
                           f"{', '.join(explainable_names())}, the explain models, or --model-file")
    return cls


def explainable_names() -> list[str]:
    from baselines import list_baselines

    return [n for n, c in list_baselines().items() if getattr(c, "explain_inputs", None)]


def default_dims(cls: Any) -> int:
    return int(next(iter(cls.explain_inputs)))


def sample_unit(cls: Any, dims: int) -> str:
    units = cls.explain_inputs
    if dims not in units:
        raise HarnessError(f"baseline {cls.name!r} takes {' or '.join(f'{d}D' for d in units)} cases for explain, "
                           f"not {dims}D")
    return units[dims]


def default_size(cls: type, params: dict[str, Any], dims: int) -> int:
    """Slices: the baseline's own ``image_size`` (no resize between case and model); volumes: 32."""
    if sample_unit(cls, dims) == "slices":
        return int(params.get("image_size") or 64)
    return 32


def task_data(cases: CaseSet, idx: np.ndarray, unit: str, modalities: list[str]) -> Any:
    """A grading TaskData of the samples ``idx`` (patients' slices or volumes), per modality."""
    from harness.tasks import TaskData

    idx = np.asarray(idx, dtype=int)
    chans = [cases.modalities.index(m) for m in modalities]
    volumes: dict[str, np.ndarray] = {}
    spacings: dict[str, tuple[float, float, float]] = {}
    rows: list[dict[str, Any]] = []
    by_patient: dict[str, list[int]] = {}
    for i in idx:
        by_patient.setdefault(cases.patient_ids[i], []).append(int(i))
    for pid, members in by_patient.items():
        target = cases.classes[int(cases.y[members[0]])]
        for mod, c in zip(modalities, chans):
            if unit == "slices":
                image_id = f"{pid}/{mod}"
                volumes[image_id] = np.stack([cases.x[i, c] for i in members])
                for k, i in enumerate(members):
                    rows.append({"sample_id": f"{image_id}#z{k:03d}", "patient_id": pid, "study_id": pid,
                                 "image_id": image_id, "modality": mod, "slice_index": k, "target": target})
                continue
            for i in members:
                image_id = f"{pid}/{mod}" + (f"/{i}" if len(members) > 1 else "")
                volumes[image_id] = cases.x[i, c]
                if cases.spacing is not None:
                    spacings[image_id] = tuple(cases.spacing[i])  # type: ignore[assignment]
                if unit == "volumes":
                    rows.append({"sample_id": image_id, "patient_id": pid, "study_id": pid, "image_id": image_id,
                                 "modality": mod, "slice_index": -1, "target": target})
                else:  # series: every axial slice
                    rows += [{"sample_id": f"{image_id}#z{z:03d}", "patient_id": pid, "study_id": pid,
                              "image_id": image_id, "modality": mod, "slice_index": z, "target": target}
                             for z in range(cases.x.shape[2])]
    from harness.tasks import SAMPLE_COLUMNS

    samples = pd.DataFrame(rows, columns=list(SAMPLE_COLUMNS))
    return TaskData("grading", "classification", samples, list(cases.classes), volumes, {}, spacings)


def seg_cases(cases: CaseSet, idx: np.ndarray) -> list[Any]:
    """SegCases (T1, T1post, T2, FLAIR and the label map, 2023 convention) of samples ``idx``."""
    from harness.segmentation.data import CHANNELS, SegCase
    from harness.segmentation.labels import to_brats2023

    if cases.labels is None:
        raise HarnessError("unet3d needs label maps (a SEG series per patient); the explain cohort has none")
    missing = [m for m in CHANNELS if m not in cases.modalities]
    if missing:
        raise HarnessError(f"unet3d needs the channels {list(CHANNELS)}; the explain cohort lacks {missing}")
    chans = [cases.modalities.index(m) for m in CHANNELS]
    values = set(np.unique(cases.labels).tolist())
    convention = "brats2020" if 4 in values else "brats2023"
    out = []
    for i in np.asarray(idx, dtype=int):
        spacing = tuple(cases.spacing[i]) if cases.spacing is not None else (1.0, 1.0, 1.0)
        out.append(SegCase(cases.patient_ids[i], np.ascontiguousarray(cases.x[i, chans]),
                           to_brats2023(cases.labels[i], convention), spacing,  # type: ignore[arg-type]
                           cases.classes[int(cases.y[i])]))
    return out


def _val_split(cases: CaseSet, train: np.ndarray, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Training samples -> (fit, validation), patient-level; no validation below 5 patients."""
    if len({cases.patient_ids[i] for i in train}) < 5:
        return train, np.array([], dtype=int)
    sub = cases.subset(train)
    fit_idx, val_idx = patient_split(sub, 0.2, seed + 1)
    return train[fit_idx], train[val_idx]


def fit_baseline(name: str, cases: CaseSet, train: np.ndarray, test: np.ndarray, *, dims: int,
                 modalities: list[str], profile: str = "quick", params: dict[str, Any] | None = None,
                 seed: int = 0, log: Callable[[str], None] = lambda _: None) -> FittedBaseline:
    """Fit baseline ``name`` on the training samples through its ``fit`` and adapt it."""
    from baselines import FitContext

    cls = explainable_baseline(name)
    unit = sample_unit(cls, dims)
    from baselines import create_baseline

    # Any: explain takes baselines that add explain_adapter / predict_proba to the contract.
    model: Any = create_baseline(name, profile=profile, **(params or {}))
    ctx = FitContext(seed=seed, device="cpu", profile=profile, log=log)
    fit_idx, val_idx = _val_split(cases, np.asarray(train, dtype=int), seed)
    meta: dict[str, Any] = {"baseline": f"{name} (profile {profile})", "sample unit": unit}
    if unit == "segmentation":
        model.fit(seg_cases(cases, fit_idx), seg_cases(cases, val_idx) if len(val_idx) else [], ctx)
        adapter = model.explain_adapter(dims=dims)
        if len(test):
            from harness.segmentation.labels import labels_to_regions

            dice = []
            for probs, c in zip(model.predict_proba(seg_cases(cases, test)), seg_cases(cases, test)):
                p, t = probs[2] >= 0.5, labels_to_regions(c.labels)[2] > 0.5
                denom = p.sum() + t.sum()
                dice.append(1.0 if denom == 0 else 2.0 * (p & t).sum() / denom)
            meta["test WT Dice (held-out patients)"] = f"{np.mean(dice):.3f} (n={len(dice)})"
    else:
        tr = task_data(cases, fit_idx, unit, modalities)
        va = task_data(cases, val_idx, unit, modalities) if len(val_idx) else None
        model.fit(tr, va, ctx)
        kwargs: dict[str, Any] = {}
        if unit == "volumes" and cases.spacing:
            kwargs["spacing_z"] = float(np.median([s[0] for s in cases.spacing]))
        adapter = model.explain_adapter(modalities=modalities, dims=dims, **kwargs)
        if len(test):
            te = task_data(cases, test, unit, modalities)
            acc = float(np.mean(model.predict(te) == te.y))
            per = {"slices": "slice", "series": "slice", "volumes": "volume"}[unit]
            meta[f"test accuracy (held-out patients, per {per} and modality)"] = f"{acc:.3f} (n={len(te)})"
    if ctx.history:
        last = ctx.history[-1]
        loss = last.get("train_loss", float("nan"))
        meta["final training loss"] = f"{loss:.4f} (epoch {int(last.get('epoch', 0)) + 1})"
    for key, value in ctx.tags.items():
        meta[key] = value
    meta["explained input"] = adapter.description
    return FittedBaseline(model, adapter, meta)
