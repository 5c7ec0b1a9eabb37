"""Synthetic cohort generation per patient, against just writing the same DICOM files.

The harness path is :func:`harness.synth.generate_cohort` (REMBRANDT-style, default 2 mm
grid, one process): per patient, anatomy jitter, a Fisher-Kolmogorov tumour simulation,
the MR imaging model and four DICOM series. The bare baseline writes the same number of
DICOM slices of the same size with plain pydicom: ``pydicom.dcmwrite`` of one ready-made
dataset (a generated slice, read and fully parsed once, untimed). The ratio
``generate seconds / bare write seconds`` is the cost of the simulation over writing the
files; seconds per patient are reported too. No target in the issue: reported only.
Run: ``pytest benchmarks/perf/test_synth.py --benchmark-only``.
"""

from __future__ import annotations

import itertools
import shutil
import time
from pathlib import Path

import pydicom
import pytest

from harness.synth import DEFAULT_PATIENTS, generate_cohort
from harness.synth.anatomy import load_anatomy

N_PATIENTS = 4
GRID_MM = 2.0


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory) -> tuple[int, pydicom.Dataset]:
    """Warm-up cohort (anatomy loaded, imports done): its file count and one parsed slice."""
    root = tmp_path_factory.mktemp("perf-synth-ref")
    load_anatomy(GRID_MM)
    out = generate_cohort("rembrandt", root / "ref", n_patients=N_PATIENTS, seed=0, grid_mm=GRID_MM,
                          progress=False, jobs=1)
    files = sorted(out.rglob("*.dcm"))
    ds = pydicom.dcmread(files[len(files) // 2])
    for _ in ds:  # convert every raw element: the baseline writes a ready-made dataset
        pass
    return len(files), ds


def _bare_write(folder: Path, ds: pydicom.Dataset, n_files: int) -> None:
    folder.mkdir(parents=True)
    for i in range(n_files):
        pydicom.dcmwrite(folder / f"1-{i:05d}.dcm", ds, enforce_file_format=True)


def test_generate_cohort_per_patient_vs_bare_dcmwrite(benchmark, report_ratio, reference, tmp_path):
    n_files, ds = reference
    bare_times: list[float] = []
    rounds = itertools.count()

    def setup() -> tuple[tuple, dict]:  # untimed: clean up, time the bare writer, fresh output folder
        i = next(rounds)
        shutil.rmtree(tmp_path / "bare", ignore_errors=True)
        shutil.rmtree(tmp_path / f"cohort{i - 1}", ignore_errors=True)
        start = time.perf_counter()
        _bare_write(tmp_path / "bare", ds, n_files)
        bare_times.append(time.perf_counter() - start)
        return ("rembrandt", tmp_path / f"cohort{i}"), dict(n_patients=N_PATIENTS, seed=0, grid_mm=GRID_MM,
                                                           progress=False, jobs=1)

    out = benchmark.pedantic(generate_cohort, setup=setup, rounds=3, iterations=1)
    assert sum(1 for _ in out.rglob("*.dcm")) == n_files
    bare_seconds = min(bare_times)
    gen_seconds = benchmark.stats.stats.min
    per_patient = gen_seconds / N_PATIENTS
    print(f"\nsynthetic cohort: {per_patient:.2f} s per patient (one process), {n_files // N_PATIENTS} slices "
          f"of {ds.Rows}x{ds.Columns} per patient; default {DEFAULT_PATIENTS['rembrandt']}-patient cohort "
          f"~{per_patient * DEFAULT_PATIENTS['rembrandt'] / 2:.0f} s on 2 processes (projected)")
    report_ratio(
        gen_seconds / bare_seconds,
        ratio_is="generate_cohort seconds / bare dcmwrite seconds for the same files (cost of the simulation)",
        baseline=f"pydicom.dcmwrite of a ready-made dataset, {n_files} files of {ds.Rows}x{ds.Columns}",
        baseline_seconds=bare_seconds, label=f"synthetic cohort generation, {N_PATIENTS} patients, 1 process",
        patients=N_PATIENTS, files=n_files, seconds_per_patient=round(per_patient, 3),
        bare_seconds_per_patient=round(bare_seconds / N_PATIENTS, 4),
        projected_default_cohort_seconds_2_processes=round(per_patient * DEFAULT_PATIENTS["rembrandt"] / 2, 1),
    )
