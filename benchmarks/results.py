"""Regenerate benchmarks/RESULTS.md: every speed and scale figure, with the command behind it.

One command, from the repository root (or anywhere: paths are resolved from this file)::

    python benchmarks/results.py                 # all sections -> benchmarks/RESULTS.md
    python benchmarks/results.py --only perf     # some of perf,scale,jobs; the rest is marked skipped
    python benchmarks/results.py --out /tmp/R.md

Sections:

- ``perf``: ``pytest benchmarks/perf --benchmark-only`` with ``--benchmark-json``; each
  benchmark's time, its ratio to the bare baseline measured in the same run, the target
  and whether it is met (from ``extra_info``, see ``benchmarks/perf/conftest.py``);
- ``scale``: ``benchmarks/scale/rembrandt_scale.py --json`` (the REMBRANDT-size cohort:
  time and peak memory for the full and half cohort), every key it reports;
- ``jobs``: the default grading suite timed with ``--jobs 1``, ``--jobs 2`` and
  ``--jobs 1 --threads-per-job 2`` on a warm cohort cache, and whether their
  ``summary.json`` metrics agree.

A section that fails is written up with its exit status and stderr tail; the other
sections are still run and written. Parsing and rendering are small pure functions
(tested in ``tests/test_results_script.py`` without running anything).
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import math
import os
import platform
import re
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import traceback
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any, Callable, Iterable

REPO = Path(__file__).resolve().parents[1]
DEFAULT_OUT = REPO / "benchmarks" / "RESULTS.md"
SECTIONS: tuple[str, ...] = ("perf", "scale", "jobs")
SCALE_SCRIPT = Path("benchmarks/scale/rembrandt_scale.py")
#: Generous wall-clock limits per command (seconds): a hung run is reported, not waited on forever.
PERF_TIMEOUT_S, SCALE_TIMEOUT_S, JOBS_TIMEOUT_S = 3600, 7200, 3600
TAIL_CHARS = 3000

#: Issue 7 targets checked outside pytest (perf targets travel in each benchmark's extra_info).
SCALE_PEAK_LIMIT_MB = 1536.0  # "under 1.5 GB"
SCALE_HALF_TOLERANCE = 0.10  # "the same, within 10%, for half the cohort"
JOBS_SPEEDUP_TARGET = 1.5  # --jobs 2 at least 1.5x faster than --jobs 1

#: extra_info keys every perf benchmark writes through ``report_ratio``; the rest is detail.
STANDARD_KEYS = ("ratio", "ratio_is", "baseline", "baseline_seconds", "target", "target_value", "met", "label")


# --------------------------------------------------------------------------- data


@dataclass
class CommandResult:
    """One subprocess: what ran, how it ended, how long, how much memory, its output tails."""

    display: str
    rc: int | None
    seconds: float
    peak_rss_mb: float | None = None
    stdout_tail: str = ""
    stderr_tail: str = ""
    error: str | None = None  # could not start, or timed out

    @property
    def ok(self) -> bool:
        return self.rc == 0 and self.error is None


@dataclass
class TargetRow:
    """One figure with a target, for the summary table at the top."""

    section: str
    figure: str
    measured: str
    target: str
    met: bool | None


@dataclass
class BenchRow:
    """One pytest-benchmark entry (or a test that failed before it produced one)."""

    group: str  # the benchmark file, e.g. test_ingestion
    name: str  # test name with parameters
    fullname: str
    mean: float | None = None
    min: float | None = None
    stddev: float | None = None
    rounds: int | None = None
    ratio: float | None = None
    ratio_is: str | None = None
    baseline: str | None = None
    baseline_seconds: float | None = None
    target: str | None = None
    target_value: float | None = None  # the figure the target applies to, when not the ratio
    met: bool | None = None
    label: str | None = None
    outcome: str | None = None  # passed / failed / error / skipped (from the junit XML)
    message: str | None = None
    extra: dict = field(default_factory=dict)


@dataclass
class Section:
    key: str
    title: str
    body: str
    targets: list[TargetRow] = field(default_factory=list)


# --------------------------------------------------------------------------- running


def display_command(argv: Iterable[str], replacements: dict[str, str] | None = None) -> str:
    """Shell form of ``argv`` with this interpreter shown as ``python`` and temp paths shortened."""
    parts = ["python" if a == sys.executable else str(a) for a in argv]
    text = shlex.join(parts)
    for old, new in sorted((replacements or {}).items(), key=lambda kv: -len(kv[0])):
        text = text.replace(old, new)
    return text


def tail(text: str, n: int = TAIL_CHARS) -> str:
    text = text.rstrip()
    return text if len(text) <= n else "..." + text[-n:]


def run_command(argv: list[str], *, display: str, cwd: Path = REPO, timeout: float | None = None,
                env: dict[str, str] | None = None) -> CommandResult:
    """Run ``argv``; wall time by perf_counter, peak RSS of the child tree from wait4.

    ``peak_rss_mb`` is the largest resident set of any single process of the run (the
    command or one of its workers), as the kernel reports it to wait4.
    """
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        start = time.perf_counter()
        try:
            proc = subprocess.Popen(argv, cwd=cwd, stdout=out, stderr=err, env=env, start_new_session=True)
        except OSError as exc:
            return CommandResult(display, None, 0.0, error=f"could not start: {exc}")
        timed_out = threading.Event()

        def kill() -> None:
            timed_out.set()
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass

        timer = threading.Timer(timeout, kill) if timeout else None
        if timer:
            timer.start()
        try:
            _, status, usage = os.wait4(proc.pid, 0)
        finally:
            if timer:
                timer.cancel()
        seconds = time.perf_counter() - start
        proc.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        return CommandResult(
            display, proc.returncode, seconds, peak_rss_mb=usage.ru_maxrss / 1024.0,
            stdout_tail=tail(out.read()), stderr_tail=tail(err.read()),
            error=f"timed out after {timeout:.0f} s" if timed_out.is_set() else None,
        )


# --------------------------------------------------------------------------- machine


def _read(path: str) -> str:
    try:
        return Path(path).read_text()
    except OSError:
        return ""


def cpu_model(cpuinfo: str) -> str:
    for line in cpuinfo.splitlines():
        if line.lower().startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown"


def mem_total_gib(meminfo: str) -> float | None:
    m = re.search(r"^MemTotal:\s+(\d+)\s*kB", meminfo, re.M)
    return int(m.group(1)) / 2**20 if m else None


def os_name(os_release: str) -> str:
    m = re.search(r'^PRETTY_NAME="?([^"\n]*)"?', os_release, re.M)
    base = m.group(1) if m else platform.system()
    return f"{base} (kernel {platform.release()})"


def _version(dist: str) -> str:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return "not installed"


def gpu_name() -> str:
    """The CUDA device torch sees, or 'none'. Asked in a subprocess: importing torch here is not needed."""
    code = "import torch; print(torch.cuda.get_device_name(0) if torch.cuda.is_available() else 'none')"
    try:
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
        return out.stdout.strip() or "none"
    except (OSError, subprocess.SubprocessError):
        return "none"


def machine_info() -> dict[str, str]:
    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:
        usable = os.cpu_count() or 0
    mem = mem_total_gib(_read("/proc/meminfo"))
    return {
        "CPU": cpu_model(_read("/proc/cpuinfo")),
        "cores": f"{os.cpu_count()} logical, {usable} usable by this process",
        "RAM": f"{mem:.1f} GiB" if mem else "unknown",
        "OS": os_name(_read("/etc/os-release")),
        "Python": platform.python_version(),
        "torch": _version("torch"),
        "numpy": _version("numpy"),
        "pydicom": _version("pydicom"),
        "GPU": gpu_name(),
    }


def load_average() -> str:
    parts = _read("/proc/loadavg").split()
    return " ".join(parts[:3]) if parts else "unknown"


def git_info() -> dict[str, str]:
    """Commit and whether the working tree has changes (read-only git commands)."""

    def git(*args: str) -> str:
        try:
            return subprocess.run(["git", *args], cwd=REPO, capture_output=True, text=True,
                                  timeout=60).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            return ""

    commit = git("rev-parse", "HEAD") or "unknown"
    dirty = git("status", "--porcelain", "--untracked-files=no")
    subject = git("log", "-1", "--format=%s")
    return {"commit": commit, "subject": subject,
            "working tree": "uncommitted changes to tracked files" if dirty else "clean"}


# --------------------------------------------------------------------------- formatting


def md_escape(value: Any) -> str:
    return str(value).replace("|", "\\|").replace("\n", " ")


def md_table(headers: list[str], rows: list[list[Any]]) -> str:
    lines = ["| " + " | ".join(md_escape(h) for h in headers) + " |",
             "| " + " | ".join("---" for _ in headers) + " |"]
    lines += ["| " + " | ".join(md_escape(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def fmt_seconds(s: float | None) -> str:
    if s is None or (isinstance(s, float) and math.isnan(s)):
        return "-"
    if s >= 100:
        return f"{s:.0f} s"
    if s >= 1:
        return f"{s:.2f} s"
    if s >= 1e-3:
        return f"{s * 1e3:.1f} ms"
    return f"{s * 1e6:.1f} us"


def fmt_number(x: Any) -> str:
    if isinstance(x, bool) or x is None:
        return str(x)
    if isinstance(x, float):
        if math.isnan(x):
            return "nan"
        return f"{x:.3g}" if abs(x) < 1000 else f"{x:,.0f}"
    if isinstance(x, int):
        return f"{x:,}"
    if isinstance(x, (dict, list)):
        return json.dumps(x)
    return str(x)


def fmt_met(met: bool | None) -> str:
    return "-" if met is None else ("met" if met else "**NOT met**")


def code_block(text: str) -> str:
    return "```\n" + (text.rstrip() or "(empty)") + "\n```"


def command_failure(result: CommandResult) -> str:
    """Markdown for a command that did not succeed: status, stderr and stdout tails."""
    status = result.error or f"exit status {result.rc}"
    parts = [f"**Failed** ({status}, after {fmt_seconds(result.seconds)}): `{result.display}`"]
    if result.stderr_tail:
        parts += ["", "stderr (tail):", "", code_block(result.stderr_tail)]
    if result.stdout_tail:
        parts += ["", "stdout (tail):", "", code_block(tail(result.stdout_tail, 1500))]
    return "\n".join(parts)


# --------------------------------------------------------------------------- perf: parse


def parse_junit(xml_text: str) -> dict[str, tuple[str, str | None]]:
    """pytest's junit XML -> {``path.py::test[param]``: (outcome, message)}."""
    outcomes: dict[str, tuple[str, str | None]] = {}
    root = ET.fromstring(xml_text)
    for case in root.iter("testcase"):
        classname, name = case.get("classname", ""), case.get("name", "")
        nodeid = classname.replace(".", "/") + ".py::" + name
        outcome, message = "passed", None
        for tag in ("failure", "error", "skipped"):
            el = case.find(tag)
            if el is not None:
                outcome = {"failure": "failed", "error": "error", "skipped": "skipped"}[tag]
                message = (el.get("message") or el.text or "").strip().splitlines()[0:1]
                message = message[0] if message else None
                break
        outcomes[nodeid] = (outcome, message)
    return outcomes


