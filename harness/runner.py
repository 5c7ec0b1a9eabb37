"""The runner: for each baseline x protocol x fold, fit(train, val) then predict(test).

Stages, each a plain function (as nnU-Net keeps its pipeline stages apart):
prepare data -> prepare split manifests -> run folds (cached, resumable) -> estimate
metrics -> summary.json, MLflow, printed table.

Every finished fold's predictions are written atomically to the fold cache before its
MLflow run is logged, so a run killed at any point resumes without refitting a fold
that had finished.
"""

from __future__ import annotations

import hashlib
import json
import sys
import time
import traceback
from dataclasses import dataclass, field, replace
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from baselines import Baseline, FitContext, get_baseline
from harness.atomic import atomic_write
from harness import __version__
from harness.cohorts import DEFAULT_CACHE_DIR, ensure_synthetic_cohort
from harness.data.cohort import Problem
from harness.data.detect import load_cohort
from harness.data.cache import VolumeStore, dataset_fingerprint
from harness.errors import HarnessError, NoUsableDataError
from harness.metrics import MetricEstimate, compute_metric, estimate
from harness.provenance import git_commit, package_versions
from harness.splits import (
    SplitManifest,
    get_protocol,
    load_or_create_manifest,
    validate_manifest,
)
from harness.suite import SuiteConfig
from harness.summary import build_summary, format_table, write_json
from harness.tasks import TASK_BUILDERS, TaskData


@dataclass
class RunOptions:
    """Command-line options every suite accepts (None: the suite's default)."""

    data: Path | None = None
    baselines: list[str] | None = None
    protocols: list[str] | None = None
    out: Path | None = None
    tracking_uri: str | None = None
    seed: int | None = None
    profile: str = "quick"
    split_manifest: Path | None = None
    device: str = "cpu"
    cache_dir: Path = DEFAULT_CACHE_DIR
    progress: bool = True
    #: Auxiliary cohort for pipelines with a separate first stage (progression's grader);
    #: default: the suite's synthetic ``[aux_data]`` cohort.
    aux_data: Path | None = None
    #: Local pretrained-weights files: baseline name (or "*") -> file. Never downloaded.
    weights: dict[str, Path] = field(default_factory=dict)


@dataclass
class PreparedData:
    data_dir: Path
    dataset_name: str
    task_data: TaskData
    fingerprint: str
    problems: list[Problem]
    #: Task variants (e.g. survival's "grade" and "survival_class"): name -> view.
    #: A suite without ``[task] targets`` has one variant named "".
    views: dict[str, TaskData] = field(default_factory=dict)
    variant: str = ""
    #: Tables written by pipeline stages that run before the splits (CSV + MLflow).
    stage_tables: dict[str, pd.DataFrame] = field(default_factory=dict)
    stage_tags: dict[str, str] = field(default_factory=dict)
    stage_files: list[Path] = field(default_factory=list)


@dataclass
class RunResult:
    out_dir: Path
    summary: dict[str, Any]
    failures: list[str] = field(default_factory=list)
    folds_fitted: int = 0
    folds_reused: int = 0
    #: One record per baseline x protocol (x variant): fold cache dir, MLflow parent run id.
    runs: list[dict[str, Any]] = field(default_factory=list)
    #: Report files written after the suite (leakage, overfitting, audit).
    reports: list[Path] = field(default_factory=list)


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


