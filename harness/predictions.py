"""Reading the predictions CSVs the runner writes (fold cache and ``predictions/``)."""

from __future__ import annotations

from pathlib import Path

import pandas as pd


def read_prediction_file(path: Path, target_kind: str) -> pd.DataFrame:
    """One predictions CSV: ids as strings, and class labels as strings (a grade "2"
    must not come back as the integer 2)."""
    frame = pd.read_csv(path, dtype={"sample_id": str, "patient_id": str})
    if target_kind == "classification":
        frame["y_true"] = frame["y_true"].astype(str)
        frame["y_pred"] = frame["y_pred"].astype(str)
    return frame
