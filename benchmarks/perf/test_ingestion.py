"""Ingestion speed and memory, as ratios against a bare pydicom loop measured in the same run.

Run: ``pytest benchmarks/perf --benchmark-only``. Targets (issue 2): harness ingestion
throughput >= 0.8x the bare ``pydicom.dcmread(f).pixel_array`` loop over the same files;
peak heap during ingestion does not grow with the number of patients.
"""

from __future__ import annotations

import shutil
import time
import tracemalloc
from pathlib import Path

import pydicom
import pytest

from harness.data import VolumeStore, load_cohort
from harness.synth import generate_cohort

N_PATIENTS = 6


@pytest.fixture(scope="module")
def cohorts(tmp_path_factory: pytest.TempPathFactory) -> dict[int, Path]:
    """REMBRANDT-style cohorts at the default 2 mm grid: N and 2N patients."""
    root = tmp_path_factory.mktemp("perf-cohorts")
    return {
        n: generate_cohort("rembrandt", root / f"n{n}", n_patients=n, seed=5, grid_mm=2.0, progress=False)
        for n in (N_PATIENTS, 2 * N_PATIENTS)
    }


def _bare_loop(files: list[str]) -> int:
    total = 0
    for f in files:
        total += pydicom.dcmread(f).pixel_array.size
    return total


def _ingest(data_dir: Path, cache_dir: Path) -> int:
    """What `run` does before any model: index, decode every series, fill the cache."""
    shutil.rmtree(cache_dir, ignore_errors=True)
    cohort = load_cohort(data_dir)
    store = VolumeStore(cache_dir, progress=False)
    volumes, _ = store.load_many(cohort.series)
    store.close()
    return len(volumes)


def _best_of(fn, repeat: int = 3) -> float:
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def test_ingestion_throughput_vs_bare_pydicom(benchmark, cohorts, tmp_path):
    data_dir = cohorts[N_PATIENTS]
    files = sorted(str(p) for p in data_dir.rglob("*.dcm"))
    bare_seconds = _best_of(lambda: _bare_loop(files))
    n_series = benchmark.pedantic(_ingest, args=(data_dir, tmp_path / "cache"), rounds=3, iterations=1)
    harness_seconds = benchmark.stats.stats.min
    ratio = bare_seconds / harness_seconds  # throughput ratio: >1 means the harness is faster
    benchmark.extra_info.update(
        files=len(files), series=n_series, bare_seconds=round(bare_seconds, 3),
        harness_seconds=round(harness_seconds, 3), throughput_vs_bare=round(ratio, 3),
    )
    print(f"\ningestion: {len(files)} files, bare {bare_seconds:.2f}s, harness {harness_seconds:.2f}s, "
          f"throughput ratio {ratio:.2f} (target >= 0.8)")
    assert ratio >= 0.8


def test_cached_reads_vs_decoding(benchmark, cohorts, tmp_path):
    data_dir = cohorts[N_PATIENTS]
    cache = tmp_path / "cache"
    decode_seconds = _best_of(lambda: _ingest(data_dir, cache), repeat=1)

    def cached() -> int:
        cohort = load_cohort(data_dir)
        store = VolumeStore(cache, progress=False)
        volumes, _ = store.load_many(cohort.series)
        assert store.n_decoded == 0
        return sum(float(v.array.sum()) > 0 for v in volumes.values())  # touch every voxel

    benchmark.pedantic(cached, rounds=3, iterations=1)
    ratio = decode_seconds / benchmark.stats.stats.min
    benchmark.extra_info.update(decode_seconds=round(decode_seconds, 3), cached_speedup=round(ratio, 2))
    print(f"\ncached read {ratio:.1f}x faster than decoding")
    assert ratio > 1.0


def test_peak_memory_flat_in_number_of_patients(benchmark, cohorts, tmp_path):
    peaks = {}
    for n, data_dir in cohorts.items():
        tracemalloc.start()
        _ingest(data_dir, tmp_path / f"cache{n}")
        peaks[n] = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    growth = peaks[2 * N_PATIENTS] / peaks[N_PATIENTS]
    benchmark.extra_info.update(
        peak_mb={str(n): round(p / 2**20, 1) for n, p in peaks.items()}, peak_growth_2x_patients=round(growth, 3)
    )
    benchmark.pedantic(lambda: None, rounds=1, iterations=1)
    print(f"\npeak heap: {N_PATIENTS} patients {peaks[N_PATIENTS] / 2**20:.1f} MB, "
          f"{2 * N_PATIENTS} patients {peaks[2 * N_PATIENTS] / 2**20:.1f} MB (x{growth:.2f})")
    assert growth < 1.25
