"""Label conventions, region channels and probability thresholds."""

from __future__ import annotations

import numpy as np
import pytest

from harness.segmentation.labels import (
    LabelError,
    Thresholds,
    from_brats2023,
    labels_to_regions,
    probabilities_to_labels,
    to_brats2023,
)


def test_brats2020_et_4_becomes_3_and_back():
    a = np.array([0, 1, 2, 4, 4], dtype=np.float32)
    b = to_brats2023(a, "brats2020")
    assert b.tolist() == [0, 1, 2, 3, 3] and b.dtype == np.uint8
    assert from_brats2023(b, "brats2020").tolist() == [0, 1, 2, 4, 4]
    assert to_brats2023(np.array([0, 3]), "brats2023").tolist() == [0, 3]


def test_unknown_values_are_named():
    with pytest.raises(LabelError, match="4"):
        to_brats2023(np.array([0, 4]), "brats2023")
    with pytest.raises(LabelError, match="3"):
        to_brats2023(np.array([0, 3]), "brats2020")
    with pytest.raises(LabelError, match="non-integer"):
        to_brats2023(np.array([0.0, 1.5]), "brats2023")


def test_regions_overlap_as_brats_defines_them():
    lab = np.array([0, 1, 2, 3], dtype=np.uint8)
    et, tc, wt = labels_to_regions(lab)
    assert et.tolist() == [0, 0, 0, 1]
    assert tc.tolist() == [0, 1, 0, 1]
    assert wt.tolist() == [0, 1, 1, 1]


def test_thresholds_turn_probabilities_into_disjoint_labels():
    # columns: background, ED, NCR, ET, "ET but not WT" (must stay background)
    probs = np.array([
        [0.1, 0.1, 0.2, 0.9, 0.9],   # ET
        [0.1, 0.3, 0.5, 0.9, 0.9],   # TC
        [0.3, 0.5, 0.9, 0.9, 0.2],   # WT
    ])
    assert probabilities_to_labels(probs).tolist() == [0, 2, 1, 3, 0]
    # the defaults are WT 0.45, TC 0.4, ET 0.45; a stricter TC turns NCR into ED
    assert probabilities_to_labels(probs, Thresholds(TC=0.6)).tolist() == [0, 2, 2, 3, 0]
    assert probabilities_to_labels(np.array([[0.45], [0.4], [0.45]])).tolist() == [3]


def test_round_trip_labels_regions_labels():
    rng = np.random.default_rng(0)
    lab = rng.choice([0, 1, 2, 3], size=(6, 7, 8)).astype(np.uint8)
    assert np.array_equal(probabilities_to_labels(labels_to_regions(lab)), lab)
