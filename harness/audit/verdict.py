"""The verdict on a published claim, from the numbers of one suite run.

The rules are :data:`RULES` (stated in every audit report, tested on fixed numbers in
tests/test_claims.py). A verdict never rests on a model that did not learn.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Sequence

from harness.audit.claims import Claim

#: A score within this of the reported value counts as reaching the paper's regime.
REPRODUCTION_MARGIN = 0.10
RULES: list[str] = [
    "1. A model that did not learn carries no verdict: if the reproducing baseline is marked did_not_learn "
    "under the paper's protocol or an honest protocol, or a number is missing, the verdict is 'inconclusive'.",
    "2. Reproduced: the paper-protocol result reaches the reported regime. For a score, mean >= reported - "
    f"{REPRODUCTION_MARGIN:g}; for an error (MAE), the mechanism behind a tiny error: mean <= 1.25x the "
    "memoriser's and <= 0.3x the mean predictor's under the same split.",
    "3. Survives: the reported value lies within what patients held out allow: some honest protocol's 95% CI "
    "upper bound >= reported (for an error, its lower bound <= reported).",
    "4. Does not survive: every honest CI lies beyond the reported value, and the gap is the split's doing: "
    "the claim was reproduced under the paper's protocol, or the paper protocol's CI lies entirely beyond "
    "every honest CI.",
    "5. Otherwise inconclusive: neither protocol reaches the reported number, and they are not separated, so "
    "the run cannot tell the paper's leak from a weaker reproduction.",
]


@dataclass
class Result:
    """One (baseline, protocol) number of the claim's metric."""

    baseline: str
    protocol: str
    mean: float | None
    ci95: tuple[float | None, float | None] = (None, None)
    did_not_learn: bool = False

    def as_dict(self) -> dict[str, Any]:
        return {"baseline": self.baseline, "protocol": self.protocol, "mean": self.mean,
                "ci95": list(self.ci95), "did_not_learn": self.did_not_learn}


@dataclass
class Verdict:
    verdict: str
    reproduced: bool | None
    reasons: list[str] = field(default_factory=list)


def _ok(value: float | None) -> bool:
    return value is not None and not (isinstance(value, float) and math.isnan(value))


def reproduced(claim: Claim, paper: Result, trivial: Sequence[Result]) -> bool | None:
    if not _ok(paper.mean):
        return None
    assert paper.mean is not None
    if not claim.lower_is_better:
        return paper.mean >= claim.reported - REPRODUCTION_MARGIN
    by_name = {t.baseline: t for t in trivial if t.protocol == paper.protocol and _ok(t.mean)}
    memo, mean = by_name.get("patient_memorizer"), by_name.get("mean")
    if memo is None or mean is None:
        return None
    return paper.mean <= 1.25 * float(memo.mean) and paper.mean <= 0.3 * float(mean.mean)  # type: ignore[arg-type]


def decide(claim: Claim, paper: Result, honest: Sequence[Result], trivial: Sequence[Result]) -> Verdict:
    """Apply the rules above to one claim's numbers."""
    unlearned = [r for r in (paper, *honest) if r.did_not_learn]
    if unlearned:
        names = ", ".join(f"{r.baseline} under {r.protocol}" for r in unlearned)
        return Verdict("inconclusive", None, [f"{names} did not learn (training score not clearly above the "
                                              "trivial control): a model that learned nothing carries no verdict"])
    bounds = [r.ci95[1] if not claim.lower_is_better else r.ci95[0] for r in honest]
    if not _ok(paper.mean) or not honest or not all(_ok(b) for b in bounds):
        return Verdict("inconclusive", None, ["a number is missing (the paper protocol's result or an honest CI)"])
    rep = reproduced(claim, paper, trivial)
    cmp = (lambda b: b >= claim.reported) if not claim.lower_is_better else (lambda b: b <= claim.reported)
    fmt = f"{claim.metric} {claim.reported:g}"
    if any(cmp(float(b)) for b in bounds):  # type: ignore[arg-type]
        return Verdict("survives", rep, [f"the reported {fmt} lies within an honest protocol's 95% CI "
                                         f"({_ci_text(honest)}): holding patients out does not rule it out"])
    paper_lo, paper_hi = paper.ci95
    if not claim.lower_is_better:
        separated = _ok(paper_lo) and all(float(paper_lo) > float(r.ci95[1]) for r in honest)  # type: ignore[arg-type]
    else:
        separated = _ok(paper_hi) and all(float(paper_hi) < float(r.ci95[0]) for r in honest)  # type: ignore[arg-type]
    if rep or separated:
        why = "the harness reproduces the claim under the paper's protocol" if rep else \
            "the paper protocol's CI lies entirely beyond every honest CI (the split inflates the score)"
        return Verdict("does not survive", rep, [
            f"with patients held out the result is {_ci_text(honest)}, beyond the reported {fmt}", why])
    return Verdict("inconclusive", rep, [
        f"neither the paper's protocol ({paper.mean:.3f}) nor the honest ones ({_ci_text(honest)}) reach the "
        f"reported {fmt} here, and the two are not separated: this run cannot tell the paper's leak from a "
        "weaker reproduction"])


