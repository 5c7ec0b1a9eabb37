"""Segmentation as a task plugin of the runner: Ren et al.'s ablations, patient k-fold.

The runner's driver (``harness.runner._run_suite``) runs this suite through the same
stages as every other (data -> views -> manifests -> folds on the executor -> metrics ->
summary and MLflow -> reports), so it gets ``--jobs``, Ray, resume from the fold cache,
``--split-manifest`` and the leakage and overfitting reports. What is segmentation's own:

- the views: "" (the main cohort, one sample per patient, cropped to the brain box) and
  "transfer" (a second, coarser and noisier simulated site, its own patient k-fold);
- the arms: ``unet3d/<arm>``, each a parameter variant of ``unet3d`` (``preprocess``,
  ``loss``, ``postprocess``; transfer arms ``init = "source"``, ``freeze``, epochs, lr);
- the source model of the transfer arms: trained once on every main-cohort patient before
  any split (a pipeline stage, as progression's grader), cached under ``seg-models/``;
- the prediction schema: a fold's per-patient x region scores (``harness.segmentation.
  lesionwise``), estimated as means over folds with a patient-bootstrap CI;
- fits are shared: arms that differ only in post-processing (or only in name) are one
  fold job whose label maps each arm scores its own way;
- its report: the ablation tables (HTML + Markdown) with example slices.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from harness import __version__
from harness.cohorts import ensure_synthetic_cohort
from harness.console import log
from harness.errors import HarnessError
from harness.folds import ArmSpec, FoldOutcome, JobSettings, PlannedRun, load_npz
from harness.metrics import MetricEstimate
from harness.model_files import load_state_dict
from harness.parallel import limit_threads
from harness.run_result import PreparedData, RunResult
from harness.segmentation import experiment as ex
from harness.segmentation.data import SegCase, brain_crop, crop_cases, degrade_site, load_seg_cohort
from harness.segmentation.labels import Thresholds
from harness.segmentation.losses import PRESET_LABELS, PRESETS
from harness.segmentation.preprocess import LABELS as PRE_LABELS
from harness.segmentation.preprocess import METHODS as PRE_METHODS
from harness.segmentation.report import collect_examples, write_report
from harness.segmentation.stats import estimate_mean
from harness.splits import Fold, SplitManifest
from harness.suite import SuiteConfig
from harness.tasks.base import TaskData

DEFAULT_PRE = "zscore_rescale"
DEFAULT_LOSS = "dice_focal_edge005"
FREEZE_LABELS = {"encoder": "Freeze encoder", "middle": "Freeze middle layers",
                 "decoder": "Freeze decoder", "none": "Freeze nothing"}
TRANSFER = "transfer"
#: What the transfer arms' protocol is called in summary.json and the report.
TRANSFER_PROTOCOL = "patient_kfold(second site)"
#: Task options that decide a fold's scores (the run key); the lists of arms do not.
SCORING_OPTIONS = ("thresholds", "max_dust", "dilation", "min_lesion")


def build_arms(options: dict[str, Any]) -> list[ex.Arm]:
    """The ablation arms named in the suite's ``[task.ablations]`` (defaults: all)."""
    abl = options.get("ablations", {})
    pre_d, loss_d = abl.get("default_preprocess", DEFAULT_PRE), abl.get("default_loss", DEFAULT_LOSS)
    arms = []
    for m in abl.get("preprocessing", list(PRE_METHODS)):
        arms.append(ex.Arm("preprocessing", f"pre-{m}", PRE_LABELS[m], preprocess=m, loss=loss_d))
    for lo in abl.get("losses", list(PRESETS)):
        arms.append(ex.Arm("loss", f"loss-{lo}", PRESET_LABELS[lo], preprocess=pre_d, loss=lo))
    if abl.get("postprocessing", True):
        arms.append(ex.Arm("postprocessing", "post-none", "No post-processing", pre_d, loss_d, postprocess=False))
        arms.append(ex.Arm("postprocessing", "post-dust", "Dust removal + hole filling", pre_d, loss_d))
    return arms


