"""Explain cases with every method and score the maps: the model-agnostic core of a report.

Takes any ``nn.Module`` and arrays; knows nothing about files, cohorts or MLflow.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field, replace
from typing import Callable

import numpy as np
import torch
from torch import nn

from harness.explain import scores
from harness.explain.scores import RandomisationResult
from harness.explain.config import ExplainConfig
from harness.explain.methods import METHODS, MethodInputs, attribute
from harness.explain.postprocess import postprocess

#: Score columns of the table, in order, with their direction (for the report).
SCORE_COLUMNS: dict[str, str] = {
    "mi_tau": "Kendall tau-b of the method's per-modality attribution vs Shapley MI (higher better)",
    "msfi": "modality-specific feature importance, in [0, 1] (higher better)",
    "energy": "share of positive attribution inside the dilated tumour mask (higher better)",
    "pointing": "pointing game: the map's maximum lies in the dilated mask (share of cases)",
    "deletion_auc": "area under the deletion curve of the target probability (lower better)",
    "randomisation_similarity": "rank similarity to the original map after randomising all layers (lower better)",
    "randomisation_pass": "passes the cascading randomisation check (similarity below the threshold)",
    "completeness_error": "|sum(attr) - (f(x) - f(0))| / |f(x) - f(0)| (IG's axiom; lower better)",
    "completeness_error_max": "the largest completeness error over the cases (the axiom must hold on each)",
    "ig_steps": "integration steps IG used: doubled until Captum's convergence delta is within ig_tolerance",
    "seconds": "compute time of the attribution, per case",
}


@dataclass
class CaseExplanation:
    """One case: its input, truth, prediction, Shapley MI, and every method's maps and scores."""

    index: int
    patient_id: str
    label: int
    pred: int
    prob: float
    x: np.ndarray  # (M, *spatial)
    mask: np.ndarray | None  # (*spatial) bool, the tumour (undilated)
    shapley: np.ndarray  # (M,)
    attributions: dict[str, np.ndarray] = field(default_factory=dict)
    display: dict[str, np.ndarray] = field(default_factory=dict)
    scores: dict[str, dict[str, float]] = field(default_factory=dict)
    deletion: dict[str, np.ndarray] = field(default_factory=dict)
    randomisation: dict[str, RandomisationResult] = field(default_factory=dict)
    random_deletion_auc: float = float("nan")
    errors: dict[str, str] = field(default_factory=dict)


def explain_case(model: nn.Module, x: np.ndarray, label: int, methods: list[str], cfg: ExplainConfig, *,
                 mask: np.ndarray | None = None, batch: np.ndarray | None = None, index: int = 0,
                 patient_id: str = "", sanity: bool = True,
                 on_method: Callable[[str], object] | None = None) -> CaseExplanation:
    """Run ``methods`` on one case (x: (M, *spatial)) and score each map.

    ``batch``: other cases (N, M, *spatial) for feature permutation. ``sanity``: run the
    cascading randomisation for the methods in ``cfg.sanity_methods`` (costly: one
    re-explanation per layer). A method that raises is recorded in ``errors``; the others go on.
    """
    model.eval()
    xt = torch.as_tensor(x[None], dtype=torch.float32)
    with torch.no_grad():
        p = torch.softmax(model(xt), dim=1)[0].numpy()
    case = CaseExplanation(index, patient_id, int(label), int(p.argmax()), float(p[label]), np.asarray(x), mask,
                           scores.modality_shapley(model, xt, int(label), cfg.baseline_value))
    extra = MethodInputs(batch=None if batch is None else torch.as_tensor(batch, dtype=torch.float32))
    dilated = scores.dilate(mask, cfg.mask_dilation) if mask is not None else None
    case.random_deletion_auc = scores.random_deletion_auc(model, xt, label, cfg.deletion_steps, cfg.baseline_value,
                                                          cfg.seed)
    sanity_set = set(methods) if "all" in cfg.sanity_methods else set(cfg.sanity_methods)
    for name in methods:
        if on_method:
            on_method(name)
        start = time.perf_counter()
        try:
            attr = attribute(name, model, xt, label, cfg, extra)[0].numpy()
        except Exception as exc:  # report it, keep the other methods
            case.errors[name] = f"{type(exc).__name__}: {exc}"
            continue
        seconds = time.perf_counter() - start
        case.attributions[name] = attr
        case.display[name] = postprocess(attr, sigma=cfg.smooth_sigma, percentile=cfg.percentile)
        row: dict[str, float] = {"seconds": seconds}
        row["mi_tau"] = scores.mi_correlation(case.shapley, scores.modality_attribution(attr))
        if dilated is not None:
            row["msfi"] = scores.msfi(case.display[name], dilated, case.shapley)
            row["energy"], row["pointing"] = scores.localisation(case.display[name], dilated)
        curve, row["deletion_auc"] = scores.deletion_curve(model, xt, label, attr, cfg.deletion_steps,
                                                           cfg.baseline_value)
        case.deletion[name] = curve
        if name == "integrated_gradients":
            row["completeness_error"] = scores.completeness_error(model, xt, label, attr, cfg.baseline_value)
            if extra.ig_steps_used is not None:
                row["ig_steps"] = float(extra.ig_steps_used)
        if sanity and name in sanity_set:
            # randomised models get the steps the real one started with, not the adaptive search
            rerun_cfg = replace(cfg, ig_max_steps=cfg.ig_steps)

            def rerun(m: nn.Module, _name: str = name, _cfg: ExplainConfig = rerun_cfg) -> np.ndarray:
                return attribute(_name, m, xt, label, _cfg, extra)[0].numpy()

            res = scores.cascading_randomisation(model, xt, label, rerun, attr, cfg.sanity_threshold, cfg.seed)
            case.randomisation[name] = res
            row["randomisation_similarity"] = res.final
            row["randomisation_pass"] = float(res.passed)
        case.scores[name] = row
    return case


#: Summary columns that are the maximum over cases of a per-case score, not a mean.
MAX_OVER_CASES: dict[str, str] = {"completeness_error_max": "completeness_error"}


def summarise(cases: list[CaseExplanation], methods: list[str]) -> dict[str, dict[str, float]]:
    """Mean of each score over the cases that have it, per method (NaN when none has);
    the :data:`MAX_OVER_CASES` columns take the worst case instead."""
    out: dict[str, dict[str, float]] = {}
    for name in methods:
        row: dict[str, float] = {}
        for col in SCORE_COLUMNS:
            source = MAX_OVER_CASES.get(col, col)
            vals = [c.scores[name][source] for c in cases if name in c.scores and source in c.scores[name]]
            vals = [v for v in vals if v == v]
            reduce = np.max if col in MAX_OVER_CASES else np.mean
            row[col] = float(reduce(vals)) if vals else float("nan")
        out[name] = row
    return out


def cohort_importance(cases: list[CaseExplanation]) -> np.ndarray:
    """Modality importance over cases: the mean |Shapley value| (direction differs by class)."""
    return np.mean([np.abs(c.shapley) for c in cases], axis=0)


def label_of(name: str) -> str:
    return METHODS[name].label if name in METHODS else name
