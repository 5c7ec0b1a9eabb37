"""Reading the predictions CSVs the runner writes (fold cache and ``predictions/``)."""

from __future__ import annotations

from pathlib import Path

import pandas as pd


def pooled_predictions_path(out_dir: Path, baseline: str, protocol: str, variant: str = "") -> Path:
    """Where a run writes one (baseline, protocol[, task variant]) run's pooled predictions."""
    suffix = f"__{variant}" if variant else ""
    return Path(out_dir) / "predictions" / f"{baseline}__{protocol}{suffix}.csv"


def read_prediction_file(path: Path, target_kind: str) -> pd.DataFrame:
    """One predictions CSV: ids as strings, and class labels as strings (a grade "2"
    must not come back as the integer 2)."""
    frame = pd.read_csv(path, dtype={"sample_id": str, "patient_id": str})
    if target_kind == "classification":
        frame["y_true"] = frame["y_true"].astype(str)
        frame["y_pred"] = frame["y_pred"].astype(str)
    return frame
