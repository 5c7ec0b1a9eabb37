"""The clinical-table control: the grade read from which clinical fields are missing."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from baselines import FitContext, create_baseline
from baselines.clinical import ClinicalEncoding
from harness.errors import HarnessError
from harness.tasks import TaskData


def _survival_rows(n: int, seed: int) -> pd.DataFrame:
    """BraTS-2020-like: HGG patients have an age and mostly a resection status; LGG
    patients have neither (their age filled at random, as the paper does)."""
    rng = np.random.default_rng(seed)
    grade = np.where(rng.random(n) < 0.6, "HGG", "LGG")
    eor = np.where(grade == "LGG", "NA", rng.choice(["GTR", "STR", "NA"], n, p=[0.5, 0.2, 0.3]))
    return pd.DataFrame({"sample_id": [f"s{i}" for i in range(n)], "patient_id": [f"p{i}" for i in range(n)],
                         "target": grade, "age": rng.uniform(30, 70, n), "extent_of_resection": eor})


def _task(rows: pd.DataFrame) -> TaskData:
    return TaskData("survival", "classification", rows, ["HGG", "LGG"])


def test_encoding_standardises_age_on_training_rows_and_flags_what_is_missing():
    rows = pd.DataFrame({"age": [40.0, 60.0, np.nan], "extent_of_resection": ["GTR", "STR", "NA"]})
    enc = ClinicalEncoding.fit(rows)
    assert enc.age_mu == pytest.approx(50.0)
    x = enc.transform(rows)
    assert x.shape == (3, 4)
    assert x[:, 0] == pytest.approx([-1.0, 1.0, 0.0], abs=1e-6)
    assert x[:, 1].tolist() == [0.0, 0.0, 1.0]
    assert x[:, 2:].tolist() == [[1.0, 0.0], [0.0, 1.0], [0.0, 0.0]]


def test_the_resection_field_alone_reads_the_grade_of_unseen_patients():
    """With no image at all, held-out patients with a resection status are called HGG:
    the label leaks through the table, not through a split."""
    train, test = _survival_rows(60, 0), _survival_rows(40, 1)
    model = create_baseline("clinical_only").fit(_task(train), None, FitContext(log=lambda _: None))
    pred = model.predict(_task(test))
    resected = test["extent_of_resection"].isin(["GTR", "STR"]).to_numpy()
    assert np.mean(pred[resected] == "HGG") >= 0.8
    recall = [np.mean(pred[test["target"].to_numpy() == c] == c) for c in ("HGG", "LGG")]
    assert np.mean(recall) > 0.7  # balanced accuracy far above the 0.5 of chance


def test_a_task_without_a_clinical_table_is_refused():
    rows = _survival_rows(6, 0).drop(columns=["age"])
    with pytest.raises(HarnessError, match="clinical_only needs a clinical table"):
        create_baseline("clinical_only").fit(_task(rows), None, FitContext(log=lambda _: None))