def transfer_options(options: dict[str, Any]) -> dict[str, Any]:
    return dict(options.get("transfer", {}))


def build_transfer_arms(options: dict[str, Any]) -> list[ex.Arm]:
    """Table 5: source-only, target-only, and fine-tuning with each freezing choice."""
    t = transfer_options(options)
    pre, loss = t.get("preprocess", DEFAULT_PRE), t.get("loss", DEFAULT_LOSS)
    arms = [ex.Arm("transfer", "tl-source_only", "Main-cohort model only", pre, loss, transfer="source_only"),
            ex.Arm("transfer", "tl-target_only", "Second-site model only", pre, loss, transfer="target_only")]
    arms += [ex.Arm("transfer", f"tl-freeze_{g}", FREEZE_LABELS[g], pre, loss, transfer="finetune", freeze=g)
             for g in t.get("freeze", ["encoder", "middle", "decoder", "none"])]
    return arms


def suite_metrics(names: list[str]) -> list[str]:
    """The suite's ``[metrics] names``: a family (``lesionwise_dice``) is its region mean
    and its ET, TC and WT values; a full name (``legacy_hd95_WT``, ``lesionwise_dice_ET_present``)
    is itself; none: all."""
    known = ex.metric_names()
    if not names:
        return known
    families = {m: m.rpartition("_")[0] for m in known if m not in ex.PRESENT_METRICS}
    out: list[str] = []
    for name in names:
        family = [name] if name in known else [m for m, f in families.items() if f == name]
        if not family:
            raise HarnessError(f"unknown segmentation metric {name!r}; known: "
                               f"{', '.join(sorted(set(families.values())))} (+ _mean, _ET, _TC, _WT), "
                               f"{', '.join(ex.PRESENT_METRICS)}")
        out += [m for m in family if m not in out]
    return out


def eval_settings(options: dict[str, Any]) -> ex.EvalSettings:
    return ex.EvalSettings(Thresholds.from_mapping(options.get("thresholds")), int(options.get("max_dust", 50)),
                           int(options.get("dilation", 3)), float(options.get("min_lesion", 50)))


def arm_params(arm: ex.Arm, base: dict[str, Any], options: dict[str, Any]) -> dict[str, Any]:
    """The arm as ``unet3d`` parameters: the suite's, then the arm's variant."""
    params = {**base, "loss": arm.loss, "preprocess": arm.preprocess, "postprocess": arm.postprocess}
    t = transfer_options(options)
    if arm.transfer == "source_only":
        params.update(epochs=0, init="source")
    elif arm.transfer == "finetune":
        params.update(epochs=int(t.get("finetune_epochs", 6)), lr=float(t.get("finetune_lr", 1e-3)),
                      init="source", freeze=arm.freeze)
    return params


def samples_of(cases: list[SegCase]) -> pd.DataFrame:
    """One sample per patient; the grade is what the patient k-fold stratifies by."""
    ids = [c.patient_id for c in cases]
    return pd.DataFrame({"sample_id": ids, "patient_id": ids, "study_id": ids, "image_id": ids,
                         "modality": "FLAIR", "slice_index": -1, "target": [c.grade or "NA" for c in cases]})


def case_view(cases: list[SegCase]) -> TaskData:
    """The task view: patients as samples, their FLAIR volume as the pixels the audit sees."""
    return TaskData(task="segmentation", target_kind="segmentation", samples=samples_of(cases), classes=None,
                    volumes={c.patient_id: c.image[3] for c in cases},
                    spacings={c.patient_id: tuple(float(v) for v in c.spacing) for c in cases})  # type: ignore[misc]


# -- the fold job: runs anywhere ----------------------------------------------------------
@dataclass(frozen=True)
class SegFoldJob:
    """One U-Net fit on one fold, scored for every arm that shares it (plain data)."""

    run_indices: tuple[int, ...]
    #: (arm name, ablation table, post-process?) of each run, in ``run_indices`` order.
    scoring: tuple[tuple[str, str, bool], ...]
    data_key: str
    params: dict[str, Any]
    fold: Fold
    seed: int
    device: str
    profile: str
    threads: int
    settings: ex.EvalSettings
    #: Initial weights: the source model's checkpoint for ``init = "source"``, else a
    #: ``--weights unet3d=FILE`` (or ``*=FILE``) file, else "" (random, from the seed).
    init_weights: str = ""
    trust_model_files: bool = False


