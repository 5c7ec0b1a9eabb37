"""REMBRANDT at scale: thin-slice cohorts, parallel ingestion, the ingest command.

Tiny sizes here (2 patients, 6 mm grid); the full-size run (130 patients, 110,240 slice
files) is the slow test at the end and ``benchmarks/scale/rembrandt_scale.py``.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pydicom
import pytest

from conftest import REPO_ROOT, subprocess_env
from harness.cli import main
from harness.data import VolumeStore, load_cohort
from harness.errors import HarnessError
from harness.synth import generate_cohort
from harness.synth.anatomy import load_anatomy
from harness.synth.generate import REMBRANDT_FULL_PATIENTS, REMBRANDT_FULL_SLICES_PER_SERIES

from test_synth import tree_hash  # noqa: E402

GRID = 6.0
SLICES = 9


def _backdate(root: Path, seconds: float = 60.0) -> None:
    """Files older than the stat memo's racy window, as on any real second run."""
    t = time.time() - seconds
    for dirpath, _, files in os.walk(root):
        for f in files:
            os.utime(os.path.join(dirpath, f), (t, t))


@pytest.fixture(scope="module")
def thin(tmp_path_factory) -> Path:
    root = generate_cohort("rembrandt", tmp_path_factory.mktemp("thin") / "c", n_patients=2, seed=4,
                           grid_mm=GRID, slices_per_series=SLICES, progress=False, jobs=1)
    _backdate(root)
    return root


def test_full_size_preset_is_the_real_collection() -> None:
    assert REMBRANDT_FULL_PATIENTS == 130
    total = REMBRANDT_FULL_PATIENTS * 4 * REMBRANDT_FULL_SLICES_PER_SERIES
    assert abs(total - 110_020) / 110_020 < 0.01  # REMBRANDT: 110,020 images


def test_slices_per_series_sets_the_slice_count_over_the_same_extent(thin: Path) -> None:
    nz = load_anatomy(GRID).shape[2]
    for patient in ("HF0001", "HF0002"):
        series = sorted(p for p in (thin / patient).glob("*/*") if p.is_dir())
        assert len(series) == 4
        for folder in series:
            files = sorted(folder.glob("*.dcm"))
            assert len(files) == SLICES
            dss = sorted((pydicom.dcmread(f) for f in files), key=lambda d: float(d.ImagePositionPatient[2]))
            z = np.array([float(d.ImagePositionPatient[2]) for d in dss])
            step = GRID * (nz - 1) / (SLICES - 1)
            assert np.allclose(np.diff(z), step, atol=1e-3)
            assert float(dss[0].SliceThickness) == pytest.approx(step, abs=1e-4)
            assert float(dss[0].PixelSpacing[0]) == GRID
            assert sorted(int(d.InstanceNumber) for d in dss) == list(range(1, SLICES + 1))


def test_thin_cohort_is_deterministic_and_independent_of_jobs(thin: Path, tmp_path: Path) -> None:
    again = generate_cohort("rembrandt", tmp_path / "again", n_patients=2, seed=4, grid_mm=GRID,
                            slices_per_series=SLICES, progress=False, jobs=2)
    assert tree_hash(again) == tree_hash(thin)
    other = generate_cohort("rembrandt", tmp_path / "other", n_patients=2, seed=5, grid_mm=GRID,
                            slices_per_series=SLICES, progress=False, jobs=1)
    assert tree_hash(other) != tree_hash(thin)
    # the labels are those of the same patients at the default slice count
    plain = generate_cohort("rembrandt", tmp_path / "plain", n_patients=2, seed=4, grid_mm=GRID,
                            progress=False, jobs=1)
    for csv in ("truth.csv", "REMBRANDT_clinical.csv"):
        assert (plain / csv).read_bytes() == (thin / csv).read_bytes()


def test_scale_preset_and_bad_options(tmp_path: Path) -> None:
    out = generate_cohort("rembrandt", tmp_path / "one", scale="rembrandt", n_patients=1, grid_mm=GRID,
                          progress=False, jobs=1)
    files = list(out.rglob("*.dcm"))
    assert len(files) == 4 * REMBRANDT_FULL_SLICES_PER_SERIES
    with pytest.raises(HarnessError, match="only available for rembrandt"):
        generate_cohort("btp", tmp_path / "b", n_patients=1, grid_mm=GRID, slices_per_series=5, progress=False)
    with pytest.raises(HarnessError, match="scale 'rembrandt' is for"):
        generate_cohort("brats20", tmp_path / "s", scale="rembrandt", grid_mm=GRID, progress=False)
    with pytest.raises(HarnessError, match=">= 2"):
        generate_cohort("rembrandt", tmp_path / "r", n_patients=1, grid_mm=GRID, slices_per_series=1,
                        progress=False)


def test_parallel_ingestion_gives_the_same_arrays_keys_and_problems(thin: Path, tmp_path: Path) -> None:
    c = load_cohort(thin)
    serial_store = VolumeStore(tmp_path / "serial", progress=False)
    serial, p_serial = serial_store.load_many(c.series)
    par_store = VolumeStore(tmp_path / "par", progress=False, workers=2)
    par, p_par = par_store.load_many(c.series)
    assert par_store.n_decoded == serial_store.n_decoded == len(c.series) == 8
    assert list(par) == list(serial) and p_par == p_serial == []
    for sid, vol in serial.items():
        assert vol.array.shape[0] == SLICES
        assert par[sid].content_key == vol.content_key and par[sid].spacing == vol.spacing
        np.testing.assert_array_equal(par[sid].array, vol.array)
    # the parallel run filled the memo: a fresh store reads no image file
    warm = VolumeStore(tmp_path / "par", progress=False, workers=2)
    again, _ = warm.load_many(c.series)
    assert (warm.n_decoded, warm.n_files_read, warm.n_cache_hits) == (0, 0, 8)
    assert [v.content_key for v in again.values()] == [v.content_key for v in serial.values()]


