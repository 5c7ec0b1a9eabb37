"""DWT-DCT slice features: the batch-vectorised extractor against the per-slice loop.

Both are :mod:`harness.features` code on the same stack of slices: ``dwtdct_features``
(the whole stack at once, in chunks) and ``dwtdct_features_loop`` (the independent
one-slice-at-a-time reference). The benchmark asserts they give the same numbers and
reports ``loop seconds / vectorised seconds``. The slices are real decoded synthetic
MRI (one REMBRANDT-style patient at the default 2 mm grid, 32 central axial slices of
each of T1, T1post, T2 and FLAIR) through the paper's default settings (256 px, Haar,
brightest-cluster ROI, 100 coefficients). No target in the issue: the ratio is reported.
Run: ``pytest benchmarks/perf/test_features.py --benchmark-only``.
"""

from __future__ import annotations

import time

import numpy as np
import pytest

from harness.data import VolumeStore, load_cohort
from harness.features import DwtDctConfig, dwtdct_features, dwtdct_features_loop
from harness.synth import generate_cohort

SLICES_PER_SERIES = 32


@pytest.fixture(scope="module")
def slices(tmp_path_factory: pytest.TempPathFactory) -> np.ndarray:
    """(128, H, W) float32: the central axial slices of one patient's four series."""
    root = tmp_path_factory.mktemp("perf-features")
    data_dir = generate_cohort("rembrandt", root / "cohort", n_patients=1, seed=3, progress=False, jobs=1)
    store = VolumeStore(root / "cache", progress=False)
    volumes, _ = store.load_many(load_cohort(data_dir).series)
    store.close()
    stacks = []
    for _, vol in sorted(volumes.items()):
        mid = vol.array.shape[0] // 2
        stacks.append(vol.array[mid - SLICES_PER_SERIES // 2: mid + SLICES_PER_SERIES // 2])
    return np.concatenate(stacks)


def test_dwtdct_vectorised_vs_per_slice_loop(benchmark, report_ratio, slices):
    cfg = DwtDctConfig()
    loop_runs: list[tuple[float, np.ndarray]] = []

    def setup() -> None:  # the loop runs between benchmark rounds: both share machine noise
        start = time.perf_counter()
        out = dwtdct_features_loop(slices, cfg)
        loop_runs.append((time.perf_counter() - start, out))

    batched = benchmark.pedantic(dwtdct_features, args=(slices, cfg), setup=setup, rounds=3, iterations=1)
    loop_seconds = min(t for t, _ in loop_runs)
    np.testing.assert_allclose(batched, loop_runs[-1][1], rtol=1e-5, atol=1e-5)
    assert batched.shape == (len(slices), cfg.n_coefficients)
    vec_seconds = benchmark.stats.stats.min
    report_ratio(
        loop_seconds / vec_seconds, ratio_is="per-slice loop seconds / vectorised seconds (>1: vectorised faster)",
        baseline="dwtdct_features_loop, one slice at a time", baseline_seconds=loop_seconds,
        label=f"DWT-DCT features, {len(slices)} slices {slices.shape[1]}x{slices.shape[2]} -> "
              f"{cfg.image_size}px",
        slices=len(slices), vectorised_seconds=round(vec_seconds, 4),
        ms_per_slice_vectorised=round(1e3 * vec_seconds / len(slices), 3),
        ms_per_slice_loop=round(1e3 * loop_seconds / len(slices), 3), same_numbers=True,
    )
