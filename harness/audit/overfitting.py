"""Overfitting: learning curves, generalisation gap, best vs last epoch, fold spread,
effective sample size in patients, and small-test-set warnings.

Why: a validation curve that looks "healthy" (the capstone's Figure 5) says nothing if
validation rows share patients with training rows, and a CI over 12 rows of 3 patients
is not the CI over 12 patients. This module reads what the runner kept (per-epoch
histories in the fold cache, per-fold metrics in summary.json) and says it in numbers.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

#: A test fold with fewer patients than this gets a warning.
MIN_TEST_PATIENTS = 10


def read_histories(fold_dir: Path) -> dict[int, pd.DataFrame]:
    """``fold<i>-history.csv`` files of one baseline x protocol run, by fold index."""
    out = {}
    for path in sorted(Path(fold_dir).glob("fold*-history.csv")):
        try:
            out[int(path.stem[4:].split("-")[0])] = pd.read_csv(path)
        except (ValueError, OSError, pd.errors.ParserError):
            continue
    return out


def curve_summary(history: pd.DataFrame) -> dict[str, float]:
    """Best and last epoch, their validation losses, and the gap at the best epoch."""
    h = history
    if "stage" in h and h["stage"].nunique() > 1:
        h = h[h["stage"] == h["stage"].iloc[-1]]
    last = h.iloc[-1]
    out = {"epochs": float(len(h)), "last_epoch": float(last["epoch"]),
           "train_loss_last": float(last["train_loss"])}
    if "val_loss" in h and h["val_loss"].notna().any():
        best_i = int(h["val_loss"].idxmin())
        best = h.loc[best_i]
        out.update(best_epoch=float(best["epoch"]), val_loss_best=float(best["val_loss"]),
                   val_loss_last=float(last["val_loss"]), train_loss_best=float(best["train_loss"]),
                   gap_at_best=float(best["val_loss"] - best["train_loss"]),
                   gap_last=float(last["val_loss"] - last["train_loss"]))
    return out


def learning_index(summary: dict[str, Any], variant: str | None = None) -> dict[tuple[str, str], dict]:
    """summary.json's ``learning`` entries by (baseline, protocol), of one variant if given."""
    return {(g["baseline"], g["protocol"]): g for g in summary.get("learning", [])
            if variant is None or g.get("target", "") == variant}


def did_not_learn_keys(summary: dict[str, Any], variant: str | None = None) -> set[tuple[str, str]]:
    """(baseline, protocol) pairs flagged did_not_learn."""
    return {k for k, g in learning_index(summary, variant).items() if g.get("did_not_learn")}


def effective_sample_size(n_rows: int, n_patients: int, icc: float) -> float:
    """Kish's design effect for clustered rows: n / (1 + (m - 1) ICC), m = rows per patient."""
    if n_patients <= 0:
        return 0.0
    m = n_rows / n_patients
    icc = float(np.clip(icc if icc == icc else 1.0, 0.0, 1.0))
    return float(n_rows / (1.0 + (m - 1.0) * icc))


@dataclass
class OverfittingResult:
    curves: dict[tuple[str, str], dict[int, pd.DataFrame]] = field(default_factory=dict)
    table: pd.DataFrame = field(default_factory=pd.DataFrame)
    warnings: list[str] = field(default_factory=list)
    #: One line per baseline x protocol the did-not-learn guard flagged (or could not judge).
    not_learned: list[str] = field(default_factory=list)


def overfitting_table(
    summary: dict[str, Any], runs: list[dict[str, Any]], preds: dict[tuple[str, str], list[pd.DataFrame]],
    *, metric: str, icc: float,
) -> OverfittingResult:
    """One row per baseline x protocol; the curves for the figures; the warnings; the
    did-not-learn guard's scores (summary.json ``learning``) and its flags."""
    res = OverfittingResult()
    learning = learning_index(summary)
    rows = []
    entries = {(r["baseline"], r["protocol"]): r for r in summary.get("results", []) if r["metric"] == metric}
    for run in runs:
        key = (run["baseline"], run["protocol"])
        hist = read_histories(Path(run["fold_dir"]))
        if hist:
            res.curves[key] = hist
        per = [curve_summary(h) for h in hist.values() if len(h)]
        entry = entries.get(key, {})
        frames = preds.get(key, [])
        test_pat = [int(f["patient_id"].nunique()) for f in frames]
        n_rows = sum(len(f) for f in frames)
        n_pat = int(pd.concat([f["patient_id"] for f in frames]).nunique()) if frames else 0
        fold_values = [v for v in entry.get("fold_values", []) if v is not None]
        guard = learning.get(key) or {}
        row = {
            "baseline": key[0], "protocol": key[1], "leaky_protocol": entry.get("leaky_protocol"),
            "metric": metric, "mean": entry.get("mean"), "ci95": tuple(entry.get("ci95", (None, None))),
            "fold_sd": float(np.std(fold_values)) if len(fold_values) > 1 else float("nan"),
            "fold_range": (min(fold_values), max(fold_values)) if fold_values else (None, None),
            "test_patients_per_fold": f"{min(test_pat)}-{max(test_pat)}" if test_pat else "",
            "patients": n_pat, "rows": n_rows,
            "effective_n": effective_sample_size(n_rows, n_pat, icc),
            "guard_metric": guard.get("metric"), "train_score": guard.get("train"),
            "train_trivial": guard.get("train_trivial"), "val_score": guard.get("val"),
            "val_trivial": guard.get("val_trivial"), "control": guard.get("control"),
            "did_not_learn": guard.get("did_not_learn"),
        }
        if per:
            frame = pd.DataFrame(per)
            for col in ("best_epoch", "last_epoch", "val_loss_best", "val_loss_last", "gap_at_best"):
                if col in frame:
                    row[col] = float(frame[col].mean())
        rows.append(row)
        if guard.get("did_not_learn"):
            res.not_learned.append(
                f"{key[0]} | {key[1]}: did not learn: training {guard['metric']} {guard['train']:.3f} vs trivial "
                f"{guard['train_trivial']:.3f} in {guard['folds_did_not_learn']} of {guard['folds_known']} fold(s); "
                "no comparison is drawn from it")
        elif guard and guard.get("did_not_learn") is None:
            res.not_learned.append(f"{key[0]} | {key[1]}: learning unknown ({'; '.join(guard.get('notes', []))})")
        if test_pat and min(test_pat) < MIN_TEST_PATIENTS:
            res.warnings.append(
                f"{key[0]} | {key[1]}: a test fold holds only {min(test_pat)} patient(s) (< {MIN_TEST_PATIENTS}); "
                f"its metric rests on {n_pat} patients in all (effective n {row['effective_n']:.1f} of {n_rows} rows)")
    res.table = pd.DataFrame(rows)
    return res
