"""No PHI in any output (issue 15): the identifying attributes of the DICOM PS3.15 Annex E
basic profile, written into every header of a tiny cohort as fake identities, never reach
logs, reports, summary.json, problems.csv, the cache (index, memo, entries) or MLflow.

PatientID (the collection's pseudonymous key) may appear. PatientSex is a one-letter code
that cannot be told apart from other text, so only its tag and keyword are looked for.
"""

from __future__ import annotations

import gzip
import json
import shutil
from pathlib import Path

import pydicom
import pytest

#: Annex E basic-profile attributes -> a fake value that cannot occur by chance.
FAKE = {
    "PatientName": "PHILEAK^Zorblatt",
    "PatientBirthDate": "19230417",
    "PatientAddress": "77 Leakage Road, Spilltown",
    "InstitutionName": "Leakwood Institute",
    "InstitutionAddress": "9 Hospital Way, Leakville",
    "ReferringPhysicianName": "DR^Refleakson",
    "PerformingPhysicianName": "DR^Perfleakson",
    "NameOfPhysiciansReadingStudy": "DR^Readleakson",
    "OperatorsName": "OP^Opleakson",
    "AccessionNumber": "ACCLEAK71234",
    "OtherPatientIDs": "OTHERLEAKID993",
    "PatientTelephoneNumbers": "555-0199-LEAK",
    "PatientSex": "O",
}
#: What must not be found (values, ISO form of the birth date, and the keywords/tags of
#: attributes whose values are too short to search for).
NEEDLES = [v for k, v in FAKE.items() if k != "PatientSex"] + [
    "Zorblatt", "1923-04-17", "Refleakson", "Leakwood", "PatientSex", "(0010,0040)", "PatientName",
    "PatientBirthDate",
]


def _add_identities(root: Path) -> int:
    n = 0
    for f in root.rglob("*.dcm"):
        ds = pydicom.dcmread(f)
        for keyword, value in FAKE.items():
            setattr(ds, keyword, value)
        ds.save_as(f)
        n += 1
    return n


def _files(*roots: Path):
    for root in roots:
        for p in sorted(root.rglob("*")):
            if p.is_file():
                yield p


def _leaks(data: bytes) -> list[str]:
    if data[:2] == b"\x1f\x8b":
        try:
            data = gzip.decompress(data)
        except OSError:
            pass
    low = data.lower()
    return [n for n in NEEDLES if n.lower().encode() in low]


@pytest.mark.slow
def test_no_phi_in_any_output(tiny_rembrandt, tmp_path, capfd, monkeypatch):
    from harness.cli import main
    from harness.runner import RunOptions, run_suite
    from harness.suite import parse_suite

    data = tmp_path / "data"
    shutil.copytree(tiny_rembrandt, data)
    assert _add_identities(data) > 100
    # a bad file too, so problems.csv and the logs have something to say about a header
    victim = sorted(data.rglob("*.dcm"))[5]
    victim.write_bytes(victim.read_bytes()[:-50])
    # positive control: the scanner finds the identities where they are
    assert set(_leaks(sorted(data.rglob("*.dcm"))[0].read_bytes())) >= {FAKE["PatientName"]}

    monkeypatch.chdir(tmp_path)
    cache, out, ml = tmp_path / "cache", tmp_path / "out", tmp_path / "mlflow"
    suite = {
        "suite": {"name": "phi", "task": "grading"},
        "data": {"cohort": "rembrandt"},
        "task": {"modalities": ["T1post", "FLAIR"], "min_foreground": 0.15, "slice_step": 2},
        "baselines": {"default": ["majority", "logreg_dwtdct"],
                      "params": {"logreg_dwtdct": {"image_size": 32}}},
        "protocols": {"patient_kfold": {"n_splits": 3}},
        "metrics": {"names": ["accuracy"], "n_boot": 20},
    }
    result = run_suite(parse_suite(json.loads(json.dumps(suite))),
                       RunOptions(data=data, out=out, tracking_uri=f"sqlite:///{ml / 'mlflow.db'}",
                                  cache_dir=cache, progress=False, jobs=1))
    assert result.failures == []
    assert main(["data", "check", str(data), "--cache-dir", str(cache), "--no-progress"]) == 0
    logs = capfd.readouterr()
    assert str(victim) in (out / "problems.csv").read_text()  # problems were written

    found = {}
    outputs = list(_files(out, cache, ml))
    assert any(p.name == "summary.json" for p in outputs)
    assert any(p.suffix == ".db" for p in outputs) and any(p.suffix == ".npy" for p in outputs)
    for p in outputs:
        hits = _leaks(p.read_bytes())
        if hits:
            found[str(p)] = hits
    for name, text in (("stdout", logs.out), ("stderr", logs.err)):
        hits = _leaks(text.encode())
        if hits:
            found[name] = hits
    assert not found, found
    assert "HF0001" in (out / "problems.csv").read_text() + logs.err + \
        (out / "predictions" / "majority__patient_kfold.csv").read_text()  # PatientID may