def _group_of(fullname: str) -> str:
    return Path(fullname.split("::", 1)[0]).stem


def parse_benchmarks(data: dict, outcomes: dict[str, tuple[str, str | None]] | None = None) -> list[BenchRow]:
    """pytest-benchmark JSON (+ junit outcomes) -> one row per benchmark, in run order.

    Tests that failed before producing benchmark data appear too, from the junit outcomes.
    """
    outcomes = outcomes or {}
    rows: list[BenchRow] = []
    seen = set()
    for b in data.get("benchmarks", []):
        stats = b.get("stats") or {}
        info = dict(b.get("extra_info") or {})
        fullname = b.get("fullname") or b.get("name", "?")
        seen.add(fullname)
        outcome, message = outcomes.get(fullname, (None, None))
        ratio = info.get("ratio")
        target = info.get("target")
        met = info.get("met")
        value = info.get("target_value") if info.get("target_value") is not None else ratio
        if met is None and target is not None and isinstance(value, (int, float)):
            met = target_met(float(value), str(target))
        rows.append(BenchRow(
            group=_group_of(fullname), name=b.get("name", fullname), fullname=fullname,
            mean=stats.get("mean"), min=stats.get("min"), stddev=stats.get("stddev"), rounds=stats.get("rounds"),
            ratio=ratio, ratio_is=info.get("ratio_is"), baseline=info.get("baseline"),
            baseline_seconds=info.get("baseline_seconds"), target=target, target_value=info.get("target_value"),
            met=met, label=info.get("label"),
            outcome=outcome, message=message,
            extra={k: v for k, v in info.items() if k not in STANDARD_KEYS},
        ))
    for nodeid, (outcome, message) in outcomes.items():
        if nodeid not in seen and outcome in ("failed", "error"):
            rows.append(BenchRow(group=_group_of(nodeid), name=nodeid.split("::", 1)[-1], fullname=nodeid,
                                 outcome=outcome, message=message))
    return rows


