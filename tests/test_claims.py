"""Claim audits: the verdict rules on fixed numbers, and one small end-to-end audit."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest

from harness.audit.claims import CLAIMS, format_claims, get_claim
from harness.audit.verdict import Result, audit_record, decide
from harness.errors import HarnessError

GRADING = CLAIMS["capstone-grading-accuracy"]  # accuracy 0.847, row_random vs patient_kfold
MAE = CLAIMS["progression-mae"]  # mae 0.02, lower is better


def paper(mean, lo, hi, dnl=False):
    return Result("m", GRADING.paper_protocol, mean, (lo, hi), dnl)


def honest(mean, lo, hi, dnl=False, protocol="patient_kfold"):
    return Result("m", protocol, mean, (lo, hi), dnl)


def test_leak_reproduced_and_honest_far_below_does_not_survive():
    v = decide(GRADING, paper(0.86, 0.80, 0.91), [honest(0.55, 0.45, 0.64)], [])
    assert (v.verdict, v.reproduced) == ("does not survive", True)


def test_honest_ci_reaching_the_reported_value_survives():
    v = decide(GRADING, paper(0.88, 0.84, 0.92), [honest(0.80, 0.72, 0.86)], [])
    assert v.verdict == "survives" and v.reproduced is True


def test_not_reproduced_but_separated_still_does_not_survive():
    # 0.70 < 0.847 - 0.10: not reproduced, but the leaky CI sits wholly above the honest one
    v = decide(GRADING, paper(0.70, 0.66, 0.74), [honest(0.40, 0.33, 0.47)], [])
    assert (v.verdict, v.reproduced) == ("does not survive", False)


def test_neither_reaches_nor_separated_is_inconclusive():
    v = decide(GRADING, paper(0.45, 0.38, 0.52), [honest(0.42, 0.35, 0.50)], [])
    assert (v.verdict, v.reproduced) == ("inconclusive", False)


@pytest.mark.parametrize("where", ["paper", "honest"])
def test_a_model_that_did_not_learn_never_carries_a_verdict(where):
    # the same numbers as the "does not survive" case, one side flagged
    v = decide(GRADING, paper(0.86, 0.80, 0.91, dnl=where == "paper"),
               [honest(0.55, 0.45, 0.64, dnl=where == "honest")], [])
    assert v.verdict == "inconclusive" and "did not learn" in v.reasons[0]


def test_missing_numbers_are_inconclusive():
    assert decide(GRADING, paper(None, None, None), [honest(0.5, 0.4, 0.6)], []).verdict == "inconclusive"
    assert decide(GRADING, paper(0.9, 0.85, 0.95), [honest(0.5, None, None)], []).verdict == "inconclusive"


def test_error_claims_use_the_memoriser_mechanism_rule():
    trivial = [Result("patient_memorizer", "row_random", 0.60), Result("mean", "row_random", 2.5)]
    rep = decide(MAE, Result("cnn_lstm", "row_random", 0.70, (0.5, 0.9)),
                 [Result("cnn_lstm", "leave_one_patient_out", 1.9, (1.5, 2.3))], trivial)
    assert (rep.verdict, rep.reproduced) == ("does not survive", True)  # 0.70 <= 1.25*0.60 and <= 0.3*2.5
    weak = decide(MAE, Result("cnn_lstm", "row_random", 1.2, (1.0, 1.4)),
                  [Result("cnn_lstm", "leave_one_patient_out", 1.3, (1.1, 1.6))], trivial)
    assert (weak.verdict, weak.reproduced) == ("inconclusive", False)


def test_audit_record_reads_summary_entries_and_flags():
    summary = {"results": [
        {"baseline": "resnet18_grader", "protocol": "row_random", "metric": "accuracy", "mean": 0.9,
         "ci95": [0.85, 0.94]},
        {"baseline": "resnet18_grader", "protocol": "patient_kfold", "metric": "accuracy", "mean": 0.5,
         "ci95": [0.4, 0.6], "did_not_learn": True},
        {"baseline": "majority", "protocol": "row_random", "metric": "accuracy", "mean": 0.47, "ci95": [0.4, 0.5]},
    ], "dataset": {"name": "x"}, "seed": 0}
    rec = audit_record(GRADING, summary)
    assert rec["paper_protocol"]["mean"] == 0.9 and rec["honest"][0]["did_not_learn"] is True
    assert rec["verdict"] == "inconclusive"
    assert {"claim", "paper", "reported", "paper_protocol", "honest", "trivial", "reproduced", "verdict"} <= set(rec)


def _control_summary(control_ci: tuple[float, float], dnl: bool = False) -> dict:
    return {"results": [
        {"baseline": "enhancement_probe", "protocol": "patient_kfold", "metric": "accuracy",
         "mean": sum(control_ci) / 2, "ci95": list(control_ci), "did_not_learn": dnl},
        {"baseline": "majority", "protocol": "patient_kfold", "metric": "accuracy", "mean": 0.47, "ci95": [0.3, 0.6]},
    ]}


@pytest.mark.parametrize("ci,dnl,beats", [((0.59, 0.87), False, True), ((0.40, 0.70), False, False),
                                          ((0.59, 0.87), True, None)])
def test_positive_control_beats_the_trivial_control_only_with_its_ci(ci, dnl, beats):
    pc = audit_record(GRADING, _control_summary(ci, dnl))["positive_control"]
    assert pc["baseline"] == "enhancement_probe" and pc["results"][0]["beats_trivial"] is beats
    assert ("does not beat" in pc["text"]) is (beats is False)
    assert ("did not learn here" in pc["text"]) is dnl
    assert audit_record(CLAIMS["valbuena-survival-accuracy"], _control_summary(ci))["positive_control"] is None  # names none


def test_claim_list_and_unknown_claim():
    text = format_claims()
    for name in ("capstone-grading-accuracy", "fasihi-dwtdct-accuracy", "progression-mae", "valbuena-grade-f1",
                 "valbuena-survival-accuracy"):
        assert name in text
    with pytest.raises(HarnessError, match="unknown claim"):
        get_claim("nope")


def test_end_to_end_audit_writes_json_md_html(tiny_rembrandt: Path, tmp_path: Path, monkeypatch):
    """A grading claim on the tiny cohort, with a fast baseline standing in for the CNN."""
    from harness.audit import claim_audit

    claim = replace(GRADING, name="tiny-grading", baseline="logreg_dwtdct", trivial_baselines=("majority",))
    record, paths = claim_audit.run_claim(claim, claim_audit.ClaimOptions(
        data=tiny_rembrandt, out=tmp_path / "a", tracking_uri="none", cache_dir=tmp_path / "cache",
        progress=False))
    assert {p.name for p in paths} >= {"audit.json", "audit.md", "audit.html"}
    saved = json.loads((tmp_path / "a" / "audit.json").read_text())
    assert saved["verdict"] in ("survives", "does not survive", "inconclusive")
    assert saved["paper_protocol"]["baseline"] == "logreg_dwtdct" and saved["paper_protocol"]["mean"] is not None
    assert [h["protocol"] for h in saved["honest"]] == ["patient_kfold"]
    assert "The rules behind the verdict" in (tmp_path / "a" / "audit.md").read_text()
    pc = saved["positive_control"]
    assert pc["baseline"] == "enhancement_probe" and pc["results"][0]["mean"] is not None
    assert "Positive control" in (tmp_path / "a" / "audit.md").read_text()


def test_a_regime_names_its_suite_and_an_unknown_one_is_refused():
    from harness.audit.claim_audit import ClaimOptions, claim_suite, regenerate_command
    from harness.suite import load_suite

    assert claim_suite(MAE, None) == "progression"
    suite = load_suite(claim_suite(MAE, "paper"))  # the paper's shape: 6 patients x 2 scans x 5 series
    assert suite.data["patients"] == 6 and len(suite.task_options["modalities"]) == 5
    assert suite.task_options["eligibility"] == "all" and suite.protocols["row_random"]["ratios"] == [0.8, 0.0, 0.2]
    assert "--regime paper" in regenerate_command(MAE, ClaimOptions(regime="paper"))
    with pytest.raises(HarnessError, match="no regime 'paper'"):
        claim_suite(GRADING, "paper")


@pytest.mark.parametrize("model,memo,mean,head", [
    (0.30, 0.25, 1.6, "reproduces the mechanism behind"),  # 1.2x the memoriser, 0.19x the mean
    (0.44, 0.00, 1.7, "only in part"),                    # a memoriser at zero: no ratio, only the mean rule
    (0.62, 0.22, 1.6, "does not reproduce"),               # 2.8x the memoriser, 0.39x the mean
])
def test_progression_mechanism_says_each_criterion(model, memo, mean, head):
    import numpy as np

    from harness.audit.inflation import Boot
    from harness.audit.progression_mae import MEAN, MEMORISER, MODEL, PAPER_SPLIT, mechanism

    est = {(b, PAPER_SPLIT): Boot(v, np.full(10, v), 6) for b, v in ((MODEL, model), (MEMORISER, memo), (MEAN, mean))}
    text = mechanism(est)[0]
    assert head in text and f"{model:.3f}" in text


def test_audit_jobs_reach_the_suite_run(monkeypatch, tmp_path):
    """``audit --jobs N`` runs the claim's fold jobs N at a time (it used to be serial only)."""
    import harness.runner
    from harness.cli import main

    seen = {}

    class Stop(Exception):
        pass

    def fake_run_suite(suite, opts):
        seen["jobs"] = opts.jobs
        raise Stop

    monkeypatch.setattr(harness.runner, "run_suite", fake_run_suite)
    with pytest.raises(Stop):
        main(["audit", "fasihi-dwtdct-accuracy", "--jobs", "2", "--tracking-uri", "none", "--out", str(tmp_path)])
    assert seen["jobs"] == 2
    with pytest.raises(Stop):
        main(["audit", "fasihi-dwtdct-accuracy", "--tracking-uri", "none", "--out", str(tmp_path)])
    assert seen["jobs"] == 1


def test_report_calls_only_input_blind_predictors_trivial():
    from harness.audit.claim_audit import _rows
    claim = CLAIMS["valbuena-grade-f1"]
    summary = {"results": [{"baseline": b, "protocol": p, "metric": claim.metric, "mean": 0.5, "ci95": [0.4, 0.6]}
                           for b in (claim.baseline, *claim.trivial_baselines)
                           for p in (claim.paper_protocol, *claim.honest_protocols)]}
    roles = _rows(audit_record(claim, summary)).groupby("baseline")["role"].first().to_dict()
    assert roles == {claim.baseline: "paper protocol", "majority": "trivial",
                     "patient_memorizer": "control", "clinical_only": "control"}
