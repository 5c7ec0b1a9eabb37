"""summary.json, the machine-readable result, and the comparison table printed after a run."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, Iterable

from harness.atomic import atomic_write
from harness.guard import RULE, RunGuard
from harness.metrics import MetricEstimate
from harness.splits import SplitManifest, is_leaky
from harness.suite import SuiteConfig
from harness.tasks import TaskData


def build_summary(
    *,
    suite: SuiteConfig,
    dataset_name: str,
    fingerprint: str,
    task_data: TaskData,
    estimates: Iterable[tuple[str, str, MetricEstimate]],
    manifests: dict[str, SplitManifest],
    failures: list[str],
    seconds: float,
    seed: int,
    learning: Iterable[tuple[str, str, RunGuard]] = (),
) -> dict[str, Any]:
    """One entry per baseline x protocol x metric, with its CI and sample sizes; and one
    ``learning`` entry per baseline x protocol: the did-not-learn guard (harness.guard),
    whose ``did_not_learn`` and ``control`` are copied into each of its results."""
    guards = {(b, p): g for b, p, g in learning}
    learning_rows = [
        {"baseline": b, "protocol": p, **{k: (_num(v) if isinstance(v, float) else v)
                                          for k, v in g.to_dict().items()}}
        for (b, p), g in guards.items()
    ]
    results = [
        {
            "baseline": baseline,
            "protocol": protocol,
            "leaky_protocol": is_leaky(manifests[protocol]),
            **_guard_flags(guards.get((baseline, protocol))),
            "metric": est.metric,
            "mean": _num(est.mean),
            "ci95": [_num(est.ci95[0]), _num(est.ci95[1])],
            "n_patients": est.n_patients,
            "n_samples": est.n_samples,
            "n_folds": est.n_folds,
            "fold_values": [_num(v) for v in est.fold_values],
            **({"notes": list(est.notes)} if est.notes else {}),
        }
        for baseline, protocol, est in estimates
    ]
    return {
        "suite": suite.name,
        "task": suite.task,
        "dataset": {
            "name": dataset_name,
            "fingerprint": fingerprint,
            "n_patients": int(task_data.samples["patient_id"].nunique()),
            "n_samples": len(task_data),
        },
        "seed": seed,
        "results": results,
        "learning": learning_rows,
        "learning_rule": RULE,
        "manifests": {protocol: m.sha256 for protocol, m in manifests.items()},
        "failures": failures,
        "seconds": round(seconds, 1),
        "config": suite.to_dict(),
    }


def _guard_flags(guard: RunGuard | None) -> dict[str, Any]:
    if guard is None:
        return {}
    return {"did_not_learn": guard.did_not_learn, "control": guard.control}


def _num(value: float) -> float | None:
    return None if value is None or (isinstance(value, float) and math.isnan(value)) else float(value)


def write_json(obj: Any, path: Path) -> None:
    """Write atomically, so a reader never sees half a summary."""
    atomic_write(path, lambda fh: fh.write(json.dumps(obj, indent=2) + "\n"), text=True)


def _cell(entry: dict[str, Any] | None) -> str:
    if entry is None or entry["mean"] is None:
        return "-"
    lo, hi = entry["ci95"]
    ci = f" [{lo:.3f}, {hi:.3f}]" if lo is not None and hi is not None else ""
    return f"{entry['mean']:.3f}{ci}"


def format_table(summary: dict[str, Any]) -> str:
    """Protocols side by side: one row per metric x baseline, one column per protocol."""
    results = summary["results"]
    protocols = list(dict.fromkeys(r["protocol"] for r in results))
    leaky = {r["protocol"]: r["leaky_protocol"] for r in results}
    baselines = list(dict.fromkeys(r["baseline"] for r in results))
    metrics = list(dict.fromkeys(r["metric"] for r in results))
    index = {(r["baseline"], r["protocol"], r["metric"]): r for r in results}
    names = {b: b + _not_learned_marker(results, b, protocols) for b in baselines}
    n_patients = {p: next((r["n_patients"] for r in results if r["protocol"] == p), 0) for p in protocols}
    headers = ["metric", "baseline"] + [
        f"{p}{' (LEAKY)' if leaky[p] else ''}" for p in protocols
    ]
    rows = [
        [m, names[b]] + [_cell(index.get((b, p, m))) for p in protocols]
        for m in metrics
        for b in baselines
    ]
    rows.append(["", "test patients"] + [str(n_patients[p]) for p in protocols])
    widths = [max(len(str(x)) for x in col) for col in zip(headers, *rows)]
    ds = summary["dataset"]
    lines = [
        f"suite {summary['suite']} on {ds['name']}: {ds['n_patients']} patients, "
        f"{ds['n_samples']} samples (mean over folds [95% CI, patient-level bootstrap])",
        "  ".join(h.ljust(w) for h, w in zip(headers, widths)),
        "  ".join("-" * w for w in widths),
    ]
    lines += ["  ".join(str(c).ljust(w) for c, w in zip(row, widths)) for row in rows]
    if any(leaky.values()):
        lines.append("LEAKY: the protocol lets one patient's samples sit in both training and test.")
    lines += _learning_lines(summary)
    if summary.get("failures"):
        lines.append("FAILED: " + "; ".join(summary["failures"]))
    return "\n".join(lines)


def _not_learned_marker(results: list[dict[str, Any]], baseline: str, protocols: list[str]) -> str:
    """" (did not learn)" when flagged under every protocol, else the protocols it was flagged under."""
    flagged = list(dict.fromkeys(r["protocol"] for r in results
                                 if r["baseline"] == baseline and r.get("did_not_learn")))
    if not flagged:
        return ""
    return " (did not learn)" if len(flagged) == len(protocols) else f" (did not learn: {', '.join(flagged)})"


def _learning_lines(summary: dict[str, Any]) -> list[str]:
    """The guard's findings under the table: who did not learn, with the two scores."""
    bad = [g for g in summary.get("learning", []) if g.get("did_not_learn")]
    unknown = [g for g in summary.get("learning", []) if g.get("did_not_learn") is None]
    lines = []
    if bad:
        lines.append("DID NOT LEARN: " + "; ".join(
            f"{g['baseline']} | {g['protocol']}: training {g['metric']} {_fmt(g['train'])} vs trivial "
            f"{_fmt(g['train_trivial'])} ({g['folds_did_not_learn']}/{g['folds_known']} folds)" for g in bad)
            + ".")
        lines.append("  rule: " + summary.get("learning_rule", "") + ". Comparisons drawn from these models "
                     "are withheld in the reports.")
    if unknown:
        lines.append("LEARNING UNKNOWN (fold cache older than the guard): "
                     + ", ".join(f"{g['baseline']} | {g['protocol']}" for g in unknown))
    return lines


def _fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"