def target_met(value: float, target: str) -> bool | None:
    """``target_met(1.7, ">= 1.6")`` -> True; None when the target is not a plain comparison."""
    m = re.fullmatch(r"\s*(>=|<=|>|<)\s*([-+0-9.eE]+)\s*x?\s*", target)
    if not m:
        return None
    op, bound = m.group(1), float(m.group(2))
    return {">=": value >= bound, "<=": value <= bound, ">": value > bound, "<": value < bound}[op]


# --------------------------------------------------------------------------- perf: render


GROUP_TITLES = {
    "test_ingestion": "DICOM ingestion and the cache",
    "test_features": "DWT-DCT features",
    "test_training_loop": "Training loop",
    "test_explain": "Explainability methods (one case each)",
    "test_seg_eval": "Segmentation evaluation",
    "test_synth": "Synthetic cohort generation",
    "test_embeddings": "Frozen-backbone embeddings and their cache",
    "test_warm_rerun": "Warm rerun of a suite",
}


def perf_targets(rows: list[BenchRow]) -> list[TargetRow]:
    out = []
    for r in rows:
        if not r.target:
            continue
        value = r.target_value if r.target_value is not None else r.ratio
        figure = f"{r.label} (`{r.group}::{r.name}`)" if r.label else f"`{r.group}::{r.name}`"
        out.append(TargetRow("perf", figure, fmt_number(value) if value is not None else "-", r.target, r.met))
    return out


