"""The ``explain`` command end to end: data, model, explanations, report, MLflow.

Reads the suite's ``[data]`` and ``[explain]`` tables (see benchmarks/suites/explain.toml),
generates or reads the cohort, trains the default model on patient-held-out training
patients (or loads ``model_file``), explains test patients' key cases with every
method, writes ``reports/<suite>-explain/<timestamp>/report.{html,md}`` plus CSVs, and
logs them to MLflow.
"""

from __future__ import annotations

import csv
import datetime as _dt
import json
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from harness.hashing import json_digest
from harness.paths import default_cache_dir
from harness.errors import HarnessError
from harness.explain.adapters import ExplainAdapter
from harness.explain.baselines import (
    default_dims, default_size, explainable_baseline, explainable_names, fit_baseline, sample_unit,
)
from harness.explain.config import ExplainConfig
from harness.explain.data import DEFAULT_DATA, CaseSet, ensure_known_truth_cohort, load_cases, patient_split
from harness.explain.engine import SCORE_COLUMNS, CaseExplanation, cohort_importance, explain_case, summarise
from harness.explain.methods import applicable_methods
from harness.explain.models import MODELS, get_model_spec, predict_proba, train_classifier
from harness.explain.report import write_report

#: ``[explain]`` keys besides the engine's knobs (``[explain.config]``).
#: ``profile``, ``params`` (an ``[explain.params]`` table) and ``modalities`` apply to a
#: registered baseline (``model = "resnet18_grader"``): its profile, parameter overrides and
#: the modalities it is fitted on and explained for (default: all four).
RUN_DEFAULTS: dict[str, Any] = {
    "model": "multimodal_cnn", "dims": None, "size": None, "cases": 4, "methods": ["all"], "epochs": None,
    "lr": 3e-3, "slices_per_patient": 5, "test_fraction": 1 / 3, "threads": 1, "seed": 0,
    "profile": "quick", "params": {}, "modalities": None,
}

#: Cascading randomisation for a registered baseline unless ``sanity_methods`` is set.
BASELINE_SANITY_METHODS: tuple[str, ...] = ("gradient", "guided_backprop", "guided_grad_cam")


@dataclass
class ExplainOptions:
    """Command-line overrides; None keeps the suite's value."""

    suite: str = "explain"
    data: Path | None = None
    baseline: str | None = None
    model_file: Path | None = None
    #: ``--trust-model-file``: a full pickle may be unpickled (it can run code).
    trust_model_file: bool = False
    methods: list[str] | None = None
    cases: int | None = None
    dims: int | None = None
    size: int | None = None
    out: Path | None = None
    tracking_uri: str | None = None
    seed: int | None = None
    cache_dir: Path = field(default_factory=default_cache_dir)
    progress: bool = True
    modalities: list[str] | None = None
    profile: str | None = None


@dataclass
class ExplainResult:
    out_dir: Path
    html: Path
    markdown: Path
    summary: dict[str, dict[str, float]]
    importance: dict[str, float]
    known_modality: str | None
    cases: list[CaseExplanation] = field(default_factory=list)
    run_id: str | None = None


def read_suite_tables(name_or_path: str) -> tuple[str, dict[str, Any], dict[str, Any]]:
    """(suite name, [data], [explain]) of a suite file; the [explain] table may be absent."""
    from harness.suite import read_suite_file

    path, raw = read_suite_file(name_or_path)
    name = raw.get("suite", {}).get("name", path.stem)
    return name, dict(raw.get("data", {})), dict(raw.get("explain", {}))


def resolve(opts: ExplainOptions) -> tuple[str, dict[str, Any], dict[str, Any], ExplainConfig]:
    """Suite tables + command line -> (suite name, data spec, run settings, engine config)."""
    name, data, table = read_suite_tables(opts.suite)
    engine_raw = dict(table.pop("config", {}))
    unknown = sorted(set(table) - set(RUN_DEFAULTS))
    if unknown:
        raise HarnessError(f"suite {name!r} [explain]: unknown key(s) {unknown}; known: {sorted(RUN_DEFAULTS)} "
                           "and a [explain.config] table")
    run = {**RUN_DEFAULTS, **table}
    for key in ("methods", "cases", "dims", "size", "seed", "modalities", "profile"):
        value = getattr(opts, key)
        if value is not None:
            run[key] = value
    if opts.baseline:
        run["model"] = opts.baseline
    data = {**DEFAULT_DATA, **data} if not data or data.get("cohort") in ("brats20", "rembrandt") else data
    if opts.seed is not None:
        engine_raw["seed"] = opts.seed
    cfg = ExplainConfig.from_mapping(engine_raw, f"suite {name!r} [explain.config]")
    if "sanity_methods" not in engine_raw and run["model"] not in MODELS and opts.model_file is None:
        # A published network has ~20-60 parametrised layers: one re-explanation each per
        # method. Unless the suite asks otherwise, only the methods Adebayo et al. compared get it.
        cfg.sanity_methods = list(BASELINE_SANITY_METHODS)
    return name, data, run, cfg