# -- stage 1: data -------------------------------------------------------------------
def prepare_data(suite: SuiteConfig, opts: RunOptions) -> PreparedData:
    """Find or generate the data, index it, decode through the cache, build the task view."""
    if opts.data is not None:
        data_dir = Path(opts.data)
        dataset_name = data_dir.name
    else:
        data_dir = ensure_synthetic_cohort(opts.cache_dir, suite.data, progress=opts.progress)
        dataset_name = f"synthetic-{data_dir.name}"
    cohort = load_cohort(data_dir, layout=suite.data.get("layout"))
    problems = list(cohort.problems)
    modalities = set(suite.task_options.get("modalities", []))
    series = cohort.series
    if modalities:
        series = series[series["modality"].isin(modalities)]
    store = VolumeStore(opts.cache_dir / "arrays", progress=opts.progress)
    volumes, decode_problems = store.load_many(series)
    problems += decode_problems
    if not volumes:
        raise NoUsableDataError(f"no decodable image series in {data_dir}")
    builder = TASK_BUILDERS.get(suite.task)
    if builder is None:
        raise HarnessError(f"suite {suite.name!r}: unknown task {suite.task!r}")
    arrays = {sid: v.array for sid, v in volumes.items()}
    keys = {sid: v.content_key for sid, v in volumes.items()}
    spacings = {sid: tuple(v.spacing) for sid, v in volumes.items()}
    views: dict[str, TaskData] = {}
    for variant, options in task_variants(suite):
        view, task_problems = builder(cohort, arrays, keys, **options)
        views[variant] = replace(view, spacings=spacings)
        problems += task_problems
    fingerprint = dataset_fingerprint(cohort, store)
    first = next(iter(views.values()))
    log(
        f"data: {data_dir} ({cohort.layout}): {first.samples['patient_id'].nunique()} patients, "
        f"{len(first)} samples; {store.n_decoded} series decoded, {store.n_cache_hits} from cache"
    )
    data = PreparedData(data_dir, dataset_name, first, fingerprint, problems, views=views)
    if suite.task == "progression":
        run_progression_stages(suite, opts, data)
    return data


def task_variants(suite: SuiteConfig) -> list[tuple[str, dict[str, Any]]]:
    """``[task] targets = [a, b]`` runs the suite once per target; else one variant ""."""
    options = dict(suite.task_options)
    targets = options.pop("targets", None)
    if not targets:
        return [("", options)]
    return [(str(t), {**options, "target": str(t)}) for t in targets]


def aux_data_dir(suite: SuiteConfig, opts: RunOptions) -> Path:
    """``--aux-data`` or the suite's synthetic auxiliary cohort (generated once)."""
    if opts.aux_data is not None:
        return Path(opts.aux_data)
    if not suite.aux_data:
        raise HarnessError(f"suite {suite.name!r} needs an auxiliary cohort: pass --aux-data DIR "
                           "or add an [aux_data] table to the suite file")
    return ensure_synthetic_cohort(opts.cache_dir, suite.aux_data, progress=opts.progress)


def run_progression_stages(suite: SuiteConfig, opts: RunOptions, data: PreparedData) -> None:
    """cnn_lstm stages 1-3 (grader on the auxiliary cohort, pseudo-grades, eligibility).

    They decide which patients take part, so they run once, before any split, and every
    baseline is compared on the same rows. Skipped when the rule is "all" and no
    pipeline baseline needs the pseudo-grades.
    """
    from baselines.cnn_lstm import grading_stages

    wanted = opts.baselines or suite.baselines
    rule = suite.task_options.get("eligibility", "grade_rise")
    if rule == "all" and "cnn_lstm" not in wanted:
        return
    aux_dir = aux_data_dir(suite, opts)
    out = grading_stages(
        data.task_data, aux_dir=aux_dir, cache_dir=opts.cache_dir, options=suite.task_options,
        seed=opts.seed if opts.seed is not None else int(suite.data.get("seed", 0)),
        profile=opts.profile, device=opts.device, weights=dict(opts.weights),
        grader_params=suite.baseline_params.get("resnet18_grader", {}), log=log, progress=opts.progress,
    )
    data.task_data = out.task_data
    data.views = {"": out.task_data}
    data.stage_tables = out.tables
    data.stage_tags = out.tags


