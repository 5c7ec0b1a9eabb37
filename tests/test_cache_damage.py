"""Damaged cache files (issue 15): detected before use, rebuilt from the source, logged,
and the results equal those of an intact cache; never a bus error, even when a file is
truncated while a run holds it memory-mapped."""

from __future__ import annotations

import os
import pickle
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from conftest import subprocess_env
from fixture_writers import write_rembrandt
from harness.data.cache import VolumeStore
from harness.data.detect import load_cohort
from harness.parallel import CachedVolumes


@pytest.fixture
def rem(tmp_path) -> Path:
    root = write_rembrandt(tmp_path / "data", 2)
    old = 1_500_000_000  # older than the memo's racy window, so a rerun uses the memo
    for p in root.rglob("*"):
        os.utime(p, (old, old))
    return root


def _load(rem: Path, cache: Path):
    with VolumeStore(cache, progress=False) as s:
        vols, problems = s.load_many(load_cohort(rem).series)
        return {k: np.array(v.array) for k, v in vols.items()}, problems, s.n_decoded


def _npys(cache: Path) -> list[Path]:
    return sorted((cache / "volumes").rglob("*.npy"))


def test_truncated_array_is_logged_and_rebuilt(rem, tmp_path, capfd):
    intact, _, _ = _load(rem, tmp_path / "c")
    victim = _npys(tmp_path / "c")[3]
    os.truncate(victim, victim.stat().st_size - 100)
    again, problems, decoded = _load(rem, tmp_path / "c")
    err = capfd.readouterr().err
    assert f"{victim} is damaged" in err and "rebuilding" in err
    assert decoded == 1 and problems == []
    assert intact.keys() == again.keys()
    for k in intact:
        np.testing.assert_array_equal(intact[k], again[k])


@pytest.mark.parametrize("damage", ["garbage", "empty", "wrong shape"])
def test_corrupt_entry_metadata_is_logged_and_rebuilt(rem, tmp_path, capfd, damage):
    intact, _, _ = _load(rem, tmp_path / "c")
    meta = _npys(tmp_path / "c")[0].with_suffix(".json")
    if damage == "garbage":
        meta.write_bytes(b"\x00\xff{not json")
    elif damage == "empty":
        meta.write_text("")
    else:
        meta.write_text(meta.read_text().replace('"shape":[4,8,8]', '"shape":[5,8,8]'))
    again, _, decoded = _load(rem, tmp_path / "c")
    assert f"{meta if damage != 'wrong shape' else meta.with_suffix('.npy')} is damaged" \
        in capfd.readouterr().err
    assert decoded == 1
    for k in intact:
        np.testing.assert_array_equal(intact[k], again[k])


def test_corrupt_stat_memo_is_moved_aside_and_rebuilt(rem, tmp_path, capfd):
    intact, _, _ = _load(rem, tmp_path / "c")
    memo = tmp_path / "c" / "stat-memo.sqlite"
    memo.write_bytes(b"this is not an sqlite database" * 200)
    again, problems, decoded = _load(rem, tmp_path / "c")
    err = capfd.readouterr().err
    assert f"{memo} is damaged" in err
    assert decoded == 0 and problems == []  # entries still found by content, files re-hashed
    assert list((tmp_path / "c").glob("stat-memo.sqlite.damaged-*"))
    for k in intact:
        np.testing.assert_array_equal(intact[k], again[k])
    _, _, decoded = _load(rem, tmp_path / "c")  # and the fresh memo works
    assert decoded == 0


# The scenario runs in a child process: without the check it dies of SIGBUS, which would
# take pytest down with it.
_WHILE_MAPPED = textwrap.dedent("""
    import os, pickle, sys
    import numpy as np
    from harness.data.cache import VolumeStore
    from harness.data.detect import load_cohort
    from harness.parallel import CachedVolumes

    data, cache = sys.argv[1], sys.argv[2]
    store = VolumeStore(cache, progress=False)
    vols, _ = store.load_many(load_cohort(data).series)
    arrays = CachedVolumes.from_arrays({k: v.array for k, v in vols.items()})
    assert isinstance(arrays, CachedVolumes)
    key = sorted(arrays)[0]
    before = np.array(arrays[key])              # mapped and read: the run holds it
    worker_view = pickle.dumps(arrays)          # what a fold worker receives
    os.truncate(arrays.path(key), 200)          # damaged in place while mapped
    after = np.array(arrays[key])               # must not be a bus error
    assert np.array_equal(before, after), "rebuilt array differs"
    os.truncate(arrays.path(key), 150)          # damaged again, before a worker maps it
    worker = pickle.loads(worker_view)
    assert np.array_equal(before, np.array(worker[key])), "worker copy differs"
    print("OK", key)
""")


def test_array_truncated_while_mapped_is_rebuilt_not_a_bus_error(tmp_path):
    from fixture_writers import write_tcia_study

    # 8 x 64 x 64 float32 = 128 KiB: pages wholly past the cut exist, so touching them is
    # SIGBUS without the check (a one-page array would only read zeros silently).
    data = tmp_path / "data"
    write_tcia_study(data, "HF0001", "19970301", (("AX T2", 3),), shape=(8, 64, 64))
    (data / "REMBRANDT_clinical.csv").write_text("Sample,Disease,Grade\nHF0001,GBM,IV\n")
    script = tmp_path / "while_mapped.py"
    script.write_text(_WHILE_MAPPED)
    proc = subprocess.run([sys.executable, str(script), str(data), str(tmp_path / "c")],
                          capture_output=True, text=True, timeout=120, env=subprocess_env())
    assert proc.returncode != -signal.SIGBUS, "bus error: " + proc.stderr[-2000:]
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.startswith("OK")
    assert proc.stderr.count("is damaged") == 2 and "rebuilding" in proc.stderr


def test_mapped_volumes_without_a_source_refuse_with_a_message(rem, tmp_path):
    with VolumeStore(tmp_path / "c", progress=False) as s:
        vols, _ = s.load_many(load_cohort(rem).series)
    paths = {k: str(v.array.filename) for k, v in vols.items()}
    plain = CachedVolumes(paths)
    key = sorted(paths)[0]
    os.truncate(paths[key], 200)
    from harness.errors import HarnessError
    with pytest.raises(HarnessError, match="is damaged.*run again"):
        plain[key]
    assert pickle.loads(pickle.dumps(plain)).path(key) == paths[key]


def test_damaged_feature_file_is_recomputed(tmp_path, capfd):
    import pandas as pd

    from harness.features.store import FeatureStore
    from harness.tasks import TaskData

    vol = np.arange(3 * 4 * 4, dtype=np.float32).reshape(3, 4, 4)
    samples = pd.DataFrame({"image_id": ["a"] * 3, "slice_index": [0, 1, 2]})
    data = TaskData.__new__(TaskData)
    object.__setattr__(data, "samples", samples)
    object.__setattr__(data, "volumes", {"a": vol})
    object.__setattr__(data, "content_keys", {"a": "k" * 64})
    fn = lambda v: v.reshape(v.shape[0], -1)  # noqa: E731
    first = FeatureStore(tmp_path).matrix(data, "flat", {}, fn)
    [cached] = list(tmp_path.glob("*.npy"))
    os.truncate(cached, cached.stat().st_size - 8)
    store = FeatureStore(tmp_path)
    again = store.matrix(data, "flat", {}, fn)
    assert store.n_computed == 1 and f"{cached} is damaged" in capfd.readouterr().err
    np.testing.assert_array_equal(first, again)