def _model(run: dict[str, Any], opts: ExplainOptions) -> tuple[torch.nn.Module | None, int]:
    """(a loaded model or None to train or fit one, dims)."""
    if opts.model_file is not None:
        # Loaded once the cohort says how many channels and classes the architecture has.
        arch = run["model"]
        return None, int(run["dims"] or (get_model_spec(arch).dims if arch in MODELS else 2))
    name = run["model"]
    if name not in MODELS:
        from baselines import list_baselines

        if name not in list_baselines():
            raise HarnessError(f"unknown model {name!r}; explain trains one of {', '.join(MODELS)}, fits one of "
                               f"the torch baselines {', '.join(explainable_names())}, or loads --model-file")
        cls = explainable_baseline(name)
        dims = int(run["dims"] or default_dims(cls))
        sample_unit(cls, dims)  # says which dims the baseline takes
        return None, dims
    return None, int(run["dims"] or get_model_spec(name).dims)


def _load_model_file(opts: ExplainOptions, arch: str, in_channels: int, n_classes: int) -> torch.nn.Module:
    """``--model-file`` through :mod:`harness.model_files` (safe formats unless trusted)."""
    from harness.model_files import load_model

    def build() -> torch.nn.Module:
        if arch not in MODELS:
            raise HarnessError(f"{opts.model_file}: a state dict needs a registered architecture to load into; "
                               f"name one with --baseline ({', '.join(MODELS)}), or export TorchScript")
        return get_model_spec(arch).build(in_channels, n_classes)

    assert opts.model_file is not None  # only called with a model file
    model = load_model(opts.model_file, architecture=arch, build=build, trust=opts.trust_model_file)
    if not isinstance(model, torch.nn.Module):
        raise HarnessError(f"{opts.model_file}: holds a {type(model).__name__}, not a torch.nn.Module")
    return model


def _baseline_params(run: dict[str, Any]) -> dict[str, Any]:
    """The baseline's resolved parameters (profile defaults + [explain.params])."""
    cls = explainable_baseline(run["model"])
    profile = str(run["profile"])
    if profile not in cls.profiles:
        raise HarnessError(f"baseline {run['model']!r} has no profile {profile!r}; known: {sorted(cls.profiles)}")
    return {**cls.profiles[profile], **dict(run["params"] or {})}


def pick_cases(cases: CaseSet, test: np.ndarray, n: int) -> list[int]:
    """Test patients' key samples, alternating classes so both grades are shown."""
    keys = [int(i) for i in test if cases.is_key[i]]
    by_class: dict[int, list[int]] = {}
    for i in keys:
        by_class.setdefault(int(cases.y[i]), []).append(i)
    picked: list[int] = []
    while len(picked) < n and any(by_class.values()):
        for cls in sorted(by_class, reverse=True):
            if by_class[cls] and len(picked) < n:
                picked.append(by_class[cls].pop(0))
    return picked