def render_perf_group(group: str, rows: list[BenchRow], file_command: str) -> str:
    """One file's benchmarks: a table, then what each ratio means and the other recorded figures."""
    table = md_table(
        ["benchmark", "mean", "min", "rounds", "bare baseline", "ratio", "target", "met", "test"],
        [[r.name, fmt_seconds(r.mean), fmt_seconds(r.min), r.rounds if r.rounds is not None else "-",
          fmt_seconds(r.baseline_seconds), fmt_number(r.ratio) if r.ratio is not None else "-",
          r.target or "-", fmt_met(r.met), r.outcome or "-"] for r in rows],
    )
    notes = []
    described = set()
    for r in rows:
        key = (r.ratio_is, r.baseline)
        if r.ratio_is and key not in described:
            described.add(key)
            notes.append(f"- ratio = {r.ratio_is}; bare baseline: {r.baseline}")
    for r in rows:
        if r.extra:
            notes.append(f"- `{r.name}`: " + ", ".join(f"{k} = {fmt_number(v)}" for k, v in r.extra.items()))
        if r.outcome in ("failed", "error") and r.message:
            notes.append(f"- `{r.name}` {r.outcome}: {r.message}")
    title = GROUP_TITLES.get(group, group)
    return "\n".join([f"### {title} (`{group}.py`)", "", f"Command: `{file_command}`", "", table, "",
                      *notes])


def render_perf(rows: list[BenchRow], command: str, result: CommandResult | None) -> str:
    groups: dict[str, list[BenchRow]] = {}
    for r in rows:
        groups.setdefault(r.group, []).append(r)
    order = list(GROUP_TITLES)
    groups = dict(sorted(groups.items(), key=lambda kv: order.index(kv[0]) if kv[0] in order else len(order)))
    parts = [f"Command: `{command}` (exit status {result.rc if result else '-'}, "
             f"{fmt_seconds(result.seconds) if result else '-'} in all; a benchmark whose target is not met "
             "fails its test, so a non-zero status is expected then).", "",
             "Each benchmark is timed by pytest-benchmark; its bare baseline is timed in the same run "
             "(between rounds or just before), so the ratio compares across machines. Times are wall "
             "clock; `min` is the figure the ratios use unless the note says mean."]
    for group, grows in groups.items():
        file_cmd = f'pytest benchmarks/perf/{group}.py --benchmark-only -o addopts=""'
        parts += ["", render_perf_group(group, grows, file_cmd)]
    if not rows:
        parts += ["", "No benchmark results were recorded."]
    return "\n".join(parts)


