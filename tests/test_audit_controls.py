"""The harness judges correctly on known-truth cohorts (tiny BTP-style, 6 mm grid).

- Negative control (signal none): under patient-held-out splits the LSTM is no better
  than the mean predictor beyond the CI, while the row split gives a much smaller MAE.
- Positive control (signal growth): an honest baseline beats the mean predictor under
  patient-held-out splits.
Both runs also write audit.md and the two reports.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

pytest.importorskip("torch")

from harness.audit.inflation import beats, read_predictions  # noqa: E402
from harness.runner import RunOptions, run_suite  # noqa: E402
from harness.suite import parse_suite  # noqa: E402

HONEST = ("leave_one_patient_out", "patient_kfold")
SUITE = {
    "suite": {"name": "tiny-progression-audit", "task": "progression"},
    "data": {"cohort": "btp"},
    "task": {"modalities": ["T1post", "FLAIR", "nRCBV", "nCBF"], "eligibility": "all"},
    "baselines": {
        "default": ["cnn_lstm", "mean", "patient_memorizer", "perfusion_ridge"],
        "params": {"cnn_lstm": {"image_size": 32, "epochs": 30, "hidden": 32, "patience": 10},
                   "patient_memorizer": {"image_size": 32},
                   "resnet18_grader": {"image_size": 32, "epochs": 1, "max_train_slices": 32,
                                       "max_val_slices": 8}},
    },
    "protocols": {"row_random": {"ratios": [0.8, 0.0, 0.2]}, "leave_one_patient_out": {},
                  "patient_kfold": {"n_splits": 5}},
    "metrics": {"names": ["mae"], "n_boot": 200},
    "audit": {"n_permutations": 19, "selection": False},
}


@pytest.fixture(scope="module")
def aux(tmp_path_factory) -> Path:
    """Stage 1's grader cohort (cnn_lstm's pipeline needs one even when every patient is kept)."""
    from harness.synth import generate_cohort

    out = tmp_path_factory.mktemp("aux") / "rembrandt"
    generate_cohort("rembrandt", out, n_patients=4, seed=2, signal="growth", grid_mm=8.0, progress=False)
    return out


def _run(signal: str, tmp: Path, aux: Path, n_patients: int = 10, grid_mm: float = 6.0, **only):
    from harness.synth import generate_cohort

    cohort = tmp / f"btp-{signal}"
    generate_cohort("btp", cohort, n_patients=n_patients, seed=4, signal=signal, grid_mm=grid_mm, progress=False)
    opts = RunOptions(data=cohort, aux_data=aux, out=tmp / f"out-{signal}", tracking_uri="none", cache_dir=tmp / "cache",
                      progress=False, **only)
    result = run_suite(parse_suite(json.loads(json.dumps(SUITE))), opts)
    assert result.failures == []
    return result, read_predictions(result.out_dir, "regression")


@pytest.fixture(scope="module")
def negative(tmp_path_factory, aux):
    return _run("none", tmp_path_factory.mktemp("neg"), aux)


@pytest.fixture(scope="module")
def positive(tmp_path_factory, aux):
    # The perfusion peak blurs away on coarse grids (partial volume): at 4 mm even 30
    # patients leave the paired CI touching zero, so this uses the default 2 mm grid and
    # the real collection's 20 patients, comparing only the two baselines (slow).
    return _run("growth", tmp_path_factory.mktemp("pos"), aux, n_patients=20, grid_mm=2.0,
                baselines=["mean", "perfusion_ridge"], protocols=list(HONEST))


def _mae(result, baseline: str, protocol: str) -> float:
    return next(r["mean"] for r in result.summary["results"]
                if r["baseline"] == baseline and r["protocol"] == protocol and r["metric"] == "mae")


def test_negative_control_lstm_no_better_than_mean_held_out_but_row_split_flatters(negative):
    result, preds = negative
    for protocol in HONEST:
        diff, better = beats("mae", preds[("cnn_lstm", protocol)], preds[("mean", protocol)], n_boot=200)
        assert not better, f"{protocol}: LSTM beats the mean on labels without signal ({diff.point:+.2f}, {diff.ci()})"
    # The row split flatters: clearly for the LSTM (tiny, so it memorises less than the
    # default run's 0.95 vs 1.7-1.9), and massively for the memoriser.
    row = _mae(result, "cnn_lstm", "row_random")
    held = min(_mae(result, "cnn_lstm", p) for p in HONEST)
    assert row < 0.8 * held, (row, held)
    mem_row = _mae(result, "patient_memorizer", "row_random")
    assert mem_row < 0.5 * min(_mae(result, "patient_memorizer", p) for p in HONEST)
    audit = (result.out_dir / "audit.md").read_text()
    # The held-out finding, and the same rule verdict audit.json would carry (not a second one).
    from harness.audit.claims import CLAIMS
    from harness.audit.verdict import audit_record

    rule = audit_record(CLAIMS["progression-mae"], result.summary)["verdict"]
    assert "0.02" in audit and "cnn_lstm shows no skill" in audit
    # what stage 2 graded, and what a correct grader would keep on an all-glioblastoma cohort
    assert "Stage 2 pseudo-grades:" in audit and "of 20 scans" in audit  # 10 patients x 2 scans
    assert "Eligibility against the known truth" in audit
    assert f"**Verdict by the rules below: {rule}**" in audit and rule in ("does not survive", "inconclusive")


@pytest.mark.slow
def test_positive_control_honest_baseline_beats_mean_held_out(positive):
    _, preds = positive
    for protocol in HONEST:
        diff, better = beats("mae", preds[("perfusion_ridge", protocol)], preds[("mean", protocol)], n_boot=200)
        assert better, f"{protocol}: perfusion_ridge vs mean {diff.point:+.2f} {diff.ci()}"


def test_reports_are_self_contained_and_clean_for_patient_level_splits(negative):
    result, _ = negative
    reports = result.out_dir / "reports"
    for name in ("leakage", "overfitting"):
        html = (reports / f"{name}.html").read_text()
        assert "data:image/png;base64," in html and "<script" not in html and "http" not in html.split("<body>")[1]
        assert (reports / f"{name}.md").exists()
    assert list((reports / "figures").glob("*.png"))
    flags = json.loads((reports / "audit.json").read_text())["variants"][""]
    assert flags["undeclared_flags"] == []  # patient-level splits: nothing leaks
    kinds = {f["kind"] for f in flags["flags"]}
    assert "patients on both sides" in kinds  # ... the row split is reported, as declared
    assert all(f["declared"] for f in flags["flags"])
    assert any("fewer than" in w or "only" in w for w in flags["warnings"])  # < 10 test patients per fold
    assert flags["identity_probe"]["accuracy"] > 2 * flags["identity_probe"]["chance"]
    # two probes, model features and head outlines; the headline is the stronger
    probes = flags["identity_probe"]["probes"]
    assert len(probes) == 2 and any("outline" in q["features"] for q in probes)
    assert flags["identity_probe"]["accuracy"] == max(q["accuracy"] for q in probes)
    over = (reports / "overfitting.md").read_text()
    assert "curves-cnn_lstm-patient_kfold" in over and "p_value" in over


def test_perfusion_peak_ratio_reads_the_head_even_when_it_fills_less_than_half_the_view():
    """The reference is the head's median, not the brighter half of the volume (which takes
    in air when the head is small): a small head gives the same ratio as a large one."""
    import numpy as np

    from baselines.perfusion_ridge import peak_ratio

    rng = np.random.default_rng(0)

    def scan(head_radius: int) -> np.ndarray:
        z, y, x = np.mgrid[:40, :64, :64]
        r = np.sqrt((z - 20) ** 2 + (y - 32) ** 2 + (x - 32) ** 2)
        vol = np.where(r < head_radius, 1.0 + 0.05 * rng.standard_normal(r.shape), 0.01 * rng.random(r.shape))
        vol[18:22, 30:34, 30:34] = 3.0  # the hypervascular peak
        return vol.astype(np.float32)

    large, small = scan(30), scan(14)  # the small head fills about 7% of the view
    assert (small > 0.5).mean() < 0.5 < (large > 0.5).mean()
    assert 2.5 < peak_ratio(large) < 3.5
    assert abs(peak_ratio(small) - peak_ratio(large)) < 0.5


def test_perfusion_ridge_never_predicts_outside_the_training_targets():
    """Four training patients and a test patient far outside their features: the ridge
    would extrapolate to impossible intervals (negative months); the prediction is clipped."""
    import numpy as np
    import pandas as pd

    from baselines import FitContext, get_baseline
    from harness.tasks import TaskData

    rng = np.random.default_rng(0)

    def scan(peak: float) -> np.ndarray:
        vol = (1.0 + 0.02 * rng.standard_normal((8, 16, 16))).astype(np.float32)
        vol[4, 8, 8] = peak
        return vol

    peaks = {"P1": 2.0, "P2": 2.2, "P3": 2.4, "P4": 2.6, "P5": 40.0}
    months = {"P1": 9.0, "P2": 8.0, "P3": 7.0, "P4": 6.0, "P5": 5.0}
    rows = [{"sample_id": p, "patient_id": p, "study_id": p, "image_id": p, "modality": "nRCBV",
             "slice_index": -1, "target": months[p]} for p in peaks]
    data = TaskData("progression", "regression", pd.DataFrame(rows), None, {p: scan(v) for p, v in peaks.items()})
    model = get_baseline("perfusion_ridge")(modalities=["nRCBV"], alpha=1e-3, quantile=100.0)
    model.fit(data.subset(["P1", "P2", "P3", "P4"]), None, FitContext(seed=0))
    assert model.predict(data.subset(["P2"]))[0] > 7.0  # inside the range: a real prediction
    assert model.predict(data.subset(["P5"]))[0] == 6.0  # far out: the nearest training target
