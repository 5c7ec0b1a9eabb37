"""BraTS 2023 lesion-wise and legacy metrics on hand-built masks with known answers."""

from __future__ import annotations

import numpy as np
import pytest

from harness.segmentation.lesionwise import (
    legacy_region,
    lesionwise_region,
    merged_lesions,
    score_regions,
)
from harness.segmentation.surface import HD95_EMPTY, hd95

SHAPE = (40, 40, 40)


def cube(mask: np.ndarray, corner: tuple[int, int, int], size: int, value=True) -> np.ndarray:
    z, y, x = corner
    mask[z:z + size, y:y + size, x:x + size] = value
    return mask


def empty() -> np.ndarray:
    return np.zeros(SHAPE, dtype=bool)


def test_perfect_prediction():
    gt = cube(empty(), (5, 5, 5), 6)
    assert lesionwise_region(gt, gt) == (1.0, 0.0, 1, 0, 0)
    assert legacy_region(gt, gt) == (1.0, 0.0)


def test_both_empty_scores_one_and_zero():
    assert lesionwise_region(empty(), empty()) == (1.0, 0.0, 0, 0, 0)
    assert legacy_region(empty(), empty()) == (1.0, 0.0)


def test_missed_lesion_scores_dice_zero_and_hd_374():
    gt = cube(cube(empty(), (2, 2, 2), 6), (25, 25, 25), 6)   # two 216-voxel lesions far apart
    pred = cube(empty(), (2, 2, 2), 6)                       # only the first is found
    d, h, tp, fp, fn = lesionwise_region(pred, gt)
    assert (tp, fp, fn) == (1, 0, 1)
    assert d == pytest.approx(0.5)
    assert h == pytest.approx(HD95_EMPTY / 2)
    leg_d, _ = legacy_region(pred, gt)
    assert leg_d == pytest.approx(2 * 216 / (216 + 432))


def test_false_positive_speck_counts_against_the_score():
    gt = cube(empty(), (5, 5, 5), 6)
    pred = cube(gt.copy(), (30, 30, 30), 2)                  # an 8-voxel speck far away
    d, h, tp, fp, fn = lesionwise_region(pred, gt)
    assert (tp, fp, fn) == (1, 1, 0)
    assert d == pytest.approx(0.5)
    assert h == pytest.approx(HD95_EMPTY / 2)
    leg_d, _ = legacy_region(pred, gt)
    assert leg_d == pytest.approx(2 * 216 / (216 + 224))     # the speck barely moves legacy Dice


def test_prediction_only_is_all_false_positive():
    pred = cube(empty(), (5, 5, 5), 4)
    assert lesionwise_region(pred, empty()) == (0.0, HD95_EMPTY, 0, 1, 0)
    assert legacy_region(pred, empty()) == (0.0, HD95_EMPTY)


def test_two_lesions_merged_by_dilation():
    # two 125-voxel cubes, 2 voxels apart: their 3-voxel dilations touch -> one lesion
    gt = cube(cube(empty(), (10, 10, 10), 5), (10, 10, 17), 5)
    assert merged_lesions(gt, 3).max() == 1
    assert merged_lesions(gt, 0).max() == 2
    pred = cube(empty(), (10, 10, 10), 5)                   # finds one cube only
    d, _, tp, fp, fn = lesionwise_region(pred, gt, dilation=3)
    assert (tp, fp, fn) == (1, 0, 0)
    assert d == pytest.approx(2 * 125 / (125 + 250))
    # without merging, the second cube is a missed lesion of its own
    d0, h0, tp0, fp0, fn0 = lesionwise_region(pred, gt, dilation=0)
    assert (tp0, fp0, fn0) == (1, 0, 1)
    assert d0 == pytest.approx(0.5)
    assert h0 == pytest.approx(HD95_EMPTY / 2)


def test_far_apart_lesions_stay_separate():
    gt = cube(cube(empty(), (10, 10, 2), 5), (10, 10, 20), 5)   # 13 voxels apart
    assert merged_lesions(gt, 3).max() == 2


def test_prediction_near_but_not_on_lesion_is_matched_through_its_dilation():
    gt = cube(empty(), (10, 10, 10), 5)
    pred = cube(empty(), (10, 10, 16), 5)   # one voxel gap: touches the lesion's dilation
    d, h, tp, fp, fn = lesionwise_region(pred, gt)
    assert (tp, fp, fn) == (1, 0, 0)
    assert d == 0.0
    assert h == pytest.approx(6.0)


