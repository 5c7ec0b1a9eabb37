"""Stage 3 of a run: every (baseline, protocol, fold) as an independent job.

The driver plans one :class:`PlannedRun` per baseline x protocol (x task variant):
its run key, fold cache and MLflow parent. Folds already in the fold cache are taken
from it; the others become :class:`FoldJob` s that any executor can run, because a job
is plain data and :func:`run_fold_job` is a pure function of (job, data). Back in the
driver, each finished fold is written atomically to the fold cache *before* its nested
MLflow run is logged, so a killed run resumes without refitting it, and MLflow has one
writer however many workers there are.

After the fit, each job also scores the model on its own training (and validation) rows
next to the trivial control (:mod:`harness.guard`); that fold guard is written beside the
fold's predictions (``fold<i>-guard.json``, before them, so a fold in the cache has its
guard unless it was cached by an older version: then the guard is unknown).
"""

from __future__ import annotations

import json
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from harness.hashing import json_digest
from harness.predictions import pooled_predictions_path, read_prediction_file
from baselines import Baseline, FitContext, create_baseline
from baselines.registry import labels_from_proba
from harness import __version__
from harness.atomic import atomic_write
from harness.console import log
from harness.errors import HarnessError
from harness.guard import FoldGuard, RunGuard, fold_guard, is_trivial_control, run_guard
from harness.metrics import PROBA_PREFIX, MetricEstimate, compute_metric, estimate, proba_column
from harness.parallel import limit_threads
from harness.splits import Fold, SplitManifest
from harness.tasks import TaskData


def write_csv_atomic(frame: pd.DataFrame, path: Path) -> None:
    atomic_write(path, lambda fh: frame.to_csv(fh, index=False), text=True)


def save_npz_atomic(path: Path, arrays: dict[str, np.ndarray]) -> None:
    atomic_write(path, lambda fh: np.savez_compressed(fh, **arrays))  # type: ignore[arg-type]


def load_npz(path: Path) -> dict[str, np.ndarray] | None:
    """A fold's arrays, or None when missing or damaged."""
    try:
        with np.load(path, allow_pickle=False) as z:
            return {k: z[k] for k in z.files}
    except (OSError, ValueError, EOFError):
        return None


# -- what the driver plans ------------------------------------------------------------
@dataclass(frozen=True)
class ArmSpec:
    """One row of a suite's comparison: a registered baseline (``model``) with its
    parameters, under the name the summary shows. Row tasks: one arm per baseline, named
    after it; segmentation: ``unet3d/<arm>``, each a parameter variant of ``unet3d``."""

    name: str
    model: str
    params: dict[str, Any] = field(default_factory=dict)
    #: Extra MLflow parent tags (segmentation: arm, ablation).
    tags: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class JobSettings:
    """The run-wide part of every fold job (the driver's options, as plain data)."""

    seed: int
    device: str
    profile: str
    work_dir: str
    weights: dict[str, str]
    threads: int
    trust_model_files: bool = False


# -- the job: runs anywhere ------------------------------------------------------------
@dataclass(frozen=True)
class FoldJob:
    """Everything a worker needs to fit and predict one fold, as plain data."""

    run_index: int
    data_key: str  # which task view (variant) the fold's sample ids refer to
    baseline: str
    params: dict[str, Any]
    fold: Fold
    seed: int
    device: str
    profile: str
    work_dir: str
    weights: dict[str, str]
    threads: int
    trust_model_files: bool = False
    #: Metric of the did-not-learn guard ("" skips it).
    guard_metric: str = ""


@dataclass
class FoldOutcome:
    predictions: pd.DataFrame
    seconds: float
    history: list[dict[str, float]]
    tags: dict[str, str]
    guard: FoldGuard | None = None
    #: Arrays a task keeps beside the fold's predictions (segmentation: label maps),
    #: written to ``fold<i>-arrays.npz`` before the predictions that mark the fold done.
    arrays: dict[str, np.ndarray] = field(default_factory=dict)


def job_runs(job: Any) -> tuple[int, ...]:
    """The planned runs a job serves: one for a row task, several when a task lets runs
    share one fit (segmentation arms that differ only in post-processing)."""
    runs = getattr(job, "run_indices", None)
    return tuple(runs) if runs else (int(job.run_index),)


def job_outcomes(job: Any, outcome: Any) -> dict[int, FoldOutcome]:
    """A job's outcome per run: a shared job returns ``{run_index: FoldOutcome}``."""
    return dict(outcome) if isinstance(outcome, dict) else {job_runs(job)[0]: outcome}