def perf_section(tmp: Path) -> Section:
    json_path, xml_path = tmp / "perf.json", tmp / "perf-junit.xml"
    argv = [sys.executable, "-m", "pytest", "benchmarks/perf", "--benchmark-only", "-o", "addopts=",
            f"--benchmark-json={json_path}", f"--junitxml={xml_path}", "-p", "no:cacheprovider", "-q"]
    shown = 'pytest benchmarks/perf --benchmark-only -o addopts="" --benchmark-json=<tmp>/perf.json'
    result = run_command(argv, display=shown, timeout=PERF_TIMEOUT_S)
    if not json_path.exists():
        return Section("perf", "Hot paths against bare baselines (benchmarks/perf)", command_failure(result))
    outcomes = parse_junit(xml_path.read_text()) if xml_path.exists() else {}
    rows = parse_benchmarks(json.loads(json_path.read_text()), outcomes)
    body = render_perf(rows, shown, result)
    if result.rc not in (0, 1):  # 1 = some test failed (a target not met); others: pytest itself failed
        body += "\n\n" + command_failure(result)
    return Section("perf", "Hot paths against bare baselines (benchmarks/perf)", body, perf_targets(rows))


# --------------------------------------------------------------------------- scale


def flatten(obj: Any, prefix: str = "") -> dict[str, Any]:
    """Nested dicts -> {"a.b": value}; lists and scalars are kept as values."""
    if not isinstance(obj, dict):
        return {prefix or "value": obj}
    out: dict[str, Any] = {}
    for k, v in obj.items():
        key = f"{prefix}.{k}" if prefix else str(k)
        if isinstance(v, dict):
            out.update(flatten(v, key))
        else:
            out[key] = v
    return out


def scale_targets(flat: dict[str, Any]) -> list[TargetRow]:
    """Issue 7 memory targets, for whichever of the expected keys the scale JSON has.

    The full cohort's peak memory (``*full*peak*_mb``; only the ``memory_measure`` the
    script names, e.g. ``pss``, when it names one and reports it) must be under 1.5 GB,
    and ``half_to_full_memory_ratio`` within 10% of 1. Deltas (``*above*``) are not peaks.
    """
    peaks = {k: v for k, v in flat.items()
             if isinstance(v, (int, float)) and not isinstance(v, bool)
             and all(w in k.lower() for w in ("full", "peak")) and "half" not in k.lower()
             and "above" not in k.lower() and k.lower().endswith("_mb")}
    measure = str(flat.get("memory_measure") or "").lower()
    named = {k: v for k, v in peaks.items() if measure and f"peak_{measure}_mb" in k.lower()}
    rows = [TargetRow("scale", key, f"{value:,.0f} MB", f"< {SCALE_PEAK_LIMIT_MB:,.0f} MB (1.5 GB)",
                      bool(value < SCALE_PEAK_LIMIT_MB)) for key, value in (named or peaks).items()]
    ratio = flat.get("half_to_full_memory_ratio")
    if isinstance(ratio, (int, float)):
        rows.append(TargetRow("scale", "half_to_full_memory_ratio", f"{ratio:.3f}",
                              f"within {SCALE_HALF_TOLERANCE:.0%} of 1",
                              bool(abs(ratio - 1.0) <= SCALE_HALF_TOLERANCE)))
    return rows


def render_scale(data: Any, command: str, result: CommandResult | None) -> str:
    flat = flatten(data)
    rows = [[k, fmt_number(v)] for k, v in flat.items()]
    parts = [f"Command: `{command}`"
             + (f" ({fmt_seconds(result.seconds)}, exit status {result.rc})" if result else ""), "",
             md_table(["key", "value"], rows) if rows else "The script wrote no figures."]
    targets = scale_targets(flat)
    if targets:
        parts += ["", md_table(["figure", "measured", "target", "met"],
                               [[t.figure, t.measured, t.target, fmt_met(t.met)] for t in targets])]
    else:
        parts += ["", "No peak-memory keys found to check against the 1.5 GB and within-10% targets."]
    return "\n".join(parts)