def test_a_changed_file_is_rehashed_even_with_a_warm_memo(thin: Path, tmp_path: Path) -> None:
    """The batched memo lookup still notices a file whose size or mtime changed."""
    root = tmp_path / "copy"
    shutil.copytree(thin, root)
    _backdate(root)
    c = load_cohort(root)
    store = VolumeStore(tmp_path / "cache", progress=False, workers=2)
    first, _ = store.load_many(c.series)
    row = c.series.iloc[0]
    target = Path(sorted(row["files"])[0])
    data = bytearray(target.read_bytes())
    data[-2] ^= 0x01  # one pixel value, same size
    target.write_bytes(bytes(data))
    os.utime(target, (time.time() - 30, time.time() - 30))  # new mtime, outside the racy window
    fresh = VolumeStore(tmp_path / "cache", progress=False, workers=2)
    second, _ = fresh.load_many(c.series)
    assert fresh.n_decoded == 1 and fresh.n_files_read == SLICES
    sid = row["series_id"]
    assert second[sid].content_key != first[sid].content_key


def test_ingest_command_counts_and_names_a_corrupt_file(thin: Path, tmp_path: Path, capsys) -> None:
    root = tmp_path / "data"
    shutil.copytree(thin, root)
    bad = sorted(next(root.glob("HF0002/*/*-AX FLAIR-*")).glob("*.dcm"))[3]
    bad.write_bytes(bad.read_bytes()[:-500])
    report_json = tmp_path / "ingest.json"
    args = ["--no-progress", "--cache-dir", str(tmp_path / "cache"), "data", "ingest", str(root),
            "--jobs", "2", "--json", str(report_json)]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "Found: 2 patients, 8 series, 72 image files" in out
    assert "8 ok, 0 rejected (8 decoded" in out and "--jobs 2" in out
    assert str(bad) in out and "truncated" in out
    report = json.loads(report_json.read_text())
    assert (report["n_slices"], report["n_series_ok"], report["n_decoded"]) == (72, 8, 8)
    assert str(bad) in [p for p, _ in report["problems"]]
    # again: everything cached, and the bad slice is still named
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "(0 decoded, 8 already cached" in out and str(bad) in out


def test_ingest_command_on_an_empty_folder_fails(tmp_path: Path, capsys) -> None:
    (tmp_path / "nothing").mkdir()
    assert main(["--no-progress", "--cache-dir", str(tmp_path / "c"), "data", "ingest",
                 str(tmp_path / "nothing"), "--jobs", "1"]) == 1
    assert "nothing" in capsys.readouterr().err


def test_synth_command_scale_options(tmp_path: Path) -> None:
    out = tmp_path / "cli"
    assert main(["--no-progress", "data", "synth", "--cohort", "rembrandt", "--out", str(out), "--patients", "1",
                 "--grid-mm", "8", "--slices-per-series", "5"]) == 0
    assert len(list(out.rglob("*.dcm"))) == 20


def test_decode_workers_do_not_import_pandas() -> None:
    """Worker start-up is part of ingestion time: the worker module must stay light."""
    code = "import sys, harness.data.cache; sys.exit('pandas' in sys.modules or 'torch' in sys.modules)"
    proc = subprocess.run([sys.executable, "-c", code], env=subprocess_env(), timeout=120)
    assert proc.returncode == 0


@pytest.mark.slow
def test_full_size_cohort_ingests_in_flat_memory(tmp_path: Path) -> None:
    """Generates (or reuses) the 110,240-file cohort and checks the issue's memory targets.

    Needs about 2 GB for the cohort (kept under .harness-cache/scale for reuse, or
    $HARNESS_SCALE_ROOT) and 5 GB for the caches, and 10-20 minutes on 2 cores.
    """
    root = Path(os.environ.get("HARNESS_SCALE_ROOT", REPO_ROOT / ".harness-cache" / "scale"))
    out = tmp_path / "scale.json"
    proc = subprocess.run([sys.executable, str(REPO_ROOT / "benchmarks" / "scale" / "rembrandt_scale.py"),
                           "--root", str(root), "--jobs", "2", "--json", str(out), "--no-bare"],
                          env=subprocess_env(), timeout=3600)
    assert proc.returncode == 0
    res = json.loads(out.read_text())
    assert res["full_n_slices"] == 110_240 and res["half_n_slices"] == 55_120
    assert res["full_n_image_problems"] == 0 and res["warm_files_read"] == 0
    key = f"peak_{res['memory_measure']}_mb"
    assert res[f"full_{key}"] < 1536
    assert res["half_to_full_memory_ratio"] <= 1.10


def test_store_raises_the_open_file_limit() -> None:
    """Every memory-mapped volume holds a file descriptor: 1024 would cap a cohort's series."""
    code = ("import resource, sys; soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)\n"
            "if hard != resource.RLIM_INFINITY and hard <= 256: sys.exit(0)\n"
            "resource.setrlimit(resource.RLIMIT_NOFILE, (256, hard))\n"
            "import tempfile; from harness.data.cache import VolumeStore\n"
            "VolumeStore(tempfile.mkdtemp(), progress=False).close()\n"
            "sys.exit(resource.getrlimit(resource.RLIMIT_NOFILE)[0] <= 256)")
    proc = subprocess.run([sys.executable, "-c", code], env=subprocess_env(), timeout=120)
    assert proc.returncode == 0