class RowScorer:
    """The prediction schema of row tasks: one ``y_true``/``y_pred`` row per test sample,
    metrics from ``harness.metrics`` (the fold's rows are one patient-level cluster each)."""

    def __init__(self, task: TaskData, metrics: list[str]) -> None:
        self.task, self.metrics = task, list(metrics)

    def read(self, path: Path) -> pd.DataFrame:
        return read_prediction_file(path, self.task.target_kind)

    def fold_metrics(self, frame: pd.DataFrame) -> dict[str, float]:
        proba = frame[[c for c in frame.columns if str(c).startswith(PROBA_PREFIX)]]
        return {m: compute_metric(m, frame["y_true"].to_numpy(), frame["y_pred"].to_numpy(), self.task.classes,
                                  frame["patient_id"].to_numpy(), proba=proba if proba.shape[1] else None)
                for m in self.metrics}

    def estimates(self, frames: list[pd.DataFrame], *, n_boot: int, seed: int) -> list[MetricEstimate]:
        return [estimate(metric, frames, classes=self.task.classes, n_boot=n_boot, seed=seed)
                for metric in self.metrics]


def fit_predict_fold(
    baseline: Baseline, data: TaskData, fold: Any, ctx: FitContext
) -> tuple[pd.DataFrame, float]:
    """Fit on the fold's train (and val), predict its test samples; returns predictions."""
    train = data.subset(fold.train)
    val = data.subset(fold.val) if fold.val else None
    test = data.subset(fold.test)
    started = time.perf_counter()
    baseline.fit(train, val, ctx)
    proba = baseline.predict_proba(test) if data.target_kind == "classification" else None
    probabilities = None if proba is None else proba_frame(baseline, proba, len(test))
    y_pred = np.asarray(baseline.predict(test) if proba is None
                        else labels_from_proba(list(getattr(baseline, "classes_")), proba))
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
    if probabilities is not None:
        frame = pd.concat([frame, probabilities], axis=1)
    return frame, seconds


def proba_frame(baseline: Baseline, proba: np.ndarray, n_rows: int) -> pd.DataFrame:
    """A classifier's probabilities as ``proba:<class>`` columns, checked: one row per
    test sample, one column per class in ``classes_``, finite values in [0, 1]."""
    classes = list(getattr(baseline, "classes_", []))
    values = np.asarray(proba, dtype=np.float64)
    where = f"baseline {baseline.name!r} predict_proba"
    if values.shape != (n_rows, len(classes)):
        raise HarnessError(f"{where} returned shape {values.shape}; expected ({n_rows}, {len(classes)}): "
                           "one row per sample, one column per class in classes_")
    if not np.isfinite(values).all() or (values < 0).any() or (values > 1 + 1e-6).any():
        raise HarnessError(f"{where} returned values outside [0, 1] or not finite")
    return pd.DataFrame(values, columns=[proba_column(c) for c in classes])


def fit_context(job: "FoldJob | JobSettings") -> FitContext:
    """What a baseline may use besides its data, from a job's (or the run's) settings."""
    return FitContext(
        seed=job.seed, device=job.device, profile=job.profile, work_dir=Path(job.work_dir),
        log=log, weights={k: Path(v) for k, v in job.weights.items()},
        trust_model_files=job.trust_model_files,
    )


def run_fold_job(job: FoldJob, data: TaskData) -> FoldOutcome:
    """Fit and predict one fold with a fresh model, under the job's thread limit."""
    ctx = fit_context(job)
    model = create_baseline(job.baseline, profile=job.profile, **job.params)
    guard = None
    with limit_threads(job.threads):
        frame, seconds = fit_predict_fold(model, data, job.fold, ctx)
        if job.guard_metric:
            guard = fold_guard(model, data.subset(job.fold.train),
                               data.subset(job.fold.val) if job.fold.val else None,
                               metric=job.guard_metric, seed=job.seed + job.fold.index)
    return FoldOutcome(frame, seconds, list(ctx.history), {k: str(v) for k, v in ctx.tags.items()}, guard)


