"""The runner: for each baseline x protocol x fold, fit(train, val) then predict(test).

Stages, each a plain function (as nnU-Net keeps its pipeline stages apart):
prepare data -> prepare split manifests -> run folds (cached, resumable) -> estimate
metrics -> summary.json, MLflow, printed table.

Every finished fold's predictions are written atomically to the fold cache before its
MLflow run is logged, so a run killed at any point resumes without refitting a fold
that had finished.
"""

from __future__ import annotations

import inspect
import time
import traceback
from dataclasses import dataclass, field, replace
from datetime import datetime
from pathlib import Path
from typing import Any, Callable

import pandas as pd

from harness.hashing import json_digest
from harness.paths import default_cache_dir
from baselines import create_baseline, get_baseline
from baselines.registry import baseline_code_digest
from harness.cohorts import ensure_synthetic_cohort
from harness.console import log
from harness.data.cohort import Problem
from harness.data.detect import load_cohort
from harness.data.cache import VolumeStore, dataset_fingerprint
from harness.data.check import unused_series_problems
from harness.locks import file_locks, run_locks
from harness.errors import HarnessError, NoUsableDataError
from harness.folds import (
    ArmSpec,
    JobSettings,
    PlannedRun,
    fail_run,
    finish_run,
    job_outcomes,
    job_runs,
    prefetch_shared_work,
    row_fold_jobs,
    run_fold_job,
    run_key,
    store_outcome,
    take_cached_folds,
    write_csv_atomic as _write_csv_atomic,
)
from harness.guard import RunGuard, guard_metric
from harness.metrics import MetricEstimate
from harness.parallel import CachedVolumes, make_executor, materialize_volumes, run_jobs
from harness.provenance import environment
from harness.run_result import PreparedData, RunResult
from harness.splits import (
    Fold,
    SplitManifest,
    get_protocol,
    is_leaky,
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
    cache_dir: Path = field(default_factory=default_cache_dir)
    progress: bool = True
    #: Auxiliary cohort for pipelines with a separate first stage (progression's grader);
    #: default: the suite's synthetic ``[aux_data]`` cohort.
    aux_data: Path | None = None
    #: Local pretrained-weights files: baseline name (or "*") -> file. Never downloaded.
    weights: dict[str, Path] = field(default_factory=dict)
    #: Fold jobs at once (and series decoded at once): 1 runs them in this process.
    jobs: int = 1
    #: torch/BLAS threads of each fold job. Fixed, not derived from ``jobs``, so the
    #: metrics do not depend on how many jobs ran at once.
    threads_per_job: int = 1
    #: "process" (a local pool of ``jobs`` processes) or "ray".
    executor: str = "process"
    ray_address: str | None = None
    #: ``--trust-model-file``: ``--weights`` files may be full pickles (which can run code).
    trust_model_files: bool = False


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
    store = VolumeStore(opts.cache_dir / "arrays", progress=opts.progress,
                        workers=opts.jobs if opts.executor == "process" else 1)
    volumes, decode_problems = store.load_many(series)
    problems += decode_problems
    problems += unused_series_problems(cohort, series, store)  # named as by `data check`
    if not volumes:
        raise NoUsableDataError(f"no decodable image series in {data_dir}")
    builder = TASK_BUILDERS.get(suite.task)
    if builder is None:
        raise HarnessError(f"suite {suite.name!r}: unknown task {suite.task!r}")
    # Memory maps of the cache's files: workers receive paths, not pixels.
    arrays = CachedVolumes.from_arrays({sid: v.array for sid, v in volumes.items()})
    keys = {sid: v.content_key for sid, v in volumes.items()}
    spacings = {sid: (float(v.spacing[0]), float(v.spacing[1]), float(v.spacing[2])) for sid, v in volumes.items()}
    views: dict[str, TaskData] = {}
    # builders that work in mm (the lesion finder and crops) take the spacings
    takes_spacings = "spacings" in inspect.signature(builder).parameters
    for variant, options in task_variants(suite):
        if takes_spacings:
            options = {**options, "spacings": spacings}
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
    from harness.tasks.progression_stages import DEFAULT_GRADER, grading_stages

    wanted = opts.baselines or suite.baselines
    rule = suite.task_options.get("eligibility", "grade_rise")
    if rule == "all" and "cnn_lstm" not in wanted:
        return
    aux_dir = aux_data_dir(suite, opts)
    out = grading_stages(
        data.task_data, aux_dir=aux_dir, cache_dir=opts.cache_dir, options=suite.task_options,
        seed=opts.seed if opts.seed is not None else int(suite.data.get("seed", 0)),
        profile=opts.profile, device=opts.device, weights=dict(opts.weights),
        grader_params=suite.baseline_params.get(str(suite.task_options.get("grader", DEFAULT_GRADER)), {}),
        log=log, progress=opts.progress,
    )
    data.task_data = out.task_data
    data.views = {"": out.task_data}
    data.stage_tables = out.tables
    data.stage_tags = out.tags


# -- stage 2: split manifests ----------------------------------------------------------
def prepare_manifests(
    suite: SuiteConfig, opts: RunOptions, data: PreparedData, protocols: list[str], seed: int, out_dir: Path,
    split_task: str | None = None,
) -> dict[str, tuple[SplitManifest, Path]]:
    """One manifest per protocol: supplied, reused from the cache, or created.

    ``split_task`` is what the split stratifies as (default: the view's target kind;
    segmentation stratifies its patients by grade, "classification")."""
    samples = data.task_data.samples
    split_task = split_task or data.task_data.target_kind
    prefix = f"{data.variant}-" if data.variant else ""
    rows_key = json_digest(sorted(samples["sample_id"].astype(str)), 8)
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
                path, name, samples, seed=seed, task=split_task,
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


# -- stage 3: folds (see harness.folds) --------------------------------------------------
def plan_run(
    *, index: int, suite: SuiteConfig, opts: RunOptions, data: PreparedData, arm: ArmSpec,
    protocol: str, manifest: SplitManifest, manifest_path: Path, seed: int, tracker: Any,
    common_tags: dict[str, str], result: RunResult, task: Any = None,
) -> PlannedRun:
    """One arm (a baseline, or a parameter variant of one) under one protocol: its run
    key, fold cache and (resumed) MLflow parent."""
    task = task or ROW_TASK
    baseline_name, params = arm.name, dict(arm.params)
    resolved = create_baseline(arm.model, profile=opts.profile, **params).get_params()
    variant = data.variant
    key = run_key(
        suite=suite, baseline=baseline_name, resolved_params=resolved, manifest=manifest, seed=seed,
        fingerprint=data.fingerprint, weights=opts.weights, variant=variant,
        aux=data.stage_tags.get("aux_dataset_fingerprint", "") if (suite.aux_data or opts.aux_data) else None,
        threads=opts.threads_per_job, code=baseline_code_digest(arm.model),
    )
    plan = PlannedRun(
        index=index, variant=variant, baseline=baseline_name, protocol=protocol, params=params,
        manifest=manifest, manifest_path=manifest_path, task=data.task_data, metrics=list(suite.metrics),
        fold_dir=opts.cache_dir / "folds" / key,
        guard_metric=task.guard_metric(suite, data.task_data), model=arm.model,
        task_scorer=task.scorer(suite, data.task_data),
    )
    tags = {
        **common_tags,
        **data.stage_tags,
        **arm.tags,
        "baseline": baseline_name,
        "protocol": protocol,
        # One value per comparable set of runs: group by it in the MLflow UI.
        "comparison": f"{variant + ' | ' if variant else ''}{protocol}",
        "leaky_protocol": str(is_leaky(manifest)).lower(),
        "manifest_sha256": manifest.sha256,
    }
    if variant:
        tags["target"] = variant
    run_params = {
        "suite": suite.name, "task": suite.task, "baseline": baseline_name, "protocol": protocol,
        **({"model": arm.model} if arm.model != baseline_name else {}),
        "seed": seed, "device": opts.device, "data": str(data.data_dir), "target": variant or suite.task,
        "threads_per_job": opts.threads_per_job,
        **{f"baseline.{k}": v for k, v in resolved.items()},
        **{f"protocol.{k}": v for k, v in manifest.params.items()},
        **{f"task.{k}": v for k, v in suite.task_options.items()},
        **{f"data.{k}": v for k, v in suite.data.items()},
    }
    if tracker is not None:
        from harness.tracking import DatasetRecord

        dataset = DatasetRecord(data.dataset_name, data.fingerprint, str(Path(data.data_dir).resolve()))
        plan.parent = tracker.open_parent(key, plan.label, run_params, tags, dataset=dataset)
        plan.logged = plan.parent.finished_folds()
    result.runs.append({"variant": variant, "baseline": baseline_name, "protocol": protocol,
                        "fold_dir": plan.fold_dir,
                        "parent_run_id": plan.parent.run_id if plan.parent else None,
                        "parent": plan.parent})
    return plan


def execute_plans(plans: list[PlannedRun], data_by_variant: dict[str, PreparedData], opts: RunOptions,
                  seed: int, out_dir: Path, n_boot: int, result: RunResult, task: Any = None) -> None:
    """Fit every fold the cache lacks on the chosen executor, then finish each run.

    Bookkeeping happens here, in the driver, as each fold comes back; workers only fit.
    The task plugin turns the missing (run, fold) pairs into jobs (one per pair for row
    tasks; segmentation lets arms that share a fit share a job) and runs them.
    """
    task = task or ROW_TASK

    def finish_if_complete(plan: PlannedRun) -> None:
        if not plan.done and len(plan.frames) == len(plan.manifest.folds):
            try:
                finish_run(plan, out_dir=out_dir, n_boot=n_boot, seed=seed,
                           stage_files=data_by_variant[plan.variant].stage_files)
            except Exception as exc:  # noqa: BLE001 - one run's failure must not lose the others
                fail_run(plan, exc)

    pending: list[tuple[PlannedRun, Fold]] = []
    for plan in plans:
        if plan.done:
            continue
        try:
            to_fit = take_cached_folds(plan)
        except Exception as exc:  # noqa: BLE001
            fail_run(plan, exc)
            continue
        result.folds_reused += len(plan.frames)
        pending += [(plan, fold) for fold in to_fit]
        finish_if_complete(plan)
    settings = JobSettings(
        seed=seed, device=opts.device, profile=opts.profile, work_dir=str(Path(opts.cache_dir).resolve()),
        weights={k: str(Path(v).resolve()) for k, v in opts.weights.items()}, threads=opts.threads_per_job,
        trust_model_files=opts.trust_model_files,
    )
    if pending and opts.executor == "process":  # Ray nodes may not see this machine's cache
        task.prefetch(pending, settings)
    jobs = task.make_jobs(pending, settings)
    if not jobs:
        return

    def on_result(job: Any, outcome: Any) -> None:
        if isinstance(outcome, BaseException):
            for index in job_runs(job):
                fail_run(plans[index], outcome)
            return
        result.folds_fitted += 1
        for index, part in job_outcomes(job, outcome).items():
            plan = plans[index]
            try:
                store_outcome(plan, job.fold, part)
            except Exception as exc:  # noqa: BLE001 - e.g. MLflow unreachable: keep the rest going
                fail_run(plan, exc)
            finish_if_complete(plan)

    executor = make_executor(opts.executor, jobs=opts.jobs, threads=opts.threads_per_job,
                             ray_address=opts.ray_address, ship_to_ray=task.ship_to_ray)
    log(f"fitting {len(jobs)} fold(s) on {executor.describe()}, {opts.threads_per_job} thread(s) per fold")
    try:
        with executor:
            run_jobs(executor, task.job_fn, jobs, task.datasets(data_by_variant), on_result=on_result,
                     should_run=lambda job: any(plans[i].failure is None for i in job_runs(job)))
    except BaseException as exc:
        # Interrupted (KILLED) or broken: finished folds are in the fold cache; no parent is
        # left RUNNING. The executor has already ended its workers.
        for plan in plans:
            if not plan.done:
                fail_run(plan, exc if isinstance(exc, (Exception, KeyboardInterrupt))
                         else HarnessError(f"interrupted ({type(exc).__name__})"))
        raise


def ship_task_data(task: TaskData) -> TaskData:
    """For Ray: the pixels themselves, since its workers may not see this machine's cache."""
    used = task.samples["image_id"].astype(str).unique() if len(task.samples) else []
    return replace(task, volumes=materialize_volumes(task.volumes, [k for k in used if k in task.volumes]))


# -- the task plugins ----------------------------------------------------------------
class RowTask:
    """The plugin of row tasks (grading, progression, survival): one target per sample.

    A task plugin is the only thing that differs between suites; the driver
    (:func:`_run_suite`) calls these hooks in the same stages for every task:
    data -> task views -> manifests -> folds on the executor -> metrics -> summary and
    MLflow -> reports. :class:`harness.segmentation.task.SegmentationTask` is the other one.
    """

    job_fn = staticmethod(run_fold_job)

    def check(self, suite: SuiteConfig, baselines: list[str]) -> None:
        for name in baselines:
            cls = get_baseline(name)
            if suite.task not in cls.tasks:
                raise HarnessError(f"baseline {name!r} does not support task {suite.task!r} "
                                   f"(it supports {sorted(cls.tasks)})")

    def prepare_data(self, suite: SuiteConfig, opts: RunOptions) -> PreparedData:
        return prepare_data(suite, opts)

    def variant_suite(self, suite: SuiteConfig, variant: str) -> SuiteConfig:
        """The suite as one variant sees it (its task options enter the run key)."""
        return replace(suite, task_options=dict(task_variants(suite))[variant]) if variant else suite

    def variant_data(self, data: PreparedData, variant: str) -> PreparedData:
        return replace(data, task_data=data.views[variant], variant=variant)

    def own_split(self, variant: str) -> bool:
        """True: the variant's samples are another cohort, a ``--split-manifest`` is not for it."""
        return False

    def split_task(self, view: TaskData) -> str:
        return view.target_kind

    def arms(self, suite: SuiteConfig, variant: str, baselines: list[str]) -> list[ArmSpec]:
        return [ArmSpec(name, name, dict(suite.baseline_params.get(name, {}))) for name in baselines]

    def scorer(self, suite: SuiteConfig, view: TaskData) -> Any:
        return None  # harness.folds.RowScorer

    def guard_metric(self, suite: SuiteConfig, view: TaskData) -> str:
        return guard_metric(suite.metrics, view.target_kind)

    def prefetch(self, pending: list[tuple[PlannedRun, Fold]], settings: JobSettings) -> None:
        """Work the pending folds share (frozen embeddings), once, before they fan out."""
        prefetch_shared_work(pending, settings)

    def make_jobs(self, pending: list[tuple[PlannedRun, Fold]], settings: JobSettings) -> list[Any]:
        return row_fold_jobs(pending, settings)

    def datasets(self, data_by_variant: dict[str, PreparedData]) -> dict[str, Any]:
        return {variant: prepared.task_data for variant, prepared in data_by_variant.items()}

    @staticmethod
    def ship_to_ray(task: TaskData) -> TaskData:
        return ship_task_data(task)

    def merge_summaries(self, parts: list[tuple[str, dict[str, Any]]], plans: list[PlannedRun]) -> dict[str, Any]:
        return _merge_summaries(parts)

    def print_results(self, parts: list[tuple[str, dict[str, Any]]], out_dir: Path) -> None:
        for variant, part in parts:
            if variant:
                print(f"\n== target: {variant} ==")
            print(format_table(part))

    def write_reports(self, *, suite: SuiteConfig, opts: RunOptions, data: PreparedData,
                      manifests: dict[str, dict[str, SplitManifest]], plans: list[PlannedRun],
                      result: RunResult, seed: int) -> list[Path]:
        """The task's own documents after the summary (row tasks: none)."""
        return []

    def audit_reports(self, *, suite: SuiteConfig, opts: RunOptions, data: PreparedData,
                      manifests: dict[str, dict[str, SplitManifest]], result: RunResult,
                      seed: int) -> list[Path]:
        """The leakage and overfitting reports (harness.audit)."""
        from harness.audit import write_suite_reports

        return write_suite_reports(suite=suite, opts=opts, data=data, manifests=manifests,
                                   result=result, seed=seed, log=log)


ROW_TASK = RowTask()

#: Tasks with their own plugin ("module:Class", imported when a suite needs it).
TASK_PLUGINS: dict[str, str] = {
    "segmentation": "harness.segmentation.task:SegmentationTask",
}

#: Suites that are not run by this driver but by a command of their own: task -> command.
#: The explain report attributes a fitted model's predictions; it has no folds to run, so
#: it is a command (``python -m harness explain``) and a post-run hook of other suites.
OWN_COMMAND_SUITES: dict[str, str] = {
    "explain": "python -m harness explain --suite {suite}",
}


def task_plugin(task: str) -> Any:
    """The plugin of a task: its own (``TASK_PLUGINS``) or the row-task one."""
    if task not in TASK_PLUGINS:
        return ROW_TASK
    import importlib

    module_name, _, cls = TASK_PLUGINS[task].partition(":")
    return getattr(importlib.import_module(module_name), cls)()


def run_suite(suite: SuiteConfig, opts: RunOptions) -> RunResult:
    """Run every baseline under every protocol; write summary.json and MLflow runs."""
    if suite.task in OWN_COMMAND_SUITES:
        command = OWN_COMMAND_SUITES[suite.task].format(suite=suite.source or suite.name)
        raise HarnessError(f"suite {suite.name!r} (task {suite.task!r}) is not a fold-running suite: "
                           f"run it with `{command}`; other suites run it after them with [explain]")
    # Two runs of one suite on one cache or store: the second waits, then reuses the folds.
    from harness.tracking import default_tracking_uri

    locks = run_locks(suite.name, opts.cache_dir, opts.tracking_uri or default_tracking_uri())
    with file_locks(locks, what=f"a run of suite {suite.name!r} on this cache or MLflow store"):
        return _run_suite(suite, opts)


def _run_suite(suite: SuiteConfig, opts: RunOptions) -> RunResult:
    task = task_plugin(suite.task)
    seed = opts.seed if opts.seed is not None else int(suite.data.get("seed", 0))
    baselines = opts.baselines or suite.baselines
    task.check(suite, baselines)
    out_dir = Path(opts.out) if opts.out else Path("reports") / suite.name / datetime.now().strftime("%Y%m%d-%H%M%S")
    out_dir.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()

    data = task.prepare_data(suite, opts)
    _write_problems(data.problems, out_dir / "problems.csv")
    for name, table in data.stage_tables.items():
        path = out_dir / "stages" / f"{name}.csv"
        _write_csv_atomic(table, path)
        data.stage_files.append(path)

    tracker = None
    if opts.tracking_uri != "none":
        from harness.tracking import Tracker, default_tracking_uri

        tracker = Tracker(opts.tracking_uri or default_tracking_uri(), experiment=f"harness/{suite.name}")
        tracker.set_compare_view(list(suite.metrics))
    env = environment()  # read once: the run tags and summary.json say the same
    common_tags = {
        "suite": suite.name,
        "git_commit": str(env["git_commit"]),
        "dataset_fingerprint": data.fingerprint,
        "dataset": data.dataset_name,
        "seed": str(seed),
        "profile": opts.profile,
        **{f"version.{k}": v for k, v in env["packages"].items()},
        "machine.cpu": str(env["cpu"]),
    }
    result = RunResult(out_dir=out_dir, summary={})
    result.failures += list(data.extra.get("failures", []))
    all_manifests: dict[str, dict[str, SplitManifest]] = {}
    plans: list[PlannedRun] = []
    data_by_variant: dict[str, PreparedData] = {}
    for variant, view in data.views.items():
        vdata = task.variant_data(data, variant)
        vsuite = task.variant_suite(suite, variant)
        vopts = replace(opts, split_manifest=None) if task.own_split(variant) else opts
        data_by_variant[variant] = vdata
        protocols = opts.protocols or list(vsuite.protocols)
        manifests = prepare_manifests(vsuite, vopts, vdata, protocols, seed, out_dir, task.split_task(view))
        all_manifests[variant] = {p: m for p, (m, _) in manifests.items()}
        for arm in task.arms(vsuite, variant, baselines):
            for protocol, (manifest, manifest_path) in manifests.items():
                try:
                    plan = plan_run(
                        index=len(plans), suite=vsuite, opts=opts, data=vdata, arm=arm,
                        protocol=protocol, manifest=manifest, manifest_path=manifest_path, seed=seed,
                        tracker=tracker, common_tags=common_tags, result=result, task=task,
                    )
                except Exception as exc:  # noqa: BLE001 - e.g. bad baseline params: the rest go on
                    plan = PlannedRun(
                        index=len(plans), variant=variant, baseline=arm.name, protocol=protocol,
                        params={}, manifest=manifest, manifest_path=manifest_path, task=view,
                        metrics=list(suite.metrics), fold_dir=opts.cache_dir / "folds" / "unplanned",
                    )
                    fail_run(plan, exc)
                plans.append(plan)
    execute_plans(plans, data_by_variant, opts, seed, out_dir, suite.n_boot, result, task)

    summaries: list[tuple[str, dict[str, Any]]] = []
    for variant, view in data.views.items():
        estimates: list[tuple[str, str, MetricEstimate]] = []
        learning: list[tuple[str, str, RunGuard]] = []
        for plan in plans:
            if plan.variant != variant:
                continue
            if plan.failure is not None:
                result.failures.append(f"{plan.label}: {plan.failure}")
            elif plan.estimates is not None:
                estimates += [(plan.baseline, plan.protocol, est) for est in plan.estimates]
                if plan.guard is not None:
                    learning.append((plan.baseline, plan.protocol, plan.guard))
        summaries.append((variant, build_summary(
            suite=suite,
            dataset_name=data.dataset_name,
            fingerprint=data.fingerprint,
            task_data=view,
            estimates=estimates,
            learning=learning,
            manifests=all_manifests[variant],
            failures=result.failures,
            seconds=time.perf_counter() - started,
            seed=seed,
        )))
    summary = task.merge_summaries(summaries, plans)
    if data.stage_tags:
        summary["stages"] = {"tags": data.stage_tags,
                             "files": [str(p.relative_to(out_dir)) for p in data.stage_files]}
    summary["seconds"] = round(time.perf_counter() - started, 1)
    summary["environment"] = env
    write_json(summary, out_dir / "summary.json")
    result.summary = summary
    _task_reports(task, suite, opts, data, all_manifests, plans, tracker, result, seed)
    task.print_results(summaries, out_dir)
    print(f"\nsummary: {out_dir / 'summary.json'}")
    if tracker is not None:
        print(f"MLflow runs: experiment 'harness/{suite.name}' in {tracker.tracking_uri} "
              "(open with: python -m harness ui; group runs by the tag 'comparison')")
    _audit_after_suite(suite, opts, data, all_manifests, tracker, result, seed, task)
    if suite.explain:
        _explain_after_suite(suite, opts, out_dir, result)
    return result


def _task_reports(task: Any, suite: SuiteConfig, opts: RunOptions, data: PreparedData,
                  manifests: dict[str, dict[str, SplitManifest]], plans: list[PlannedRun], tracker: Any,
                  result: RunResult, seed: int) -> None:
    """The task's own documents (segmentation: its ablation report), logged to every parent
    this run touched; a failure here is recorded, the results stay."""
    _report_step("task report", lambda: task.write_reports(
        suite=suite, opts=opts, data=data, manifests=manifests, plans=plans, result=result, seed=seed),
        tracker, result, "report")


def _audit_after_suite(suite: SuiteConfig, opts: RunOptions, data: PreparedData,
                       manifests: dict[str, dict[str, SplitManifest]], tracker: Any,
                       result: RunResult, seed: int, task: Any = None) -> None:
    """Every suite run gets the leakage and overfitting reports (and, for progression,
    audit.md); they are logged to each parent MLflow run. A report failure is recorded
    as a failure but never loses the suite's results."""
    paths = _report_step("audit reports", lambda: (task or ROW_TASK).audit_reports(
        suite=suite, opts=opts, data=data, manifests=manifests, result=result, seed=seed),
        tracker, result, "reports")
    for path in paths:
        if path.suffix == ".html" or path.name == "audit.md":
            print(f"report: {path}")


def _report_step(what: str, write: Callable[[], list[Path]], tracker: Any, result: RunResult,
                 folder: str) -> list[Path]:
    """Write reports after the suite's results; a failure is recorded and logged, never
    raised (the results are already written). The files are logged to each MLflow parent
    this run touched (one finished earlier and untouched now already holds them)."""
    try:
        paths = write()
    except Exception as exc:  # noqa: BLE001 - the suite's results are already written
        result.failures.append(f"{what}: {type(exc).__name__}: {exc}")
        log(f"FAILED {what}:\n{traceback.format_exc()}")
        return []
    result.reports += paths
    if tracker is not None:
        for run in result.runs:
            if run["parent_run_id"] and run["parent"].needs_summary:
                for path in paths:
                    tracker.client.log_artifact(run["parent_run_id"], str(path), folder)
    return paths


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
    merged["learning"] = [{"target": v, **r} for v, part in parts for r in part.get("learning", [])]
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