def scale_section(tmp: Path) -> Section:
    title = "REMBRANDT-scale ingestion (benchmarks/scale)"
    if not (REPO / SCALE_SCRIPT).exists():
        return Section("scale", title, f"Not run: `{SCALE_SCRIPT}` does not exist in this checkout.")
    json_path = tmp / "scale.json"
    argv = [sys.executable, str(SCALE_SCRIPT), "--json", str(json_path)]
    result = run_command(argv, display=display_command(argv, {str(tmp): "<tmp>"}), timeout=SCALE_TIMEOUT_S)
    if not result.ok or not json_path.exists():
        body = command_failure(result)
        if json_path.exists():
            body += "\n\n" + render_scale(_load_json(json_path), result.display, result)
        return Section("scale", title, body)
    data = _load_json(json_path)
    return Section("scale", title, render_scale(data, result.display, result), scale_targets(flatten(data)))


def _load_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        return {"unreadable_json": f"{path.name}: {exc}"}


# --------------------------------------------------------------------------- jobs


@dataclass
class JobsRun:
    label: str
    args: list[str]
    result: CommandResult | None = None
    summary: dict | None = None


def summary_entries(summary: dict) -> dict[tuple, dict]:
    return {(e.get("baseline"), e.get("protocol"), e.get("metric")): e for e in summary.get("results", [])}


def _numbers(entry: dict) -> list[float | None]:
    values = [entry.get("mean"), *(entry.get("ci95") or []), *(entry.get("fold_values") or [])]
    return [None if v is None else float(v) for v in values]


def compare_summaries(a: dict, b: dict) -> tuple[bool, str]:
    """Whether two summary.json files give the same metrics, and how they differ if not.

    Same entries (baseline x protocol x metric), sample sizes, dataset fingerprint and
    manifests; means, CIs and fold values equal (identical, or the largest difference).
    """
    ea, eb = summary_entries(a), summary_entries(b)
    problems = []
    if set(ea) != set(eb):
        problems.append(f"different entries: {len(set(ea) ^ set(eb))} not in both")
    if (a.get("dataset") or {}).get("fingerprint") != (b.get("dataset") or {}).get("fingerprint"):
        problems.append("different dataset fingerprint")
    if a.get("manifests") != b.get("manifests"):
        problems.append("different split manifests")
    worst, worst_key, n_diff = 0.0, None, 0
    for key in sorted(set(ea) & set(eb), key=str):
        x, y = ea[key], eb[key]
        if any(x.get(f) != y.get(f) for f in ("n_patients", "n_samples", "n_folds")):
            problems.append(f"sample sizes differ for {'/'.join(map(str, key))}")
        nx, ny = _numbers(x), _numbers(y)
        if len(nx) != len(ny) or any((u is None) != (v is None) for u, v in zip(nx, ny)):
            n_diff += 1
            worst_key = worst_key or key
            continue
        d = max((abs(u - v) for u, v in zip(nx, ny) if u is not None and v is not None), default=0.0)
        if d > 0:
            n_diff += 1
            if d >= worst:
                worst, worst_key = d, key
    if problems:
        return False, "; ".join(problems)
    if n_diff == 0:
        return True, f"identical ({len(ea)} baseline x protocol x metric entries)"
    where = "/".join(map(str, worst_key)) if worst_key else "?"
    return False, f"{n_diff} of {len(ea)} entries differ; largest difference {worst:.3g} ({where})"


def find_summary(folder: Path) -> dict | None:
    found = sorted(folder.rglob("summary.json"), key=lambda p: len(p.parts))
    return _load_json(found[0]) if found else None


