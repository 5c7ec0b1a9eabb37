"""Speed of ``seg-eval`` on one full-size BraTS subject (240 x 240 x 155).

Reported as a ratio against a bare baseline timed in the same run on the same arrays:
a plain numpy whole-volume Dice of the three regions. Run with
``pytest benchmarks/perf/test_seg_eval.py --benchmark-only``.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest

from harness.segmentation.evaluate import score_subject
from harness.segmentation.lesionwise import score_regions
from harness.synth.nifti_writer import write_nifti

SHAPE = (240, 240, 155)  # x, y, z as stored in a BraTS file
BUDGET_S = 3.0
_BASELINE = "plain numpy whole-volume Dice of ET, TC, WT on the same arrays"


def _subject(seed: int) -> tuple[np.ndarray, np.ndarray]:
    """A glioma-like reference (oedema shell, necrotic core, ET rim, a satellite lesion)
    and a prediction with boundary errors, a missed satellite and false-positive specks."""
    rng = np.random.default_rng(seed)
    z, y, x = np.ogrid[: SHAPE[0], : SHAPE[1], : SHAPE[2]]

    def ball(c, r, jitter=0.0):
        d = ((z - c[0]) / r[0]) ** 2 + ((y - c[1]) / r[1]) ** 2 + ((x - c[2]) / r[2]) ** 2
        return d <= 1.0 + jitter

    ref = np.zeros(SHAPE, np.uint8)
    ref[ball((120, 110, 80), (40, 35, 30))] = 2
    ref[ball((120, 110, 80), (22, 20, 18))] = 3
    ref[ball((120, 110, 80), (14, 12, 11))] = 1
    ref[ball((60, 170, 60), (6, 6, 5))] = 2
    noise = rng.normal(0, 0.08, SHAPE)
    pred = np.zeros(SHAPE, np.uint8)
    pred[ball((121, 111, 80), (39, 36, 29)) & (noise < 0.15)] = 2
    pred[ball((121, 111, 80), (21, 20, 19))] = 3
    pred[ball((121, 111, 80), (13, 12, 11))] = 1
    for _ in range(12):
        c = rng.integers(10, np.array(SHAPE) - 10)
        pred[c[0]:c[0] + 3, c[1]:c[1] + 3, c[2]:c[2] + 2] = 3
    return pred, ref


def _dice_baseline(pred: np.ndarray, ref: np.ndarray) -> float:
    out = 0.0
    for labels in ((3,), (1, 3), (1, 2, 3)):
        p, r = np.isin(pred, labels), np.isin(ref, labels)
        out += 2 * np.count_nonzero(p & r) / (np.count_nonzero(p) + np.count_nonzero(r))
    return out


def _best_of(fn, repeats: int = 5) -> float:
    best = float("inf")
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t)
    return best


@pytest.fixture(scope="module")
def subject_files(tmp_path_factory) -> tuple[Path, Path, np.ndarray, np.ndarray]:
    pred, ref = _subject(0)
    folder = tmp_path_factory.mktemp("seg-bench")
    affine = np.diag([1.0, 1.0, 1.0, 1.0])
    return (write_nifti(folder / "pred.nii.gz", pred, affine),
            write_nifti(folder / "ref_seg.nii.gz", ref, affine), pred, ref)


def test_score_arrays_one_full_size_subject(benchmark, report_ratio, subject_files):
    _, _, pred, ref = subject_files
    baseline = _best_of(lambda: _dice_baseline(pred, ref))
    scores = benchmark.pedantic(score_regions, args=(pred, ref), rounds=3, iterations=1)
    assert [s.region for s in scores] == ["ET", "TC", "WT"]
    assert scores[0].Num_FP == 12
    mean = benchmark.stats.stats.mean
    print(f"\nscore_regions: {mean:.3f} s = {mean / baseline:.1f}x a numpy whole-volume Dice ({baseline:.3f} s)")
    met = report_ratio(mean / baseline, ratio_is="score_regions mean seconds / numpy Dice seconds",
                       baseline=_BASELINE, baseline_seconds=baseline, target=("<", BUDGET_S), target_value=mean,
                       target_of="mean seconds", label="seg-eval scoring, one 240x240x155 subject (arrays)")
    assert met


def test_seg_eval_one_full_size_subject_from_files(benchmark, report_ratio, subject_files):
    pred_path, ref_path, pred, ref = subject_files
    baseline = _best_of(lambda: _dice_baseline(pred, ref))
    rows = benchmark.pedantic(score_subject, args=(pred_path, ref_path), rounds=3, iterations=1)
    assert len(rows) == 3
    mean = benchmark.stats.stats.mean
    print(f"\nseg-eval subject (read 2 NIfTI + score): {mean:.3f} s = {mean / baseline:.1f}x a numpy "
          f"whole-volume Dice ({baseline:.3f} s)")
    met = report_ratio(mean / baseline, ratio_is="score_subject mean seconds / numpy Dice seconds",
                       baseline=_BASELINE, baseline_seconds=baseline, target=("<", BUDGET_S), target_value=mean,
                       target_of="mean seconds", label="seg-eval, one 240x240x155 subject (2 NIfTI files + scoring)")
    assert met
