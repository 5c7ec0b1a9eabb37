"""The ingestion cache: content keys, no re-decoding, atomic entries, workers, fingerprint."""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from fixture_writers import write_brats, write_rembrandt
from harness.data.cache import VolumeStore, dataset_fingerprint
from harness.data.detect import load_cohort
from harness.errors import HarnessError


def _backdate(root: Path, seconds: float = 60.0) -> None:
    """Make files look old, as they would be on any real second run (see RACY_WINDOW_NS)."""
    t = time.time() - seconds
    for dirpath, _, files in os.walk(root):
        for f in files:
            os.utime(os.path.join(dirpath, f), (t, t))


@pytest.fixture
def rem(tmp_path) -> Path:
    root = write_rembrandt(tmp_path / "data", 2)
    _backdate(root)
    return root


def _store(tmp_path: Path, **kw) -> VolumeStore:
    return VolumeStore(tmp_path / "cache", progress=False, **kw)


def test_second_load_decodes_and_reads_nothing(rem, tmp_path):
    c = load_cohort(rem)
    s1 = _store(tmp_path)
    v1, p1 = s1.load_many(c.series)
    assert s1.n_decoded == len(c.series) == 8 and s1.n_cache_hits == 0
    assert s1.n_files_read == 32
    v2, p2 = s1.load_many(c.series)
    assert s1.n_decoded == 8 and s1.n_cache_hits == 8 and s1.n_files_read == 32
    # a fresh store (a new process) on the same cache dir: still nothing decoded or read
    s2 = _store(tmp_path)
    v3, _ = s2.load_many(c.series)
    assert (s2.n_decoded, s2.n_cache_hits, s2.n_files_read) == (0, 8, 0)
    for sid in v1:
        np.testing.assert_array_equal(v1[sid].array, v3[sid].array)
        assert v1[sid].content_key == v3[sid].content_key
        assert v1[sid].spacing == v3[sid].spacing


def test_moved_dataset_reuses_entries(rem, tmp_path):
    c = load_cohort(rem)
    s = _store(tmp_path)
    s.load_many(c.series)
    moved = tmp_path / "moved"
    shutil.copytree(rem, moved)
    s2 = _store(tmp_path)
    s2.load_many(load_cohort(moved).series)
    assert s2.n_decoded == 0 and s2.n_cache_hits == 8  # re-hashed, not decoded


def test_changing_a_files_bytes_changes_the_key(rem, tmp_path):
    c = load_cohort(rem)
    s = _store(tmp_path)
    row = c.series.iloc[0]
    before = s.load(row)
    target = Path(sorted(row["files"])[0])
    data = bytearray(target.read_bytes())
    data[-1] ^= 0xFF  # flip one pixel byte; size unchanged
    target.write_bytes(bytes(data))
    after = s.load(row)
    assert after.content_key != before.content_key
    assert s.n_decoded == 2
    assert not np.array_equal(after.array, before.array)


def test_changing_the_preprocess_config_changes_the_key(rem, tmp_path):
    c = load_cohort(rem)
    s = _store(tmp_path)
    row = c.series.iloc[0]
    raw = s.load(row)
    small = s.load(row, {"in_plane": 4})
    assert small.content_key != raw.content_key
    assert small.array.shape == (4, 4, 4) and raw.array.shape == (4, 8, 8)
    assert small.spacing == (2.0, 2.0, 2.0)
    assert s.load(row, {"in_plane": 4}).content_key == small.content_key
    assert s.n_decoded == 2 and s.n_cache_hits == 1
    with pytest.raises(HarnessError, match="unknown preprocess"):
        s.load(row, {"inplane": 4})


def test_label_maps_resample_with_nearest_neighbour(tmp_path):
    root = write_brats(tmp_path / "data", 1)
    c = load_cohort(root)
    seg = c.series[c.series["modality"] == "SEG"].iloc[0]
    v = _store(tmp_path).load(seg, {"in_plane": 12})
    assert set(np.unique(v.array)) <= {0.0, 1.0, 2.0, 4.0}


