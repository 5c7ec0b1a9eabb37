"""benchmarks/results.py: parsing and rendering on hand-made inputs (nothing is run).

``benchmarks`` is not a package, so the script is loaded from its path.
"""

from __future__ import annotations

import argparse
import importlib.util
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "results.py"


@pytest.fixture(scope="module")
def results():
    name = "harness_benchmarks_results_script"
    spec = importlib.util.spec_from_file_location(name, SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses look their module up while the class is built
    try:
        spec.loader.exec_module(module)
        yield module
    finally:
        sys.modules.pop(name, None)


def _bench(fullname: str, mean: float, minimum: float, **extra) -> dict:
    return {
        "group": None, "name": fullname.split("::")[1], "fullname": fullname, "params": None,
        "extra_info": extra,
        "stats": {"min": minimum, "max": mean * 1.2, "mean": mean, "stddev": 0.01, "rounds": 3,
                  "median": mean, "iterations": 1},
    }


BENCH_JSON = {
    "machine_info": {"node": "x"},
    "commit_info": {"id": "abc"},
    "benchmarks": [
        _bench("benchmarks/perf/test_ingestion.py::test_two_workers", 2.0, 1.8, ratio=1.7,
               ratio_is="bare s / harness s", baseline="bare pydicom loop", baseline_seconds=3.06,
               target=">= 1.6", met=True, label="ingestion, 2 workers", files=7776),
        _bench("benchmarks/perf/test_ingestion.py::test_cached", 0.05, 0.04, ratio=12.0,
               ratio_is="decode s / cached s", baseline="decoding", baseline_seconds=0.5,
               target=">= 20", met=False),
        _bench("benchmarks/perf/test_seg_eval.py::test_score", 0.6, 0.55, ratio=20.0,
               ratio_is="mean s / numpy s", baseline="numpy Dice", baseline_seconds=0.03,
               target="mean seconds < 3", target_value=0.6, met=True),
        _bench("benchmarks/perf/test_explain.py::test_method_speed[lime]", 0.2, 0.19, ratio=90.0,
               ratio_is="method s / fwd+bwd s", baseline="forward+backward", baseline_seconds=0.002,
               target=None, met=None),
        # an older-style entry: target only as text, met left for the script to work out
        _bench("benchmarks/perf/test_training_loop.py::test_loop", 1.0, 0.9, ratio=1.02, target="<= 1.05"),
    ],
}

JUNIT = """<?xml version="1.0" encoding="utf-8"?>
<testsuites><testsuite name="pytest" errors="1" failures="1" tests="6">
<testcase classname="benchmarks.perf.test_ingestion" name="test_two_workers" time="9.0"/>
<testcase classname="benchmarks.perf.test_ingestion" name="test_cached" time="2.0">
  <failure message="AssertionError: cached reads 12.0x faster than decoding, target &gt;= 20x">trace</failure>
</testcase>
<testcase classname="benchmarks.perf.test_seg_eval" name="test_score" time="2.0"/>
<testcase classname="benchmarks.perf.test_explain" name="test_method_speed[lime]" time="1.0"/>
<testcase classname="benchmarks.perf.test_training_loop" name="test_loop" time="5.0"/>
<testcase classname="benchmarks.perf.test_synth" name="test_generate" time="0.1">
  <error message="failed on setup with &quot;HarnessError: boom&quot;">trace</error>
</testcase>
</testsuite></testsuites>
"""


def test_parse_benchmarks_with_junit_outcomes(results):
    rows = results.parse_benchmarks(BENCH_JSON, results.parse_junit(JUNIT))
    by_name = {r.name: r for r in rows}
    assert [r.group for r in rows] == ["test_ingestion", "test_ingestion", "test_seg_eval", "test_explain",
                                       "test_training_loop", "test_synth"]
    two = by_name["test_two_workers"]
    assert (two.mean, two.min, two.rounds, two.ratio, two.target, two.met) == (2.0, 1.8, 3, 1.7, ">= 1.6", True)
    assert two.outcome == "passed" and two.extra == {"files": 7776} and two.label == "ingestion, 2 workers"
    cached = by_name["test_cached"]
    assert cached.met is False and cached.outcome == "failed" and "target >= 20x" in cached.message
    assert by_name["test_method_speed[lime]"].met is None
    assert by_name["test_loop"].met is True  # worked out from the target text
    errored = by_name["test_generate"]  # failed before producing benchmark data: still listed
    assert errored.outcome == "error" and errored.mean is None and "boom" in errored.message


def test_target_met(results):
    assert results.target_met(1.7, ">= 1.6") is True
    assert results.target_met(1.5, ">= 1.6") is False
    assert results.target_met(1.05, "<= 1.05") is True
    assert results.target_met(1.3, "< 1.25") is False
    assert results.target_met(21, ">= 20x") is True
    assert results.target_met(1.0, "about right") is None


def test_render_perf_tables_and_targets(results):
    rows = results.parse_benchmarks(BENCH_JSON, results.parse_junit(JUNIT))
    result = results.CommandResult("pytest benchmarks/perf ...", 1, 120.0)
    text = results.render_perf(rows, "pytest benchmarks/perf ...", result)
    assert "### DICOM ingestion and the cache (`test_ingestion.py`)" in text
    assert 'Command: `pytest benchmarks/perf/test_ingestion.py --benchmark-only -o addopts=""`' in text
    line = next(ln for ln in text.splitlines() if ln.startswith("| test_two_workers "))
    assert "2.00 s" in line and "1.80 s" in line and "3.06 s" in line and "1.7" in line and "| met |" in line
    assert "**NOT met**" in next(ln for ln in text.splitlines() if ln.startswith("| test_cached "))
    assert "files = 7,776" in text and "test_generate` error" in text
    assert "ratio = bare s / harness s; bare baseline: bare pydicom loop" in text

    targets = results.perf_targets(rows)
    assert [(t.measured, t.target, t.met) for t in targets] == [
        ("1.7", ">= 1.6", True), ("12", ">= 20", False), ("0.6", "mean seconds < 3", True), ("1.02", "<= 1.05", True)]
    assert targets[0].figure.startswith("ingestion, 2 workers")


def test_scale_flatten_targets_and_render(results):
    data = {"full": {"n_patients": 130, "n_slices": 110240, "seconds": 412.5, "peak_rss_mb": 900.0,
                     "peak_pss_mb": 1600.0},
            "half": {"n_patients": 65, "peak_rss_mb": 870.0}, "half_to_full_memory_ratio": 0.95}
    flat = results.flatten(data)
    assert flat["full.n_slices"] == 110240 and flat["half_to_full_memory_ratio"] == 0.95
    targets = {t.figure: t.met for t in results.scale_targets(flat)}
    assert targets == {"full.peak_rss_mb": True, "full.peak_pss_mb": False, "half_to_full_memory_ratio": True}
    flat_keys = {"full_peak_rss_mb": 1000, "half_peak_rss_mb": 1200, "half_to_full_memory_ratio": 1.2,
                 "full_peak_above_baseline_mb": 95.0}
    assert {t.figure: t.met for t in results.scale_targets(flat_keys)} == {
        "full_peak_rss_mb": True, "half_to_full_memory_ratio": False}
    # the script names its measure: only that peak is checked
    named = {"full_peak_pss_mb": 640.0, "full_peak_rss_mb": 1600.0, "memory_measure": "pss"}
    assert {t.figure: t.met for t in results.scale_targets(named)} == {"full_peak_pss_mb": True}
    text = results.render_scale(data, "python benchmarks/scale/rembrandt_scale.py --json <tmp>/scale.json", None)
    assert "| full.n_slices | 110,240 |" in text and "**NOT met**" in text
    assert "No peak-memory keys" in results.render_scale({"seconds": 3.0}, "cmd", None)


def _summary(mean: float, fingerprint: str = "fp") -> dict:
    entry = {"baseline": "majority", "protocol": "patient_kfold", "metric": "accuracy", "mean": mean,
             "ci95": [mean - 0.1, mean + 0.1], "n_patients": 40, "n_samples": 900, "n_folds": 5,
             "fold_values": [mean] * 5}
    return {"dataset": {"fingerprint": fingerprint}, "manifests": {"patient_kfold": "abc"}, "results": [entry]}


def test_compare_summaries(results):
    same, detail = results.compare_summaries(_summary(0.5), _summary(0.5))
    assert same and detail.startswith("identical")
    same, detail = results.compare_summaries(_summary(0.5), _summary(0.5 + 1e-4))
    assert not same and "1 of 1 entries differ" in detail and "majority/patient_kfold/accuracy" in detail
    same, detail = results.compare_summaries(_summary(0.5), _summary(0.5, fingerprint="other"))
    assert not same and "fingerprint" in detail


def test_render_jobs_speedup_and_failures(results):
    ok = results.CommandResult
    warm = ok("python -m harness ... warm-up", 0, 60.0)
    runs = [results.JobsRun("--jobs 1", ["--jobs", "1"], ok("... --jobs 1", 0, 100.0, peak_rss_mb=900.0), _summary(0.5)),
            results.JobsRun("--jobs 2", ["--jobs", "2"], ok("... --jobs 2", 0, 62.5, peak_rss_mb=800.0), _summary(0.5)),
            results.JobsRun("--jobs 1 --threads-per-job 2", [], ok("... --threads-per-job 2", 2, 5.0,
                                                                   stderr_tail="error: unrecognized arguments"))]
    text, targets = results.render_jobs(warm, runs)
    assert "| --jobs 2 | 62.50 s | 800 MB | 1.60x | same: identical" in text
    assert "error: unrecognized arguments" in text and "exit status 2" in text
    assert [(t.measured, t.met) for t in targets] == [("1.60x", True)]

    failed = [results.JobsRun("--jobs 1", [], ok("a", 2, 1.0, stderr_tail="no --jobs")),
              results.JobsRun("--jobs 2", [], ok("b", 2, 1.0, stderr_tail="no --jobs"))]
    text, targets = results.render_jobs(warm, failed)
    assert "no --jobs" in text and targets[0].met is None and targets[0].measured == "failed"


def test_render_page_and_header(results):
    header = results.render_header("2026-11-23 16:00 UTC", {"commit": "abc123", "subject": "s", "working tree": "clean"},
                                   {"CPU": "AMD EPYC", "GPU": "none"}, ["perf"], ["scale", "jobs"], ("0.1", "0.2"))
    sections = [results.Section("perf", "Hot paths", "body", [results.TargetRow("perf", "f", "1.7", ">= 1.6", True),
                                                              results.TargetRow("perf", "g", "12", ">= 20", False)]),
                results.Section("scale", "Scale", "Not run: `benchmarks/scale/rembrandt_scale.py` does not exist")]
    page = results.render_page(header, sections)
    assert page.startswith("# Benchmark results")
    assert "`--only perf`" in page and "skipped (not regenerated, not shown): scale, jobs" in page
    assert "| CPU | AMD EPYC |" in page and "`abc123`" in page
    assert "## Targets (1 of 2 met)" in page and "## Hot paths" in page and "Not run:" in page


def test_section_failure_is_written_up(results, tmp_path):
    def broken(_tmp: Path):
        raise RuntimeError("no such flag")

    section = results.safe_section("jobs", broken, tmp_path)
    assert "RuntimeError: no such flag" in section.body and section.targets == []
    text = results.command_failure(results.CommandResult("cmd", 2, 1.0, stderr_tail="usage: ...\nerror: bad"))
    assert "exit status 2" in text and "error: bad" in text


def test_machine_parsing_and_options(results):
    assert results.cpu_model("processor\t: 0\nmodel name\t: AMD EPYC 9B14\n") == "AMD EPYC 9B14"
    assert results.mem_total_gib("MemTotal:       24641536 kB\n") == pytest.approx(23.5, abs=0.05)
    assert results.parse_only("jobs,perf") == ["perf", "jobs"]
    assert results.parse_only(None) == ["perf", "scale", "jobs"]
    with pytest.raises(argparse.ArgumentTypeError):
        results.parse_only("perf,speed")
    assert results.md_table(["a", "b"], [["x|y", 1]]).splitlines()[2] == "| x\\|y | 1 |"
    assert results.fmt_seconds(0.0123) == "12.3 ms" and results.fmt_seconds(2.5) == "2.50 s"