# -- stage 2: split manifests ----------------------------------------------------------
def prepare_manifests(
    suite: SuiteConfig, opts: RunOptions, data: PreparedData, protocols: list[str], seed: int, out_dir: Path
) -> dict[str, tuple[SplitManifest, Path]]:
    """One manifest per protocol: supplied, reused from the cache, or created."""
    samples = data.task_data.samples
    prefix = f"{data.variant}-" if data.variant else ""
    rows_key = _digest(sorted(samples["sample_id"].astype(str)))[:8]
    manifests: dict[str, tuple[SplitManifest, Path]] = {}
    if opts.split_manifest is not None:
        manifest = SplitManifest.load(opts.split_manifest)
        validate_manifest(manifest, samples, dataset_fingerprint=data.fingerprint)
        plan = {manifest.protocol: manifest}
    else:
        plan = {}
        for name in protocols:
            params = suite.protocols.get(name, {})
            get_protocol(name)  # fail early on an unknown name
            path = (
                opts.cache_dir / "manifests"
                / f"{suite.name}-{prefix}{name}-s{seed}-{data.fingerprint[:16]}-{rows_key}.json"
            )
            manifest, reused = load_or_create_manifest(
                path, name, samples, seed=seed, task=data.task_data.target_kind,
                dataset_fingerprint=data.fingerprint, **params,
            )
            log(f"split {prefix}{name}: {'reused' if reused else 'created'} manifest sha256 {manifest.sha256[:12]}")
            plan[name] = manifest
    for name, manifest in plan.items():
        path = out_dir / "manifests" / f"{prefix}{name}.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        manifest.save(path)
        manifests[name] = (manifest, path)
    return manifests