def run_explain(opts: ExplainOptions) -> ExplainResult:
    name, data_spec, run, cfg = resolve(opts)
    torch.set_num_threads(max(1, int(run["threads"])))  # more threads than cores slows small convs badly
    seed = int(run["seed"] if opts.seed is None else opts.seed)
    if opts.data is not None:
        data_dir, known = Path(opts.data), None
    else:
        data_dir = ensure_known_truth_cohort(opts.cache_dir, data_spec, progress=opts.progress)
        known = data_spec.get("signal_modality")
    model, dims = _model(run, opts)
    is_baseline = opts.model_file is None and run["model"] not in MODELS
    if is_baseline:
        size = int(run["size"] or default_size(explainable_baseline(run["model"]), _baseline_params(run), dims))
    else:
        size = int(run["size"] or (64 if dims == 2 else 32))
    cases, problems = load_cases(data_dir, dims=dims, size=size, slices_per_patient=int(run["slices_per_patient"]),
                                 cache_dir=opts.cache_dir, progress=opts.progress)
    train, test = patient_split(cases, float(run["test_fraction"]), seed)
    meta: dict[str, Any] = {"suite": name, "data": str(data_dir), "model": run["model"], "dims": dims,
                            "input": f"{len(cases.modalities)} x " + " x ".join([str(size)] * dims),
                            "modalities": ", ".join(cases.modalities), "classes": ", ".join(cases.classes),
                            "train patients": len({cases.patient_ids[i] for i in train}),
                            "test patients": len({cases.patient_ids[i] for i in test})}
    chosen = pick_cases(cases, test, int(run["cases"]))
    if not chosen:
        raise HarnessError("no held-out case to explain (too few patients?)")
    adapter: ExplainAdapter | None = None
    if is_baseline:
        modalities = list(run["modalities"] or cases.modalities)
        unknown = [m for m in modalities if m not in cases.modalities]
        if unknown:
            raise HarnessError(f"[explain] modalities {unknown} are not in the cohort's {cases.modalities}")
        fitted = fit_baseline(run["model"], cases, train, test, dims=dims, modalities=modalities,
                              profile=str(run["profile"]), params=dict(run["params"] or {}), seed=seed,
                              log=(lambda msg: print(msg, file=sys.stderr)) if opts.progress else (lambda _: None))
        adapter = fitted.adapter
        model = adapter.module
        meta.update(fitted.meta)
    elif opts.model_file is not None:
        model = _load_model_file(opts, run["model"], len(cases.modalities), len(cases.classes))
        meta["model"] = f"loaded from {opts.model_file}"
    elif model is None:
        torch.manual_seed(seed)  # the initial weights depend on the seed, not on what ran before
        model = get_model_spec(run["model"]).build(len(cases.modalities), len(cases.classes))
        epochs = int(run["epochs"] or (30 if dims == 2 else 80))  # the 3D net needs longer to find the core
        fit = train_classifier(model, cases.x[train], cases.y[train], epochs=epochs,
                               lr=float(run["lr"]), seed=seed)
        meta["final training loss"] = f"{fit.history[-1]['loss']:.4f}"
    model.eval()
    if adapter is None and len(test):
        acc = float((predict_proba(model, cases.x[test]).argmax(1) == cases.y[test]).mean())
        meta["test accuracy (held-out patients, all samples)"] = f"{acc:.3f} (n={len(test)})"
    wanted = None if "all" in run["methods"] else list(run["methods"])
    methods, skipped = applicable_methods(model, wanted)
    meta["cases explained"] = len(chosen)
    inputs = _inputs(cases, chosen, adapter)
    if adapter is not None:
        meta["explained input shape"] = (f"{' x '.join(str(d) for d in inputs.x.shape[1:])} ({adapter.kind}; "
                                         f"channels {', '.join(adapter.modalities)})")
        if adapter.fixed_target is not None or known not in adapter.modalities:
            known = None  # the known-truth claim is about the grade, over the modalities it reads
    explained = _explain_all(model, inputs, methods, cfg, opts.progress)
    summary = summarise(explained, methods)
    importance = cohort_importance(explained)
    out_dir = opts.out or Path("reports") / f"{name}-explain" / _dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    title = f"Explainability report: {meta['model']} on {Path(str(data_dir)).name}"
    html_path, md_path = write_report(out_dir, title=title, meta=meta, cases=explained, methods=methods,
                                      summary=summary, modalities=inputs.modalities, classes=inputs.classes,
                                      importance=importance, known_modality=known, skipped=skipped,
                                      problems=problems)
    csv_path = _write_csv(out_dir / "scores.csv", summary)
    imp = {m: float(v) for m, v in zip(inputs.modalities, importance)}
    (out_dir / "explain.json").write_text(json.dumps(
        {"meta": meta, "run": run, "config": cfg.to_dict(), "summary": summary, "modality_importance": imp,
         "known_modality": known, "skipped": skipped}, indent=2, default=str))
    result = ExplainResult(out_dir, html_path, md_path, summary, imp, known, explained)
    result.run_id = _track(opts, name, run, cfg, meta, summary, imp, [html_path, md_path, csv_path,
                                                                       out_dir / "explain.json"])
    return result