def _ci_text(results: Sequence[Result]) -> str:
    parts = []
    for r in results:
        lo, hi = r.ci95
        ci = f" [{lo:.3f}, {hi:.3f}]" if _ok(lo) and _ok(hi) else ""
        parts.append(f"{r.protocol} {r.mean:.3f}{ci}" if _ok(r.mean) else f"{r.protocol} n/a")
    return "; ".join(parts)


def results_from_summary(summary: dict[str, Any], claim: Claim, baseline: str, protocol: str) -> Result:
    """The claim's metric for (baseline, protocol) from a ``summary.json`` dict."""
    for entry in summary.get("results", []):
        if (entry.get("baseline") == baseline and entry.get("protocol") == protocol
                and entry.get("metric") == claim.metric
                and (claim.target is None or entry.get("target") in (None, claim.target))):
            ci = entry.get("ci95") or [None, None]
            return Result(baseline, protocol, entry.get("mean"), (ci[0], ci[1]),
                          bool(entry.get("did_not_learn", False)))
    return Result(baseline, protocol, None)


def audit_record(claim: Claim, summary: dict[str, Any]) -> dict[str, Any]:
    """The ``audit.json`` content of one claim from its suite run's summary."""
    paper = results_from_summary(summary, claim, claim.baseline, claim.paper_protocol)
    honest = [results_from_summary(summary, claim, claim.baseline, p) for p in claim.honest_protocols]
    trivial = [results_from_summary(summary, claim, b, p)
               for b in claim.trivial_baselines for p in (claim.paper_protocol, *claim.honest_protocols)]
    v = decide(claim, paper, honest, trivial)
    return {
        "claim": claim.name, "paper": claim.paper, "statement": claim.statement,
        "reported": {"metric": claim.metric, "value": claim.reported, "protocol": claim.paper_protocol},
        "paper_protocol": paper.as_dict(),
        "honest": [h.as_dict() for h in honest],
        "trivial": [t.as_dict() for t in trivial],
        "reproduced": v.reproduced,
        "verdict": v.verdict,
        "reasons": v.reasons,
        "rules": RULES,
        "positive_control": positive_control(claim, summary),
        "dataset": summary.get("dataset", {}),
        "seed": summary.get("seed"),
    }


def positive_control(claim: Claim, summary: dict[str, Any]) -> dict[str, Any] | None:
    """The claim's positive control under each honest protocol against the first trivial
    control: does an honest model read the target from these images at all? (Context for
    the verdict, not one of its rules.)"""
    if claim.positive_control is None:
        return None
    trivial_name = claim.trivial_baselines[0]
    rows = []
    for protocol in claim.honest_protocols:
        r = results_from_summary(summary, claim, claim.positive_control, protocol)
        t = results_from_summary(summary, claim, trivial_name, protocol)
        lo = r.ci95[0] if not claim.lower_is_better else r.ci95[1]
        beats = None
        if _ok(lo) and _ok(t.mean) and not r.did_not_learn:
            beats = float(lo) > float(t.mean) if not claim.lower_is_better else float(lo) < float(t.mean)  # type: ignore[arg-type]
        rows.append({**r.as_dict(), "trivial": trivial_name, "trivial_mean": t.mean, "beats_trivial": beats})
    known = [r for r in rows if r["beats_trivial"] is not None]
    scores = _ci_text([Result(**_result_keys(r)) for r in known])
    against = ", ".join(f"{float(r['trivial_mean']):.3f}" for r in known)
    unlearned = [r for r in rows if r["did_not_learn"]]
    if not known and unlearned:
        text = (f"Positive control: {claim.positive_control} did not learn here (its training score is not above "
                f"{trivial_name}'s): the images give an honest reader nothing to learn the target from (expected on "
                "a --signal none cohort).")
    elif not known:
        text = f"The positive control {claim.positive_control} has no result here."
    elif all(r["beats_trivial"] for r in known):
        text = (f"Positive control: {claim.positive_control}, an honest model of what the target does to the images, "
                f"beats {trivial_name} with patients held out ({scores} against {against}): the signal is in these "
                "images and can be read without leakage, so the paper pipeline's honest score is the pipeline's, "
                "not the harness's.")
    else:
        text = (f"Positive control: {claim.positive_control} does not beat {trivial_name} with patients held out "
                f"({scores} against {against}): on this cohort no honest model shows the target (expected on a "
                "--signal none cohort).")
    return {"baseline": claim.positive_control, "results": rows, "text": text}


def _result_keys(row: dict[str, Any]) -> dict[str, Any]:
    return {"baseline": row["baseline"], "protocol": row["protocol"], "mean": row["mean"],
            "ci95": tuple(row["ci95"]), "did_not_learn": row["did_not_learn"]}