# -- stage 3: folds --------------------------------------------------------------------
def _digest(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()


def _write_csv_atomic(frame: pd.DataFrame, path: Path) -> None:
    atomic_write(path, lambda fh: frame.to_csv(fh, index=False), text=True)


def fit_predict_fold(
    baseline: Baseline, data: TaskData, fold: Any, ctx: FitContext
) -> tuple[pd.DataFrame, float]:
    """Fit on the fold's train (and val), predict its test samples; returns predictions."""
    train = data.subset(fold.train)
    val = data.subset(fold.val) if fold.val else None
    test = data.subset(fold.test)
    started = time.perf_counter()
    baseline.fit(train, val, ctx)
    y_pred = np.asarray(baseline.predict(test))
    if len(y_pred) != len(test):
        raise HarnessError(
            f"baseline {baseline.name!r} returned {len(y_pred)} predictions for {len(test)} samples"
        )
    seconds = time.perf_counter() - started
    frame = pd.DataFrame(
        {
            "sample_id": test.samples["sample_id"].to_numpy(),
            "patient_id": test.samples["patient_id"].to_numpy(),
            "fold": fold.index,
            "y_true": test.y,
            "y_pred": y_pred,
        }
    )
    return frame, seconds


def _read_predictions(path: Path, target_kind: str) -> pd.DataFrame:
    frame = pd.read_csv(path, dtype={"sample_id": str, "patient_id": str})
    if target_kind == "classification":
        frame["y_true"] = frame["y_true"].astype(str)
        frame["y_pred"] = frame["y_pred"].astype(str)
    return frame


def _fold_counts(data: TaskData, fold: Any) -> dict[str, int]:
    pid = data.samples.set_index("sample_id")["patient_id"]
    counts = {}
    for role in ("train", "val", "test"):
        ids = getattr(fold, role)
        counts[f"n_{role}_samples"] = len(ids)
        counts[f"n_{role}_patients"] = int(pid.loc[list(ids)].nunique()) if ids else 0
    return counts


def run_baseline_protocol(
    *,
    suite: SuiteConfig,
    opts: RunOptions,
    data: PreparedData,
    baseline_name: str,
    protocol: str,
    manifest: SplitManifest,
    manifest_path: Path,
    seed: int,
    tracker: Any,
    common_tags: dict[str, str],
    out_dir: Path,
    result: RunResult,
) -> list[MetricEstimate]:
    """All folds of one baseline under one protocol: fold runs, then the parent's metrics."""
    cls = get_baseline(baseline_name)
    params = suite.baseline_params.get(baseline_name, {})
    resolved = cls(profile=opts.profile, **params).get_params()
    task = data.task_data
    key_obj = {
        "suite": suite.name, "task": suite.task, "task_options": suite.task_options,
        "baseline": baseline_name, "params": resolved, "manifest": manifest.sha256,
        "seed": seed, "dataset": data.fingerprint, "version": __version__,
        "weights": {k: str(v) for k, v in sorted(opts.weights.items())},
    }
    if data.variant:
        key_obj["variant"] = data.variant
    if suite.aux_data or opts.aux_data:
        key_obj["aux"] = data.stage_tags.get("aux_dataset_fingerprint", "")
    run_key = _digest(key_obj)[:32]
    leaky = bool(manifest.leaky or get_protocol(manifest.protocol).leaky)
    variant = data.variant
    label = f"{baseline_name} | {protocol}" + (f" | {variant}" if variant else "")
    tags = {
        **common_tags,
        **data.stage_tags,
        "baseline": baseline_name,
        "protocol": protocol,
        # One value per comparable set of runs: group by it in the MLflow UI.
        "comparison": f"{variant + ' | ' if variant else ''}{protocol}",
        "leaky_protocol": str(leaky).lower(),
        "manifest_sha256": manifest.sha256,
    }
    run_params = {
        "suite": suite.name, "task": suite.task, "baseline": baseline_name, "protocol": protocol,
        "seed": seed, "device": opts.device, "data": str(data.data_dir), "target": variant or suite.task,
        **{f"baseline.{k}": v for k, v in resolved.items()},
        **{f"protocol.{k}": v for k, v in manifest.params.items()},
        **{f"task.{k}": v for k, v in suite.task_options.items()},
        **{f"data.{k}": v for k, v in suite.data.items()},
    }
    if variant:
        tags["target"] = variant
    parent = tracker.open_parent(run_key, label, run_params, tags) if tracker else None
    logged = parent.finished_folds() if parent else set()
    fold_dir = opts.cache_dir / "folds" / run_key
    result.runs.append({"variant": variant, "baseline": baseline_name, "protocol": protocol,
                        "fold_dir": fold_dir, "parent_run_id": parent.run_id if parent else None})
    frames: list[pd.DataFrame] = []
    try:
        for fold in manifest.folds:
            pred_path = fold_dir / f"fold{fold.index}.csv"
            fold_tags = {"baseline": baseline_name, "protocol": protocol, **({"target": variant} if variant else {})}
            if pred_path.exists():
                frame = _read_predictions(pred_path, task.target_kind)
                seconds = float("nan")
                result.folds_reused += 1
                fold_tags["resumed_from_cache"] = "true"
            else:
                ctx = FitContext(
                    seed=seed, device=opts.device, profile=opts.profile,
                    work_dir=opts.cache_dir, log=log, weights=dict(opts.weights),
                )
                model = cls(profile=opts.profile, **params)
                frame, seconds = fit_predict_fold(model, task, fold, ctx)
                _write_csv_atomic(frame, pred_path)
                if ctx.history:
                    _write_csv_atomic(pd.DataFrame(ctx.history), fold_dir / f"fold{fold.index}-history.csv")
                fold_tags.update({k: str(v)[:480] for k, v in ctx.tags.items()})
                result.folds_fitted += 1
            frames.append(frame)
            log(f"  {label} | fold {fold.index}: {len(frame)} test samples"
                + (" (from cache)" if seconds != seconds else f" in {seconds:.1f}s"))
            if parent is not None and fold.index not in logged:
                metrics = {
                    m: compute_metric(m, frame["y_true"].to_numpy(), frame["y_pred"].to_numpy(), task.classes)
                    for m in suite.metrics
                }
                if seconds == seconds:
                    metrics["fit_predict_seconds"] = seconds
                from harness.tracking import FoldRecord

                parent.log_fold(
                    FoldRecord(
                        index=fold.index,
                        params={"fold": fold.index, **_fold_counts(task, fold)},
                        metrics=metrics,
                        tags=fold_tags,
                        artifacts=[pred_path],
                    ),
                    run_name=f"{label} | fold {fold.index}",
                )
        pooled = pd.concat(frames, ignore_index=True)
        pred_out = out_dir / "predictions" / f"{baseline_name}__{protocol}{'__' + variant if variant else ''}.csv"
        _write_csv_atomic(pooled, pred_out)
        estimates = [
            estimate(metric, frames, classes=task.classes, n_boot=suite.n_boot, seed=seed)
            for metric in suite.metrics
        ]
        if parent is not None:
            parent.log_artifact(manifest_path, "manifests")
            parent.log_artifact(pred_out, "predictions")
            for path in data.stage_files:
                parent.log_artifact(path, "stages")
            for est in estimates:
                parent.log_metrics({
                    est.metric: est.mean, f"{est.metric}_ci95_lo": est.ci95[0],
                    f"{est.metric}_ci95_hi": est.ci95[1], f"{est.metric}_n_patients": est.n_patients,
                })
            parent.finish()
        return estimates
    except BaseException:
        if parent is not None:
            parent.finish("FAILED")
        raise


# -- the whole suite -----------------------------------------------------------------
#: Tasks whose samples are not rows with one target (e.g. segmentation) bring their own
#: suite runner, "module:function" with the signature of :func:`run_suite`.
SUITE_RUNNERS: dict[str, str] = {
    "segmentation": "harness.segmentation.suite:run_segmentation_suite",
    "explain": "harness.explain.run:run_explain_suite",
}


def run_suite(suite: SuiteConfig, opts: RunOptions) -> RunResult:
    """Run every baseline under every protocol; write summary.json and MLflow runs."""
    if suite.task in SUITE_RUNNERS:
        module_name, _, func = SUITE_RUNNERS[suite.task].partition(":")
        import importlib

        return getattr(importlib.import_module(module_name), func)(suite, opts)
    seed = opts.seed if opts.seed is not None else int(suite.data.get("seed", 0))
    baselines = opts.baselines or suite.baselines
    protocols = opts.protocols or list(suite.protocols)
    for name in baselines:
        cls = get_baseline(name)
        if suite.task not in cls.tasks:
            raise HarnessError(f"baseline {name!r} does not support task {suite.task!r} (it supports {sorted(cls.tasks)})")
    out_dir = Path(opts.out) if opts.out else Path("reports") / suite.name / datetime.now().strftime("%Y%m%d-%H%M%S")
    out_dir.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()

    data = prepare_data(suite, opts)
    _write_problems(data.problems, out_dir / "problems.csv")
    for name, table in data.stage_tables.items():
        path = out_dir / "stages" / f"{name}.csv"
        _write_csv_atomic(table, path)
        data.stage_files.append(path)

    tracker = None
    if opts.tracking_uri != "none":
        from harness.tracking import Tracker, default_tracking_uri

        tracker = Tracker(opts.tracking_uri or default_tracking_uri(), experiment=f"harness/{suite.name}")
    common_tags = {
        "suite": suite.name,
        "git_commit": git_commit(),
        "dataset_fingerprint": data.fingerprint,
        "dataset": data.dataset_name,
        "seed": str(seed),
        "profile": opts.profile,
        **{f"version.{k}": v for k, v in package_versions().items()},
    }
    result = RunResult(out_dir=out_dir, summary={})
    variant_options = dict(task_variants(suite))
    summaries: list[tuple[str, dict[str, Any]]] = []
    all_manifests: dict[str, dict[str, SplitManifest]] = {}
    for variant, view in data.views.items():
        vdata = replace(data, task_data=view, variant=variant)
        vsuite = replace(suite, task_options=variant_options[variant]) if variant else suite
        manifests = prepare_manifests(vsuite, opts, vdata, protocols, seed, out_dir)
        all_manifests[variant] = {p: m for p, (m, _) in manifests.items()}
        estimates: list[tuple[str, str, MetricEstimate]] = []
        for baseline_name in baselines:
            for protocol, (manifest, manifest_path) in manifests.items():
                label = f"{baseline_name} | {protocol}" + (f" | {variant}" if variant else "")
                try:
                    found = run_baseline_protocol(
                        suite=vsuite, opts=opts, data=vdata, baseline_name=baseline_name,
                        protocol=protocol, manifest=manifest, manifest_path=manifest_path,
                        seed=seed, tracker=tracker, common_tags=common_tags, out_dir=out_dir,
                        result=result,
                    )
                except HarnessError as exc:
                    result.failures.append(f"{label}: {exc}")
                    log(f"FAILED {label}: {exc}")
                    continue
                except Exception as exc:  # a model crash must not lose the other results
                    result.failures.append(f"{label}: {type(exc).__name__}: {exc}")
                    log(f"FAILED {label}:\n{traceback.format_exc()}")
                    continue
                estimates += [(baseline_name, protocol, est) for est in found]
        summaries.append((variant, build_summary(
            suite=suite,
            dataset_name=data.dataset_name,
            fingerprint=data.fingerprint,
            task_data=view,
            estimates=estimates,
            manifests={p: m for p, (m, _) in manifests.items()},
            failures=result.failures,
            seconds=time.perf_counter() - started,
            seed=seed,
        )))
    summary = _merge_summaries(summaries)
    if data.stage_tags:
        summary["stages"] = {"tags": data.stage_tags,
                             "files": [str(p.relative_to(out_dir)) for p in data.stage_files]}
    summary["seconds"] = round(time.perf_counter() - started, 1)
    write_json(summary, out_dir / "summary.json")
    result.summary = summary
    for variant, part in summaries:
        if variant:
            print(f"\n== target: {variant} ==")
        print(format_table(part))
    print(f"\nsummary: {out_dir / 'summary.json'}")
    if tracker is not None:
        print(f"MLflow runs: experiment 'harness/{suite.name}' in {tracker.tracking_uri} "
              "(open with: python -m harness ui; group runs by the tag 'comparison')")
    _audit_after_suite(suite, opts, data, all_manifests, tracker, result, seed)
    if suite.explain:
        _explain_after_suite(suite, opts, out_dir, result)
    return result


def _audit_after_suite(suite: SuiteConfig, opts: RunOptions, data: PreparedData,
                       manifests: dict[str, dict[str, SplitManifest]], tracker: Any,
                       result: RunResult, seed: int) -> None:
    """Every suite run gets the leakage and overfitting reports (and, for progression,
    audit.md); they are logged to each parent MLflow run. A report failure is recorded
    as a failure but never loses the suite's results."""
    from harness.audit import write_suite_reports

    try:
        paths = write_suite_reports(suite=suite, opts=opts, data=data, manifests=manifests,
                                    result=result, seed=seed, log=log)
    except Exception as exc:  # noqa: BLE001 - the suite's results are already written
        result.failures.append(f"audit reports: {type(exc).__name__}: {exc}")
        log(f"FAILED audit reports:\n{traceback.format_exc()}")
        return
    result.reports = paths
    if tracker is not None:
        for run in result.runs:
            if run["parent_run_id"]:
                for path in paths:
                    tracker.client.log_artifact(run["parent_run_id"], str(path), "reports")
    for path in paths:
        if path.suffix == ".html" or path.name == "audit.md":
            print(f"report: {path}")


def _explain_after_suite(suite: SuiteConfig, opts: RunOptions, out_dir: Path, result: RunResult) -> None:
    """A suite file with an [explain] table also gets the explainability report."""
    from harness.explain.run import options_for_suite, run_explain

    try:
        report = run_explain(options_for_suite(suite, opts, out_dir / "explain"))
    except Exception as exc:  # the suite's results are already written; keep them
        result.failures.append(f"explain report: {type(exc).__name__}: {exc}")
        log(f"FAILED explain report: {exc}")
        return
    print(f"explainability report: {report.html}")


def _merge_summaries(parts: list[tuple[str, dict[str, Any]]]) -> dict[str, Any]:
    """One summary.json for all task variants: results carry their ``target``."""
    if len(parts) == 1 and parts[0][0] == "":
        return parts[0][1]
    merged = dict(parts[0][1])
    merged["results"] = [{"target": v, **r} for v, part in parts for r in part["results"]]
    merged["manifests"] = {f"{v}-{p}": sha for v, part in parts for p, sha in part["manifests"].items()}
    merged["targets"] = {v: part["dataset"] for v, part in parts}
    merged["dataset"] = dict(parts[0][1]["dataset"])
    return merged


def _write_problems(problems: list[Problem], path: Path) -> None:
    if problems:
        log(f"{len(problems)} problem(s) in the input (also in {path}):")
        for p in problems[:50]:
            log(f"  {p}")
        if len(problems) > 50:
            log(f"  ... and {len(problems) - 50} more")
    _write_csv_atomic(pd.DataFrame([{"path": p.path, "reason": p.reason} for p in problems],
                                   columns=["path", "reason"]), path)
