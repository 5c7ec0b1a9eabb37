"""The leakage and overfitting reports of a segmentation suite run.

Why its own module: the row-task audit (harness.audit.suite_reports) compares a leaky
protocol with a patient-level one through a surrogate model fitted on row targets
(identity probe, inflation, permutation, selection, preprocessing scope). A segmentation
suite has one sample per patient, label maps as targets and no leaky protocol, so what
applies is checked here with the same code and written in the same layout
(``reports/leakage.*``, ``reports/overfitting.*``, ``reports/audit.json``):

- split integrity of every manifest (patients, studies and exact or near-duplicate
  volumes crossing train/val/test), per fold;
- learning curves per arm and fold (training loss; validation Dice per epoch), the
  best and last epochs, and small-test-fold warnings.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Callable

import pandas as pd

from harness.audit import report as R
from harness.audit.images import fingerprints
from harness.audit.leakage import Finding, split_integrity
from harness.audit.overfitting import MIN_TEST_PATIENTS, curve_summary, read_histories
from harness.splits import SplitManifest

NOT_APPLICABLE = ("The row-task checks that need a leaky protocol to compare with or a surrogate model on row "
                  "targets (identity probe, protocol inflation, label-permutation test, selection on the test "
                  "set, preprocessing scope) do not apply: every segmentation protocol holds patients out and "
                  "the target is a label map. Pre-processing statistics are fitted on each fold's training "
                  "cases only (harness.segmentation.experiment.preprocess_cases).")


def _integrity(data: Any, manifests: dict[str, dict[str, SplitManifest]]) -> dict[str, tuple[pd.DataFrame, list[Finding]]]:
    out = {}
    for variant, view in data.views.items():
        if variant in manifests:
            out[variant] = split_integrity(view.samples, manifests[variant], fingerprints(view))
    return out


def _curves(result: Any, summary: dict[str, Any]
            ) -> tuple[pd.DataFrame, dict[str, dict[int, pd.DataFrame]], list[tuple[str, str]]]:
    """One row per arm (means over its folds), its histories, and (variant, warning)s."""
    n_test = {(r["baseline"], r["metric"]): r["n_patients"] for r in summary.get("results", [])}
    rows, curves, warnings = [], {}, []
    for run in result.runs:
        label = f"{run['baseline']} | {run['protocol']}" + (f" | {run['variant']}" if run["variant"] else "")
        histories = {k: h for k, h in read_histories(run["fold_dir"]).items() if len(h)}
        if not histories:
            continue
        curves[label] = histories
        per_fold = pd.DataFrame([curve_summary(h) for h in histories.values()])
        row: dict[str, Any] = {"arm": run["baseline"], "protocol": run["protocol"], "variant": run["variant"],
                               "folds": len(histories), **per_fold.mean(numeric_only=True).round(4).to_dict()}
        dice = [h["val_dice"] for h in histories.values() if "val_dice" in h and h["val_dice"].notna().any()]
        if dice:
            row["val_dice_best"] = round(float(sum(d.max() for d in dice) / len(dice)), 4)
            row["val_dice_last"] = round(float(sum(d.iloc[-1] for d in dice) / len(dice)), 4)
        rows.append(row)
        folds = max(len(histories), 1)
        patients = n_test.get((run["baseline"], "lesionwise_dice_mean"))
        if patients is not None and patients / folds < MIN_TEST_PATIENTS:
            warnings.append((run["variant"], f"{label}: about {patients / folds:.0f} test patients per fold "
                            f"(fewer than {MIN_TEST_PATIENTS}): wide CIs"))
    return pd.DataFrame(rows), curves, warnings


def write_segmentation_audit(*, suite: Any, data: Any, manifests: dict[str, dict[str, SplitManifest]],
                             result: Any, log: Callable[[str], None] = print) -> list[Path]:
    """``reports/leakage.*``, ``reports/overfitting.*`` and ``reports/audit.json``."""
    rdir = Path(result.out_dir) / "reports"
    integrity = _integrity(data, manifests)
    leak = R.Report(f"Leakage report: suite {suite.name}")
    undeclared = {v: [f for f in fs if not f.declared] for v, (_, fs) in integrity.items()}
    ds = result.summary.get("dataset", {})
    leak.intro.append(f"Dataset {ds.get('name')} ({ds.get('n_patients')} patients). "
                      f"Undeclared leaks found: {sum(len(f) for f in undeclared.values())}.")
    for variant, (folds, _) in integrity.items():
        s = R.Section(f"{'[' + variant + '] ' if variant else ''}Split integrity per protocol and fold")
        s.flags = [f.message for f in undeclared[variant]]
        if not s.flags:
            s.paragraphs.append("No undeclared leak: no patient, study or volume (exact or near-duplicate) "
                                "crosses a split that claims to hold patients out.")
        s.tables.append(("", folds))
        leak.sections.append(s)
    leak.sections.append(R.Section("Checks of the row-task audit that do not apply", paragraphs=[NOT_APPLICABLE]))
    paths = leak.write(rdir, "leakage")

    table, curves, warnings = _curves(result, result.summary)
    over = R.Report(f"Overfitting report: suite {suite.name}")
    s = R.Section("Learning per arm (means over folds)", flags=[w for _, w in warnings])
    s.paragraphs.append("train_loss: the training loss per epoch; val_dice: the validation cases' Dice per epoch, "
                        "which selects the kept epoch (best_epoch is the best validation loss where a model "
                        "records one). Arms that share a fit share its curves.")
    s.tables.append(("", table))
    over.sections.append(s)
    s = R.Section("Learning curves")
    if not curves:
        s.paragraphs.append("No arm in this run kept per-epoch histories.")
    for i, (label, hist) in enumerate(sorted(curves.items())):
        s.figures.append(R.Figure(f"curves-{i}", R.learning_curves(hist, f"{label}: training loss per fold"),
                                  f"{label}: training loss per fold"))
    over.sections.append(s)
    paths += over.write(rdir, "overfitting")
    js = rdir / "audit.json"
    js.write_text(json.dumps({"variants": {v: {"undeclared_flags": [f.to_dict() for f in fs], "warnings": [w for wv, w in warnings if wv == v]}
                                           for v, fs in undeclared.items()}}, indent=2) + "\n")
    paths.append(js)
    log(f"audit: {sum(len(f) for f in undeclared.values())} undeclared leak flag(s); reports in {rdir}")
    return paths
