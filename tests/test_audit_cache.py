"""The audit's surrogate cache: a hit on unchanged inputs, a miss on any changed input,
a damaged entry recomputed, and the same reports warm as cold."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from harness.audit import cache as C
from harness.audit.identity_probe import identity_probe
from harness.audit.permutation import permutation_test
from harness.audit.selection import preprocessing_scope, selection_study
from harness.splits import make_manifest


def _cohort(n_pat: int = 10, rows: int = 3, seed: int = 0) -> tuple[np.ndarray, pd.DataFrame]:
    rng = np.random.default_rng(seed)
    pids = np.repeat([f"P{i:02d}" for i in range(n_pat)], rows)
    y = np.repeat(rng.choice(["II", "III", "IV"], n_pat), rows)
    x = rng.normal(size=(n_pat * rows, 5))
    samples = pd.DataFrame({"sample_id": [f"s{i}" for i in range(len(y))], "patient_id": pids, "target": y})
    return x, samples


def _manifests(samples: pd.DataFrame, seed: int = 0) -> dict:
    return {"patient_kfold": make_manifest("patient_kfold", samples, seed=seed, task="classification",
                                           dataset_fingerprint="toy", n_splits=3)}


class _Counting:
    """permutation_test through the cache, counting how often it really runs."""

    def __init__(self, cache: C.AuditCache) -> None:
        self.cache, self.calls = cache, 0

    def __call__(self, x, samples, manifests, seed: int = 0):
        def compute():
            self.calls += 1
            return permutation_test(x, samples, manifests, metric="accuracy", regression=False,
                                    classes=["II", "III", "IV"], n_permutations=5, seed=seed)

        inputs = C.surrogate_inputs(x, samples, manifests, metric="accuracy", regression=False,
                                    classes=["II", "III", "IV"], seed=seed)
        return self.cache.cached("permutation", {**inputs, "n_permutations": 5}, compute,
                                 C.permutation_encode, C.permutation_decode)


def _same(a: list, b: list) -> None:
    assert [(r.protocol, r.metric, r.observed, r.p_value) for r in a] == \
        [(r.protocol, r.metric, r.observed, r.p_value) for r in b]
    for ra, rb in zip(a, b):
        np.testing.assert_array_equal(ra.null, rb.null)


def test_hit_on_unchanged_inputs(tmp_path: Path):
    x, samples = _cohort()
    m = _manifests(samples)
    run = _Counting(C.AuditCache.under(tmp_path))
    first = run(x, samples, m)
    second = run(x.copy(), samples.copy(), _manifests(samples))  # equal content, new objects
    assert run.calls == 1 and run.cache.hits == 1
    _same(first, second)
    assert len(list((tmp_path / "audit").glob("permutation-*.json"))) == 1


def test_changed_label_manifest_features_or_seed_miss(tmp_path: Path):
    x, samples = _cohort()
    m = _manifests(samples)
    run = _Counting(C.AuditCache.under(tmp_path))
    run(x, samples, m)
    relabelled = samples.copy()
    relabelled.loc[relabelled["patient_id"] == "P00", "target"] = \
        "IV" if relabelled.loc[0, "target"] != "IV" else "II"
    run(x, relabelled, m)
    assert run.calls == 2
    run(x, samples, _manifests(samples, seed=1))  # other folds: another manifest sha256
    assert run.calls == 3
    x2 = x.copy()
    x2[0, 0] += 1e-6
    run(x2, samples, m)
    assert run.calls == 4
    run(x, samples, m, seed=7)
    assert run.calls == 5
    run(x, samples, m)  # the original inputs still hit
    assert run.calls == 5 and run.cache.hits == 1


@pytest.mark.parametrize("damage", ["", "{not json", '{"key": "other", "payload": []}',
                                    "bad-payload"])
def test_damaged_entry_is_recomputed_and_rewritten(tmp_path: Path, damage: str):
    x, samples = _cohort()
    m = _manifests(samples)
    run = _Counting(C.AuditCache.under(tmp_path))
    first = run(x, samples, m)
    (entry,) = (tmp_path / "audit").glob("permutation-*.json")
    good = entry.read_text()
    if damage == "bad-payload":  # the right key, an unusable payload: decode fails
        damage = json.dumps({**json.loads(good), "payload": [{"protocol": 1}]})
    entry.write_text(damage)
    again = run(x, samples, m)
    assert run.calls == 2
    _same(first, again)
    assert entry.read_text() == good  # rewritten whole
    run(x, samples, m)
    assert run.calls == 2


def test_no_cache_dir_always_computes():
    x, samples = _cohort()
    run = _Counting(C.AuditCache.under(None))
    run(x, samples, _manifests(samples))
    run(x, samples, _manifests(samples))
    assert run.calls == 2 and run.cache.hits == 0


def test_codecs_round_trip_selection_scope_probe():
    x, samples = _cohort(n_pat=12)
    y = samples["target"].to_numpy()
    pids = samples["patient_id"].to_numpy()
    classes = ["II", "III", "IV"]
    sel = selection_study(x, y, pids, metric="accuracy", regression=False, classes=classes, repeats=2, outer=3)
    back = C.selection_decode(json.loads(json.dumps(C.selection_encode(sel))))
    assert (back.selected, back.selected_score, back.nested_score, back.nested_folds) == \
        (sel.selected, sel.selected_score, sel.nested_score, sel.nested_folds)
    pd.testing.assert_frame_equal(back.grid, sel.grid)
    scope = preprocessing_scope(x, y, pd.Index(samples["sample_id"]), _manifests(samples), metric="accuracy",
                                regression=False, classes=classes)
    pd.testing.assert_frame_equal(C.frame_decode(json.loads(json.dumps(C.frame_encode(scope)))), scope)
    probe = identity_probe(x, pids, features="toy")
    assert C.probe_decode(json.loads(json.dumps(C.probe_encode(probe)))) == probe


def test_leakage_result_round_trips_and_misses_on_changed_pixels(tmp_path: Path):
    from harness.audit.images import Fingerprints
    from harness.audit.leakage import check_leakage

    x, samples = _cohort()
    m = {**_manifests(samples), "row_random": make_manifest("row_random", samples, seed=0, task="classification",
                                                            dataset_fingerprint="toy")}
    thumbs = x / np.linalg.norm(x, axis=1, keepdims=True)
    fp = Fingerprints(samples["sample_id"].tolist(), np.array([f"h{i}" for i in range(len(x))], dtype=object), thumbs)
    cache = C.AuditCache.under(tmp_path)
    calls: list[int] = []

    def run(f):
        def compute():
            calls.append(1)
            return check_leakage(samples, "classification", m, f)
        return cache.cached("leakage", C.leakage_inputs(samples, "classification", m, f, 0.995), compute,
                            C.leakage_encode, C.leakage_decode)

    cold, warm = run(fp), run(fp)
    assert len(calls) == 1 and cold.findings and [f.to_dict() for f in warm.findings] == \
        [f.to_dict() for f in cold.findings]
    pd.testing.assert_frame_equal(warm.folds, cold.folds)
    assert json.dumps(warm.target, sort_keys=True, default=str) == json.dumps(cold.target, sort_keys=True, default=str)
    copied = thumbs.copy()
    copied[0] = copied[-1]  # a near-duplicate image appears: the key must change
    run(Fingerprints(fp.sample_ids, fp.hashes, copied))
    assert len(calls) == 2


def test_figure_png_cached_by_its_data_and_damage_redrawn(tmp_path: Path):
    from harness.audit import report as R
    from harness.audit.suite_reports import _png

    cache = C.AuditCache.under(tmp_path)
    rows = [{"baseline": "a", "protocol": "p", "mean": 0.5, "ci95": [0.4, 0.6]}]
    draws: list[int] = []

    def draw(data=rows):
        draws.append(1)
        return R.bars_with_ci(data, group="baseline", bar="protocol")

    first = _png(cache, "fig-bars", {"rows": rows}, draw)
    assert _png(cache, "fig-bars", {"rows": [dict(r) for r in rows]}, draw) == first and len(draws) == 1
    other = [{**rows[0], "mean": 0.55}]
    _png(cache, "fig-bars", {"rows": other}, lambda: draw(other))
    assert len(draws) == 2
    (entry,) = [e for e in (tmp_path / "audit").glob("fig-bars-*.json")
                if json.loads(e.read_text())["payload"] == C.png_encode(first)]
    doc = json.loads(entry.read_text())
    entry.write_text(json.dumps({**doc, "payload": C.png_encode(b"not a png")}))
    assert _png(cache, "fig-bars", {"rows": rows}, draw) == first and len(draws) == 3
    assert first.startswith(b"\x89PNG")


_STAMP = re.compile(r"\d{4}-\d{2}-\d{2}[T ]\d{2}:\d{2}(:\d{2})?(\.\d+)?(Z|[+-]\d{2}:?\d{2})?( UTC)?")


@pytest.mark.slow  # two tiny suite runs: about 85 s on the shared 2-core CPU
def test_warm_rerun_reports_equal_cold_and_refit_no_surrogate(tiny_rembrandt, tmp_path, monkeypatch):
    from harness.audit import suite_reports
    from tests.test_runner import run_tiny

    cache = tmp_path / "cache"
    run_tiny(tiny_rembrandt, cache, tmp_path / "cold")
    assert len(list((cache / "audit").glob("*.json"))) >= 4

    def refit(*a, **k):
        raise AssertionError("a surrogate was refitted on a warm rerun")

    for name in ("permutation_test", "selection_study", "preprocessing_scope", "identity_probe", "outline_features"):
        monkeypatch.setattr(suite_reports, name, refit)
    for name in ("bars_with_ci", "learning_curves", "null_histograms"):
        monkeypatch.setattr(suite_reports.R, name, refit)
    warm = run_tiny(tiny_rembrandt, cache, tmp_path / "warm")
    assert not [f for f in warm.failures if "audit" in f]
    for name in ("leakage.md", "overfitting.md"):
        cold_md = _STAMP.sub("<t>", (tmp_path / "cold" / "reports" / name).read_text())
        warm_md = _STAMP.sub("<t>", (tmp_path / "warm" / "reports" / name).read_text())
        assert cold_md.replace(str(tmp_path / "cold"), "<out>") == warm_md.replace(str(tmp_path / "warm"), "<out>")
    figures = sorted(p.name for p in (tmp_path / "cold" / "reports" / "figures").glob("*.png"))
    assert figures and figures == sorted(p.name for p in (tmp_path / "warm" / "reports" / "figures").glob("*.png"))
    for name in figures:
        assert (tmp_path / "cold" / "reports" / "figures" / name).read_bytes() == \
            (tmp_path / "warm" / "reports" / "figures" / name).read_bytes()
    assert json.loads((tmp_path / "cold" / "reports" / "audit.json").read_text()) == \
        json.loads((tmp_path / "warm" / "reports" / "audit.json").read_text())