def run_seg_fold_job(job: SegFoldJob, cases: dict[str, SegCase]) -> dict[int, FoldOutcome]:
    """Pre-process on the fold's training cases, fit (or fine-tune), predict, score."""
    from baselines import create_baseline

    params = {k: v for k, v in job.params.items() if k not in ("postprocess",)}
    baseline: Any = create_baseline("unet3d", **params)
    init = load_state_dict(Path(job.init_weights), trust=job.trust_model_files) if job.init_weights else None
    freeze = str(params.get("freeze", "") or "")
    started = time.perf_counter()
    with limit_threads(job.threads):
        train, (val, test) = ex.preprocess_cases(str(params.get("preprocess", "none")),
                                                 [cases[i] for i in job.fold.train],
                                                 [[cases[i] for i in job.fold.val], [cases[i] for i in job.fold.test]])
        labels, history, _ = ex.fit_predict(baseline.build, train, val, test, baseline.get_params(), seed=job.seed,
                                            device=job.device, log=log, init_state=init,
                                            freeze="" if freeze == "none" else freeze, settings=job.settings)
        seconds = time.perf_counter() - started
        out, scored = {}, {}
        for index, (arm, table, post) in zip(job.run_indices, job.scoring):
            if post not in scored:  # arms with the same post-processing have the same scores
                scored[post] = ex.score_cases(labels, test, job.settings, postprocess=post)
            out[index] = FoldOutcome(scored[post].assign(fold=job.fold.index, arm=arm, table=table), seconds,
                                     list(history), {}, arrays=dict(labels))
    return out


def given_weights(weights: dict[str, Any]) -> str:
    """``--weights unet3d=FILE`` (or ``*=FILE``): where every fit not started from the
    source model starts (the run key holds the path, so the fold cache tells them apart)."""
    path = weights.get("unet3d") or weights.get("*")
    return str(Path(path).resolve()) if path else ""


def fit_group(plan: PlannedRun) -> str:
    """Runs whose fits are the same: everything but post-processing and the arm's name."""
    return ex.digest({"variant": plan.variant, "params": {k: v for k, v in plan.params.items() if k != "postprocess"},
                      "manifest": plan.manifest.sha256})


class SegScorer:
    """The prediction schema: per-patient x region score rows of one fold."""

    def __init__(self, metrics: list[str]) -> None:
        self.metrics = list(metrics)

    def read(self, path: Path) -> pd.DataFrame:
        return pd.read_csv(path, dtype={"subject": str})

    def fold_metrics(self, frame: pd.DataFrame) -> dict[str, float]:
        return {m: float(ex.per_patient(frame, m).mean()) for m in self.metrics}

    def estimates(self, frames: list[pd.DataFrame], *, n_boot: int, seed: int) -> list[MetricEstimate]:
        out = []
        for metric in self.metrics:
            per = [ex.per_patient(f, metric) for f in frames]
            out.append(estimate_mean(metric, [p.to_numpy() for p in per], [list(p.index) for p in per],
                                     n_boot=n_boot, seed=seed))
        return out


