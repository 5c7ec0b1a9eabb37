"""Cold run vs warm rerun of a suite through the CLI, and where the warm rerun spends its time.

Why: issue 14 asks that a rerun refitting nothing (every fold cached, MLflow parent
reused, audit surrogates cached) finish in <= 15 s on the default grading suite, reports
included. This script times ``python -m harness run`` twice with one cache dir and one
sqlite MLflow store (the second run is the warm one), then, with ``--profile-warm``, runs
the warm path once more under cProfile and prints the top functions by cumulative time.

    python benchmarks/warm_rerun.py --suite grading --work /work/out-warm/bench [--profile-warm]
    python benchmarks/warm_rerun.py --suite tests-tiny --work DIR   # 8 patients, 2 baselines

Not a test: it prints the figures (and writes ``timings.json`` under ``--work``).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

TINY_SUITE = """\
[suite]
name = "tiny-grading"
task = "grading"
[data]
cohort = "rembrandt"
patients = 8
seed = 3
signal = "growth"
grid_mm = 6.0
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


def _cmd(suite: str, work: Path, out: str, jobs: int) -> list[str]:
    return [sys.executable, "-m", "harness", "--no-progress", "run", "--suite", suite, "--jobs", str(jobs),
            "--tracking-uri", f"sqlite:///{work / 'mlflow.db'}", "--cache-dir", str(work / "cache"),
            "--out", str(work / out)]


def _timed(cmd: list[str], log: Path) -> float:
    start = time.perf_counter()
    with log.open("w") as fh:
        rc = subprocess.run(cmd, stdout=fh, stderr=subprocess.STDOUT).returncode
    if rc:  # a failed fold also exits non-zero: the timing still counts, the log says what failed
        print(f"exit status {rc}; see {log}")
    return time.perf_counter() - start


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--suite", default="grading", help="suite name, a .toml path, or 'tests-tiny'")
    ap.add_argument("--work", type=Path, required=True, help="folder for the cache, MLflow store and outputs")
    ap.add_argument("--jobs", type=int, default=1)
    ap.add_argument("--skip-cold", action="store_true", help="the cache is already warm: time warm runs only")
    ap.add_argument("--profile-warm", action="store_true", help="also run the warm path under cProfile")
    args = ap.parse_args(argv)
    work = args.work.resolve()
    work.mkdir(parents=True, exist_ok=True)
    suite = args.suite
    if suite == "tests-tiny":
        (work / "tiny.toml").write_text(TINY_SUITE)
        suite = str(work / "tiny.toml")
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    timings: dict[str, float] = {}
    if not args.skip_cold:
        timings["cold_s"] = _timed(_cmd(suite, work, "cold", args.jobs), work / "cold.log")
        print(f"cold: {timings['cold_s']:.1f} s")
    timings["warm_s"] = _timed(_cmd(suite, work, "warm", args.jobs), work / "warm.log")
    print(f"warm: {timings['warm_s']:.1f} s")
    if "cold_s" in timings:
        print(f"warm / cold = {timings['warm_s'] / timings['cold_s']:.3f}")
    if args.profile_warm:
        prof = work / "warm.prof"
        cmd = _cmd(suite, work, "warm-prof", args.jobs)
        cmd = [cmd[0], "-m", "cProfile", "-o", str(prof), *cmd[1:]]  # cProfile then runs "-m harness ..."
        timings["warm_profiled_s"] = _timed(cmd, work / "warm-prof.log")
        import pstats

        pstats.Stats(str(prof)).sort_stats("cumulative").print_stats(45)
    (work / "timings.json").write_text(json.dumps(timings, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
