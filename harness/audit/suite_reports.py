"""The leakage and overfitting reports of one suite run (called at the end of run_suite).

Why one place: every check reads the same run (task view, manifests, predictions, fold
histories), so they are computed once here and laid out into the two documents, plus
``reports/audit.json`` with the flags for scripts and tests.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pandas as pd

from harness.audit import cache as C
from harness.audit import report as R
from harness.audit.features import audit_features
from harness.audit.head_outline import OUTLINE_FEATURES, outline_features
from harness.audit.identity_probe import IdentityProbe, identity_probe
from harness.audit.site_confound import SiteAssociation, site_association
from harness.audit.images import fingerprints
from harness.audit.inflation import CONTROL_BASELINES, inflation_table, read_predictions, withheld_inflation
from harness.audit.leakage import NEAR_DUPLICATE_THRESHOLD, LeakageResult, check_leakage
from harness.audit.overfitting import OverfittingResult, did_not_learn_keys, learning_index, overfitting_table
from harness.audit.permutation import PermutationResult, permutation_test
from harness.audit.provenance import label_provenance
from harness.audit.selection import SelectionResult, preprocessing_scope, selection_study
from harness.guard import MAX_GUARD_ROWS, RULE as LEARNING_RULE
from harness.metrics import PATIENT_METRICS
from harness.splits import SplitManifest, is_leaky

DEFAULTS: dict[str, Any] = {
    "near_duplicate_threshold": NEAR_DUPLICATE_THRESHOLD,
    "n_permutations": 99,
    "n_boot": None,  # default: the suite's
    "selection": True,
}


@dataclass
class VariantAudit:
    """Everything the audit found for one task variant."""

    variant: str
    metric: str
    leakage: LeakageResult
    probe: IdentityProbe | None
    inflation: pd.DataFrame
    permutation: list[PermutationResult]
    provenance: pd.DataFrame
    overfitting: OverfittingResult
    selection: SelectionResult | None = None
    scope: pd.DataFrame = field(default_factory=pd.DataFrame)
    preds: dict = field(default_factory=dict, repr=False)
    leaky: dict[str, bool] = field(default_factory=dict)
    #: The did-not-learn guard of each (baseline, protocol) (summary.json ``learning``).
    learning: dict[tuple[str, str], dict] = field(default_factory=dict)
    #: Why some inflation rows are missing (a baseline that did not learn).
    withheld: list[str] = field(default_factory=list)
    #: The same inflation table for the suite's first patient-level metric, if it has one.
    patient_metric: str | None = None
    patient_inflation: pd.DataFrame = field(default_factory=pd.DataFrame)
    #: Site x target over patients (harness.audit.site_confound); None without two known sites.
    site: SiteAssociation | None = None
    #: The identity probe on head outlines (harness.audit.head_outline), beside ``probe``.
    outline_probe: IdentityProbe | None = None

    @property
    def probes(self) -> list[IdentityProbe]:
        """Both identity probes that ran, the stronger (higher accuracy) first; one that
        could not run (accuracy NaN: fewer than two patients) last."""
        found = [p for p in (self.probe, self.outline_probe) if p is not None]
        return sorted(found, key=lambda p: -1.0 if np.isnan(p.accuracy) else p.accuracy, reverse=True)

    @property
    def did_not_learn(self) -> set[tuple[str, str]]:
        return {k for k, g in self.learning.items() if g.get("did_not_learn")}


def audit_variant(*, variant: str, task_data, manifests: dict[str, SplitManifest], out_dir: Path,
                  summary: dict, runs: list[dict], suite, opts, stage_tables: dict, views: dict,
                  seed: int) -> VariantAudit:
    cfg = {**DEFAULTS, **(suite.audit or {})}
    kind = task_data.target_kind
    metric = suite.metrics[0]
    n_boot = int(cfg["n_boot"] or suite.n_boot)
    samples = task_data.samples
    fp = fingerprints(task_data)
    cache = C.AuditCache.under(getattr(opts, "cache_dir", None))
    near = float(cfg["near_duplicate_threshold"])
    shas = {p: m.sha256 for p, m in manifests.items()}
    leak = cache.cached("leakage", C.leakage_inputs(samples, kind, manifests, fp, near, manifest_shas=shas),
                        lambda: check_leakage(samples, kind, manifests, fp, near_threshold=near),
                        C.leakage_encode, C.leakage_decode)
    baselines = opts.baselines or suite.baselines
    x, source = audit_features(task_data, baselines=baselines, baseline_params=suite.baseline_params,
                               profile=opts.profile, cache_dir=opts.cache_dir, thumbs=fp.thumbs)
    regression = kind == "regression"
    inputs = C.surrogate_inputs(x, samples, manifests, metric=metric, regression=regression,
                                classes=task_data.classes, seed=seed, manifest_shas=shas)
    probe = cache.cached(
        "probe", {**inputs, "features": source},
        lambda: identity_probe(x, samples["patient_id"].to_numpy(), features=source, seed=seed),
        C.probe_encode, C.probe_decode)
    outline_probe = cache.cached(
        "probe-outline", {"pixels": C.array_digest(fp.hashes), "samples": C.samples_digest(samples), "seed": seed},
        lambda: identity_probe(outline_features(task_data), samples["patient_id"].to_numpy(),
                               features=OUTLINE_FEATURES, seed=seed, standardize=False),
        C.probe_encode, C.probe_decode)
    preds = read_predictions(out_dir, kind, variant)
    leaky = {p: is_leaky(m) for p, m in manifests.items()}
    dnl = did_not_learn_keys(summary, variant)
    infl = inflation_table(preds, leaky, metric, classes=task_data.classes, n_boot=n_boot, seed=seed,
                           did_not_learn=dnl)
    patient_metric = next((m for m in suite.metrics if m in PATIENT_METRICS), None)
    patient_infl = pd.DataFrame() if patient_metric is None or patient_metric == metric else inflation_table(
        preds, leaky, patient_metric, classes=task_data.classes, n_boot=n_boot, seed=seed, did_not_learn=dnl)
    n_jobs = max(1, int(getattr(opts, "jobs", 1) or 1))  # the run's --jobs: refits in parallel
    n_perm = int(cfg["n_permutations"])
    perm = cache.cached(
        "permutation", {**inputs, "n_permutations": n_perm},
        lambda: permutation_test(x, samples, manifests, metric=metric, regression=regression,
                                 classes=task_data.classes, n_permutations=n_perm, seed=seed),
        C.permutation_encode, C.permutation_decode)
    prov = label_provenance(stage_tables, samples, views)
    icc = 1.0 - float(leak.target["share_within"])
    sub = {**summary, "results": [r for r in summary.get("results", []) if r.get("target", "") == variant],
           "learning": [g for g in summary.get("learning", []) if g.get("target", "") == variant]}
    over = overfitting_table(sub, [r for r in runs if r["variant"] == variant], preds, metric=metric, icc=icc)
    sel = scope = None
    if cfg["selection"]:
        y = samples["target"].to_numpy()
        sel = cache.cached(
            "selection", inputs,
            lambda: selection_study(x, y, samples["patient_id"].to_numpy(), metric=metric, regression=regression,
                                    classes=task_data.classes, seed=seed, n_jobs=n_jobs),
            C.selection_encode, C.selection_decode)
        scope = cache.cached(
            "scope", inputs,
            lambda: preprocessing_scope(x, y, pd.Index(samples["sample_id"].astype(str)), manifests, metric=metric,
                                        regression=regression, classes=task_data.classes),
            C.frame_encode, C.frame_decode)
    return VariantAudit(variant, metric, leak, probe, infl, perm, prov, over, sel,
                        scope if scope is not None else pd.DataFrame(), preds, leaky,
                        learning=learning_index(summary, variant), withheld=withheld_inflation(preds, leaky, dnl),
                        patient_metric=patient_metric, patient_inflation=patient_infl,
                        site=site_association(samples, regression=regression, seed=seed),
                        outline_probe=outline_probe)


# --------------------------------------------------------------------------- documents


def _prefix(a: VariantAudit) -> str:
    return f"[{a.variant}] " if a.variant else ""


def _metric_rows(summary: dict, variant: str, metric: str) -> list[dict]:
    return [r for r in summary.get("results", []) if r.get("target", "") == variant and r["metric"] == metric]


def _png(cache: C.AuditCache | None, kind: str, data: Any, draw: Callable[[], bytes]) -> bytes:
    """A figure's PNG, drawn once per content of its data (a warm rerun imports no matplotlib)."""
    if cache is None:
        return draw()
    # report.py draws the figures: a change there must redraw them.
    inputs = {"data": C.figure_inputs(data), "draw": C.module_digest("report.py")}
    return cache.cached(kind, inputs, draw, C.png_encode, C.png_decode)


