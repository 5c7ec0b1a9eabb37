"""Parallel fold jobs: a local process pool and Ray give the serial run's results, and
MLflow gets exactly one finished nested run per fold, none lost, duplicated or RUNNING."""

from __future__ import annotations

import json
import os
import pickle
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from harness.parallel import CachedVolumes, SerialExecutor, run_jobs
from harness.runner import RunOptions, run_suite
from harness.suite import parse_suite
from test_runner import TINY_SUITE

HELPERS = Path(__file__).parent / "helpers"

#: The tiny grading suite with a torch baseline too, whose sums depend on thread counts.
PARALLEL_SUITE = json.loads(json.dumps(TINY_SUITE))
PARALLEL_SUITE["baselines"] = {
    "default": ["majority", "logreg_dwtdct", "dwtdct_lstm"],
    "params": {"logreg_dwtdct": {"image_size": 32},
               "dwtdct_lstm": {"image_size": 32, "epochs": 2, "hidden": 8, "seq_len": 4}},
}


def run_parallel_suite(cohort: Path, tmp: Path, name: str, suite_dict: dict | None = None, **kw):
    suite = parse_suite(json.loads(json.dumps(suite_dict or PARALLEL_SUITE)))
    uri = f"sqlite:///{tmp / name / 'mlflow.db'}"
    (tmp / name).mkdir(parents=True, exist_ok=True)
    opts = RunOptions(data=cohort, out=tmp / name / "out", tracking_uri=uri, cache_dir=tmp / name / "cache",
                      progress=False, **kw)
    return run_suite(suite, opts), uri


def mlflow_runs(uri: str, experiment: str = "harness/tiny-grading"):
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=uri)
    exp = client.get_experiment_by_name(experiment)
    runs = client.search_runs([exp.experiment_id], max_results=5000)
    parents = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    children = [r for r in runs if "mlflow.parentRunId" in r.data.tags]
    return parents, children


def fold_metrics(uri: str) -> dict[tuple[str, str, int], dict[str, float]]:
    """(baseline, protocol, fold) -> the fold run's metrics, asserting one run per fold."""
    parents, children = mlflow_runs(uri)
    out: dict[tuple[str, str, int], dict[str, float]] = {}
    by_parent = {p.info.run_id: p for p in parents}
    for child in children:
        parent = by_parent[child.data.tags["mlflow.parentRunId"]]
        key = (parent.data.tags["baseline"], parent.data.tags["protocol"], int(child.data.tags["harness.fold"]))
        assert key not in out, f"duplicate fold run {key}"
        out[key] = {k: v for k, v in child.data.metrics.items() if k != "fit_predict_seconds"}
    return out


def assert_mlflow_complete(uri: str, expected_folds: dict[str, int]) -> None:
    parents, children = mlflow_runs(uri)
    assert [r.info.status for r in parents + children if r.info.status != "FINISHED"] == []
    for parent in parents:
        kids = [c for c in children if c.data.tags["mlflow.parentRunId"] == parent.info.run_id]
        folds = sorted(int(k.data.tags["harness.fold"]) for k in kids)
        assert folds == list(range(expected_folds[parent.data.tags["protocol"]])), parent.data.tags
        assert "accuracy" in parent.data.metrics


def results(summary: dict) -> list[tuple]:
    return [(r["baseline"], r["protocol"], r["metric"], r["mean"], tuple(r["ci95"])) for r in summary["results"]]


def predictions(out: Path) -> dict[str, pd.DataFrame]:
    return {p.name: pd.read_csv(p) for p in sorted((out / "predictions").glob("*.csv"))}


