"""MLflow structure, resume after SIGKILL, and no identifying DICOM tags in any output."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pydicom
import pytest

from conftest import subprocess_env
from test_runner import TINY_SUITE, run_tiny


def _client(uri: str):
    from mlflow.tracking import MlflowClient

    return MlflowClient(tracking_uri=uri)


def test_mlflow_parent_per_baseline_protocol_and_nested_fold_runs(tiny_rembrandt, session_cache, tmp_path):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    result = run_tiny(tiny_rembrandt, session_cache, tmp_path / "out", tracking=uri)
    client = _client(uri)
    exp = client.get_experiment_by_name("harness/tiny-grading")
    runs = client.search_runs([exp.experiment_id], max_results=1000)
    parents = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    children = [r for r in runs if "mlflow.parentRunId" in r.data.tags]
    assert {(r.data.tags["baseline"], r.data.tags["protocol"]) for r in parents} == {
        (b, p) for b in ("majority", "logreg_dwtdct") for p in ("row_random", "patient_kfold")
    }
    assert all(r.info.status == "FINISHED" for r in runs)
    for parent in parents:
        kids = [c for c in children if c.data.tags["mlflow.parentRunId"] == parent.info.run_id]
        expected = 1 if parent.data.tags["protocol"] == "row_random" else 3
        assert sorted(int(k.data.tags["harness.fold"]) for k in kids) == list(range(expected))
        tags = parent.data.tags
        assert tags["dataset_fingerprint"] == result.summary["dataset"]["fingerprint"]
        assert tags["manifest_sha256"] == result.summary["manifests"][tags["protocol"]]
        assert tags["seed"] and tags["git_commit"] and tags["version.mlflow"]
        assert tags["machine.cpu"] == result.summary["environment"]["cpu"]
        assert tags["version.torch"] == result.summary["environment"]["packages"]["torch"]
        assert parent.data.params["baseline"] == tags["baseline"]
        assert "accuracy" in parent.data.metrics and "accuracy_ci95_lo" in parent.data.metrics
        artifacts = {a.path for a in client.list_artifacts(parent.info.run_id)}
        assert artifacts == {"manifests", "predictions", "reports"}  # reports: leakage + overfitting


def _fold_files(cache: Path) -> list[Path]:
    return sorted(cache.glob("folds/*/fold*.csv"))


def test_sigkill_mid_run_resumes_without_refitting_and_leaves_nothing_running(tiny_rembrandt, tmp_path):
    suite = json.loads(json.dumps(TINY_SUITE))
    suite["baselines"] = {"default": ["slow_baseline:SlowMajority"]}
    suite["protocols"] = {"patient_kfold": {"n_splits": 3}}
    suite_path = tmp_path / "suite.toml"
    suite_path.write_text(_to_toml(suite))
    cache, uri = tmp_path / "cache", f"sqlite:///{tmp_path / 'mlflow.db'}"
    cmd = [sys.executable, "-m", "harness", "--cache-dir", str(cache), "--no-progress", "run",
           "--suite", str(suite_path), "--data", str(tiny_rembrandt), "--tracking-uri", uri]
    env = subprocess_env(Path(__file__).parent / "helpers")
    env["SLOW_BASELINE_SECONDS"] = "4"
    env["HARNESS_TEST_MARK"] = str(tmp_path)  # finds this run's worker processes below
    proc = subprocess.Popen(cmd + ["--out", str(tmp_path / "a"), "--jobs", "2"], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    deadline = time.time() + 240
    while not _fold_files(cache) and time.time() < deadline and proc.poll() is None:
        time.sleep(0.2)
    assert _fold_files(cache), proc.communicate()[0].decode()[-3000:]
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    done_before = len(_fold_files(cache))
    assert 1 <= done_before < 3
    deadline = time.time() + 10  # its pool workers follow the killed driver
    while _marked_processes(str(tmp_path)) and time.time() < deadline:
        time.sleep(0.2)
    assert _marked_processes(str(tmp_path)) == []

    env["SLOW_BASELINE_SECONDS"] = "0"
    second = subprocess.run(cmd + ["--out", str(tmp_path / "b")], env=env, capture_output=True, text=True, timeout=300)
    assert second.returncode == 0, second.stderr[-3000:]
    assert second.stderr.count("(from cache)") == done_before
    assert len(_fold_files(cache)) == 3

    client = _client(uri)
    exp = client.get_experiment_by_name("harness/tiny-grading")
    runs = client.search_runs([exp.experiment_id], max_results=1000)
    assert not [r for r in runs if r.info.status == "RUNNING"]
    parents = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    assert len(parents) == 1 and parents[0].info.status == "FINISHED"  # resumed, not duplicated
    finished_folds = [int(r.data.tags["harness.fold"]) for r in runs
                      if r.data.tags.get("mlflow.parentRunId") == parents[0].info.run_id
                      and r.info.status == "FINISHED"]
    assert sorted(finished_folds) == [0, 1, 2]


@pytest.mark.parametrize("signum,jobs", [(signal.SIGTERM, 2), (signal.SIGINT, 1)], ids=["SIGTERM-pool", "SIGINT-serial"])
def test_signal_stops_the_run_in_seconds_marks_runs_killed_and_the_rerun_resumes(tiny_rembrandt, tmp_path,
                                                                                 signum, jobs):
    suite = json.loads(json.dumps(TINY_SUITE))
    suite["baselines"] = {"default": ["slow_baseline:SlowMajority"]}
    suite["protocols"] = {"patient_kfold": {"n_splits": 3}}
    suite_path = tmp_path / "suite.toml"
    suite_path.write_text(_to_toml(suite))
    cache, uri = tmp_path / "cache", f"sqlite:///{tmp_path / 'mlflow.db'}"
    cmd = [sys.executable, "-m", "harness", "--cache-dir", str(cache), "--no-progress", "run",
           "--suite", str(suite_path), "--data", str(tiny_rembrandt), "--tracking-uri", uri]
    env = subprocess_env(Path(__file__).parent / "helpers")
    env["SLOW_BASELINE_SECONDS"] = "10"  # a fold in flight when the signal comes takes this long
    env["HARNESS_TEST_MARK"] = str(tmp_path)
    proc = subprocess.Popen(cmd + ["--out", str(tmp_path / "a"), "--jobs", str(jobs)], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    deadline = time.time() + 240
    while not _fold_files(cache) and time.time() < deadline and proc.poll() is None:
        time.sleep(0.1)
    assert _fold_files(cache), proc.communicate()[0].decode()[-3000:]
    sent = time.monotonic()
    os.kill(proc.pid, signum)
    output = proc.communicate(timeout=60)[0].decode()
    stopped_in = time.monotonic() - sent
    assert proc.returncode == 128 + signum, output[-3000:]
    assert stopped_in < 8.0, f"took {stopped_in:.1f}s to stop"  # sooner than the 10 s fold in flight (slack for a loaded machine)
    assert "run the same command again to resume" in output and "Traceback" not in output
    deadline = time.time() + 10
    while _marked_processes(str(tmp_path)) and time.time() < deadline:
        time.sleep(0.2)
    assert _marked_processes(str(tmp_path)) == []  # no worker outlives the driver
    done_before = len(_fold_files(cache))
    assert 1 <= done_before < 3

    client = _client(uri)
    exp = client.get_experiment_by_name("harness/tiny-grading")
    runs = client.search_runs([exp.experiment_id], max_results=1000)
    assert [r.info.status for r in runs if "mlflow.parentRunId" not in r.data.tags] == ["KILLED"]
    assert not [r for r in runs if r.info.status == "RUNNING"]
    killed_parent = next(r.info.run_id for r in runs if "mlflow.parentRunId" not in r.data.tags)

    env["SLOW_BASELINE_SECONDS"] = "0"
    second = subprocess.run(cmd + ["--out", str(tmp_path / "b"), "--jobs", "1"], env=env, capture_output=True,
                            text=True, timeout=300)
    assert second.returncode == 0, second.stderr[-3000:]
    assert second.stderr.count("(from cache)") == done_before
    runs = client.search_runs([exp.experiment_id], max_results=1000)
    parents = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    assert [(p.info.run_id, p.info.status) for p in parents] == [(killed_parent, "FINISHED")]  # resumed
    assert not [r for r in runs if r.info.status == "RUNNING"]
    finished = sorted(int(r.data.tags["harness.fold"]) for r in runs
                      if r.data.tags.get("mlflow.parentRunId") == killed_parent and r.info.status == "FINISHED")
    assert finished == [0, 1, 2]


def _marked_processes(mark: str) -> list[int]:
    """Live processes whose environment carries HARNESS_TEST_MARK=mark."""
    needle = f"HARNESS_TEST_MARK={mark}".encode()
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if needle in (entry / "environ").read_bytes().split(b"\0"):
                    state = (entry / "stat").read_text().rsplit(")", 1)[1].split()[0]
                    if state != "Z":
                        found.append(int(entry.name))
            except OSError:
                continue
    return found


def test_identifying_dicom_tags_never_reach_outputs(tiny_rembrandt, session_cache, tmp_path, capfd):
    some_file = next(tiny_rembrandt.rglob("*.dcm"))
    ds = pydicom.dcmread(some_file, stop_before_pixels=True)
    # (the birth date is left out: an 8-digit date may occur by chance inside binary data)
    secrets = [str(ds.PatientName), str(ds.get("PatientAddress", ""))]
    assert all(secrets), "the synthetic writer should plant fake identifying tags"
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    run_tiny(tiny_rembrandt, session_cache, tmp_path / "out", tracking=uri, baselines=["majority"])
    captured = capfd.readouterr()
    blobs = [captured.out, captured.err]
    for path in list((tmp_path / "out").rglob("*")) + [tmp_path / "mlflow.db"]:
        if path.is_file():
            blobs.append(path.read_bytes().decode("latin-1"))
    for path in (tmp_path / "mlflow.db").parent.rglob("artifacts/**/*"):
        if path.is_file():
            blobs.append(path.read_bytes().decode("latin-1"))
    for secret in secrets:
        assert not any(secret in blob for blob in blobs), f"{secret!r} leaked"


def _to_toml(obj: dict, prefix: str = "") -> str:
    """Enough TOML for the suite dicts used in tests."""
    lines, tables = [], []
    for key, value in obj.items():
        if isinstance(value, dict):
            tables.append((key, value))
        else:
            lines.append(f"{key} = {json.dumps(value)}")
    out = "\n".join(lines) + "\n"
    for key, value in tables:
        name = f"{prefix}{key}"
        out += f"\n[{name}]\n" + _to_toml(value, prefix=name + ".")
    return out