def render_jobs(warmup: CommandResult, runs: list[JobsRun]) -> tuple[str, list[TargetRow]]:
    base = runs[0] if runs else None  # --jobs 1: the reference for speedups and metrics
    base_s = base.result.seconds if base and base.result and base.result.ok else None
    table_rows, notes, targets = [], [], []
    for r in runs:
        res = r.result
        ok = bool(res and res.ok)
        speedup = base_s / res.seconds if ok and base_s else None
        same = "-"
        if r is not base and base and base.summary and r.summary:
            equal, detail = compare_summaries(base.summary, r.summary)
            same = ("same" if equal else "DIFFERENT") + f": {detail}"
        table_rows.append([r.label, fmt_seconds(res.seconds) if ok else "failed",
                           f"{res.peak_rss_mb:,.0f} MB" if ok and res.peak_rss_mb else "-",
                           f"{speedup:.2f}x" if speedup else "-", same])
        notes.append(f"- {r.label}: `{res.display if res else '-'}`")
        if r.label == "--jobs 2":
            met = None if speedup is None else bool(speedup >= JOBS_SPEEDUP_TARGET)
            targets.append(TargetRow("jobs", "grading suite, --jobs 2 vs --jobs 1 (speedup)",
                                     f"{speedup:.2f}x" if speedup else "failed",
                                     f">= {JOBS_SPEEDUP_TARGET:g}x", met))
    parts = [
        "The grading suite (by default all its default baselines and protocols) on a warm cache: the "
        "cohort was generated and decoded by a warm-up run, and before each timed run the cached "
        "folds, features and embeddings (`<cache>/folds`, `<cache>/features`, `<cache>/embeddings`) "
        "were deleted, so every run fits and scores every fold and extracts what it reads. Wall time around the whole command; peak RSS of the largest single "
        "process (from wait4). `--jobs 1`: one core, folds one at a time in-process with one "
        "torch/BLAS thread; `--jobs 2`: two worker processes, one thread each; `--jobs 1 "
        "--threads-per-job 2`: one process using both cores for torch (close to the old serial run).",
        "",
        f"Warm-up: `{warmup.display}` ({fmt_seconds(warmup.seconds)}"
        + (")" if warmup.ok else ", failed)"),
        "",
        md_table(["run", "wall time", "peak RSS", "speedup vs --jobs 1", "summary.json vs --jobs 1"], table_rows),
        "",
        "Commands:",
        "",
        *notes,
    ]
    if not warmup.ok:
        parts += ["", "Warm-up " + command_failure(warmup)]
    for r in runs:
        if r.result and not r.result.ok:
            parts += ["", f"{r.label}: " + command_failure(r.result)]
    return "\n".join(parts), targets


def jobs_section(tmp: Path, baselines: str | None = None) -> Section:
    """``baselines``: a comma list instead of the suite's defaults (a quick check of this script only)."""
    title = "Grading suite: --jobs 1 against --jobs 2"
    chosen = ["--baselines", baselines] if baselines else []
    cache = tmp / "jobs-cache"
    short = {str(tmp): "<tmp>"}
    harness = [sys.executable, "-m", "harness", "--no-progress"]
    # logreg_dwtdct makes the warm-up's audit use DWT-DCT features (seconds); with the
    # majority class alone it falls back to image thumbnails (minutes of ridge refits).
    warm_argv = harness + ["run", "--suite", "grading", "--baselines", "majority,logreg_dwtdct", "--tracking-uri", "none",
                           "--cache-dir", str(cache), "--out", str(tmp / "warmup")]
    warmup = run_command(warm_argv, display=display_command(warm_argv, short), timeout=JOBS_TIMEOUT_S)
    runs = [JobsRun("--jobs 1", ["--jobs", "1"]), JobsRun("--jobs 2", ["--jobs", "2"]),
            JobsRun("--jobs 1 --threads-per-job 2", ["--jobs", "1", "--threads-per-job", "2"])]
    if warmup.ok:
        for i, r in enumerate(runs):
            out = tmp / f"jobs-run{i}"
            out.mkdir(parents=True, exist_ok=True)
            for sub in ("folds", "features", "embeddings"):  # every run extracts what it uses
                shutil.rmtree(cache / sub, ignore_errors=True)
            argv = harness + ["run", "--suite", "grading", *chosen, *r.args, "--cache-dir", str(cache), "--out", str(out),
                              "--tracking-uri", f"sqlite:///{out}/mlflow.db"]
            r.result = run_command(argv, display=display_command(argv, short), timeout=JOBS_TIMEOUT_S)
            r.summary = find_summary(out) if r.result.ok else None
    body, targets = render_jobs(warmup, runs)
    if baselines:
        title += f" (baselines {baselines} only, NOT the default suite)"
        for t in targets:
            t.figure += f" [baselines {baselines} only]"
    return Section("jobs", title, body, targets)


# --------------------------------------------------------------------------- the page