# -- the plan: lives in the driver ------------------------------------------------------
@dataclass
class PlannedRun:
    """One baseline under one protocol (and task variant): folds, fold cache, MLflow parent."""

    index: int
    variant: str
    baseline: str
    protocol: str
    params: dict[str, Any]
    manifest: SplitManifest
    manifest_path: Path
    task: TaskData
    metrics: list[str]
    fold_dir: Path
    parent: Any = None
    logged: set[int] = field(default_factory=set)
    frames: dict[int, pd.DataFrame] = field(default_factory=dict)
    failure: str | None = None
    estimates: list[MetricEstimate] | None = None
    #: The did-not-learn guard's metric, each fold's guard (None: unknown), the verdict.
    guard_metric: str = ""
    guards: dict[int, FoldGuard | None] = field(default_factory=dict)
    guard: RunGuard | None = None
    #: The task's prediction schema (read, fold metrics, estimates); None: :class:`RowScorer`.
    task_scorer: Any = None
    #: The registered baseline that builds this run's model ("": ``baseline``).
    model: str = ""

    @property
    def scorer(self) -> Any:
        return self.task_scorer if self.task_scorer is not None else RowScorer(self.task, self.metrics)

    @property
    def label(self) -> str:
        return f"{self.baseline} | {self.protocol}" + (f" | {self.variant}" if self.variant else "")

    @property
    def done(self) -> bool:
        return self.failure is not None or self.estimates is not None

    def fold_path(self, fold_index: int) -> Path:
        return self.fold_dir / f"fold{fold_index}.csv"

    def guard_path(self, fold_index: int) -> Path:
        return self.fold_dir / f"fold{fold_index}-guard.json"

    def arrays_path(self, fold_index: int) -> Path:
        return self.fold_dir / f"fold{fold_index}-arrays.npz"


def run_key(*, suite: Any, baseline: str, resolved_params: dict[str, Any], manifest: SplitManifest,
            seed: int, fingerprint: str, weights: dict[str, Path], variant: str, aux: str | None,
            threads: int, code: str = "") -> str:
    """What decides a fold's predictions; the fold cache and MLflow resume are keyed by it.

    ``code``: the digest of the baseline's source (``baseline_code_digest``), so changed
    baseline code refits instead of reusing folds cached by the old code.
    """
    key_obj: dict[str, Any] = {
        "suite": suite.name, "task": suite.task, "task_options": suite.task_options,
        "baseline": baseline, "params": resolved_params, "manifest": manifest.sha256,
        "seed": seed, "dataset": fingerprint, "version": __version__,
        "weights": {k: str(v) for k, v in sorted(weights.items())},
    }
    if code:
        key_obj["code"] = code
    if variant:
        key_obj["variant"] = variant
    if aux is not None:
        key_obj["aux"] = aux
    if threads != 1:  # the thread count changes float sums; 1 keeps the keys of older runs
        key_obj["threads_per_job"] = threads
    return json_digest(key_obj, 32)


def fold_counts(data: TaskData, fold: Any) -> dict[str, int]:
    pid = data.samples.set_index("sample_id")["patient_id"]
    counts = {}
    for role in ("train", "val", "test"):
        ids = getattr(fold, role)
        counts[f"n_{role}_samples"] = len(ids)
        counts[f"n_{role}_patients"] = int(pid.loc[list(ids)].nunique()) if ids else 0
    return counts


def guard_metrics(guard: FoldGuard | RunGuard | None, control: bool = False) -> dict[str, float]:
    """``train_<metric>``, ``val_<metric>`` and their trivial-control twins, for MLflow.

    A trivial control (``control``) is never flagged, so its ``did_not_learn`` is 0.
    """
    if guard is None:
        return {}
    m = guard.metric
    values = {f"train_{m}": guard.train, f"train_trivial_{m}": guard.train_trivial,
              f"val_{m}": guard.val, f"val_trivial_{m}": guard.val_trivial}
    if guard.did_not_learn is not None:
        values["did_not_learn"] = 0.0 if control else float(guard.did_not_learn)
    return {k: float(v) for k, v in values.items() if v is not None}


def record_fold(plan: PlannedRun, fold: Fold, frame: pd.DataFrame, *, seconds: float | None,
                tags: dict[str, str], guard: FoldGuard | None = None) -> None:
    """Keep a finished fold's predictions and log its nested MLflow run (once)."""
    plan.frames[fold.index] = frame
    plan.guards[fold.index] = guard
    log(f"  {plan.label} | fold {fold.index}: {len(frame)} test samples"
        + (" (from cache)" if seconds is None else f" in {seconds:.1f}s"))
    if plan.parent is None or fold.index in plan.logged:
        return
    from harness.tracking import FoldRecord

    metrics = plan.scorer.fold_metrics(frame)
    control = is_trivial_control(plan.baseline)
    metrics.update(guard_metrics(guard, control))
    if seconds is not None:
        metrics["fit_predict_seconds"] = seconds
    fold_tags = {"baseline": plan.baseline, "protocol": plan.protocol,
                 **({"target": plan.variant} if plan.variant else {}), **tags}
    if plan.guard_metric:
        fold_tags["harness.did_not_learn"] = ("false" if control else "unknown"
                                              if guard is None or guard.did_not_learn is None
                                              else str(guard.did_not_learn).lower())
    plan.parent.log_fold(
        FoldRecord(index=fold.index, params={"fold": fold.index, **fold_counts(plan.task, fold)},
                   metrics=metrics, tags=fold_tags, artifacts=[plan.fold_path(fold.index)]),
        run_name=f"{plan.label} | fold {fold.index}",
    )
    plan.logged.add(fold.index)


