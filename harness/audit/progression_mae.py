"""The audit of the capstone's 0.02-month MAE claim: ``python -m harness audit progression-mae``.

Why: the claim is a single number from a BiLSTM trained on 48 and tested on 12
patient-date-series rows, where every row of a patient has the same target and the
same patients sit on both sides. This module reruns that setup (the progression suite)
next to leave-one-patient-out and patient k-fold, with the mean predictor and the
patient memoriser, and writes ``audit.md`` (and ``audit.html``) beside ``summary.json``
with every number's 95% patient-bootstrap CI and a plain-language verdict.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd

from harness.audit import report as R
from harness.audit.claims import CLAIMS
from harness.audit.verdict import RULES, audit_record
from harness.audit.inflation import beats, bootstrap, difference
from harness.tasks.progression_stages import grader_sentence

#: The paper's reported test MAE in months (capstone, section 10, "LSTM Results").
PAPER_MAE_MONTHS = 0.02
PAPER_SPLIT = "row_random"
HONEST = ("leave_one_patient_out", "patient_kfold")
MODEL = "cnn_lstm"
MEAN = "mean"
MEMORISER = "patient_memorizer"
HONEST_CONTROL = "perfusion_ridge"
REGENERATE = "python -m harness audit progression-mae --out reports/reference/progression-mae"


def _ci(b) -> str:
    lo, hi = b.ci()
    return f"{b.point:.2f} [{lo:.2f}, {hi:.2f}]" if lo == lo else f"{b.point:.2f} [-]"


def audit_numbers(preds: dict, *, n_boot: int = 1000, seed: int = 0,
                  learning: dict | None = None) -> dict[str, Any]:
    """MAE with CI per baseline x protocol, and the paired comparisons the verdict needs.

    ``learning``: the did-not-learn guard per (baseline, protocol) (summary.json
    ``learning``); no comparison is drawn from a model it flagged.
    """
    learning = learning or {}
    est = {k: bootstrap("mae", v, n_boot=n_boot, seed=seed) for k, v in preds.items()}
    vs_mean = {}
    for b in (MODEL, HONEST_CONTROL, MEMORISER):
        for p in HONEST + (PAPER_SPLIT,):
            if (b, p) in preds and (MEAN, p) in preds and not (learning.get((b, p)) or {}).get("did_not_learn"):
                vs_mean[(b, p)] = beats("mae", preds[(b, p)], preds[(MEAN, p)], n_boot=n_boot, seed=seed)
    return {"est": est, "vs_mean": vs_mean, "learning": learning}


def _not_learned(numbers: dict[str, Any], baseline: str, protocols: tuple[str, ...]) -> list[str]:
    """The protocols under which the guard flagged ``baseline`` (with its two scores)."""
    out = []
    for p in protocols:
        g = numbers.get("learning", {}).get((baseline, p)) or {}
        if g.get("did_not_learn"):
            out.append(f"{p}: training {g['metric']} {g['train']:.2f} vs mean predictor {g['train_trivial']:.2f}")
    return out


def verdict(numbers: dict[str, Any]) -> list[str]:
    """Plain-language verdict from the numbers (no figure is hard-coded but the paper's)."""
    est, vs = numbers["est"], numbers["vs_mean"]
    honest = [p for p in HONEST if (MODEL, p) in est]
    lines = []
    if not honest or (MODEL, PAPER_SPLIT) not in est:
        return [f"Not enough results to judge: {MODEL} needs the paper's split and a patient-held-out protocol."]
    model_bad = _not_learned(numbers, MODEL, (PAPER_SPLIT,) + tuple(honest))
    if model_bad:
        return [f"**Inconclusive: {MODEL} did not learn** ({'; '.join(model_bad)}). Its training MAE does not "
                f"clearly beat the mean predictor on its own training rows, so its scores under any split say "
                f"nothing about the claim; no verdict is drawn from it."]
    model_beats = [p for p in honest if vs.get((MODEL, p), (None, False))[1]]
    row = est[(MODEL, PAPER_SPLIT)]
    held = ", ".join(f"{_ci(est[(MODEL, p)])} ({p})" for p in honest)
    mean_held = ", ".join(f"{_ci(est[(MEAN, p)])} ({p})" for p in honest if (MEAN, p) in est)
    if not model_beats:
        lines.append(
            f"**With whole patients held out, {MODEL} shows no skill.** Its "
            f"MAE is {held} months: no better than predicting the training mean "
            f"({mean_held}) beyond the uncertainty of the paired comparison.")
    elif len(model_beats) == len(honest):
        lines.append(
            f"**{MODEL} has some real skill, but the 0.02-month MAE is not it.** With whole patients held out, "
            f"the {MODEL} MAE is {held} months, better than the mean predictor ({mean_held}), yet far from "
            f"{PAPER_MAE_MONTHS} months.")
    else:
        lines.append(
            f"**Mixed evidence.** With whole patients held out, the {MODEL} MAE is {held} months; it beats the mean "
            f"predictor ({mean_held}) only under {', '.join(model_beats)}. The 0.02-month figure is not reproduced.")
    mem_bad = _not_learned(numbers, MEMORISER, (PAPER_SPLIT,) + tuple(honest))
    if mem_bad:
        lines.append(f"No memoriser comparison: {MEMORISER} did not learn ({'; '.join(mem_bad)}).")
    elif (MEMORISER, PAPER_SPLIT) in est:
        mem_row = est[(MEMORISER, PAPER_SPLIT)]
        mem_held = ", ".join(_ci(est[(MEMORISER, p)]) for p in honest if (MEMORISER, p) in est)
        lines.append(
            f"The paper's row split puts the same patients in training and test and every row of a patient carries "
            f"the same target; there the {MODEL} MAE drops to {_ci(row)} months. The patient memoriser, which can "
            f"do nothing but recognise a patient and copy its training target, reaches {_ci(mem_row)} on that split "
            f"and {mem_held} with patients held out: the row split rewards recognising patients, not predicting "
            f"progression.")
    if not mem_bad:
        lines += mechanism(est)
    ctl_bad = _not_learned(numbers, HONEST_CONTROL, tuple(honest))
    if ctl_bad:
        lines.append(f"No positive-control comparison: {HONEST_CONTROL} did not learn ({'; '.join(ctl_bad)}).")
    elif (HONEST_CONTROL, honest[0]) in est:
        ok = [p for p in honest if vs.get((HONEST_CONTROL, p), (None, False))[1]]
        lines.append(
            f"Positive control: {HONEST_CONTROL} (ridge on the perfusion peak of the patient's own scans) "
            + (f"beats the mean predictor with patients held out ({', '.join(f'{_ci(est[(HONEST_CONTROL, p)])} ({p})' for p in ok)}), "
               "so the harness can see real signal when the images carry it."
               if ok else "does not beat the mean predictor here either; on this cohort no honest model shows signal."))
    return lines


#: What the eligibility rule should find, from what the cohort is (said in every progression audit).
ELIGIBILITY_TRUTH = (
    "Eligibility against the known truth: Brain-Tumor-Progression holds patients with glioblastoma (WHO "
    "grade IV; 'PGBM' in the IDs), scanned after treatment and again at progression, and the synthetic cohort "
    "keeps that (every patient grade IV at both scans, `truth.csv`). A grade cannot rise from IV, so a grader "
    "that reads the grade keeps no patient by the paper's rule (a rise from grade 2 to 3 or 4): the paper's 6 "
    "eligible patients of 20 are grading errors, and a run whose rule keeps few or none is the correct outcome, "
    "not a failure of its grader."
)


def pseudo_grade_counts(data: Any) -> str:
    """Stage 2's pseudo-grades per scan, counted ("" when the run has no stage tables)."""
    table = getattr(data, "stage_tables", {}).get("pseudo_grades")
    if table is None or "pseudo_grade" not in getattr(table, "columns", ()):
        return ""
    counts = table["pseudo_grade"].astype(str).value_counts()
    parts = ", ".join(f"{grade} on {n}" for grade, n in sorted(counts.items(), key=lambda kv: -kv[1]))
    return f"Stage 2 pseudo-grades: {parts} of {len(table)} scans. "


def mechanism(est: dict) -> list[str]:
    """Does the paper's split let the model reach a memoriser's MAE (the audit's rule 2: at
    most 1.25x the memoriser's and 0.3x the mean predictor's)? Each criterion is said apart,
    as a memoriser at exactly zero makes the first one unreachable for any learner."""
    keys = [(MODEL, PAPER_SPLIT), (MEMORISER, PAPER_SPLIT), (MEAN, PAPER_SPLIT)]
    if not all(k in est for k in keys):
        return []
    model, memo, mean = (float(est[k].point) for k in keys)
    vs_memo = model <= 1.25 * memo
    vs_mean = model <= 0.3 * mean
    ratio_memo = f"{model / memo:.2f}x the memoriser's {memo:.3f}" if memo > 0 else \
        f"against the memoriser's {memo:.3f} (no ratio to zero)"
    head = ("The harness reproduces the mechanism behind the 0.02 months" if vs_memo and vs_mean else
            "The harness reproduces the mechanism only in part" if vs_mean else
            "The harness does not reproduce the mechanism behind the 0.02 months")
    return [f"**Mechanism.** {head}: on the paper's split {MODEL} reaches {model:.3f} months, "
            f"{ratio_memo} (needs <= 1.25x: {'yes' if vs_memo else 'no'}) and "
            f"{model / mean:.2f}x the mean predictor's {mean:.3f} (needs <= 0.3x: {'yes' if vs_mean else 'no'}). "
            f"Recognising the patient is what scores on this split: the memoriser, which does nothing else, "
            f"reaches {memo:.3f}."]


def rule_verdict(summary: dict) -> str:
    """The verdict by the audit rules (the one ``audit.json`` carries), from the run's summary."""
    record = audit_record(CLAIMS["progression-mae"], summary)
    rep = {None: "n/a", True: "yes", False: "no"}[record["reproduced"]]
    return (f"**Verdict by the rules below: {record['verdict']}** (reproduced under the paper's split: {rep}). "
            + "; ".join(record["reasons"]) + ".")


def regenerate_command(suite_name: str) -> str:
    """The audit command that reruns this suite's audit (the claim's regime, if not its default)."""
    for regime, name in CLAIMS["progression-mae"].regimes.items():
        if name == suite_name:
            return f"{REGENERATE} --regime {regime}".replace("reports/reference/progression-mae",
                                                               f"reports/reference/progression-mae/{regime}-regime")
    return REGENERATE


def write_audit(out_dir: Path, summary: dict, audit: Any, *, suite: Any, data: Any, seed: int) -> list[Path]:
    """``audit.md`` and ``audit.html`` beside ``summary.json``."""
    numbers = audit_numbers(audit.preds, n_boot=int(suite.n_boot), seed=seed,
                            learning=getattr(audit, "learning", {}))
    est, vs = numbers["est"], numbers["vs_mean"]
    rows = []
    for b in (MODEL, MEAN, "median", MEMORISER, HONEST_CONTROL):
        for p in (PAPER_SPLIT,) + HONEST:
            if (b, p) in est:
                e = est[(b, p)]
                d = vs.get((b, p))
                g = numbers["learning"].get((b, p)) or {}
                rows.append({"baseline": b + (" (did not learn)" if g.get("did_not_learn") else ""), "protocol": p + (" (paper's split, LEAKY)" if p == PAPER_SPLIT else ""),
                             "MAE (months)": e.point, "95% CI": e.ci(), "patients": e.n_patients,
                             "minus mean [95% CI]": "" if d is None else f"{d[0].point:+.2f} {R.fmt(d[0].ci())}",
                             "beats mean": "" if d is None else d[1]})
    table = pd.DataFrame(rows)
    infl = []
    for b in (MODEL, MEAN, MEMORISER, HONEST_CONTROL):
        for p in HONEST:
            if (b, PAPER_SPLIT) in est and (b, p) in est:
                d = difference(est[(b, PAPER_SPLIT)], est[(b, p)])
                infl.append({"baseline": b, "paper split minus": p, "difference (months)": d.point, "95% CI": d.ci()})
    ds = summary["dataset"]
    tags = summary.get("stages", {}).get("tags", {})
    n_rows = {p: sum(len(f) for f in audit.preds.get((MODEL, p), [])) for p in (PAPER_SPLIT,) + HONEST}
    rep = R.Report("Audit: the 0.02-month MAE claim (capstone CNN-LSTM progression)")
    rep.intro += [
        f"Claim: a BiLSTM on DWT-DCT vectors of patient-date-series rows predicts months until progression "
        f"(MonthDif) with a test MAE of **{PAPER_MAE_MONTHS} months**, trained on 48 rows and tested on 12; every "
        f"row of a patient carries the same target and the split is over rows.",
        f"Data: {ds['name']} ({ds['n_patients']} patients, {ds['n_samples']} rows; fingerprint "
        f"{ds['fingerprint'][:16]}). Stage 1: {grader_sentence(tags)} (pseudo-grades mean something only "
        f"well above the commonest grade on unseen patients). {pseudo_grade_counts(data)}"
        f"Stage 3: {tags.get('eligibility_outcome', 'n/a')}.",
        ELIGIBILITY_TRUTH,
        f"Regenerate: `{regenerate_command(suite.name)}` (add `--data PATH` for a real Brain-Tumor-Progression download).",
    ]
    s = R.Section("Verdict")
    s.paragraphs = [rule_verdict(summary), *verdict(numbers)]
    rep.sections.append(s)
    s = R.Section("MAE under each split (95% patient-bootstrap CI)")
    s.paragraphs.append(
        f"Paper's reported MAE: {PAPER_MAE_MONTHS} months (12 test rows). Here the paper's split tests "
        f"{n_rows.get(PAPER_SPLIT, 0)} rows; leave-one-patient-out and patient k-fold test every row once, with "
        "its patient unseen in training. 'minus mean' is the paired difference to the mean predictor on the same "
        "test rows (negative: better than the mean).")
    s.tables.append(("", table))
    s.tables.append(("Inflation: paper's split minus patient-held-out", pd.DataFrame(infl)))
    fig_rows = [{"baseline": b, "protocol": p, "mean": e.point, "ci95": e.ci()} for (b, p), e in est.items()
                if b in (MODEL, MEAN, MEMORISER, HONEST_CONTROL)]
    if fig_rows:
        s.figures.append(R.Figure("mae", R.bars_with_ci(fig_rows, group="protocol", bar="baseline",
                                                        ylabel="MAE (months)", hline=PAPER_MAE_MONTHS,
                                                        title="MAE by split (dashed: the paper's 0.02 months)"),
                                  "MAE per split and baseline with 95% CI; dashed line: the paper's 0.02 months"))
    rep.sections.append(s)
    t = audit.leakage.target
    s = R.Section("Why the row split scores")
    s.paragraphs += [t["sentence"] + ".", t["meaning"]]
    for probe in audit.probes:
        s.paragraphs.append(probe.sentence())
    for r in audit.permutation:
        s.paragraphs.append(f"Label permutation under {r.protocol}: surrogate MAE {r.observed:.2f} vs "
                            f"{r.null_mean:.2f} with shuffled patient targets, p = {r.p_value:.3f}.")
    s.paragraphs.append("Full checks: reports/leakage.html and reports/overfitting.html in this folder.")
    rep.sections.append(s)
    s = R.Section("The rules behind the verdict")
    s.paragraphs = list(RULES)
    rep.sections.append(s)
    md = Path(out_dir) / "audit.md"
    paths = rep.write(Path(out_dir), "audit")
    return [p for p in paths if p.suffix in (".md", ".html")] if md.exists() else paths