# -- units ----------------------------------------------------------------------------
def test_cached_volumes_travel_as_paths_and_reopen_the_same_arrays(tmp_path):
    arrays = {}
    for i in range(3):
        np.save(tmp_path / f"v{i}.npy", np.random.default_rng(i).random((4, 16, 16), dtype=np.float32))
        arrays[f"s{i}"] = np.load(tmp_path / f"v{i}.npy", mmap_mode="r")
    volumes = CachedVolumes.from_arrays(arrays)
    assert isinstance(volumes, CachedVolumes)
    blob = pickle.dumps(volumes)
    assert len(blob) < 1000  # 3 x 4 KiB of pixels would not fit
    again = pickle.loads(blob)
    assert sorted(again) == ["s0", "s1", "s2"]
    for key in arrays:
        np.testing.assert_array_equal(again[key], arrays[key])
    # in-memory arrays are not files: they stay a plain mapping
    assert isinstance(CachedVolumes.from_arrays({"a": np.zeros(3)}), dict)


class _Job:
    def __init__(self, run: int, n: int):
        self.run, self.n, self.data_key = run, n, "d"


def _square_or_fail(job: _Job, data: dict) -> int:
    if job.n < 0:
        raise ValueError(f"bad job {job.n}")
    return job.n * job.n + data["offset"]


def test_run_jobs_skips_the_rest_of_a_failed_run_and_reports_each_result_once():
    jobs = [_Job(0, 1), _Job(1, -1), _Job(1, 5), _Job(0, 2)]
    failed: set[int] = set()
    seen: list[tuple[int, object]] = []

    def on_result(job, res):
        seen.append((job.n, res))
        if isinstance(res, Exception):
            failed.add(job.run)

    run_jobs(SerialExecutor(), _square_or_fail, jobs, {"d": {"offset": 10}}, on_result=on_result,
             should_run=lambda job: job.run not in failed)
    assert [n for n, _ in seen] == [1, -1, 2]  # job 5 belongs to the failed run: never started
    assert seen[0][1] == 11 and seen[2][1] == 14 and isinstance(seen[1][1], ValueError)


# -- end to end -------------------------------------------------------------------------
EXPECTED_FOLDS = {"row_random": 1, "patient_kfold": 3}


@pytest.fixture(scope="module")
def serial_reference(tiny_rembrandt, tmp_path_factory):
    """The serial run every parallel run must reproduce: (result, mlflow uri, out dir)."""
    tmp = tmp_path_factory.mktemp("serial")
    result, uri = run_parallel_suite(tiny_rembrandt, tmp, "serial", jobs=1)
    assert result.failures == []
    assert_mlflow_complete(uri, EXPECTED_FOLDS)
    return result, uri, tmp / "serial" / "out"


def assert_same_as_serial(serial_reference, result, uri: str, out: Path) -> None:
    serial, serial_uri, serial_out = serial_reference
    assert result.failures == []
    assert result.folds_fitted == serial.folds_fitted == 3 * (1 + 3)
    assert results(result.summary) == results(serial.summary)
    a, b = predictions(serial_out), predictions(out)
    assert a.keys() == b.keys() and len(a) == 6
    for name in a:
        pd.testing.assert_frame_equal(a[name], b[name], check_exact=True)
    assert_mlflow_complete(uri, EXPECTED_FOLDS)
    assert fold_metrics(uri) == fold_metrics(serial_uri)


def test_process_pool_gives_the_serial_results_and_one_mlflow_run_per_fold(
        tiny_rembrandt, serial_reference, tmp_path):
    pooled, pooled_uri = run_parallel_suite(tiny_rembrandt, tmp_path, "pool", jobs=2)
    assert_same_as_serial(serial_reference, pooled, pooled_uri, tmp_path / "pool" / "out")
    expected = EXPECTED_FOLDS
    # a rerun reuses every fold and every finished parent run: one parent per baseline x
    # protocol and one nested run per fold, still (no duplicates in the store)
    again, _ = run_parallel_suite(tiny_rembrandt, tmp_path, "pool", jobs=2)
    assert again.folds_fitted == 0 and again.folds_reused == pooled.folds_fitted
    assert_mlflow_complete(pooled_uri, expected)
    parents, children = mlflow_runs(pooled_uri)
    assert len(parents) == 6 and len(children) == 12