# -- the plugin ---------------------------------------------------------------------------
class SegmentationTask:
    """The runner's plugin for ``task = "segmentation"`` (see the module docstring)."""

    job_fn = staticmethod(run_seg_fold_job)

    def __init__(self) -> None:
        self.arms_by_name: dict[str, ex.Arm] = {}
        self.settings = ex.EvalSettings()
        self.source_ckpt = ""
        self.cases: dict[str, dict[str, SegCase]] = {}
        self.options: dict[str, Any] = {}

    # stage 1: data and views
    def check(self, suite: SuiteConfig, baselines: list[str]) -> None:
        if baselines != ["unet3d"]:
            raise HarnessError(f"suite {suite.name!r} runs the unet3d baseline only (got {baselines})")
        suite_metrics(suite.metrics)

    def prepare_data(self, suite: SuiteConfig, opts: Any) -> PreparedData:
        if opts.data is not None:
            data_dir, dataset_name = Path(opts.data), Path(opts.data).name
        else:
            data_dir = ensure_synthetic_cohort(opts.cache_dir, suite.data, progress=opts.progress)
            dataset_name = f"synthetic-{data_dir.name}"
        cohort = load_seg_cohort(data_dir, opts.cache_dir, progress=opts.progress)
        if not cohort.cases:
            raise HarnessError(f"no patient in {data_dir} has all four channels and a label map")
        full_shape = cohort.cases[0].labels.shape
        box = brain_crop(cohort.cases)
        cases = crop_cases(cohort.cases, box)
        log(f"data: {data_dir}: {len(cases)} patients, grid {full_shape} cropped to {cases[0].labels.shape}")
        self.options = dict(suite.task_options)
        self.settings = eval_settings(self.options)
        self.cases = {"": {c.patient_id: c for c in cases}}
        view = case_view(cases)
        data = PreparedData(data_dir, dataset_name, view, cohort.fingerprint, list(cohort.problems),
                            views={"": view}, extra={"fingerprints": {"": cohort.fingerprint}, "failures": []})
        if transfer_options(suite.task_options).get("enabled", True):
            try:
                self._prepare_transfer(suite, opts, data, cases, box, full_shape)
            except Exception as exc:  # noqa: BLE001 - the main cohort's arms still run
                data.extra["failures"].append(f"transfer: {type(exc).__name__}: {exc}")
                log(f"FAILED transfer: {exc}")
        return data

    def _prepare_transfer(self, suite: SuiteConfig, opts: Any, data: PreparedData, source: list[SegCase],
                          box: tuple[slice, ...], full_shape: tuple[int, ...]) -> None:
        """The second site's view and the source model (trained once, before any split)."""
        t = transfer_options(suite.task_options)
        seed = opts.seed if opts.seed is not None else int(suite.data.get("seed", 0))
        spec = {"cohort": "brats20", "patients": int(t.get("patients", 24)), "seed": int(t.get("seed", 1)),
                "signal": "growth", "grid_mm": float(t.get("grid_mm", 6.0))}
        target_dir = ensure_synthetic_cohort(opts.cache_dir, spec, progress=opts.progress)
        target_raw = load_seg_cohort(target_dir, opts.cache_dir)
        noise = float(t.get("noise", 0.08))
        target = crop_cases([degrade_site(c, full_shape, noise=noise, seed=seed) for c in target_raw.cases], box)
        tfp = ex.digest({"target": target_raw.fingerprint, "noise": noise, "shape": full_shape, "box": repr(box)})
        data.problems += list(target_raw.problems)
        self.cases[TRANSFER] = {c.patient_id: c for c in target}
        data.views[TRANSFER] = case_view(target)
        data.extra["fingerprints"][TRANSFER] = tfp
        key, ckpt = self._source_model(suite, opts, source, box, seed)
        self.source_ckpt = str(ckpt.resolve())
        data.stage_tags["source_model"] = key

    def _source_model(self, suite: SuiteConfig, opts: Any, source: list[SegCase], box: tuple[slice, ...],
                      seed: int) -> tuple[str, Path]:
        """All main-cohort patients (a patient-level validation hold-out), cached by key."""
        import torch
        from baselines import create_baseline

        t = transfer_options(suite.task_options)
        pre, loss = t.get("preprocess", DEFAULT_PRE), t.get("loss", DEFAULT_LOSS)
        baseline: Any = create_baseline("unet3d", profile=opts.profile, **suite.baseline_params.get("unet3d", {}))
        params = {**baseline.get_params(), "loss": loss}
        start = given_weights(dict(opts.weights))
        key_obj = {"source": sorted(c.patient_id for c in source), "params": params, "pre": pre,
                   "seed": seed, "version": __version__, "shape": repr(box)}
        key = ex.digest({**key_obj, "weights": start} if start else key_obj)
        ckpt = Path(opts.cache_dir) / "seg-models" / f"{key}.pt"
        if ckpt.exists():
            log("  transfer: source model from cache")
            return key, ckpt
        rng = np.random.default_rng(seed)
        order = rng.permutation(len(source))
        n_val = max(1, int(round(0.15 * len(source))))
        started = time.perf_counter()
        with limit_threads(opts.threads_per_job):
            tr, (va,) = ex.preprocess_cases(pre, [source[i] for i in order[n_val:]], [[source[i] for i in order[:n_val]]])
            init = load_state_dict(start, trust=opts.trust_model_files) if start else None
            _, _, model = ex.fit_predict(baseline.build, tr, va, [], params, seed=seed, device=opts.device,
                                         log=log, init_state=init, settings=self.settings)
        ckpt.parent.mkdir(parents=True, exist_ok=True)
        tmp = ckpt.with_suffix(".tmp")
        torch.save(model.state_dict(), tmp)
        tmp.replace(ckpt)
        log(f"  transfer: source model trained in {time.perf_counter() - started:.1f}s")
        return key, ckpt

    def variant_data(self, data: PreparedData, variant: str) -> PreparedData:
        return replace(data, task_data=data.views[variant], variant=variant,
                       fingerprint=data.extra["fingerprints"][variant])

    def variant_suite(self, suite: SuiteConfig, variant: str) -> SuiteConfig:
        """Only what decides a fold's scores enters the run key (adding an arm refits nothing)."""
        options = {k: suite.task_options[k] for k in SCORING_OPTIONS if k in suite.task_options}
        if variant != TRANSFER:
            return replace(suite, task_options=options)
        t = transfer_options(suite.task_options)
        options["transfer"] = {k: v for k, v in t.items() if k not in ("freeze", "enabled")}
        protocol = {"n_splits": int(t.get("n_splits", 3)), "val_fraction": float(t.get("val_fraction", 0.15))}
        return replace(suite, task_options=options, protocols={"patient_kfold": protocol})

    def own_split(self, variant: str) -> bool:
        return variant == TRANSFER

    def split_task(self, view: TaskData) -> str:
        return "classification"  # stratified by grade

    # stage 3: arms, folds
    def arms(self, suite: SuiteConfig, variant: str, baselines: list[str]) -> list[ArmSpec]:
        """``suite`` is the variant's (its task options trimmed to the run key's): the
        arms come from the full options, kept by :meth:`prepare_data`."""
        base = dict(suite.baseline_params.get("unet3d", {}))
        arms = build_transfer_arms(self.options) if variant == TRANSFER else build_arms(self.options)
        self.arms_by_name.update({f"unet3d/{a.name}": a for a in arms})
        return [ArmSpec(f"unet3d/{a.name}", "unet3d", arm_params(a, base, self.options),
                        tags={"arm": a.name, "ablation": a.table}) for a in arms]

    def scorer(self, suite: SuiteConfig, view: TaskData) -> SegScorer:
        return SegScorer(suite_metrics(suite.metrics))

    def guard_metric(self, suite: SuiteConfig, view: TaskData) -> str:
        return ""  # the did-not-learn guard has no trivial control for label maps

    def prefetch(self, pending: list[tuple[PlannedRun, Fold]], settings: JobSettings) -> None:
        """Nothing the segmentation folds share ahead of fitting."""

    def make_jobs(self, pending: list[tuple[PlannedRun, Fold]], settings: JobSettings) -> list[SegFoldJob]:
        groups: dict[tuple[str, int], list[PlannedRun]] = {}
        folds: dict[tuple[str, int], Fold] = {}
        for plan, fold in pending:
            key = (fit_group(plan), fold.index)
            groups.setdefault(key, []).append(plan)
            folds[key] = fold
        jobs = []
        for key, group in groups.items():
            first = group[0]
            scoring = tuple((self.arms_by_name[p.baseline].name, self.arms_by_name[p.baseline].table,
                             bool(p.params.get("postprocess", True))) for p in group)
            jobs.append(SegFoldJob(
                run_indices=tuple(p.index for p in group), scoring=scoring, data_key=first.variant,
                params={"profile": settings.profile, **first.params}, fold=folds[key], seed=settings.seed,
                device=settings.device, profile=settings.profile, threads=settings.threads,
                settings=self.settings,
                init_weights=self.source_ckpt if first.params.get("init") == "source" else given_weights(settings.weights),
                trust_model_files=settings.trust_model_files,
            ))
        return jobs

    def datasets(self, data_by_variant: dict[str, PreparedData]) -> dict[str, Any]:
        return {variant: self.cases[variant] for variant in data_by_variant}

    @staticmethod
    def ship_to_ray(cases: Any) -> Any:
        return cases  # plain arrays already

    # stages 4-6: summary, report
    def merge_summaries(self, parts: list[tuple[str, dict[str, Any]]], plans: list[PlannedRun]) -> dict[str, Any]:
        """One summary in the schema of the other suites, each result with its ablation
        table and arm label; the transfer arms' protocol says which cohort it split."""
        merged = dict(parts[0][1])
        merged["results"], merged["manifests"] = [], {}
        for variant, part in parts:
            for r in part["results"]:
                arm = self.arms_by_name[r["baseline"]]
                merged["results"].append({**r, "protocol": TRANSFER_PROTOCOL if variant == TRANSFER else r["protocol"],
                                          "ablation": arm.table, "arm_label": arm.label})
            for protocol, sha in part["manifests"].items():
                merged["manifests"][TRANSFER if variant == TRANSFER else protocol] = sha
        return merged

    def write_reports(self, *, suite: SuiteConfig, opts: Any, data: PreparedData,
                      manifests: dict[str, dict[str, SplitManifest]], plans: list[PlannedRun],
                      result: RunResult, seed: int) -> list[Path]:
        """Scores per arm, the ablation report with example slices of the default arm."""
        out_dir = Path(result.out_dir)
        done = [p for p in plans if p.estimates is not None]
        frames = []
        for plan in done:
            scores = pd.concat([plan.frames[f.index] for f in plan.manifest.folds], ignore_index=True)
            frames.append(scores)
            path = out_dir / "scores" / f"{self.arms_by_name[plan.baseline].name}.csv"
            path.parent.mkdir(parents=True, exist_ok=True)
            scores.to_csv(path, index=False)
        if frames:
            pd.concat(frames, ignore_index=True).to_csv(out_dir / "scores.csv", index=False)
        arms = [self.arms_by_name[p.baseline] for p in plans if p.baseline in self.arms_by_name]
        arms = list(dict.fromkeys(arms))
        examples = self._examples(suite, done)
        return write_report(result.summary, arms, examples, out_dir)

    def _examples(self, suite: SuiteConfig, done: list[PlannedRun]) -> list[dict[str, Any]]:
        main = [p for p in done if p.variant == ""]
        default = next((p for p in main if self.arms_by_name[p.baseline].train_key == (DEFAULT_PRE, DEFAULT_LOSS)
                        and self.arms_by_name[p.baseline].postprocess), main[0] if main else None)
        if default is None:
            return []
        labels: dict[int, dict[str, np.ndarray]] = {}
        for f in default.manifest.folds:
            arrays = load_npz(default.arrays_path(f.index))
            if arrays is None:
                return []
            labels[f.index] = arrays
        cases = self.cases[""]
        fold_cases = {f.index: [cases[i] for i in f.test] for f in default.manifest.folds}
        return collect_examples(fold_cases, labels, self.settings, n=int(suite.task_options.get("n_examples", 3)))

    def print_results(self, parts: list[tuple[str, dict[str, Any]]], out_dir: Path) -> None:
        report = out_dir / "report.md"
        if report.exists():
            print(report.read_text())
            print(f"report: {out_dir / 'report.html'}")

    def audit_reports(self, *, suite: SuiteConfig, opts: Any, data: PreparedData,
                      manifests: dict[str, dict[str, SplitManifest]], result: RunResult,
                      seed: int) -> list[Path]:
        """Split integrity and learning curves (harness.audit.segmentation)."""
        from harness.audit.segmentation import write_segmentation_audit

        return write_segmentation_audit(suite=suite, data=data, manifests=manifests, result=result, log=log)