def leakage_report(suite_name: str, audits: list[VariantAudit], summary: dict,
                   cache: C.AuditCache | None = None) -> R.Report:
    rep = R.Report(f"Leakage report: suite {suite_name}")
    n_flags = sum(len(a.leakage.undeclared()) for a in audits)
    rep.intro.append(
        f"Dataset {summary['dataset']['name']} ({summary['dataset']['n_patients']} patients, "
        f"{summary['dataset']['n_samples']} samples). Undeclared leaks found: {n_flags}. Leaks under protocols "
        "declared leaky (the published ones, reproduced on purpose) are listed as 'declared'.")
    for a in audits:
        p = _prefix(a)
        s = R.Section(f"{p}1. Split integrity per protocol and fold")
        s.flags = [f.message for f in a.leakage.findings if not f.declared and f.kind != "target constant within patients"]
        declared = [f.message for f in a.leakage.findings if f.declared and f.kind != "target constant within patients"]
        if not s.flags:
            s.paragraphs.append("No undeclared leak: no patient, study or image (exact or near-duplicate) "
                                "crosses a split that claims to hold patients out.")
        if declared:
            s.paragraphs.append("Declared (protocol leaky by design): " + " | ".join(declared[:8])
                                + (f" | ... and {len(declared) - 8} more" if len(declared) > 8 else ""))
        s.tables.append(("", a.leakage.folds))
        rep.sections.append(s)

        t = a.leakage.target
        s = R.Section(f"{p}2. Target structure")
        s.paragraphs += [t["sentence"] + ".", t["meaning"]]
        s.flags = [f.message for f in a.leakage.findings if f.kind == "target constant within patients" and not f.declared]
        oracle = pd.DataFrame([{"protocol": k, **v} for k, v in t["oracle"].items()])
        s.tables.append(("What a pure patient recogniser gets on each split", oracle))
        s.paragraphs += [f"{f.message} (declared)" for f in a.leakage.findings
                         if f.kind == "target constant within patients" and f.declared]
        if a.site is not None:
            s.paragraphs.append("Site and target: " + a.site.sentence())
            if a.site.flagged:
                s.flags.append(f"site and target associated (permutation p = {a.site.p_value:.3f}): a patient-"
                               "held-out split does not remove a site confound (below)")
            s.tables.append(("Patients per site and target" if a.site.statistic == "chi2"
                             else "Patients and target median per site", a.site.table))
        else:
            s.paragraphs.append("Site and target: not checked (the samples name fewer than two acquiring "
                                "sites; DICOM InstitutionName is read where the data has it).")
        rep.sections.append(s)

        s = R.Section(f"{p}3. Identity probe")
        for probe in a.probes:
            s.paragraphs.append(probe.sentence())
        if a.probes and a.probes[0].lift >= 2:
            s.paragraphs.append("The patient is recognisable from these inputs: under any split that puts a "
                                "patient's rows on both sides, a model can look the target up.")
        if len(a.probes) == 2:
            s.paragraphs.append("The model features keep what the suite's feature baselines see; the head outline "
                                "is the same in every contrast of one session and in every image a network sees, "
                                "so it names the patient where a held-out row can only be matched to another "
                                "contrast. The audit's identity figure is the stronger of the two.")
        rep.sections.append(s)

        s = R.Section(f"{p}4. Protocol inflation ({a.metric})")
        s.paragraphs.append("Each baseline's metric under the leaky protocol minus under the patient-held-out one, "
                            "with a 95% patient-bootstrap CI. Controls: " + ", ".join(CONTROL_BASELINES) + ".")
        if a.withheld:
            s.paragraphs.append("; ".join(a.withheld) + ". A model that did not beat the trivial control on its own "
                                "training rows says nothing about the split (rule: " + LEARNING_RULE + ").")
        if not a.inflation.empty:
            s.tables.append(("", a.inflation.drop(columns=["metric"])))
        if not a.patient_inflation.empty:
            s.tables.append((f"The same with one prediction per patient and fold ({a.patient_metric})",
                             a.patient_inflation.drop(columns=["metric"])))
        rows = [{**r, "baseline": r["baseline"] + (" (did not learn)" if r.get("did_not_learn") else "")}
                for r in _metric_rows(summary, a.variant, a.metric)]
        if rows:
            s.figures.append(R.Figure(f"{a.variant or 'main'}-protocols", _png(
                cache, "fig-bars", {"rows": rows, "metric": a.metric},
                lambda: R.bars_with_ci(rows, group="baseline", bar="protocol", ylabel=a.metric,
                                       title=f"{a.metric} per baseline and protocol (95% CI)")),
                f"{p}{a.metric} by protocol, 95% CI whiskers"))
        rep.sections.append(s)

        s = R.Section(f"{p}5. Label provenance")
        s.flags = [m for m, f in zip(a.provenance["message"], a.provenance["flag"]) if f]
        if a.provenance.empty:
            s.paragraphs.append("No pseudo-labels, imputed labels or sibling labels in this task.")
        s.tables.append(("", a.provenance))
        rep.sections.append(s)

        s = R.Section(f"{p}6. Preprocessing scope")
        s.paragraphs.append("Every baseline fits its normalisation statistics on training rows only. The surrogate "
                            "(ridge on the audit features) is run both ways to show what fitting them on all rows, "
                            "test included, would change.")
        s.tables.append(("", a.scope))
        rep.sections.append(s)

        s = R.Section(f"{p}7. Selection on the test set")
        if a.selection is not None:
            sel = a.selection
            s.paragraphs.append(
                f"Choosing the configuration and the train share by the test score (as Valbuena et al. did) picks "
                f"alpha={sel.selected['alpha']:g}, train share {sel.selected['train_share']:.0%} and reports "
                f"{sel.metric} {sel.selected_score:.3f}; nested patient-level CV over the same grid gives "
                f"{sel.nested_score:.3f}. Optimism of selecting on the test set: {sel.optimism:+.3f}.")
            s.tables.append(("Grid (mean test score over repeated patient splits)",
                             sel.grid.pivot(index="alpha", columns="train_share", values="test_score").reset_index()))
        rep.sections.append(s)
    return rep


