"""Protocol inflation and paired comparisons, with patient-level bootstrap CIs.

Why: "the leaky split scores better" is only a finding if the difference is larger than
its uncertainty, and "the model beats the mean" only if the paired difference on the
same test patients excludes zero. Both resample *patients*, as the summary's CIs do
(:mod:`harness.metrics`), so all intervals in the reports are comparable.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Collection, Sequence

import numpy as np
import pandas as pd

from harness.predictions import read_prediction_file
from harness.metrics import (
    CONFUSION_METRICS,
    _metric_from_stats,
    _patient_stats,
    _pooled_stats,
    _resolve_classes,
)

#: Baselines that ignore the images or can only memorise: what "no skill" looks like
#: (``clinical_only`` reads the clinical table alone: what it gives without an image).
CONTROL_BASELINES: tuple[str, ...] = ("mean", "median", "majority", "patient_memorizer", "clinical_only")
LOWER_IS_BETTER: frozenset[str] = frozenset({"mae", "rmse"})


def read_predictions(out_dir: Path, target_kind: str, variant: str = "") -> dict[tuple[str, str], list[pd.DataFrame]]:
    """``predictions/<baseline>__<protocol>[__variant].csv`` of one variant -> per-fold frames."""
    found: dict[tuple[str, str], list[pd.DataFrame]] = {}
    for path in sorted((Path(out_dir) / "predictions").glob("*.csv")):
        parts = path.stem.split("__")
        if len(parts) < 2 or (parts[2] if len(parts) > 2 else "") != variant:
            continue
        frame = read_prediction_file(path, target_kind)
        found[(parts[0], parts[1])] = [g.reset_index(drop=True) for _, g in frame.groupby("fold", sort=True)]
    return found


def _strata(name: str, frames: Sequence[pd.DataFrame], classes: np.ndarray | None) -> list[np.ndarray]:
    per_fold = [_patient_stats(name, f, classes) for f in frames]
    pool = len(frames) > 1 and all(len(s) == 1 for s in per_fold)
    return [_pooled_stats(name, list(frames), classes)] if pool else per_fold


def _counts(n_pat: int, n_boot: int, rng: np.random.Generator) -> np.ndarray:
    draws = rng.integers(0, n_pat, size=(n_boot, n_pat))
    offsets = (np.arange(n_boot) * n_pat)[:, None]
    return np.bincount((draws + offsets).ravel(), minlength=n_boot * n_pat).reshape(n_boot, n_pat).astype(float)


@dataclass
class Boot:
    """A point estimate (mean over folds, as summary.json) and its bootstrap replicates."""

    point: float
    reps: np.ndarray
    n_patients: int

    def ci(self) -> tuple[float, float]:
        if len(self.reps) == 0 or self.n_patients < 2:
            return (float("nan"), float("nan"))
        return (float(np.nanpercentile(self.reps, 2.5)), float(np.nanpercentile(self.reps, 97.5)))


def bootstrap(name: str, frames: Sequence[pd.DataFrame], *, classes: Sequence | None = None,
              n_boot: int = 1000, seed: int = 0) -> Boot:
    """Same estimate and replicates as :func:`harness.metrics.estimate`."""
    cls = _resolve_classes(list(frames), classes) if name in CONFUSION_METRICS else None
    nc = None if cls is None else len(cls)
    strata = _strata(name, frames, cls)
    point = float(np.mean([_metric_from_stats(name, s.sum(axis=0), nc) for s in strata]))
    rng = np.random.default_rng(seed)
    reps = np.mean([_metric_from_stats(name, _counts(len(s), n_boot, rng) @ s, nc) for s in strata], axis=0)
    n_pat = int(pd.concat([f["patient_id"] for f in frames]).nunique())
    return Boot(point, np.atleast_1d(reps), n_pat)


def paired_difference(name: str, a: Sequence[pd.DataFrame], b: Sequence[pd.DataFrame], *,
                      classes: Sequence | None = None, n_boot: int = 1000, seed: int = 0) -> Boot:
    """Metric of ``a`` minus metric of ``b`` on the same test rows; the same patients are
    drawn for both in every replicate (a paired cluster bootstrap)."""
    cls = _resolve_classes(list(a) + list(b), classes) if name in CONFUSION_METRICS else None
    nc = None if cls is None else len(cls)
    sa, sb = _strata(name, a, cls), _strata(name, b, cls)
    if len(sa) != len(sb) or any(x.shape[0] != y.shape[0] for x, y in zip(sa, sb)):
        raise ValueError("paired_difference needs predictions on the same folds and patients")
    point = float(np.mean([_metric_from_stats(name, x.sum(0), nc) - _metric_from_stats(name, y.sum(0), nc)
                           for x, y in zip(sa, sb)]))
    rng = np.random.default_rng(seed)
    reps = []
    for x, y in zip(sa, sb):
        c = _counts(len(x), n_boot, rng)
        reps.append(_metric_from_stats(name, c @ x, nc) - _metric_from_stats(name, c @ y, nc))
    n_pat = int(pd.concat([f["patient_id"] for f in a]).nunique())
    return Boot(point, np.mean(reps, axis=0), n_pat)


def difference(a: Boot, b: Boot) -> Boot:
    """``a - b`` for estimates on different splits (independent replicates)."""
    n = min(len(a.reps), len(b.reps))
    return Boot(a.point - b.point, a.reps[:n] - b.reps[:n], min(a.n_patients, b.n_patients))


def inflation_table(
    preds: dict[tuple[str, str], list[pd.DataFrame]],
    leaky: dict[str, bool],
    metric: str,
    *,
    classes: Sequence | None = None,
    n_boot: int = 1000,
    seed: int = 0,
    did_not_learn: Collection[tuple[str, str]] = (),
) -> pd.DataFrame:
    """One row per baseline x (leaky protocol, honest protocol): both estimates and the
    inflation (leaky minus honest) with its CI; controls are marked.

    A pair where the baseline did not learn under either protocol (``did_not_learn``:
    (baseline, protocol) keys, see :mod:`harness.guard`) is left out: the difference
    between two scores of a model that fitted nothing says nothing about the split.
    :func:`withheld_inflation` names them.
    """
    rows = []
    skip = set(did_not_learn)
    baselines = sorted({b for b, _ in preds})
    leaky_ps = [p for p, v in leaky.items() if v]
    honest_ps = [p for p, v in leaky.items() if not v]
    for b in baselines:
        for lp in leaky_ps:
            for hp in honest_ps:
                if (b, lp) not in preds or (b, hp) not in preds or {(b, lp), (b, hp)} & skip:
                    continue
                x = bootstrap(metric, preds[(b, lp)], classes=classes, n_boot=n_boot, seed=seed)
                y = bootstrap(metric, preds[(b, hp)], classes=classes, n_boot=n_boot, seed=seed + 1)
                d = difference(x, y)
                lo, hi = d.ci()
                rows.append({
                    "baseline": b, "control": b in CONTROL_BASELINES, "leaky_protocol": lp,
                    "honest_protocol": hp, "metric": metric, "leaky": x.point, "leaky_ci": x.ci(),
                    "honest": y.point, "honest_ci": y.ci(), "inflation": d.point, "inflation_ci": (lo, hi),
                    "significant": bool(lo == lo and (lo > 0 or hi < 0)),
                })
    return pd.DataFrame(rows)


def withheld_inflation(preds: dict[tuple[str, str], list[pd.DataFrame]], leaky: dict[str, bool],
                       did_not_learn: Collection[tuple[str, str]]) -> list[str]:
    """One sentence per baseline whose inflation is not computed because it did not learn."""
    skip = set(did_not_learn)
    out = []
    for b in sorted({b for b, _ in preds}):
        bad = [p for p in leaky if (b, p) in skip and (b, p) in preds]
        if bad and any(v for p, v in leaky.items() if (b, p) in preds) and any(
                not v for p, v in leaky.items() if (b, p) in preds):
            out.append(f"inflation not computed: {b} did not learn (under {', '.join(bad)})")
    return out


def beats(name: str, model: Sequence[pd.DataFrame], reference: Sequence[pd.DataFrame], **kw) -> tuple[Boot, bool]:
    """Paired difference model - reference and whether the model is better beyond its CI."""
    d = paired_difference(name, model, reference, **kw)
    lo, hi = d.ci()
    better = (hi < 0) if name in LOWER_IS_BETTER else (lo > 0)
    return d, bool(better)