def test_entries_are_written_atomically_and_corrupt_entries_rebuilt(rem, tmp_path):
    c = load_cohort(rem)
    s = _store(tmp_path)
    vols, _ = s.load_many(c.series)
    # arrays come memory-mapped from the cache: copy them before damaging their files
    first = {sid: np.array(v.array) for sid, v in vols.items()}
    cache = tmp_path / "cache" / "volumes"
    assert not list(cache.rglob("*.tmp"))
    npys = sorted(cache.rglob("*.npy"))
    assert len(npys) == 8 and len(list(cache.rglob("*.json"))) == 8
    # a damaged array file (e.g. disk full) is treated as a miss and rebuilt
    npys[0].write_bytes(npys[0].read_bytes()[:50])
    s2 = _store(tmp_path)
    vols2, problems = s2.load_many(c.series)
    assert s2.n_decoded == 1 and problems == []
    for sid in vols:
        np.testing.assert_array_equal(first[sid], vols2[sid].array)


def test_failed_series_are_cached_with_their_problems(tmp_path):
    root = write_rembrandt(tmp_path / "data", 1)
    t2 = next(root.glob("HF0001/*/*-AX T2-*"))
    (t2 / "notes.txt").write_text("x")
    for f in t2.glob("*.dcm"):
        f.write_bytes(f.read_bytes()[:-40])
    _backdate(root)
    c = load_cohort(root)
    s1 = _store(tmp_path)
    v1, p1 = s1.load_many(c.series)
    s2 = _store(tmp_path)
    v2, p2 = s2.load_many(c.series)
    assert s2.n_decoded == 0 and s2.n_files_read == 0
    assert sorted(map(str, p1)) == sorted(map(str, p2)) and len(p1) == 6
    assert set(v1) == set(v2) and len(v2) == 3


def test_workers_give_identical_results(rem, tmp_path):
    c = load_cohort(rem)
    seq, p_seq = VolumeStore(tmp_path / "c1", progress=False).load_many(c.series)
    par_store = VolumeStore(tmp_path / "c2", progress=False, workers=2)
    par, p_par = par_store.load_many(c.series, None)
    assert par_store.n_decoded == 8
    assert set(seq) == set(par) and p_seq == p_par
    for sid in seq:
        np.testing.assert_array_equal(seq[sid].array, par[sid].array)
        assert seq[sid].content_key == par[sid].content_key


def test_dataset_fingerprint_tracks_pixels_and_labels(rem, tmp_path):
    s = _store(tmp_path)
    c = load_cohort(rem)
    fp = dataset_fingerprint(c, s)
    assert dataset_fingerprint(load_cohort(rem), s) == fp
    # moving the folder does not change it
    moved = tmp_path / "moved"
    shutil.copytree(rem, moved)
    assert dataset_fingerprint(load_cohort(moved), s) == fp
    # a label change does
    csv = moved / "REMBRANDT_clinical.csv"
    df = pd.read_csv(csv, dtype=str, keep_default_na=False)
    df.loc[0, "Grade"] = "IV"
    df.to_csv(csv, index=False)
    fp_label = dataset_fingerprint(load_cohort(moved), s)
    assert fp_label != fp
    # a pixel change does
    f = Path(load_cohort(moved).series.iloc[0]["files"][0])
    data = bytearray(f.read_bytes())
    data[-2] ^= 0x01
    f.write_bytes(bytes(data))
    assert dataset_fingerprint(load_cohort(moved), s) not in (fp, fp_label)


def test_progress_bar_does_not_break_loading(rem, tmp_path, capsys):
    c = load_cohort(rem)
    vols, _ = VolumeStore(tmp_path / "cache", progress=True).load_many(c.series)
    assert len(vols) == 8
