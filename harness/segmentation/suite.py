"""The ``segmentation`` suite: Ren et al.'s ablations at CPU scale, patient k-fold.

Tables (arms share trained models wherever they can):
- pre-processing: none / z-score / z-score + rescaling / + histogram matching
- loss: the paper's three combinations
- post-processing: the default model's predictions with and without dust removal
- freezing (transfer): a model trained on the main cohort, fine-tuned on a second,
  coarser and noisier simulated site with the encoder, middle, decoder or nothing
  frozen, next to the two single-cohort models (the paper's Table 5)

Writes ``summary.json`` (the runner's schema; ``baseline`` is ``unet3d/<arm>``),
per-subject scores, the report (HTML + Markdown) and MLflow runs (a parent per arm, a
nested run per fold). Wired in through ``harness.runner.SUITE_RUNNERS``.
"""

from __future__ import annotations

import time
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from harness import __version__
from harness.cohorts import ensure_synthetic_cohort
from harness.errors import HarnessError
from harness.model_files import load_state_dict
from harness.provenance import git_commit, package_versions
from harness.run_result import RunResult
from harness.runner import RunOptions, log
from harness.segmentation import experiment as ex
from harness.segmentation.data import SegCase, brain_crop, crop_cases, degrade_site, load_seg_cohort
from harness.segmentation.labels import Thresholds
from harness.segmentation.losses import PRESET_LABELS, PRESETS
from harness.segmentation.preprocess import LABELS as PRE_LABELS
from harness.segmentation.preprocess import METHODS as PRE_METHODS
from harness.segmentation.stats import estimate_mean
from harness.splits import SplitManifest, load_or_create_manifest
from harness.suite import SuiteConfig
from harness.summary import write_json

DEFAULT_PRE = "zscore_rescale"
DEFAULT_LOSS = "dice_focal_edge005"
FREEZE_LABELS = {"encoder": "Freeze encoder", "middle": "Freeze middle layers",
                 "decoder": "Freeze decoder", "none": "Freeze nothing"}


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


def _samples(cases: list[SegCase]) -> pd.DataFrame:
    ids = [c.patient_id for c in cases]
    return pd.DataFrame({"sample_id": ids, "patient_id": ids, "image_id": ids,
                         "target": [c.grade or "NA" for c in cases]})


def _manifest(suite: SuiteConfig, opts: RunOptions, name: str, cases: list[SegCase], fingerprint: str,
              seed: int, params: dict, out_dir: Path) -> SplitManifest:
    path = opts.cache_dir / "manifests" / f"{suite.name}-{name}-s{seed}-{fingerprint[:16]}.json"
    manifest, reused = load_or_create_manifest(path, "patient_kfold", _samples(cases), seed=seed,
                                               task="classification", dataset_fingerprint=fingerprint, **params)
    log(f"split {name}: {'reused' if reused else 'created'} manifest sha256 {manifest.sha256[:12]}")
    manifest.save(out_dir / "manifests" / f"{name}.json")
    return manifest


class _Context:
    """What every arm needs: options, model params, settings, tracker and result sinks."""

    def __init__(self, suite: SuiteConfig, opts: RunOptions, seed: int, out_dir: Path) -> None:
        from baselines import create_baseline
        from baselines.unet3d import UNet3DBaseline

        self.suite, self.opts, self.seed, self.out_dir = suite, opts, seed, out_dir
        baseline = create_baseline("unet3d", profile=opts.profile, **suite.baseline_params.get("unet3d", {}))
        assert isinstance(baseline, UNet3DBaseline)
        self.baseline = baseline
        self.params = self.baseline.get_params()
        t = suite.task_options
        self.settings = ex.EvalSettings(Thresholds.from_mapping(t.get("thresholds")), int(t.get("max_dust", 50)),
                                        int(t.get("dilation", 3)), float(t.get("min_lesion", 50)))
        self.tracker = None
        if opts.tracking_uri != "none":
            from harness.tracking import Tracker, default_tracking_uri

            self.tracker = Tracker(opts.tracking_uri or default_tracking_uri(), experiment=f"harness/{suite.name}")
        self.estimates: list[tuple[str, str, Any, str, str]] = []   # (baseline, protocol, est, table, label)
        self.scores: list[pd.DataFrame] = []
        self.parents: dict[str, Any] = {}
        self.result = RunResult(out_dir=out_dir, summary={})
        self.manifests: dict[str, str] = {}

    def model(self) -> Any:
        return self.baseline.build()


