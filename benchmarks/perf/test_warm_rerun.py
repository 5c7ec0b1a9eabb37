"""A warm rerun of a suite (every fold cached, MLflow parent reused, audit surrogates cached)
against the cold run that filled the caches, both through the CLI, in one benchmark run.

Both runs are ``python -m harness run`` subprocesses with one ``--cache-dir`` and one sqlite
MLflow store, so the figures include interpreter start-up and imports, as a user sees them.
The cohort (REMBRANDT-style, 12 patients, 6 mm grid) is generated before timing; the cold
run decodes it, fits every fold and computes the audit; each warm round reads it all back.
The figure is ``warm seconds / cold seconds``; issue 14's target (<= 15 s) is on the
default grading suite, not this tiny cohort, so no target is asserted here: the ratio and
both times are reported. The benchmark checks that the warm run refitted no fold and no
surrogate, and wrote the same audit.json as the cold run.
Run: ``pytest benchmarks/perf/test_warm_rerun.py --benchmark-only -s``.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

SUITE = """\
[suite]
name = "bench-warm"
task = "grading"
[task]
modalities = ["T1post", "FLAIR"]
min_foreground = 0.15
slice_step = 2
[baselines]
default = ["majority", "logreg_dwtdct"]
[baselines.params.logreg_dwtdct]
image_size = 32
[protocols.row_random]
ratios = [0.8, 0.1, 0.1]
[protocols.patient_kfold]
n_splits = 3
[metrics]
names = ["accuracy", "balanced_accuracy", "macro_f1"]
n_boot = 200
"""


@pytest.fixture(scope="module")
def work(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from harness.synth import generate_cohort

    root = tmp_path_factory.mktemp("perf-warm")
    generate_cohort("rembrandt", root / "cohort", n_patients=12, seed=3, signal="growth", grid_mm=6.0,
                    progress=False)
    (root / "suite.toml").write_text(SUITE)
    return root


def _run(work: Path, out: str) -> tuple[float, str]:
    cmd = [sys.executable, "-m", "harness", "--no-progress", "run", "--suite", str(work / "suite.toml"),
           "--data", str(work / "cohort"), "--jobs", "1", "--tracking-uri", f"sqlite:///{work / 'mlflow.db'}",
           "--cache-dir", str(work / "cache"), "--out", str(work / out)]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    start = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    seconds = time.perf_counter() - start
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return seconds, proc.stdout + proc.stderr


def test_warm_rerun_vs_cold_run(benchmark, report_ratio, work):
    cold_seconds, cold_log = _run(work, "cold")
    assert "samples (from cache)" not in cold_log
    entries = sorted(p.name for p in (work / "cache" / "audit").glob("*.json"))
    assert entries, "the cold run stored no audit surrogate result"
    logs: list[str] = []
    rounds = iter(range(100))

    def warm() -> None:
        seconds, log = _run(work, f"warm{next(rounds)}")
        logs.append(log)

    benchmark.pedantic(warm, rounds=2, iterations=1)
    refits = [log for log in logs if re.search(r"\bfitting \d+ fold", log) or "samples (from cache)" not in log]
    assert not refits, refits[0][-2000:]
    assert sorted(p.name for p in (work / "cache" / "audit").glob("*.json")) == entries  # no new key: all hits
    assert json.loads((work / "cold" / "reports" / "audit.json").read_text()) == \
        json.loads((work / "warm0" / "reports" / "audit.json").read_text())
    warm_seconds = benchmark.stats.stats.min
    report_ratio(
        warm_seconds / cold_seconds, ratio_is="warm rerun seconds / cold run seconds (<1: the rerun is cheaper)",
        baseline="the cold run that filled the caches (CLI, same cache dir and MLflow store)",
        baseline_seconds=cold_seconds, warm_seconds=round(warm_seconds, 3),
        label="warm rerun vs cold run, tiny grading suite (12 patients, 2 baselines, 2 protocols)")
