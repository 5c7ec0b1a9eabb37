"""`python -m harness ui` serves the store on 127.0.0.1 and stops its whole process group."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request

from conftest import subprocess_env


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
        return True
    except ProcessLookupError:
        return False


def test_ui_serves_on_loopback_and_stops_cleanly(tmp_path):
    port = _free_port()
    uri = f"sqlite:///{tmp_path / 'mlflow' / 'mlflow.db'}"
    proc = subprocess.Popen(
        [sys.executable, "-m", "harness", "ui", "--tracking-uri", uri, "--port", str(port)],
        env=subprocess_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True,
    )
    try:
        deadline, body = time.time() + 120, b""
        while time.time() < deadline:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2) as resp:
                    body = resp.read()
                    break
            except OSError:
                time.sleep(0.5)
        assert body, "the MLflow UI did not answer on 127.0.0.1"
        listening = subprocess.run(["ss", "-ltnH"], capture_output=True, text=True).stdout
        ours = [line for line in listening.splitlines() if f":{port} " in line]
        assert ours and all("127.0.0.1" in line for line in ours), listening
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=30)
    deadline = time.time() + 15
    while _group_alive(proc.pid) and time.time() < deadline:
        time.sleep(0.2)
    # the UI's server and workers ran in a process group of their own; none is left
    leftover = subprocess.run(["pgrep", "-f", f"--port {port}"], capture_output=True, text=True).stdout
    assert not leftover.strip(), leftover


def test_ui_lists_a_runs_table_link_per_harness_experiment(tmp_path):
    from harness.tracking import Tracker, experiment_pages

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    assert experiment_pages(uri, "http://127.0.0.1:5000") == []  # no store yet: nothing to list
    tracker = Tracker(uri, "harness/grading")
    pages = experiment_pages(uri, "http://127.0.0.1:5000")
    assert pages == [("harness/grading", f"http://127.0.0.1:5000/#/experiments/{tracker.experiment_id}/runs"
                                         "?workflowType=machine_learning")]  # the model-training sidebar
