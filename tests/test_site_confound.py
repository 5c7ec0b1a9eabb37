"""Site x target on patients: flagged when the site carries the label, silent when not."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from harness.audit.site_confound import FLAG_P, site_association


def _rows(patients: list[tuple[str, str, object]], rows_per_patient: int = 3) -> pd.DataFrame:
    """Several rows per patient, as a slice task has: the test must count patients, not rows."""
    return pd.DataFrame([{"patient_id": pid, "site": site, "target": target}
                         for pid, site, target in patients for _ in range(rows_per_patient)])


def test_a_site_that_carries_the_label_is_flagged():
    patients = [(f"A{i}", "A", "IV") for i in range(8)] + [(f"B{i}", "B", "II") for i in range(8)]
    a = site_association(_rows(patients))
    assert a is not None and a.n_patients == 16 and a.sites == ["A", "B"]
    assert a.flagged and a.p_value < 0.01 and a.effect == pytest.approx(1.0)
    assert int(a.table.loc[a.table["site"] == "A", "IV"].iloc[0]) == 8  # patients, not rows


def test_balanced_sites_are_not_flagged():
    patients = [(f"{s}{i}", s, g) for s in "AB" for i, g in enumerate(["II", "III", "IV"] * 3)]
    a = site_association(_rows(patients))
    assert a is not None and a.observed == pytest.approx(0.0) and a.p_value == pytest.approx(1.0)
    assert not a.flagged and "not clearly" in a.sentence()


def test_regression_targets_use_ranks_between_sites():
    high = [(f"A{i}", "A", 20.0 + i) for i in range(8)]
    low = [(f"B{i}", "B", 1.0 + i) for i in range(8)]
    a = site_association(_rows(high + low), regression=True)
    assert a is not None and a.statistic == "rank_eta2" and a.p_value < FLAG_P
    mixed = [(f"C{i}", "A" if i % 2 else "B", float(i // 2)) for i in range(16)]
    assert not site_association(_rows(mixed), regression=True).flagged


def test_without_two_known_sites_there_is_nothing_to_test():
    one_site = [(f"A{i}", "A", g) for i, g in enumerate(["II", "IV"] * 4)]
    assert site_association(_rows(one_site)) is None
    unknown = [(f"P{i}", "", g) for i, g in enumerate(["II", "IV"] * 4)]
    assert site_association(_rows(unknown)) is None
    assert site_association(_rows(one_site).drop(columns="site")) is None


def test_grading_samples_carry_the_dicom_institution(tiny_rembrandt, tmp_path):
    from harness.data.tcia import load_rembrandt

    cohort = load_rembrandt(tiny_rembrandt)
    assert (cohort.series["institution"] != "").all()  # the synthetic series name their site
    from harness.runner import RunOptions, prepare_data
    from harness.suite import parse_suite

    suite = parse_suite(json.loads(json.dumps({
        "suite": {"name": "tiny-site", "task": "grading"}, "data": {"cohort": "rembrandt"},
        "baselines": {"default": ["majority"]}, "protocols": {"patient_kfold": {"n_splits": 2}}})))
    data = prepare_data(suite, RunOptions(data=tiny_rembrandt, cache_dir=tmp_path, progress=False)).task_data
    sites = data.samples.groupby("patient_id")["site"].first()
    expected = cohort.series.groupby("patient_id")["institution"].first()
    assert sites.to_dict() == expected.loc[sites.index].to_dict()


def _site_samples() -> pd.DataFrame:
    rows = []
    for site, n in (("A", 4), ("B", 3), ("C", 5)):
        for i in range(n):
            for z in range(2):
                rows.append({"sample_id": f"{site}{i}#z{z}", "patient_id": f"{site}{i}", "site": site,
                             "target": ["II", "III", "IV"][i % 3]})
    return pd.DataFrame(rows)


def test_leave_one_site_out_tests_each_site_once_on_patients_of_no_other_site():
    from harness.splits import get_protocol

    protocol = get_protocol("leave_one_site_out")
    assert protocol.leaky is False
    samples = _site_samples()
    folds = protocol.split(samples, seed=0)
    site_of = dict(zip(samples["sample_id"], samples["site"]))
    assert [sorted({site_of[s] for s in f.test}) for f in folds] == [["A"], ["B"], ["C"]]
    assert sorted(s for f in folds for s in f.test) == sorted(samples["sample_id"])
    for f in folds:
        test_site = site_of[f.test[0]]
        assert {site_of[s] for s in f.train + f.val} == {"A", "B", "C"} - {test_site}
        assert f.val and f.train  # validation patients come from the training sites
        pid = lambda ids: {i.split("#")[0] for i in ids}  # noqa: E731
        assert not pid(f.train) & pid(f.val) and not pid(f.train + f.val) & pid(f.test)
    assert protocol.split(samples, seed=0) == folds  # deterministic


def test_leave_one_site_out_refuses_what_it_cannot_split():
    from harness.errors import HarnessError
    from harness.splits import get_protocol

    protocol = get_protocol("leave_one_site_out")
    samples = _site_samples()
    with pytest.raises(HarnessError, match="name none"):
        protocol.split(samples.drop(columns="site"), seed=0)
    with pytest.raises(HarnessError, match="no site for 1 patient"):
        protocol.split(samples.assign(site=samples["site"].where(samples["patient_id"] != "A0", "")), seed=0)
    moved = samples.copy()
    moved.loc[moved["sample_id"] == "A0#z1", "site"] = "B"
    with pytest.raises(HarnessError, match="several sites, e.g. A0"):
        protocol.split(moved, seed=0)
    with pytest.raises(HarnessError, match="at least 2 sites"):
        protocol.split(samples.assign(site="A"), seed=0)