def cache_warming_order(pending: list[tuple[PlannedRun, Fold]]) -> list[tuple[PlannedRun, Fold]]:
    """Each model's first pending fold, then the rest, each part in plan order.

    Why: a model's first fold fills the caches its other folds read (frozen-backbone
    embeddings, per-patient features). Started in plan order, a model's folds under two
    protocols begin side by side and the second waits on the first one's extraction with a
    core idle; started first, that extraction overlaps other models' training instead.
    Results do not depend on the order (each fold is seeded on its own).
    """
    first: list[tuple[PlannedRun, Fold]] = []
    rest: list[tuple[PlannedRun, Fold]] = []
    seen: set[tuple[str, str]] = set()
    for plan, fold in pending:
        key = (plan.variant, plan.model or plan.baseline)
        (rest if key in seen else first).append((plan, fold))
        seen.add(key)
    return first + rest


def row_fold_jobs(pending: list[tuple[PlannedRun, Fold]], settings: JobSettings) -> list[FoldJob]:
    """Row tasks: one job per (run, fold) the cache lacks, in :func:`cache_warming_order`."""
    return [FoldJob(
        run_index=plan.index, data_key=plan.variant, baseline=plan.model or plan.baseline, params=plan.params,
        fold=fold, seed=settings.seed, device=settings.device, profile=settings.profile,
        work_dir=settings.work_dir, weights=settings.weights, threads=settings.threads,
        trust_model_files=settings.trust_model_files, guard_metric=plan.guard_metric,
    ) for plan, fold in cache_warming_order(pending)]


def prefetch_shared_work(pending: list[tuple[PlannedRun, Fold]], settings: JobSettings) -> None:
    """Each pending (baseline, parameters, task view) once through its baseline's
    :meth:`~baselines.Baseline.prefetch`, in the driver, before the folds fan out.

    Why: on the 2-core default, the frozen EfficientNet's first fold extracted the
    cohort's embeddings while another worker trained the ResNet, three threads on two
    cores; done first with both cores, the same work takes a fraction of the wall time.
    A failure is logged and left to the folds, which redo the work and report it.
    """
    from baselines import Baseline

    seen: set[tuple[str, str, str]] = set()
    for plan, _ in pending:
        name = plan.model or plan.baseline
        key = (name, json_digest(plan.params), plan.variant)
        if key in seen:
            continue
        seen.add(key)
        model = create_baseline(name, profile=settings.profile, **plan.params)
        if type(model).prefetch is Baseline.prefetch:
            continue
        start = time.perf_counter()
        try:
            model.prefetch(plan.task, fit_context(settings))
            log(f"  {name}: shared work of its folds done first ({time.perf_counter() - start:.1f}s)")
        except Exception as exc:  # noqa: BLE001 - the folds redo it and report their own error
            log(f"  {plan.label}: shared work before the folds failed ({type(exc).__name__}: {exc}); "
                "each fold does it instead")


def take_cached_folds(plan: PlannedRun) -> list[Fold]:
    """Record the folds the fold cache already has; return those still to fit."""
    to_fit = []
    for fold in plan.manifest.folds:
        path = plan.fold_path(fold.index)
        if path.exists():
            record_fold(plan, fold, plan.scorer.read(path), seconds=None,
                        tags={"resumed_from_cache": "true"}, guard=read_guard(plan.guard_path(fold.index)))
        else:
            to_fit.append(fold)
    return to_fit


def read_guard(path: Path) -> FoldGuard | None:
    """A cached fold's guard; None (unknown) when the fold predates the guard."""
    try:
        return FoldGuard.from_dict(json.loads(path.read_text()))
    except (OSError, ValueError, TypeError):
        return None