@dataclass
class ExplainInputs:
    """The chosen cases as the model takes them: x (n, M, *spatial), targets, masks, names."""

    x: np.ndarray
    targets: np.ndarray
    masks: np.ndarray | None
    patient_ids: list[str]
    index: list[int]
    modalities: list[str]
    classes: list[str]


def _inputs(cases: CaseSet, chosen: list[int], adapter: ExplainAdapter | None) -> ExplainInputs:
    pids = [cases.patient_ids[i] for i in chosen]
    masks = None if cases.mask is None else cases.mask[chosen]
    if adapter is None:
        return ExplainInputs(cases.x[chosen], cases.y[chosen], masks, pids, list(chosen), list(cases.modalities),
                             list(cases.classes))
    x = adapter.prepare(cases.x[chosen], cases.modalities).numpy()
    masks = adapter.prepare_mask(masks, cases.x[chosen], cases.modalities)
    targets = (np.full(len(chosen), adapter.fixed_target) if adapter.fixed_target is not None
               else cases.y[chosen])
    return ExplainInputs(x, targets, masks, pids, list(chosen), list(adapter.modalities), list(adapter.classes))


def _explain_all(model: torch.nn.Module, inputs: ExplainInputs, methods: list[str], cfg: ExplainConfig,
                 progress: bool) -> list[CaseExplanation]:
    out = []
    n = len(inputs.x)
    bar = tqdm(total=n * len(methods), desc="explain", unit="map", disable=not progress, file=sys.stderr)
    try:
        for k in range(n):
            others = [j for j in range(n) if j != k] or [k]
            out.append(explain_case(
                model, inputs.x[k], int(inputs.targets[k]), methods, cfg,
                mask=None if inputs.masks is None else inputs.masks[k], batch=inputs.x[others],
                index=inputs.index[k], patient_id=inputs.patient_ids[k], sanity=k < max(0, cfg.sanity_cases),
                on_method=lambda name: (bar.set_postfix_str(name), bar.update(1))))
    finally:
        bar.close()
    return out


def _write_csv(path: Path, summary: dict[str, dict[str, float]]) -> Path:
    with path.open("w", newline="") as fh:
        w = csv.writer(fh, lineterminator="\n")
        w.writerow(["method", *SCORE_COLUMNS])
        for n, row in summary.items():
            w.writerow([n, *(row[c] for c in SCORE_COLUMNS)])
    return path


def _track(opts: ExplainOptions, name: str, run: dict[str, Any], cfg: ExplainConfig, meta: dict[str, Any],
           summary: dict[str, dict[str, float]], imp: dict[str, float], artifacts: list[Path]) -> str | None:
    """One MLflow parent run in experiment ``harness/<suite>``: params, scores, the report."""
    if opts.tracking_uri == "none":
        return None
    from harness.tracking import Tracker, default_tracking_uri

    tracker = Tracker(opts.tracking_uri or default_tracking_uri(), f"harness/{name}")
    params = {**{f"explain.{k}": v for k, v in run.items()}, **{f"config.{k}": v for k, v in cfg.to_dict().items()},
              "data": meta["data"]}
    key = json_digest([str(artifacts[0].parent), params], 16)
    parent = tracker.open_parent(f"explain:{key}", f"explain {run['model']}", params, {"harness.kind": "explain"})
    try:
        metrics = {f"{m}.{c}": v for m, row in summary.items() for c, v in row.items()}
        metrics.update({f"modality_importance.{m}": v for m, v in imp.items()})
        parent.log_metrics(metrics)
        for path in artifacts:
            parent.log_artifact(path, "explain")
    except BaseException:
        parent.finish("FAILED")
        raise
    parent.finish()
    return parent.run_id


def options_for_suite(suite: Any, opts: Any, out: Path | None) -> ExplainOptions:
    """The explain options a suite run implies: its file, data, store, seed and cache."""
    return ExplainOptions(
        suite=suite.source or suite.name, data=opts.data if suite.task == "explain" else None,
        out=out, tracking_uri=opts.tracking_uri, seed=opts.seed,
        cache_dir=opts.cache_dir, progress=opts.progress,
    )

