"""Lesion-slice sampling: the image-only finder and the grading view's ``slice_sampling``."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from harness.tasks.lesion import LesionRule, lesion_slices

SPACING = (2.0, 2.0, 2.0)


def head_with_blob(blob_z: tuple[int, int] | None, seed: int = 0) -> np.ndarray:
    """An ellipsoidal head (tissue at 100, noise SD 5) in air, with a bright blob (220) on
    slices ``blob_z[0]`` to ``blob_z[1] - 1`` and a bright scalp rim that must not count."""
    rng = np.random.default_rng(seed)
    z, y, x = np.mgrid[:40, :64, :64]
    r = ((z - 20) / 18.0) ** 2 + ((y - 32) / 28.0) ** 2 + ((x - 32) / 24.0) ** 2
    volume = np.where(r < 1.0, 100.0, 0.0)
    volume[(r > 0.85) & (r < 1.0)] = 250.0  # scalp fat: bright, thin, on every slice
    if blob_z is not None:
        blob = ((y - 30) ** 2 + (x - 36) ** 2 < 36) & (z >= blob_z[0]) & (z < blob_z[1])
        volume[blob] = 220.0
    return (volume + rng.normal(0, 5, volume.shape) * (volume > 0)).astype(np.float32)


def test_finder_returns_the_blobs_slices_and_ignores_the_scalp() -> None:
    found = lesion_slices(head_with_blob((14, 24)), SPACING)
    assert found.min() >= 13 and found.max() <= 24
    assert len(found) >= 8


def test_finder_finds_nothing_in_a_head_without_a_lesion() -> None:
    assert lesion_slices(head_with_blob(None), SPACING).size == 0


def test_only_the_largest_blob_counts() -> None:
    volume = head_with_blob((14, 24))
    volume[30, 20:23, 20:23] = 400.0  # a few bright voxels elsewhere: noise, not a tumour
    found = lesion_slices(volume, SPACING, LesionRule(min_area_mm2=4.0))
    assert 30 not in found


def test_grading_view_keeps_the_lesion_slices_of_every_series(tiny_rembrandt: Path, tmp_path: Path) -> None:
    from harness.runner import RunOptions, prepare_data
    from harness.suite import parse_suite

    def view(sampling: str):
        suite = parse_suite({"suite": {"name": "g", "task": "grading"}, "data": {"cohort": "rembrandt"},
                             "task": {"modalities": ["T1post", "FLAIR"], "slice_sampling": sampling}})
        return prepare_data(suite, RunOptions(data=tiny_rembrandt, cache_dir=tmp_path, progress=False))

    every, lesion = view("all"), view("lesion")
    all_rows, lesion_rows = every.task_data.samples, lesion.task_data.samples
    assert 0 < len(lesion_rows) < len(all_rows)
    assert set(lesion_rows["sample_id"]) <= set(all_rows["sample_id"])
    # Within a scan the same slice indices in both series: the finder runs once per scan.
    for _, scan in lesion_rows.groupby("study_id"):
        per_series = [frozenset(g["slice_index"]) for _, g in scan.groupby("modality")]
        assert len(set(per_series)) == 1
    # Scans where the finder gives up keep every head slice and are named in the problems.
    fallback = [str(p) for p in lesion.problems if "lesion" in p.reason]
    kept_all = [study for study, scan in lesion_rows.groupby("study_id")
                if len(scan) == (all_rows["study_id"] == study).sum()]
    assert len(kept_all) <= len(fallback)


def test_unknown_slice_sampling_is_refused(tiny_rembrandt: Path) -> None:
    from harness.data.detect import load_cohort
    from harness.tasks import grading_task

    with pytest.raises(ValueError, match="slice_sampling"):
        grading_task(load_cohort(tiny_rembrandt), {}, {}, slice_sampling="tumour")


def test_crop_is_centred_on_the_lesion_and_padded_with_air_at_the_border() -> None:
    from harness.tasks.lesion import crop_in_plane, find_scan_lesion

    volume = head_with_blob((14, 24))
    lesion = find_scan_lesion(volume, SPACING)
    assert abs(lesion.centre_yx[0] - 30) <= 1.5 and abs(lesion.centre_yx[1] - 36) <= 1.5
    crop = crop_in_plane(volume, lesion.centre_yx, 16)
    assert crop.shape == (40, 16, 16)
    assert crop[18, 6:10, 6:10].mean() > 200  # the blob sits in the middle of the window
    corner = crop_in_plane(volume, (0.0, 0.0), 16)
    assert (corner[:, :8, :8] == volume.min()).all() and np.array_equal(corner[:, 8:, 8:], volume[:, :8, :8])


def test_cropped_view_gives_every_series_of_a_scan_the_same_window_under_new_cache_keys(
        tiny_rembrandt: Path, tmp_path: Path) -> None:
    from harness.runner import RunOptions, prepare_data
    from harness.suite import parse_suite

    suite = parse_suite({"suite": {"name": "g", "task": "grading"}, "data": {"cohort": "rembrandt"},
                         "task": {"modalities": ["T1post", "FLAIR"], "slice_sampling": "lesion",
                                  "lesion_crop_mm": 48}})
    data = prepare_data(suite, RunOptions(data=tiny_rembrandt, cache_dir=tmp_path, progress=False)).task_data
    plain = parse_suite({"suite": {"name": "g", "task": "grading"}, "data": {"cohort": "rembrandt"},
                         "task": {"modalities": ["T1post", "FLAIR"], "slice_sampling": "lesion"}})
    whole = prepare_data(plain, RunOptions(data=tiny_rembrandt, cache_dir=tmp_path, progress=False)).task_data
    assert data.sample_ids == whole.sample_ids
    pixels = data.slices()
    assert pixels.shape[1:] == (8, 8)  # 48 mm on the tiny cohort's 6 mm grid
    for image_id in set(data.samples["image_id"]):
        assert data.content_keys[image_id] != whole.content_keys[image_id]
    # The window is the scan's: both series of a scan are cut at the same place, so their
    # head masks (air vs tissue) coincide.
    for _, scan in data.samples.groupby("study_id"):
        first, second = (np.asarray(data.volumes[i]) > 0 for i in sorted(set(scan["image_id"])))
        assert (first == second).mean() > 0.9


def test_crop_with_every_slice_keeps_every_head_slice_and_cuts_each(tiny_rembrandt: Path, tmp_path: Path) -> None:
    """``lesion_crop_mm`` without lesion sampling: the papers' rows (every head slice), each
    cut around its scan's lesion."""
    from harness.runner import RunOptions, prepare_data
    from harness.suite import parse_suite

    def view(task: dict):
        suite = parse_suite({"suite": {"name": "g", "task": "grading"}, "data": {"cohort": "rembrandt"},
                             "task": {"modalities": ["T1post", "FLAIR"], **task}})
        return prepare_data(suite, RunOptions(data=tiny_rembrandt, cache_dir=tmp_path, progress=False)).task_data

    cut, whole = view({"lesion_crop_mm": 48}), view({})
    assert cut.sample_ids == whole.sample_ids
    assert cut.slices().shape[1:] == (8, 8)
    assert whole.slices().shape[1:] != (8, 8)
    for image_id in set(cut.samples["image_id"]):
        assert cut.content_keys[image_id] != whole.content_keys[image_id]


def test_negative_crop_is_refused(tiny_rembrandt: Path) -> None:
    from harness.data.detect import load_cohort
    from harness.tasks import grading_task

    with pytest.raises(ValueError, match="lesion_crop_mm"):
        grading_task(load_cohort(tiny_rembrandt), {}, {}, lesion_crop_mm=-1.0)


def test_scans_without_the_finders_series_keep_every_slice_and_are_named(tiny_rembrandt: Path, tmp_path: Path) -> None:
    """No FLAIR decoded (the suite reads T1post only): nothing is dropped, and every scan is named."""
    from harness.runner import RunOptions, prepare_data
    from harness.suite import parse_suite

    def view(sampling: str):
        suite = parse_suite({"suite": {"name": "g", "task": "grading"}, "data": {"cohort": "rembrandt"},
                             "task": {"modalities": ["T1post"], "slice_sampling": sampling}})
        return prepare_data(suite, RunOptions(data=tiny_rembrandt, cache_dir=tmp_path, progress=False))

    lesion, every = view("lesion"), view("all")
    assert lesion.task_data.sample_ids == every.task_data.sample_ids
    named = {p.path for p in lesion.problems if "needs a decoded FLAIR series" in p.reason}
    assert named == set(every.task_data.samples["study_id"])