def store_outcome(plan: PlannedRun, fold: Fold, outcome: FoldOutcome) -> None:
    """Fold cache first (atomic; the guard before the predictions that mark the fold
    done), then MLflow: a crash in between loses nothing."""
    if outcome.guard is not None:
        text = json.dumps(outcome.guard.to_dict(), indent=1) + "\n"
        atomic_write(plan.guard_path(fold.index), lambda fh: fh.write(text), text=True)
    if outcome.arrays:
        save_npz_atomic(plan.arrays_path(fold.index), outcome.arrays)
    write_csv_atomic(outcome.predictions, plan.fold_path(fold.index))
    if outcome.history:
        write_csv_atomic(pd.DataFrame(outcome.history), plan.fold_dir / f"fold{fold.index}-history.csv")
    if plan.failure is None:
        record_fold(plan, fold, outcome.predictions, seconds=outcome.seconds,
                    tags={k: v[:480] for k, v in outcome.tags.items()}, guard=outcome.guard)


def finish_run(plan: PlannedRun, *, out_dir: Path, n_boot: int, seed: int,
               stage_files: list[Path]) -> None:
    """All folds in: pooled predictions, metric estimates, the parent run's summary."""
    frames = [plan.frames[f.index] for f in plan.manifest.folds]
    pooled = pd.concat(frames, ignore_index=True)
    pred_out = pooled_predictions_path(out_dir, plan.baseline, plan.protocol, plan.variant)
    write_csv_atomic(pooled, pred_out)
    estimates = plan.scorer.estimates(frames, n_boot=n_boot, seed=seed)
    if plan.guard_metric:
        plan.guard = run_guard(plan.baseline, plan.guard_metric,
                               [plan.guards.get(f.index) for f in plan.manifest.folds])
        if plan.guard.did_not_learn:
            log(f"  {plan.label}: did not learn (training {plan.guard.metric} {plan.guard.train:.3f} "
                f"vs trivial {plan.guard.train_trivial:.3f} in {plan.guard.folds_did_not_learn} of "
                f"{plan.guard.folds_known} folds)")
    # A parent finished by an earlier run that this run added nothing to keeps its record.
    if plan.parent is not None and plan.parent.needs_summary:
        if plan.guard is not None:
            plan.parent.log_metrics(guard_metrics(plan.guard))
            plan.parent.set_tags({"harness.did_not_learn": plan.guard.status(),
                                  "harness.guard_metric": plan.guard.metric,
                                  "harness.control": str(plan.guard.control).lower()})
        plan.parent.log_artifact(plan.manifest_path, "manifests")
        plan.parent.log_artifact(pred_out, "predictions")
        for path in stage_files:
            plan.parent.log_artifact(path, "stages")
        for est in estimates:
            plan.parent.log_metrics({
                est.metric: est.mean, f"{est.metric}_ci95_lo": est.ci95[0],
                f"{est.metric}_ci95_hi": est.ci95[1], f"{est.metric}_n_patients": est.n_patients,
            })
        plan.parent.log_metrics(fold_metric_aggregates(plan, frames))
        plan.parent.finish()
    plan.estimates = estimates


def fold_metric_aggregates(plan: PlannedRun, frames: list[pd.DataFrame]) -> dict[str, float]:
    """``<metric>_fold_mean/_sd/_ci95_lo/_hi`` over the folds, for the parent run."""
    from harness.tracking import fold_aggregates

    out: dict[str, float] = {}
    per_fold = [plan.scorer.fold_metrics(f) for f in frames]
    for metric in per_fold[0] if per_fold else []:
        out.update(fold_aggregates(metric, [m[metric] for m in per_fold]))
    return out


def fail_run(plan: PlannedRun, exc: BaseException) -> None:
    """Record why a run failed (the other runs go on) and close its MLflow parent.

    An interruption (:class:`KeyboardInterrupt`, which SIGTERM also raises) marks the
    parent KILLED: the next run resumes it, taking its finished folds from the cache.
    """
    if plan.failure is not None:
        return
    if isinstance(exc, KeyboardInterrupt):  # SIGINT / SIGTERM: resumable, not a failure
        plan.failure = f"interrupted ({exc or type(exc).__name__})"
        if plan.parent is not None:
            plan.parent.finish("KILLED")
        return
    if isinstance(exc, HarnessError):
        plan.failure = str(exc)
        log(f"FAILED {plan.label}: {exc}")
    else:
        plan.failure = f"{type(exc).__name__}: {exc}"
        log(f"FAILED {plan.label}:\n{''.join(traceback.format_exception(exc))}")
    if plan.parent is not None and not plan.parent.complete:  # a finished record stays finished
        plan.parent.finish("FAILED")