def overfitting_report(suite_name: str, audits: list[VariantAudit], cache: C.AuditCache | None = None) -> R.Report:
    rep = R.Report(f"Overfitting report: suite {suite_name}")
    for a in audits:
        p = _prefix(a)
        o = a.overfitting
        s = R.Section(f"{p}Generalisation, folds and sample size ({a.metric})")
        warn = sorted({w.split(": ", 1)[1] + f" [{w.split(' | ')[1].split(':')[0]}]" for w in o.warnings})
        s.flags = o.not_learned + warn
        s.paragraphs.append("Did-not-learn guard: every fitted model is scored on its own training rows (at most "
                            f"{MAX_GUARD_ROWS}, drawn deterministically) and validation rows, next to the trivial control on the "
                            "same rows (train_score, train_trivial, val_score, val_trivial). Rule: " + LEARNING_RULE
                            + ". The inflation, audit and verdict sections draw no comparison from a model that "
                            "did not learn." + ("" if o.not_learned else " No model was flagged."))
        s.paragraphs.append("effective_n: rows discounted for within-patient correlation of the target "
                            "(Kish's design effect); when every row of a patient has the same target it equals "
                            "the number of patients. Loss columns are means over folds of the per-epoch histories.")
        s.tables.append(("", o.table))
        rep.sections.append(s)
        s = R.Section(f"{p}Learning curves")
        if not o.curves:
            s.paragraphs.append("No baseline in this run keeps per-epoch histories.")
        for (b, proto), curves in sorted(o.curves.items()):
            title = f"{b} | {proto}: train (solid) and validation (dashed) loss per fold"
            s.figures.append(R.Figure(f"{a.variant or 'main'}-curves-{b}-{proto}", _png(
                cache, "fig-curves", {"curves": curves, "title": title},
                lambda: R.learning_curves(curves, title)),
                f"{p}{b} under {proto}: learning curves per fold; dots mark the best epoch"))
        rep.sections.append(s)
        s = R.Section(f"{p}Label-permutation test")
        s.paragraphs.append("Targets shuffled between patients; a fast surrogate (ridge on the audit features) "
                            "refitted on every fold. p = share of shuffles scoring at least as well as the real labels.")
        s.tables.append(("", pd.DataFrame([{"protocol": r.protocol, "metric": r.metric, "observed": r.observed,
                                            "null_mean": r.null_mean, "p_value": r.p_value,
                                            "leaky_protocol": a.leaky.get(r.protocol)} for r in a.permutation])))
        if a.permutation:
            s.figures.append(R.Figure(f"{a.variant or 'main'}-permutation", _png(
                cache, "fig-null", {"permutation": a.permutation}, lambda: R.null_histograms(a.permutation)),
                                      f"{p}permutation null (grey) and observed score (red) per protocol"))
        rep.sections.append(s)
    return rep


