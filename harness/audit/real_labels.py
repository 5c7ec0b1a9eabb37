"""A claim's score on the test rows whose labels are real, not imputed.

Why: Valbuena et al. filled every missing LGG survival at random within 4-7 years, so
part of their test set is scored against labels nobody observed (and "long survival"
becomes a synonym of "LGG"). A user needs both numbers: what share of the test labels
were imputed, and what the same predictions score on the real labels alone.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Iterable

import pandas as pd

from harness.errors import HarnessError
from harness.metrics import estimate
from harness.predictions import pooled_predictions_path, read_prediction_file


def real_label_scores(predictions: pd.DataFrame, imputed: pd.Series, metric: str,
                      classes: list[str] | None, n_boot: int = 1000, seed: int = 0) -> dict[str, Any]:
    """Share of imputed test labels, and ``metric`` on all rows and on real-label rows only.

    ``imputed``: a boolean per sample id. Folds stay folds (the column ``fold``), so the
    estimate and its patient-bootstrap CI are computed as for the run itself.
    """
    flags = predictions["sample_id"].map(imputed)
    if flags.isna().any():
        missing = predictions.loc[flags.isna(), "sample_id"].iloc[0]
        raise HarnessError(f"sample {missing!r} of the predictions is not in the task view")
    flags = flags.astype(bool)

    def score(rows: pd.DataFrame) -> dict[str, Any]:
        folds = [f for _, f in rows.groupby("fold", sort=True)] if len(rows) else []
        if not folds:
            return {"mean": None, "ci95": [None, None], "n_samples": 0, "n_patients": 0}
        est = estimate(metric, folds, classes=classes, n_boot=n_boot, seed=seed)
        return {"mean": est.mean, "ci95": list(est.ci95), "n_samples": est.n_samples,
                "n_patients": est.n_patients}

    return {
        "metric": metric,
        "n_test_rows": int(len(predictions)),
        "imputed_share": float(flags.mean()) if len(flags) else None,
        "all_labels": score(predictions),
        "real_labels": score(predictions[~flags]),
    }


def label_scope_section(out_dir: Path, samples: pd.DataFrame, runs: Iterable[tuple[str, str]], metric: str,
                        classes: list[str] | None, variant: str = "", seed: int = 0) -> list[dict[str, Any]]:
    """:func:`real_label_scores` for each (baseline, protocol) run whose predictions exist."""
    if "imputed" not in samples.columns:
        return []
    imputed = samples.set_index("sample_id")["imputed"].astype(bool)
    out = []
    for baseline, protocol in runs:
        path = pooled_predictions_path(out_dir, baseline, protocol, variant)
        if not path.is_file():
            continue
        frame = read_prediction_file(path, "classification")
        out.append({"baseline": baseline, "protocol": protocol,
                    **real_label_scores(frame, imputed, metric, classes, seed=seed)})
    return out