def test_a_failing_baseline_fails_alone_and_leaves_nothing_running(tiny_rembrandt, tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(HELPERS))
    suite = json.loads(json.dumps(TINY_SUITE))
    suite["baselines"] = {"default": ["faulty_baselines:RaisingMajority", "majority"]}
    suite["protocols"] = {"patient_kfold": {"n_splits": 3}}
    result, uri = run_parallel_suite(tiny_rembrandt, tmp_path, "fail", suite, jobs=2)
    assert len(result.failures) == 1 and "this baseline always fails" in result.failures[0]
    parents, children = mlflow_runs(uri)
    status = {p.data.tags["baseline"]: p.info.status for p in parents}
    assert status == {"faulty_baselines:RaisingMajority": "FAILED", "majority": "FINISHED"}
    assert all(c.info.status == "FINISHED" for c in children)
    assert {c.data.tags["baseline"] for c in children} == {"majority"}
    assert [r["baseline"] for r in result.summary["results"]] == ["majority"] * 3


def test_a_worker_killed_mid_run_fails_its_runs_and_a_rerun_finishes_them(tiny_rembrandt, tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(HELPERS))
    suite = json.loads(json.dumps(TINY_SUITE))
    suite["baselines"] = {"default": ["majority", "faulty_baselines:DyingMajority", "patient_memorizer"],
                          "params": {"patient_memorizer": {"image_size": 32}}}
    suite["protocols"] = {"patient_kfold": {"n_splits": 3}}
    result, uri = run_parallel_suite(tiny_rembrandt, tmp_path, "kill", suite, jobs=2)
    assert any("worker process died" in f for f in result.failures)
    assert any(f.startswith("faulty_baselines:DyingMajority") for f in result.failures)
    parents, children = mlflow_runs(uri)
    assert all(r.info.status in ("FINISHED", "FAILED") for r in parents + children)
    assert all(c.info.status == "FINISHED" for c in children)
    # Without the killer, a rerun resumes: every fold finished before is reused, not refitted.
    suite["baselines"]["default"] = ["majority", "patient_memorizer"]
    again, uri2 = run_parallel_suite(tiny_rembrandt, tmp_path, "kill", suite, jobs=2)
    assert again.failures == []
    assert again.folds_reused + again.folds_fitted == 6
    assert again.folds_reused >= sum(1 for c in children if c.data.tags["baseline"] != "faulty_baselines:DyingMajority")
    parents, children = mlflow_runs(uri2)
    finished = [p for p in parents if p.info.status == "FINISHED"]
    assert {p.data.tags["baseline"] for p in finished} == {"majority", "patient_memorizer"}
    assert all(r.info.status != "RUNNING" for r in parents + children)


# -- Ray ----------------------------------------------------------------------------------
def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _session_pids(sid: int) -> list[int]:
    """Processes of a session: the Ray head and every process it started (workers too)."""
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[3]) == sid:
                pids.append(int(entry.name))
    return pids


@pytest.fixture(scope="module")
def ray_head(tmp_path_factory):
    """A local Ray head started by the test in its own session, stopped by session id."""
    pytest.importorskip("ray")
    port = _free_port()
    env = {**os.environ, "RAY_AUTH_MODE": "disabled", "RAY_USAGE_STATS_ENABLED": "0"}
    ray_cli = Path(sys.executable).with_name("ray")
    log = (tmp_path_factory.mktemp("ray") / "head.log").open("w")
    # Its own short temp folder (socket paths are limited to ~107 characters), removed
    # afterwards: no session folder or ray_current_cluster file is left in /tmp/ray.
    temp_dir = tempfile.mkdtemp(prefix="rayh")
    head = subprocess.Popen(
        [str(ray_cli), "start", "--head", f"--port={port}", "--num-cpus=2", "--include-dashboard=false",
         f"--temp-dir={temp_dir}",
         "--object-store-memory=200000000",
         "--disable-usage-stats", "--block"],
        env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
    )
    address = f"127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            with socket.socket() as sock:
                if sock.connect_ex(("127.0.0.1", port)) == 0:
                    break
            if head.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"Ray head did not start: see {log.name}")
            time.sleep(0.5)
        os.environ["RAY_AUTH_MODE"] = "disabled"
        yield address
    finally:
        os.environ.pop("RAY_AUTH_MODE", None)
        for sig in (signal.SIGTERM, signal.SIGKILL):
            for pid in _session_pids(head.pid):
                try:
                    os.kill(pid, sig)
                except ProcessLookupError:
                    pass
            try:
                head.wait(timeout=5)
                break
            except subprocess.TimeoutExpired:
                continue
        log.close()
        shutil.rmtree(temp_dir, ignore_errors=True)