def audit_json(audits: list[VariantAudit]) -> dict:
    return {
        "variants": {
            a.variant: {
                "flags": [f.to_dict() for f in a.leakage.findings],
                "undeclared_flags": [f.to_dict() for f in a.leakage.undeclared()],
                "target": {k: v for k, v in a.leakage.target.items()},
                "site": None if a.site is None else a.site.to_dict(),
                "identity_probe": None if not a.probes else {
                    "accuracy": a.probes[0].accuracy, "chance": a.probes[0].chance, "features": a.probes[0].features,
                    "probes": [{"features": q.features, "accuracy": q.accuracy, "chance": q.chance,
                                "n_rows": q.n_rows, "n_patients": q.n_patients} for q in a.probes]},
                "permutation": {r.protocol: {"observed": r.observed, "p_value": r.p_value} for r in a.permutation},
                "provenance_flags": [m for m, f in zip(a.provenance["message"], a.provenance["flag"]) if f],
                "warnings": a.overfitting.warnings,
                "learning_rule": LEARNING_RULE,
                "did_not_learn": sorted(f"{b} | {p}" for b, p in a.did_not_learn),
                "inflation_withheld": a.withheld,
                "selection": None if a.selection is None else {
                    "selected": a.selection.selected, "selected_score": a.selection.selected_score,
                    "nested_score": a.selection.nested_score, "optimism": a.selection.optimism},
            } for a in audits
        }
    }