def _evaluate_arm(ctx: _Context, arm: ex.Arm, protocol: str, manifest: SplitManifest, fold_labels: dict[int, dict],
                  fold_cases: dict[int, list[SegCase]], common_tags: dict[str, str], data_desc: dict) -> None:
    """Score one arm's folds; log parent + fold runs; add its estimates."""
    frames = {}
    for k, labels in fold_labels.items():
        sc = ex.score_cases(labels, fold_cases[k], ctx.settings, postprocess=arm.postprocess)
        frames[k] = sc.assign(fold=k, arm=arm.name, table=arm.table)
    scores = pd.concat(frames.values(), ignore_index=True)
    ctx.scores.append(scores)
    baseline_name = f"unet3d/{arm.name}"
    ests = []
    for metric in ex.metric_names():
        per = [ex.per_patient(f, metric) for f in frames.values()]
        ests.append(estimate_mean(metric, [p.to_numpy() for p in per], [list(p.index) for p in per],
                                  n_boot=ctx.suite.n_boot, seed=ctx.seed))
    ctx.estimates += [(baseline_name, protocol, e, arm.table, arm.label) for e in ests]
    path = ctx.out_dir / "scores" / f"{arm.name}.csv"
    path.parent.mkdir(parents=True, exist_ok=True)
    scores.to_csv(path, index=False)
    if ctx.tracker is None:
        return
    key = ex.digest({"arm": arm.__dict__, "manifest": manifest.sha256, "params": ctx.params, "seed": ctx.seed,
                     "settings": repr(ctx.settings), "version": __version__, **data_desc})
    params = {"suite": ctx.suite.name, "baseline": "unet3d", "arm": arm.name, "table": arm.table,
              "protocol": protocol, "seed": ctx.seed, "device": ctx.opts.device,
              "preprocess": arm.preprocess, "loss": arm.loss, "postprocess": arm.postprocess,
              "transfer": arm.transfer, "freeze": arm.freeze, **{f"baseline.{k}": v for k, v in ctx.params.items()},
              **{f"task.{k}": v for k, v in ctx.suite.task_options.items()},
              **{f"data.{k}": v for k, v in ctx.suite.data.items()}}
    parent = ctx.tracker.open_parent(key, f"unet3d | {protocol} | {arm.name}", params,
                                     {**common_tags, "baseline": "unet3d", "protocol": protocol, "arm": arm.name,
                                      "ablation": arm.table, "manifest_sha256": manifest.sha256,
                                      "leaky_protocol": "false"})
    from harness.tracking import FoldRecord

    done = parent.finished_folds()
    for k, f in frames.items():
        if k in done:
            continue
        fold_csv = ctx.out_dir / "scores" / "folds" / f"{arm.name}-fold{k}.csv"
        fold_csv.parent.mkdir(parents=True, exist_ok=True)
        f.to_csv(fold_csv, index=False)
        metrics = {m: float(ex.per_patient(f, m).mean()) for m in ex.metric_names()}
        parent.log_fold(FoldRecord(k, {"fold": k, "n_test_patients": f["subject"].nunique()}, metrics,
                                   {"arm": arm.name, "baseline": "unet3d"}, [fold_csv]),
                        run_name=f"unet3d | {protocol} | {arm.name} | fold {k}")
    parent.log_artifact(path, "scores")
    parent.log_metrics({m: v for e in ests for m, v in ((e.metric, e.mean), (f"{e.metric}_ci95_lo", e.ci95[0]),
                                                         (f"{e.metric}_ci95_hi", e.ci95[1]))})
    parent.finish()
    ctx.parents[arm.name] = parent