def test_ray_gives_the_serial_results_and_one_mlflow_run_per_fold(
        tiny_rembrandt, serial_reference, ray_head, tmp_path):
    import ray

    result, uri = run_parallel_suite(tiny_rembrandt, tmp_path, "ray", executor="ray",
                                     ray_address=ray_head, jobs=2)
    assert not ray.is_initialized()  # the harness connected, so it disconnected
    assert_same_as_serial(serial_reference, result, uri, tmp_path / "ray" / "out")



def test_ray_without_address_starts_a_local_instance_even_with_a_cluster_named(monkeypatch):
    """No --ray-address: Ray's "local", whatever ray_current_cluster or $RAY_ADDRESS say."""
    ray = pytest.importorskip("ray")
    from harness.errors import HarnessError
    from harness.parallel.executors import RayExecutor

    seen = {}

    def fake_init(address=None, **kwargs):
        seen.update(address=address, env=os.environ.get("RAY_ADDRESS"), **kwargs)
        raise RuntimeError("stop here")

    monkeypatch.setattr(ray, "is_initialized", lambda: False)
    monkeypatch.setattr(ray, "init", fake_init)
    monkeypatch.setenv("RAY_ADDRESS", "10.9.9.9:6379")
    with pytest.raises(HarnessError, match="a new local instance"):
        RayExecutor(jobs=1, threads=1)
    assert seen["address"] == "local" and seen["env"] is None and seen["num_cpus"] == 1
    assert os.environ["RAY_ADDRESS"] == "10.9.9.9:6379"  # restored
    with pytest.raises(HarnessError):
        RayExecutor(jobs=1, threads=1, address="10.0.0.5:6379")
    assert seen["address"] == "10.0.0.5:6379" and seen["env"] == "10.9.9.9:6379"


@dataclass(frozen=True)
class _RayJob:
    n: int
    data_key: str = ""


def _square(job, data):
    return job.n * job.n + data


def test_ray_ignores_a_stale_cluster_file_and_leaves_no_state(monkeypatch):
    """A real Ray start with a stale ray_current_cluster in its temp folder (what a stopped
    `ray start` leaves): the run still gets its own local instance."""
    ray = pytest.importorskip("ray")
    from harness.parallel.executors import RayExecutor

    temp = tempfile.mkdtemp(prefix="rayt")  # short: Ray's socket paths live under it
    try:
        (Path(temp) / "ray").mkdir()
        (Path(temp) / "ray" / "ray_current_cluster").write_text("127.0.0.1:1\n")
        monkeypatch.setenv("RAY_TMPDIR", temp)
        monkeypatch.setenv("RAY_USAGE_STATS_ENABLED", "0")
        monkeypatch.delenv("RAY_ADDRESS", raising=False)
        tests = str(Path(__file__).parent)  # Ray's workers import this module for _square
        monkeypatch.setenv("PYTHONPATH", os.pathsep.join([tests, os.environ.get("PYTHONPATH", "")]))
        out = {}
        with RayExecutor(jobs=1, threads=1) as ex:
            run_jobs(ex, _square, [_RayJob(3)], {"": 1}, on_result=lambda job, res: out.setdefault(job.n, res))
        assert out == {3: 10}
        assert not ray.is_initialized()
    finally:
        shutil.rmtree(temp, ignore_errors=True)