def write_suite_reports(*, suite, opts, data, manifests: dict[str, dict[str, SplitManifest]], result, seed: int,
                        log: Callable[[str], None] = print) -> list[Path]:
    """Compute every check for every task variant and write the reports under ``reports/``."""
    out_dir = Path(result.out_dir)
    audits = []
    for variant, view in data.views.items():
        if variant not in manifests:
            continue
        audits.append(audit_variant(variant=variant, task_data=view, manifests=manifests[variant], out_dir=out_dir,
                                    summary=result.summary, runs=result.runs, suite=suite, opts=opts,
                                    stage_tables=data.stage_tables, views=data.views, seed=seed))
    rdir = out_dir / "reports"
    cache = C.AuditCache.under(getattr(opts, "cache_dir", None))
    paths = leakage_report(suite.name, audits, result.summary, cache).write(rdir, "leakage")
    paths += overfitting_report(suite.name, audits, cache).write(rdir, "overfitting")
    js = rdir / "audit.json"
    js.write_text(json.dumps(audit_json(audits), indent=2, default=_jsonable) + "\n")
    paths.append(js)
    n = sum(len(a.leakage.undeclared()) for a in audits)
    log(f"audit: {n} undeclared leak flag(s); reports in {rdir}")
    if suite.task == "progression" and audits:
        from harness.audit.progression_mae import write_audit

        paths += write_audit(out_dir, result.summary, audits[0], suite=suite, data=data, seed=seed)
    return paths


def _jsonable(obj: Any) -> Any:
    if isinstance(obj, (np.floating, np.integer)):
        return obj.item()
    if isinstance(obj, np.bool_):
        return bool(obj)
    if isinstance(obj, (set, tuple)):
        return list(obj)
    return str(obj)