def _train_folds(ctx: _Context, cases: list[SegCase], manifest: SplitManifest, pre: str, loss: str,
                 fingerprint: str) -> dict[int, dict[str, np.ndarray]]:
    """Predicted label maps per fold for one (pre-processing, loss), from the cache or trained."""
    by_id = {c.patient_id: c for c in cases}
    out = {}
    params = {**ctx.params, "loss": loss}
    for fold in manifest.folds:
        key = ex.digest({"pre": pre, "params": params, "fold": fold.to_dict(), "seed": ctx.seed,
                         "data": fingerprint, "thr": repr(ctx.settings.thresholds), "version": __version__})
        path = ctx.opts.cache_dir / "seg-folds" / f"{key}.npz"
        cached = ex.load_npz(path)
        if cached is not None and set(cached) == set(fold.test):
            out[fold.index] = cached
            ctx.result.folds_reused += 1
            log(f"  unet3d | {pre} + {loss} | fold {fold.index}: from cache")
            continue
        started = time.perf_counter()
        train, (val, test) = ex.preprocess_cases(pre, [by_id[i] for i in fold.train],
                                                 [[by_id[i] for i in fold.val], [by_id[i] for i in fold.test]])
        labels, history, _ = ex.fit_predict(ctx.model, train, val, test, params, seed=ctx.seed,
                                            device=ctx.opts.device, log=log, settings=ctx.settings)
        ex.save_npz_atomic(path, labels)
        pd.DataFrame(history).to_csv(path.with_suffix(".history.csv"), index=False)
        out[fold.index] = labels
        ctx.result.folds_fitted += 1
        log(f"  unet3d | {pre} + {loss} | fold {fold.index}: {len(history)} epochs, "
            f"{len(test)} test patients in {time.perf_counter() - started:.1f}s")
    return out


def _transfer(ctx: _Context, source: list[SegCase], box: tuple[slice, ...], full_shape: tuple[int, ...],
              common_tags: dict[str, str]) -> list[ex.Arm]:
    """Table 5: source-only, target-only, and fine-tuning with each freezing choice."""
    import torch

    t = dict(ctx.suite.task_options.get("transfer", {}))
    if not t.get("enabled", True):
        return []
    spec = {"cohort": "brats20", "patients": int(t.get("patients", 24)), "seed": int(t.get("seed", 1)),
            "signal": "growth", "grid_mm": float(t.get("grid_mm", 6.0))}
    target_dir = ensure_synthetic_cohort(ctx.opts.cache_dir, spec, progress=ctx.opts.progress)
    target_raw = load_seg_cohort(target_dir, ctx.opts.cache_dir)
    noise = float(t.get("noise", 0.08))
    target = crop_cases([degrade_site(c, full_shape, noise=noise, seed=ctx.seed) for c in target_raw.cases], box)
    tfp = ex.digest({"target": target_raw.fingerprint, "noise": noise, "shape": full_shape, "box": repr(box)})
    manifest = _manifest(ctx.suite, ctx.opts, "transfer", target, tfp, ctx.seed,
                         {"n_splits": int(t.get("n_splits", 3)), "val_fraction": float(t.get("val_fraction", 0.15))},
                         ctx.out_dir)
    ctx.manifests["transfer"] = manifest.sha256
    pre, loss = t.get("preprocess", DEFAULT_PRE), t.get("loss", DEFAULT_LOSS)
    # the source model: all main-cohort patients (a patient-level validation hold-out)
    rng = np.random.default_rng(ctx.seed)
    order = rng.permutation(len(source))
    n_val = max(1, int(round(0.15 * len(source))))
    src_train = [source[i] for i in order[n_val:]]
    src_val = [source[i] for i in order[:n_val]]
    src_params = {**ctx.params, "loss": loss}
    src_key = ex.digest({"source": sorted(c.patient_id for c in source), "params": src_params, "pre": pre,
                         "seed": ctx.seed, "version": __version__, "shape": repr(box)})
    ckpt = ctx.opts.cache_dir / "seg-models" / f"{src_key}.pt"
    if ckpt.exists():
        src_state = load_state_dict(ckpt)
        log("  transfer: source model from cache")
    else:
        started = time.perf_counter()
        tr, (va,) = ex.preprocess_cases(pre, src_train, [src_val])
        _, _, model = ex.fit_predict(ctx.model, tr, va, [], src_params, seed=ctx.seed, device=ctx.opts.device,
                                     log=log, settings=ctx.settings)
        ckpt.parent.mkdir(parents=True, exist_ok=True)
        torch.save(model.state_dict(), ckpt)
        src_state = load_state_dict(ckpt)
        log(f"  transfer: source model trained in {time.perf_counter() - started:.1f}s")
    ft_params = {**src_params, "epochs": int(t.get("finetune_epochs", 6)), "lr": float(t.get("finetune_lr", 1e-3))}
    arms = [ex.Arm("transfer", "tl-source_only", "Main-cohort model only", pre, loss, transfer="source_only"),
            ex.Arm("transfer", "tl-target_only", "Second-site model only", pre, loss, transfer="target_only")]
    arms += [ex.Arm("transfer", f"tl-freeze_{g}", FREEZE_LABELS[g], pre, loss, transfer="finetune", freeze=g)
             for g in t.get("freeze", ["encoder", "middle", "decoder", "none"])]
    by_id = {c.patient_id: c for c in target}
    labels: dict[str, dict[int, dict]] = {a.name: {} for a in arms}
    fold_cases: dict[int, list[SegCase]] = {}
    for fold in manifest.folds:
        fold_cases[fold.index] = [by_id[i] for i in fold.test]
        for arm in arms:
            key = ex.digest({"arm": arm.__dict__, "fold": fold.to_dict(), "src": src_key, "ft": ft_params,
                             "params": src_params, "data": tfp, "seed": ctx.seed, "version": __version__})
            path = ctx.opts.cache_dir / "seg-folds" / f"{key}.npz"
            cached = ex.load_npz(path)
            if cached is not None and set(cached) == set(fold.test):
                labels[arm.name][fold.index] = cached
                ctx.result.folds_reused += 1
                continue
            started = time.perf_counter()
            train, (val, test) = ex.preprocess_cases(pre, [by_id[i] for i in fold.train],
                                                     [[by_id[i] for i in fold.val], fold_cases[fold.index]])
            if arm.transfer == "source_only":
                p, init, fr = {**src_params, "epochs": 0}, src_state, ""
            elif arm.transfer == "target_only":
                p, init, fr = src_params, None, ""
            else:
                p, init, fr = ft_params, src_state, ("" if arm.freeze == "none" else arm.freeze)
            lab, history, _ = ex.fit_predict(ctx.model, train, val, test, p, seed=ctx.seed, device=ctx.opts.device,
                                             log=log, init_state=init, freeze=fr, settings=ctx.settings)
            ex.save_npz_atomic(path, lab)
            labels[arm.name][fold.index] = lab
            ctx.result.folds_fitted += 1
            log(f"  transfer | {arm.name} | fold {fold.index}: {len(history)} epochs in "
                f"{time.perf_counter() - started:.1f}s")
    for arm in arms:
        _evaluate_arm(ctx, arm, "patient_kfold(second site)", manifest, labels[arm.name], fold_cases,
                      common_tags, {"data": tfp})
    return arms