def render_header(when: str, git: dict[str, str], machine: dict[str, str], ran: list[str],
                  skipped: list[str], loads: tuple[str, str]) -> str:
    lines = [
        "# Benchmark results",
        "",
        "Generated by `python benchmarks/results.py` "
        + (f"`--only {','.join(ran)}`" if skipped else "") + f" on {when}.",
        "Regenerate everything with `python benchmarks/results.py` (options: `--only perf,scale,jobs`, "
        "`--out PATH`).",
        "",
        f"- commit: `{git.get('commit', '?')}` {git.get('subject', '')} ({git.get('working tree', '?')})",
        f"- sections run: {', '.join(ran) or 'none'}"
        + (f"; skipped (not regenerated, not shown): {', '.join(skipped)}" if skipped else ""),
        f"- load average (1, 5, 15 min) before: {loads[0]}; after: {loads[1]}",
        "",
        "## Machine",
        "",
        md_table(["", ""], [[k, v] for k, v in machine.items()]),
    ]
    return "\n".join(lines)


def render_targets(targets: list[TargetRow]) -> str:
    if not targets:
        return "## Targets\n\nNo figure with a target was measured in this run."
    met = sum(1 for t in targets if t.met)
    rows = [[t.section, t.figure, t.measured, t.target, fmt_met(t.met)] for t in targets]
    return "\n".join([f"## Targets ({met} of {len(targets)} met)", "",
                      md_table(["section", "figure", "measured", "target", "met"], rows)])


def render_page(header: str, sections: list[Section]) -> str:
    targets = [t for s in sections for t in s.targets]
    parts = [header, "", render_targets(targets)]
    for s in sections:
        parts += ["", f"## {s.title}", "", s.body]
    return "\n".join(parts).rstrip() + "\n"


def safe_section(key: str, fn: Callable[[Path], Section], tmp: Path) -> Section:
    """Run one section; an unexpected exception becomes its write-up instead of ending the run."""
    try:
        return fn(tmp)
    except Exception:  # noqa: BLE001 - one broken section must not lose the others
        return Section(key, f"{key} (failed)", "**The section failed:**\n\n" + code_block(tail(traceback.format_exc())))


SECTION_FUNCS: dict[str, Callable[[Path], Section]] = {
    "perf": perf_section, "scale": scale_section, "jobs": jobs_section,
}


def parse_only(text: str | None) -> list[str]:
    if not text:
        return list(SECTIONS)
    wanted = [t.strip() for t in text.split(",") if t.strip()]
    unknown = [w for w in wanted if w not in SECTIONS]
    if unknown:
        raise argparse.ArgumentTypeError(f"unknown section(s) {', '.join(unknown)}; choose from {', '.join(SECTIONS)}")
    return [s for s in SECTIONS if s in wanted]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", type=parse_only, default=list(SECTIONS),
                        help="comma-separated sections to run: perf,scale,jobs (default: all)")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help=f"where to write (default {DEFAULT_OUT})")
    parser.add_argument("--keep-tmp", action="store_true", help="keep the scratch folder (JSON, runs) for a look")
    parser.add_argument("--jobs-baselines", metavar="A,B",
                        help="jobs section only: time these baselines instead of the suite's defaults (to check "
                        "this script quickly; the page then says the figures are not the default suite's)")
    args = parser.parse_args(argv)
    funcs = dict(SECTION_FUNCS)
    if args.jobs_baselines:
        funcs["jobs"] = lambda tmp: jobs_section(tmp, args.jobs_baselines)
    ran, skipped = args.only, [s for s in SECTIONS if s not in args.only]
    when = _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    load_before = load_average()
    tmp = Path(tempfile.mkdtemp(prefix="harness-results-"))
    sections = []
    try:
        for key in ran:
            print(f"[results] running {key} ...", file=sys.stderr, flush=True)
            start = time.perf_counter()
            sections.append(safe_section(key, funcs[key], tmp))
            print(f"[results] {key} done in {time.perf_counter() - start:.0f} s", file=sys.stderr, flush=True)
    finally:
        if args.keep_tmp:
            print(f"[results] scratch kept in {tmp}", file=sys.stderr)
        else:
            shutil.rmtree(tmp, ignore_errors=True)
    header = render_header(when, git_info(), machine_info(), ran, skipped, (load_before, load_average()))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(render_page(header, sections))
    print(f"[results] wrote {args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