def test_lesion_under_threshold_left_out():
    big = cube(empty(), (2, 2, 2), 6)            # 216 voxels
    gt = cube(big.copy(), (30, 30, 30), 3)       # + a 27-voxel lesion (<= 50)
    # missing the small lesion costs nothing
    assert lesionwise_region(big, gt) == (1.0, 0.0, 1, 0, 0)
    # finding it is not a false positive either
    assert lesionwise_region(gt, gt) == (1.0, 0.0, 1, 0, 0)
    # at a threshold below its size it counts again (and is missed)
    d, _, tp, fp, fn = lesionwise_region(big, gt, min_lesion_volume=20)
    assert (tp, fn) == (1, 1) and d == pytest.approx(0.5)
    # the official code compares mm3: 27 voxels of 2 mm = 216 mm3 > 50
    _, _, _, _, fn_mm = lesionwise_region(big, gt, spacing=(2, 2, 2), volume_unit="mm3")
    assert fn_mm == 1


def test_hd95_known_shift_and_spacing():
    a = cube(empty(), (5, 5, 5), 5)
    b = cube(empty(), (5, 5, 8), 5)
    assert hd95(a, b) == pytest.approx(3.0)
    assert hd95(a, b, spacing=(1, 1, 2)) == pytest.approx(6.0)
    assert hd95(a, a) == 0.0
    assert hd95(a, empty()) == float("inf")


def test_score_regions_on_label_maps():
    ref = np.zeros(SHAPE, dtype=np.uint8)
    ref[5:20, 5:20, 5:20] = 2          # oedema
    ref[8:16, 8:16, 8:16] = 1          # necrosis
    ref[10:14, 10:14, 10:14] = 3       # 64 ET voxels
    pred = ref.copy()
    pred[pred == 3] = 1                # ET called necrosis: ET missed, TC and WT perfect
    scores = {s.region: s for s in score_regions(pred, ref)}
    assert scores["ET"].LesionWise_Score_Dice == 0.0 and scores["ET"].Num_FN == 1
    assert scores["ET"].Legacy_HD95 == HD95_EMPTY
    assert scores["TC"].LesionWise_Score_Dice == 1.0 and scores["WT"].Legacy_Dice == 1.0
    with pytest.raises(Exception, match="shape mismatch"):
        score_regions(pred[:-1], ref)


def test_et_present_keeps_only_patients_with_a_scored_et_lesion():
    """An empty ET map scores 1 on a patient without ET and 0 on one with ET: the
    ``_present`` metric averages the latter only, so "predict no ET" scores 0 there."""
    import pandas as pd

    from harness.segmentation.experiment import SCORE_COLUMNS, per_patient

    ref = np.zeros(SHAPE, dtype=np.uint8)
    with_et = ref.copy()
    with_et[5:15, 5:15, 5:15] = 2
    with_et[7:13, 7:13, 7:13] = 3  # 216 voxels: a scored ET lesion
    small_et = ref.copy()
    small_et[5:15, 5:15, 5:15] = 2
    small_et[9:11, 9:11, 9:11] = 3  # 8 voxels: left out of the lesion-wise score
    no_et = ref.copy()
    no_et[5:15, 5:15, 5:15] = 2
    empty_pred = no_et  # oedema only: no ET predicted anywhere
    rows = []
    for subject, truth in (("with", with_et), ("small", small_et), ("none", no_et)):
        for s in score_regions(empty_pred, truth, min_lesion_volume=50):
            rows.append({"subject": subject, **s.to_dict()})
    frame = pd.DataFrame(rows, columns=["subject", "region", *SCORE_COLUMNS])
    all_et = per_patient(frame, "lesionwise_dice_ET")
    present = per_patient(frame, "lesionwise_dice_ET_present")
    assert all_et.to_dict() == {"with": 0.0, "small": 1.0, "none": 1.0}
    assert present.to_dict() == {"with": 0.0}
    perfect = [{"subject": "with", **s.to_dict()} for s in score_regions(with_et, with_et, min_lesion_volume=50)]
    assert per_patient(pd.DataFrame(perfect), "lesionwise_dice_ET_present").to_dict() == {"with": 1.0}


def test_suite_metrics_take_present_metrics_by_name_not_by_family():
    from harness.segmentation.task import suite_metrics

    assert suite_metrics(["lesionwise_dice_ET"]) == ["lesionwise_dice_ET"]
    assert "lesionwise_dice_ET_present" not in suite_metrics(["lesionwise_dice"])
    assert suite_metrics(["lesionwise_dice_ET_present"]) == ["lesionwise_dice_ET_present"]