def run_segmentation_suite(suite: SuiteConfig, opts: RunOptions) -> RunResult:
    """Run every ablation arm under patient k-fold; summary.json, MLflow runs, report."""
    from harness.segmentation.report import collect_examples, write_report

    started = time.perf_counter()
    seed = opts.seed if opts.seed is not None else int(suite.data.get("seed", 0))
    out_dir = Path(opts.out) if opts.out else Path("reports") / suite.name / datetime.now().strftime("%Y%m%d-%H%M%S")
    out_dir.mkdir(parents=True, exist_ok=True)
    if opts.baselines and opts.baselines != ["unet3d"]:
        raise HarnessError(f"suite {suite.name!r} runs the unet3d baseline only (got {opts.baselines})")
    if opts.data is not None:
        data_dir, dataset_name = Path(opts.data), Path(opts.data).name
    else:
        data_dir = ensure_synthetic_cohort(opts.cache_dir, suite.data, progress=opts.progress)
        dataset_name = f"synthetic-{data_dir.name}"
    cohort = load_seg_cohort(data_dir, opts.cache_dir, progress=opts.progress)
    pd.DataFrame([{"path": p.path, "reason": p.reason} for p in cohort.problems],
                 columns=["path", "reason"]).to_csv(out_dir / "problems.csv", index=False)
    for p in cohort.problems[:20]:
        log(f"  problem: {p}")
    full_shape = cohort.cases[0].labels.shape
    box = brain_crop(cohort.cases)
    cases = crop_cases(cohort.cases, box)
    log(f"data: {data_dir}: {len(cases)} patients, grid {full_shape} cropped to {cases[0].labels.shape}")
    ctx = _Context(suite, opts, seed, out_dir)
    proto_params = dict(suite.protocols.get("patient_kfold", {"n_splits": 3}))
    manifest = _manifest(suite, opts, "patient_kfold", cases, cohort.fingerprint, seed, proto_params, out_dir)
    common_tags = {"suite": suite.name, "git_commit": git_commit(), "dataset_fingerprint": cohort.fingerprint,
                   "dataset": dataset_name, "seed": str(seed), "profile": opts.profile,
                   **{f"version.{k}": v for k, v in package_versions().items()}}
    arms = build_arms(suite.task_options)
    by_id = {c.patient_id: c for c in cases}
    fold_cases = {f.index: [by_id[i] for i in f.test] for f in manifest.folds}
    trained: dict[tuple[str, str], dict[int, dict]] = {}
    examples: list[dict[str, Any]] = []
    for arm in arms:
        try:
            if arm.train_key not in trained:
                log(f"training unet3d: pre-processing {arm.preprocess}, loss {arm.loss}")
                trained[arm.train_key] = _train_folds(ctx, cases, manifest, arm.preprocess, arm.loss,
                                                      cohort.fingerprint)
            _evaluate_arm(ctx, arm, "patient_kfold", manifest, trained[arm.train_key], fold_cases, common_tags,
                          {"data": cohort.fingerprint})
        except Exception as exc:  # one arm failing must not lose the others
            ctx.result.failures.append(f"unet3d/{arm.name}: {type(exc).__name__}: {exc}")
            log(f"FAILED unet3d/{arm.name}: {exc}")
    try:
        arms += _transfer(ctx, cases, box, full_shape, common_tags)
    except Exception as exc:
        ctx.result.failures.append(f"transfer: {type(exc).__name__}: {exc}")
        log(f"FAILED transfer: {exc}")
    default = next((a for a in arms if a.train_key == (DEFAULT_PRE, DEFAULT_LOSS) and a.postprocess), arms[0])
    if default.train_key in trained:
        examples = collect_examples(fold_cases, trained[default.train_key], ctx.settings, n=int(
            suite.task_options.get("n_examples", 3)))
    summary = _summary(suite, ctx, dataset_name, cohort.fingerprint, len(cases), manifest,
                       time.perf_counter() - started, seed)
    write_json(summary, out_dir / "summary.json")
    if ctx.scores:
        pd.concat(ctx.scores, ignore_index=True).to_csv(out_dir / "scores.csv", index=False)
    report_paths = write_report(summary, arms, examples, out_dir)
    parent = ctx.parents.get(default.name)
    if parent is not None:
        for path in report_paths:
            parent.log_artifact(path, "report")
        parent.log_artifact(out_dir / "summary.json", "report")
    ctx.result.summary = summary
    print((out_dir / "report.md").read_text())
    print(f"\nsummary: {out_dir / 'summary.json'}\nreport: {out_dir / 'report.html'}")
    return ctx.result


def _num(v: float) -> float | None:
    return None if v is None or v != v else float(v)


def _summary(suite: SuiteConfig, ctx: _Context, name: str, fingerprint: str, n: int, manifest: SplitManifest,
             seconds: float, seed: int) -> dict[str, Any]:
    results = [{"baseline": b, "protocol": p, "leaky_protocol": False, "ablation": table, "arm_label": label,
                "metric": e.metric, "mean": _num(e.mean), "ci95": [_num(e.ci95[0]), _num(e.ci95[1])],
                "n_patients": e.n_patients, "n_samples": e.n_samples, "n_folds": e.n_folds,
                "fold_values": [_num(v) for v in e.fold_values]}
               for b, p, e, table, label in ctx.estimates]
    return {"suite": suite.name, "task": suite.task,
            "dataset": {"name": name, "fingerprint": fingerprint, "n_patients": n, "n_samples": n},
            "seed": seed, "results": results, "manifests": {"patient_kfold": manifest.sha256, **ctx.manifests},
            "failures": ctx.result.failures, "seconds": round(seconds, 1), "config": suite.to_dict()}