def test_feature_store_leaves_a_series_another_process_is_computing_for_last(tmp_path):
    """Concurrent fold jobs split the feature work: a locked series is done after the rest."""
    import fcntl
    import threading

    from harness.features.store import FeatureStore
    from harness.hashing import json_digest
    from harness.tasks import TaskData

    volumes = {f"s{i}": np.full((3, 4, 4), float(i), np.float32) for i in range(3)}
    samples = pd.DataFrame({"sample_id": [f"s{i}-{z}" for i in range(3) for z in range(3)],
                            "patient_id": [f"p{i}" for i in range(3) for _ in range(3)],
                            "image_id": [f"s{i}" for i in range(3) for _ in range(3)],
                            "slice_index": [z for _ in range(3) for z in range(3)], "target": 0})
    data = TaskData("t", "regression", samples, None, volumes, {k: f"key{k}" for k in volumes})
    fn = lambda vol: vol.reshape(len(vol), -1).mean(axis=1, keepdims=True)  # noqa: E731
    store = FeatureStore(tmp_path)
    lock_path = tmp_path / f"keys0-mean-{json_digest({}, 16)}.lock"
    with open(lock_path, "a+b") as held:
        fcntl.flock(held.fileno(), fcntl.LOCK_EX)  # "another process" is computing s0
        out: dict[str, np.ndarray] = {}
        worker = threading.Thread(target=lambda: out.setdefault("x", store.matrix(data, "mean", {}, fn)))
        worker.start()
        deadline = time.monotonic() + 30
        while store.n_computed < 2 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert store.n_computed == 2  # s1 and s2 done; s0 left for last
        assert not (tmp_path / f"keys0-mean-{json_digest({}, 16)}.npy").exists()
        fcntl.flock(held.fileno(), fcntl.LOCK_UN)
    worker.join(30)
    assert store.n_computed == 3
    np.testing.assert_array_equal(out["x"][:, 0], np.repeat([0.0, 1.0, 2.0], 3))


def test_a_swallowed_interrupt_still_stops_the_jobs():
    """A signal whose KeyboardInterrupt a library dropped stops run_jobs before the next job."""
    from harness.errors import RunInterrupted, clear_interrupts, note_interrupt
    from harness.parallel.executors import SerialExecutor, run_jobs

    ran: list[int] = []

    class Job:
        data_key = ""

        def __init__(self, i: int) -> None:
            self.i = i

    def fn(job, _data):
        ran.append(job.i)
        if job.i == 0:
            note_interrupt(2)  # as the handler does, then the raise is "swallowed"
        return job.i

    try:
        with pytest.raises(RunInterrupted):
            run_jobs(SerialExecutor(), fn, [Job(i) for i in range(3)], {"": None}, on_result=lambda j, r: None)
    finally:
        clear_interrupts()
    assert ran == [0]


def test_each_models_first_fold_is_scheduled_before_any_models_second():
    """Cache-building first folds go first (so a backbone's extraction overlaps other
    models' training); within each part the plan order is kept."""
    from types import SimpleNamespace

    from harness.folds import cache_warming_order

    def plan(baseline: str, protocol: str, variant: str = "") -> SimpleNamespace:
        return SimpleNamespace(variant=variant, model="", baseline=baseline, protocol=protocol)

    a_rr, a_pk, b_rr, b_pk = plan("a", "rr"), plan("a", "pk"), plan("b", "rr"), plan("b", "pk")
    c_other = plan("a", "rr", variant="other")
    pending = [(a_rr, 0), (a_pk, 0), (a_pk, 1), (b_rr, 0), (b_pk, 0), (b_pk, 1), (c_other, 0)]
    ordered = cache_warming_order(pending)  # type: ignore[arg-type]
    assert ordered == [(a_rr, 0), (b_rr, 0), (c_other, 0), (a_pk, 0), (a_pk, 1), (b_pk, 0), (b_pk, 1)]
