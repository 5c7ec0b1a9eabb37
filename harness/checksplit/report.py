"""Write what ``check-split`` found: the leakage report (Markdown and HTML) and a JSON.

Why both: the report is for a person deciding whether to trust a split; the JSON lists
every case involved, for a script or a CI job that fails the build on a leak.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pandas as pd

from harness.atomic import atomic_write
from harness.audit import report as R
from harness.checksplit.checks import CheckSplitResult

STEM = "leakage_report"
JSON_NAME = "check_split.json"
#: What each kind of leak means, in one sentence (report and JSON).
MEANING: dict[str, str] = {
    "patients on both sides": "the same patient is in training and held out, so the held-out score can "
                              "come from recognising the patient",
    "studies on both sides": "the same scan session is in training and held out",
    "exact duplicate image": "a held-out image is identical, voxel for voxel after decoding, to a training "
                             "image under another id: a renamed copy",
    "near-duplicate image": "a held-out image is all but identical to a training image of another id "
                            "(re-saved, re-noised or slightly rescaled)",
    "later scan trains earlier": "a patient's later scan is in training while an earlier one is held out: "
                                 "the model sees the future of a case it is tested on",
}


def _sentence(result: CheckSplitResult) -> str:
    n = len({mc.dataset_patient for mc in result.mapping.cases.values()})
    return (f"Split {result.split.source} ({result.split.format}, {len(result.split.folds)} fold(s), "
            f"{len(result.mapping.cases)} cases of {n} patients) against dataset {result.data_dir} "
            f"(layout {result.layout}, {len(result.samples)} image series).")


def verdict(result: CheckSplitResult) -> str:
    if result.clean:
        return "CLEAN: no patient, study or image crosses the wall between training and held-out cases."
    kinds: dict[str, int] = {}
    for f in result.findings:
        kinds[f.kind] = kinds.get(f.kind, 0) + f.count
    return "LEAKS FOUND: " + "; ".join(f"{k}: {v}" for k, v in kinds.items())


def build_report(result: CheckSplitResult) -> R.Report:
    rep = R.Report("Leakage report: check-split")
    rep.intro += [_sentence(result), verdict(result)]
    s = R.Section("1. Split integrity per fold")
    s.flags = [f.message for f in result.findings]
    if result.clean:
        s.paragraphs.append("No leak: every fold keeps each patient, study and image on one side.")
    s.paragraphs.append(f"Near-duplicates: normalised correlation of {result.near_threshold} or more between "
                        "8x24x24 thumbnails of the decoded series (each z-scored); different patients of "
                        "the synthetic cohorts reach at most 0.98. Exact duplicates: equal SHA-1 of the decoded "
                        "arrays. Label maps (SEG, MASK) are not compared.")
    s.tables.append(("", result.folds))
    rep.sections.append(s)

    if result.details:
        d = R.Section("2. Every case involved")
        d.paragraphs += [f"{k}: {v}." for k, v in MEANING.items() if any(x["kind"] == k for x in result.details)]
        table = pd.DataFrame([{
            "kind": x["kind"], "comparison": x["comparison"], "fold": x["fold"],
            "who": x.get("patient") or f"{x['held_out_image']} ~ {x['training_image']}",
            "held-out cases": ", ".join(x.get("held_out_cases", [])),
            "training cases": ", ".join(x.get("training_cases", [])),
        } for x in result.details[:500]])
        d.tables.append((f"{len(result.details)} item(s)" + (" (first 500)" if len(result.details) > 500 else ""),
                         table))
        rep.sections.append(d)

    p = R.Section("3. Identity probe")
    if result.probe is not None:
        p.paragraphs.append(result.probe.sentence())
        p.paragraphs.append("Why it matters: if the probe names patients well above chance, any patient on both "
                            "sides of a fold lets a model look its answer up; a patient-disjoint split is then the "
                            "only honest one.")
        if "probe_recognised" in result.folds:
            p.paragraphs.append("Per fold, the table's probe_recognised column counts the held-out images of "
                                "patients also in training whose nearest training image (same thumbnails) is of "
                                "that patient: what a lookup gets from the overlap ('-': no overlap).")
    else:
        p.paragraphs.append("Not run (pixels not decoded, or fewer than 4 decoded series).")
    rep.sections.append(p)

    b = R.Section("4. Class balance (patients per dataset label)")
    b.tables.append(("", result.balance))
    if result.site is not None:
        b.paragraphs.append("Site and label (context, not a leak): " + result.site.sentence())
        b.tables.append(("Patients per site and label", result.site.table))
    else:
        b.paragraphs.append("Site and label: not checked (fewer than two acquiring sites or labels known; the "
                            "DICOM reader takes the site from InstitutionName, NIfTI layouts have none).")
    rep.sections.append(b)

    m = R.Section("5. How the cases were matched")
    m.paragraphs.append("; ".join(f"{k}: {v}" for k, v in sorted(result.mapping.matched_by.items())) or "-")
    m.paragraphs += [f"Linked: {t}." for t in result.mapping.links]
    if result.problems:
        m.paragraphs.append(f"{len(result.problems)} dataset problem(s), e.g. "
                            + "; ".join(str(x) for x in result.problems[:5]))
    rep.sections.append(m)
    return rep


def to_json(result: CheckSplitResult) -> dict[str, Any]:
    probe = None
    if result.probe is not None:
        probe = {"accuracy": result.probe.accuracy, "chance": result.probe.chance, "lift": result.probe.lift,
                 "n_patients": result.probe.n_patients, "n_rows": result.probe.n_rows,
                 "features": result.probe.features}
    return {
        "clean": result.clean, "verdict": verdict(result),
        "split": {"source": result.split.source, "format": result.split.format, "files": result.split.files,
                  "folds": len(result.split.folds)},
        "dataset": {"path": result.data_dir, "layout": result.layout, "image_series": len(result.samples),
                    "cases": len(result.mapping.cases)},
        "near_duplicate_threshold": result.near_threshold,
        "folds": json.loads(result.folds.to_json(orient="records")),
        "findings": [f.to_dict() for f in result.findings],
        "details": result.details,
        "identity_probe": probe,
        "class_balance": json.loads(result.balance.to_json(orient="records")) if not result.balance.empty else [],
        "site": None if result.site is None else result.site.to_dict(),
        "matched_by": result.mapping.matched_by, "links": result.mapping.links,
        "problems": [str(p) for p in result.problems],
    }


def write_outputs(result: CheckSplitResult, out_dir: Path) -> list[Path]:
    """``leakage_report.md``, ``leakage_report.html`` and ``check_split.json`` in ``out_dir``."""
    paths = build_report(result).write(out_dir, STEM)
    js = out_dir / JSON_NAME
    atomic_write(js, lambda fh: fh.write(json.dumps(to_json(result), indent=2, default=str)), text=True)
    return paths + [js]
