"""Ingestion speed and memory, as ratios against a bare pydicom loop measured in the same run.

Run: ``pytest benchmarks/perf/test_ingestion.py --benchmark-only``. Targets:

- issue 2: single-process harness ingestion throughput >= 0.8x the bare
  ``pydicom.dcmread(f).pixel_array`` loop over the same files; peak heap during
  ingestion does not grow with the number of patients (< 1.25x for 2x the patients);
- issue 7: ingestion with 2 worker processes >= 1.6x the single-process bare loop, on
  a cohort big enough that starting the workers (spawn) is amortised; cached reads
  >= 20x faster than decoding.

The bare loop is timed in the setup of every benchmark round (untimed by
pytest-benchmark), so harness and baseline rounds interleave and share machine noise.
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
#: Cohort for the 2-worker figure: 24 patients = 7,776 slices, a few seconds of decoding.
N_PATIENTS_WORKERS = 24
BARE = "bare pydicom.dcmread(f).pixel_array loop, 1 process"


@pytest.fixture(scope="module")
def cohorts(tmp_path_factory: pytest.TempPathFactory) -> dict[int, Path]:
    """REMBRANDT-style cohorts at the default 2 mm grid: N and 2N patients."""
    root = tmp_path_factory.mktemp("perf-cohorts")
    return {
        n: generate_cohort("rembrandt", root / f"n{n}", n_patients=n, seed=5, grid_mm=2.0, progress=False)
        for n in (N_PATIENTS, 2 * N_PATIENTS)
    }


@pytest.fixture(scope="module")
def big_cohort(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("perf-cohort-big")
    return generate_cohort("rembrandt", root / "big", n_patients=N_PATIENTS_WORKERS, seed=7, grid_mm=2.0,
                           progress=False)


def _bare_loop(files: list[str]) -> int:
    total = 0
    for f in files:
        total += pydicom.dcmread(f).pixel_array.size
    return total


def _ingest(data_dir: Path, cache_dir: Path, workers: int = 1) -> int:
    """What `run` does before any model: index, decode every series, fill the cache."""
    cohort = load_cohort(data_dir)
    store = VolumeStore(cache_dir, progress=False, workers=workers)
    volumes, _ = store.load_many(cohort.series)
    store.close()
    return len(volumes)


def _timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def _best_of(fn, repeat: int = 3) -> float:
    return min(_timed(fn) for _ in range(repeat))


def _ingest_vs_bare(benchmark, data_dir: Path, cache: Path, workers: int) -> tuple[int, float, float, int]:
    """Benchmark harness ingestion (empty cache each round); time the bare loop between rounds."""
    files = sorted(str(p) for p in data_dir.rglob("*.dcm"))
    bare_times: list[float] = []

    def setup() -> None:
        bare_times.append(_timed(lambda: _bare_loop(files)))
        shutil.rmtree(cache, ignore_errors=True)

    n_series = benchmark.pedantic(_ingest, args=(data_dir, cache, workers), setup=setup, rounds=3,
                                  iterations=1)
    return len(files), min(bare_times), benchmark.stats.stats.min, n_series


def test_ingestion_throughput_vs_bare_pydicom(benchmark, report_ratio, cohorts, tmp_path):
    n_files, bare_seconds, harness_seconds, n_series = _ingest_vs_bare(
        benchmark, cohorts[N_PATIENTS], tmp_path / "cache", workers=1)
    ratio = bare_seconds / harness_seconds
    met = report_ratio(
        ratio, ratio_is="bare seconds / harness seconds (throughput, >1: harness faster)",
        baseline=BARE, baseline_seconds=bare_seconds, target=(">=", 0.8),
        label=f"ingestion, 1 process, {n_files} files", files=n_files, series=n_series, workers=1,
        harness_seconds=round(harness_seconds, 3),
    )
    assert met, f"1-process ingestion throughput {ratio:.2f}x the bare loop, target >= 0.8x"


def test_ingestion_two_workers_vs_bare_pydicom(benchmark, report_ratio, big_cohort, tmp_path):
    n_files, bare_seconds, harness_seconds, n_series = _ingest_vs_bare(
        benchmark, big_cohort, tmp_path / "cache", workers=2)
    ratio = bare_seconds / harness_seconds
    met = report_ratio(
        ratio,
        ratio_is="bare 1-process seconds / harness 2-worker seconds (throughput, >1: harness faster)",
        baseline=BARE, baseline_seconds=bare_seconds, target=(">=", 1.6),
        label=f"ingestion, 2 workers, {n_files} files", files=n_files, series=n_series, workers=2,
        harness_seconds=round(harness_seconds, 3),
    )
    assert met, f"2-worker ingestion throughput {ratio:.2f}x the 1-process bare loop, target >= 1.6x"


def test_cached_reads_vs_decoding(benchmark, report_ratio, cohorts, tmp_path):
    data_dir = cohorts[N_PATIENTS]
    cache = tmp_path / "cache"
    decode_seconds = _timed(lambda: _ingest(data_dir, cache))

    def cached() -> int:
        cohort = load_cohort(data_dir)
        store = VolumeStore(cache, progress=False)
        volumes, _ = store.load_many(cohort.series)
        assert store.n_decoded == 0
        return sum(float(v.array.sum()) > 0 for v in volumes.values())  # touch every voxel

    benchmark.pedantic(cached, rounds=3, iterations=1)
    ratio = decode_seconds / benchmark.stats.stats.min
    met = report_ratio(
        ratio,
        ratio_is="decoding seconds / cached-read seconds (>1: cache faster)",
        baseline="harness ingestion into an empty cache (decode + write), 1 process",
        baseline_seconds=decode_seconds, target=(">=", 20), label="cached read vs decoding",
    )
    assert met, f"cached reads {ratio:.1f}x faster than decoding, target >= 20x"


def test_peak_memory_flat_in_number_of_patients(benchmark, report_ratio, cohorts, tmp_path):
    peaks = {}
    for n, data_dir in cohorts.items():
        tracemalloc.start()
        _ingest(data_dir, tmp_path / f"cache{n}")
        peaks[n] = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    growth = peaks[2 * N_PATIENTS] / peaks[N_PATIENTS]
    benchmark.pedantic(lambda: None, rounds=1, iterations=1)
    print(f"\npeak heap: {N_PATIENTS} patients {peaks[N_PATIENTS] / 2**20:.1f} MB, "
          f"{2 * N_PATIENTS} patients {peaks[2 * N_PATIENTS] / 2**20:.1f} MB (x{growth:.2f})")
    met = report_ratio(
        growth, ratio_is=f"peak traced heap, {2 * N_PATIENTS} / {N_PATIENTS} patients",
        baseline=f"peak traced heap ingesting {N_PATIENTS} patients", target=("<", 1.25),
        label="peak heap growth, 2x the patients",
        peak_mb={str(n): round(p / 2**20, 1) for n, p in peaks.items()},
    )
    assert met, f"peak heap grew x{growth:.2f} for 2x the patients, target < 1.25"
