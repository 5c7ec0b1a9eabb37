"""MLflow holds one parent run per result: a warm rerun logs nothing new, a resumed run
continues its own parent, and no kill/resume leaves a second parent of a key (real sqlite store)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import subprocess_env
from harness.tracking import (COMPARE_VIEW_KEY, EXPERIMENT_KIND, EXPERIMENT_KIND_TAG, PARENT_TAG, RUN_KEY_TAG,
                              SHARED_VIEW_TAG_PREFIX, FoldRecord, Tracker, experiment_pages, fold_aggregates)
from harness.runner import RunOptions, run_suite
from harness.suite import parse_suite
from test_runner import TINY_SUITE
from test_tracking_resume import _fold_files, _to_toml


def _all_runs(client, exp_id: str) -> list:
    return client.search_runs([exp_id], max_results=10000)


def _parents(runs: list) -> list:
    return [r for r in runs if PARENT_TAG not in r.data.tags]


def _fold(i: int) -> FoldRecord:
    return FoldRecord(index=i, params={"fold": i}, metrics={"accuracy": 0.5 + i / 10}, tags={}, artifacts=[])


def _quick_run(cohort: Path, cache: Path, out: Path, uri: str):
    """The tiny suite with the majority baseline and a light audit: seconds, not a minute."""
    suite = json.loads(json.dumps(TINY_SUITE))
    suite["baselines"] = {"default": ["majority"]}
    suite["audit"] = {"n_permutations": 9, "selection": False}
    suite["metrics"]["n_boot"] = 50
    return run_suite(parse_suite(suite), RunOptions(data=cohort, out=out, tracking_uri=uri, cache_dir=cache,
                                                    progress=False, jobs=1))


def test_open_parent_reuses_a_finished_parent_and_resumes_an_unfinished_one(tmp_path):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    tracker = Tracker(uri, "harness/t")
    done = tracker.open_parent("key-a", "a", {"x": 1}, {"comparison": "p"})
    for i in range(2):
        done.log_fold(_fold(i), f"a | fold {i}")
    done.finish()
    killed = tracker.open_parent("key-b", "b", {"x": 2}, {"comparison": "p"})
    killed.log_fold(_fold(0), "b | fold 0")
    stale = tracker.client.create_run(tracker.experiment_id, tags={PARENT_TAG: killed.run_id})  # RUNNING
    # ... the process dies here (SIGKILL): key-b's parent and one fold run stay RUNNING
    n_before = len(_all_runs(tracker.client, tracker.experiment_id))

    again = Tracker(uri, "harness/t")
    a = again.open_parent("key-a", "a", {"x": 1}, {"comparison": "p"})
    assert (a.run_id, a.complete, a.needs_summary) == (done.run_id, True, False)
    assert a.finished_folds() == {0, 1}
    b = again.open_parent("key-b", "b", {"x": 2}, {"comparison": "p"})
    assert (b.run_id, b.complete, b.resumed) == (killed.run_id, False, True)
    assert again.client.get_run(stale.info.run_id).info.status == "KILLED"
    assert b.finished_folds() == {0}
    runs = _all_runs(again.client, again.experiment_id)
    assert len(runs) == n_before  # reopening created nothing
    assert sorted(r.data.tags[RUN_KEY_TAG] for r in _parents(runs)) == ["key-a", "key-b"]


def test_a_store_with_legacy_duplicates_reuses_the_newest_finished_parent(tmp_path):
    tracker = Tracker(f"sqlite:///{tmp_path / 'mlflow.db'}", "harness/t")
    ids = []
    for _ in range(2):  # what a rerun wrote before this rule: a second FINISHED parent
        run = tracker.client.create_run(tracker.experiment_id, tags={RUN_KEY_TAG: "k"})
        tracker.client.set_terminated(run.info.run_id, "FINISHED")
        ids.append(run.info.run_id)
        time.sleep(0.01)
    assert tracker.open_parent("k", "k", {}, {}).run_id == ids[-1]
    assert len(_all_runs(tracker.client, tracker.experiment_id)) == 2


def test_fold_aggregates_mean_sd_ci95():
    agg = fold_aggregates("accuracy", [0.6, 0.7, 0.8])
    assert agg["accuracy_fold_mean"] == pytest.approx(0.7)
    assert agg["accuracy_fold_sd"] == pytest.approx(0.1)
    half = 4.302653 * 0.1 / 3 ** 0.5  # t(0.975, 2) * sd / sqrt(n)
    assert agg["accuracy_fold_ci95_lo"] == pytest.approx(0.7 - half, abs=1e-5)
    assert agg["accuracy_fold_ci95_hi"] == pytest.approx(0.7 + half, abs=1e-5)
    one = fold_aggregates("accuracy", [0.6])
    assert one["accuracy_fold_mean"] == 0.6 and one["accuracy_fold_sd"] != one["accuracy_fold_sd"]  # NaN


def test_warm_rerun_logs_nothing_new_and_parents_carry_dataset_and_fold_aggregates(tiny_rembrandt, session_cache,
                                                                                   tmp_path):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    first = _quick_run(tiny_rembrandt, session_cache, tmp_path / "a", uri)
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=uri)
    exp = client.get_experiment_by_name("harness/tiny-grading")
    assert exp.tags[EXPERIMENT_KIND_TAG] == EXPERIMENT_KIND  # MLflow 3 opens the runs table, not GenAI
    view = json.loads(exp.tags[SHARED_VIEW_TAG_PREFIX + COMPARE_VIEW_KEY])
    assert view["groupBy"]["groupByKeys"] == [{"mode": "tag", "groupByData": "comparison"}]
    assert "metrics.`accuracy`" in view["selectedColumns"] and "attributes.`Dataset`" in view["selectedColumns"]
    pages = experiment_pages(uri, "http://127.0.0.1:5000")
    assert pages == [("harness/tiny-grading", f"http://127.0.0.1:5000/#/experiments/{exp.experiment_id}/runs"
                                              f"?viewStateShareKey={COMPARE_VIEW_KEY}&workflowType=machine_learning")]
    assert view["searchFilter"] == "tags.`harness.run_key` LIKE '%'"  # parents only: one row per result
    assert len(client.search_runs([exp.experiment_id], filter_string=view["searchFilter"])) == 2

    runs1 = _all_runs(client, exp.experiment_id)
    parents1 = {r.info.run_id: r for r in _parents(runs1)}
    assert len(parents1) == 2 and len(runs1) == 2 + 1 + 3  # row_random: 1 fold, patient_kfold: 3
    fingerprint = first.summary["dataset"]["fingerprint"]
    for p in parents1.values():
        ds = [d.dataset for d in p.inputs.dataset_inputs]
        assert len(ds) == 1 and fingerprint.startswith(ds[0].digest) and len(ds[0].digest) >= 32
        assert ds[0].name == first.summary["dataset"]["name"] and str(tiny_rembrandt.name) in ds[0].source
        assert "accuracy_fold_mean" in p.data.metrics
        if p.data.tags["protocol"] == "patient_kfold":
            m = p.data.metrics
            assert m["accuracy_fold_ci95_lo"] <= m["accuracy_fold_mean"] <= m["accuracy_fold_ci95_hi"]
            assert m["accuracy_fold_sd"] >= 0
    artifacts1 = {pid: sorted(a.path for a in client.list_artifacts(pid, "reports")) for pid in parents1}

    _quick_run(tiny_rembrandt, session_cache, tmp_path / "b", uri)  # warm: every fold from the cache
    runs2 = _all_runs(client, exp.experiment_id)
    assert sorted(r.info.run_id for r in runs2) == sorted(r.info.run_id for r in runs1)  # no new run
    for pid, before in parents1.items():
        after = client.get_run(pid)
        assert after.info.status == "FINISHED" and after.info.end_time == before.info.end_time
        assert len(client.get_metric_history(pid, "accuracy")) == 1  # nothing logged again
        assert len(after.inputs.dataset_inputs) == 1
        assert sorted(a.path for a in client.list_artifacts(pid, "reports")) == artifacts1[pid]


@pytest.mark.slow
def test_sigkill_after_one_parent_finished_resumes_without_a_second_parent(tiny_rembrandt, tmp_path):
    """Issue 14: after a SIGKILL and a resume, the parent that had finished was logged again."""
    from mlflow.tracking import MlflowClient

    suite = json.loads(json.dumps(TINY_SUITE))
    suite["baselines"] = {"default": ["slow_baseline:SlowMajority"]}
    suite["protocols"] = {"row_random": {"ratios": [0.8, 0.1, 0.1]}, "patient_kfold": {"n_splits": 3}}
    suite_path = tmp_path / "suite.toml"
    suite_path.write_text(_to_toml(suite))
    cache, uri = tmp_path / "cache", f"sqlite:///{tmp_path / 'mlflow.db'}"
    cmd = [sys.executable, "-m", "harness", "--cache-dir", str(cache), "--no-progress", "run", "--suite",
           str(suite_path), "--data", str(tiny_rembrandt), "--tracking-uri", uri, "--jobs", "1"]
    env = subprocess_env(Path(__file__).parent / "helpers")
    env["SLOW_BASELINE_SECONDS"] = "3"
    proc = subprocess.Popen(cmd + ["--out", str(tmp_path / "a")], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT)
    client = MlflowClient(tracking_uri=uri)

    def parents() -> list:
        exp = client.get_experiment_by_name("harness/tiny-grading") if (tmp_path / "mlflow.db").exists() else None
        return _parents(_all_runs(client, exp.experiment_id)) if exp else []

    deadline = time.time() + 240
    while time.time() < deadline and proc.poll() is None:
        ps = parents()
        if any(p.info.status == "FINISHED" for p in ps) and len(ps) == 2 and len(_fold_files(cache)) < 4:
            break
        time.sleep(0.3)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    before = {p.data.tags[RUN_KEY_TAG]: (p.info.run_id, p.info.status) for p in parents()}
    assert sorted(s for _, s in before.values()) == ["FINISHED", "RUNNING"], before

    env["SLOW_BASELINE_SECONDS"] = "0"
    second = subprocess.run(cmd + ["--out", str(tmp_path / "b")], env=env, capture_output=True, text=True,
                            timeout=300)
    assert second.returncode == 0, second.stderr[-3000:]
    after = {p.data.tags[RUN_KEY_TAG]: (p.info.run_id, p.info.status) for p in parents()}
    assert {k: v[0] for k, v in after.items()} == {k: v[0] for k, v in before.items()}  # same two parents
    assert all(s == "FINISHED" for _, s in after.values())
    exp = client.get_experiment_by_name("harness/tiny-grading")
    runs = _all_runs(client, exp.experiment_id)
    assert not [r for r in runs if r.info.status == "RUNNING"]
    for run_id, _ in after.values():
        folds = [int(r.data.tags["harness.fold"]) for r in runs
                 if r.data.tags.get(PARENT_TAG) == run_id and r.info.status == "FINISHED"]
        assert sorted(folds) == sorted(set(folds))  # no fold logged twice
