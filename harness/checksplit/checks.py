"""Run the harness's split-integrity checks on a split someone else made.

Why: the checks the harness runs on its own folds (patients and studies on both sides,
exact and near-duplicate images, a later scan training an earlier one, the identity
probe) live in :mod:`harness.audit.leakage`; this module only turns a user's split into
the manifests and samples those checks read, and lists every case involved.

Comparisons per fold: ``train|val`` (training against the fold's held-out cases) and,
where the split has a test set, ``train+val|test``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from harness.audit.identity_probe import IdentityProbe, identity_probe
from harness.audit.site_confound import SiteAssociation, site_association
from harness.audit.images import SERIES_THUMB, Fingerprints, fingerprints
from harness.audit.leakage import NEAR_DUPLICATE_THRESHOLD, Finding, _near_duplicates, split_integrity
from harness.checksplit.mapping import CaseMapper, Mapping
from harness.checksplit.readers import UserSplit, read_id_map, read_split
from harness.data.cohort import Cohort, Problem
from harness.errors import HarnessError
from harness.splits import Fold, SplitManifest
from harness.tasks import TaskData

#: Comparisons: name -> (fit roles, held-out roles).
COMPARISONS: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "train|val": (("train",), ("val",)),
    "train+val|test": (("train", "val"), ("test",)),
}
#: Per-fold columns of the report, in order (from ``split_integrity``).
FOLD_COLUMNS = ["comparison", "fold", "train_patients", "test_patients", "test_samples", "patients_both_sides",
                "studies_both_sides", "exact_duplicates", "near_duplicates", "later_scan_trains_earlier"]


@dataclass
class CheckSplitResult:
    """Everything ``check-split`` found: per-fold table, leaks with the cases involved, and context."""

    data_dir: str
    layout: str
    split: UserSplit
    mapping: Mapping
    samples: pd.DataFrame
    folds: pd.DataFrame
    findings: list[Finding]
    details: list[dict[str, Any]]
    probe: IdentityProbe | None
    balance: pd.DataFrame
    near_threshold: float
    problems: list[Problem] = field(default_factory=list)
    #: Site x label over the split's patients (context, not a leak: harness.audit.site_confound).
    site: SiteAssociation | None = None

    @property
    def clean(self) -> bool:
        return not self.findings


def _unknown_error(split: UserSplit, mapping: Mapping, mapper: CaseMapper, data_dir: Path) -> HarnessError:
    ids = [r.label for r in mapping.unknown]
    shown = ", ".join(ids[:10]) + (f" (and {len(ids) - 10} more)" if len(ids) > 10 else "")
    files = ", ".join(split.files[:3]) or split.source
    return HarnessError(
        f"split file {files}: {len(ids)} case id(s) not found in the dataset {data_dir} "
        f"(layout {mapper.cohort.layout}): {shown}. The dataset has {mapper.examples()}.")


def _samples(cohort: Cohort, mapping: Mapping) -> pd.DataFrame:
    """One row per image series the split names: the frame the leakage checks read."""
    wanted = sorted({s for mc in mapping.cases.values() for s in mc.series})
    s = cohort.series.set_index(cohort.series["series_id"].astype(str)).loc[wanted]
    grade = {}
    if "grade" in cohort.patients:
        grade = dict(zip(cohort.patients["patient_id"].astype(str), cohort.patients["grade"]))
    pid = s["patient_id"].astype(str)
    return pd.DataFrame({
        "sample_id": wanted, "image_id": wanted,
        "patient_id": [mapping.patient_key.get(p, p) for p in pid],
        "dataset_patient": pid.to_numpy(),
        "study_id": s["study_id"].astype(str).to_numpy(),
        "study_date": s["study_date"].fillna("").astype(str).to_numpy(),
        "modality": s["modality"].astype(str).to_numpy(), "slice_index": -1,
        "target": [("" if pd.isna(grade.get(p)) else str(grade.get(p))) if p in grade else "" for p in pid],
        "site": s["institution"].fillna("").astype(str).to_numpy() if "institution" in s else "",
    })


def _manifests(split: UserSplit, mapping: Mapping) -> dict[str, SplitManifest]:
    out: dict[str, SplitManifest] = {}
    for name, (fit_roles, held_roles) in COMPARISONS.items():
        folds = []
        for f in split.folds:
            fit = [s for r in fit_roles for c in f.cases(r) for s in mapping.cases[c.label].series]
            held = [s for r in held_roles for c in f.cases(r) for s in mapping.cases[c.label].series]
            if fit and held:
                folds.append(Fold(f.index, train=fit, val=[], test=held))
        if folds:
            out[name] = SplitManifest(name, False, 0, {"source": split.source}, "classification", "", folds)
    return out


def _cases_of(split: UserSplit, mapping: Mapping) -> dict[tuple[int, str, str], list[str]]:
    """(fold, side, series) -> case labels naming it, side 'fit'/'held' per comparison."""
    out: dict[tuple[int, str, str], list[str]] = {}
    for name, (fit_roles, held_roles) in COMPARISONS.items():
        for f in split.folds:
            for side, roles in (("fit", fit_roles), ("held", held_roles)):
                for r in roles:
                    for c in f.cases(r):
                        for s in mapping.cases[c.label].series:
                            out.setdefault((f.index, f"{name}:{side}", s), []).append(f"{c.label} ({r})")
    return out


def _details(samples: pd.DataFrame, manifests: dict[str, SplitManifest], fp: Fingerprints | None,
             names: dict[tuple[int, str, str], list[str]], near_threshold: float) -> list[dict[str, Any]]:
    """Every leak with all the patients, cases and image pairs involved (the JSON's list)."""
    s = samples.set_index("sample_id", drop=False)
    patient, study, day = s["patient_id"], s["study_id"], s["study_date"]
    pos = fp.index() if fp is not None else pd.Index([])
    hashes = pd.Series(fp.hashes, index=pos) if fp is not None else pd.Series(dtype=object)
    out: list[dict[str, Any]] = []

    def case(fold: int, comp: str, side: str, sid: str) -> list[str]:
        return sorted(set(names.get((fold, f"{comp}:{side}", sid), [])))

    for comp, m in manifests.items():
        for f in m.folds:
            fit, held = list(dict.fromkeys(f.train)), list(dict.fromkeys(f.test))
            both = sorted(set(patient.loc[fit]) & set(patient.loc[held]))
            for p in both:
                fit_s = [x for x in fit if patient.loc[x] == p]
                held_s = [x for x in held if patient.loc[x] == p]
                fit_c = sorted({c for x in fit_s for c in case(f.index, comp, "fit", x)})
                held_c = sorted({c for x in held_s for c in case(f.index, comp, "held", x)})
                out.append({"kind": "patients on both sides", "comparison": comp, "fold": f.index, "patient": p,
                            "training_cases": fit_c, "held_out_cases": held_c})
                fit_d = max(day.loc[fit_s])
                held_d = min(day.loc[held_s])
                if fit_d and held_d and fit_d > held_d:
                    out.append({"kind": "later scan trains earlier", "comparison": comp, "fold": f.index,
                                "patient": p, "training_study": sorted(set(study.loc[fit_s]))[-1],
                                "training_date": fit_d, "held_out_date": held_d, "training_cases": fit_c,
                                "held_out_cases": held_c})
            if fp is None:
                continue
            by_hash: dict[str, list[str]] = {}
            for x in fit:
                h = hashes.get(x, "")
                if h:
                    by_hash.setdefault(h, []).append(x)
            exact = set()
            for x in held:
                for y in by_hash.get(hashes.get(x, ""), []) if hashes.get(x, "") else []:
                    if patient.loc[x] != patient.loc[y]:
                        exact.add((x, y))
                        out.append({"kind": "exact duplicate image", "comparison": comp, "fold": f.index,
                                    "held_out_image": x, "training_image": y,
                                    "held_out_patient": patient.loc[x], "training_patient": patient.loc[y],
                                    "held_out_cases": case(f.index, comp, "held", x),
                                    "training_cases": case(f.index, comp, "fit", y)})
            fp_patient = patient.reindex(pos).fillna("")
            for x, y, r in _near_duplicates(fp, pos, fit, held, fp_patient, near_threshold):
                if (x, y) in exact:
                    continue
                out.append({"kind": "near-duplicate image", "comparison": comp, "fold": f.index,
                            "held_out_image": x, "training_image": y, "correlation": round(r, 5),
                            "held_out_patient": patient.loc[x], "training_patient": patient.loc[y],
                            "held_out_cases": case(f.index, comp, "held", x),
                            "training_cases": case(f.index, comp, "fit", y)})
    return out


def _fold_probe(samples: pd.DataFrame, manifests: dict[str, SplitManifest], fp: Fingerprints | None
                ) -> dict[tuple[str, int], str]:
    """Per fold: of the held-out images whose patient is also in training, how many have
    their nearest training image (thumbnail correlation) in that same patient: what a
    1-nearest-neighbour lookup would get from the overlap. "-" where nothing overlaps."""
    out: dict[tuple[str, int], str] = {}
    if fp is None:
        return out
    patient = samples.set_index("sample_id")["patient_id"]
    pos = fp.index()
    for comp, m in manifests.items():
        for f in m.folds:
            fit = [x for x in dict.fromkeys(f.train) if x in pos]
            held = [x for x in dict.fromkeys(f.test) if x in pos]
            fit_p = set(patient.loc[fit])
            seen = [x for x in held if patient.loc[x] in fit_p]
            if not seen or not fit:
                out[(comp, f.index)] = "-"
                continue
            c = fp.thumbs[pos.get_indexer(seen)] @ fp.thumbs[pos.get_indexer(fit)].T
            nearest = [fit[j] for j in c.argmax(axis=1)]
            hits = sum(patient.loc[a] == patient.loc[b] for a, b in zip(seen, nearest))
            out[(comp, f.index)] = f"{hits}/{len(seen)}"
    return out


def _balance(split: UserSplit, mapping: Mapping, cohort: Cohort) -> pd.DataFrame:
    """Patients per class label on each side of each fold (labels from the dataset)."""
    if "grade" not in cohort.patients:
        return pd.DataFrame()
    grade = dict(zip(cohort.patients["patient_id"].astype(str), cohort.patients["grade"]))
    rows = []
    for f in split.folds:
        for role in ("train", "val", "test"):
            pats = {mapping.cases[c.label].dataset_patient for c in f.cases(role)}
            if not pats:
                continue
            counts = pd.Series([("unknown" if pd.isna(grade.get(p)) or grade.get(p) in (None, "") else
                                 str(grade.get(p))) for p in pats]).value_counts()
            rows.append({"fold": f.index, "role": role, "patients": len(pats),
                         **{f"grade {k}": int(v) for k, v in sorted(counts.items())}})
    df = pd.DataFrame(rows).fillna(0)
    for c in df.columns:
        if c.startswith("grade "):
            df[c] = df[c].astype(int)
    return df


def check_split(data_dir: Path | str, splits: Path | str, *, fmt: str = "auto", cache_dir: Path | None = None,
                near_threshold: float = NEAR_DUPLICATE_THRESHOLD, layout: str | None = None,
                pixels: bool = True, progress: bool = False, seed: int = 0,
                id_map: Path | str | None = None, jobs: int = 1) -> CheckSplitResult:
    """Read ``splits``, map its cases onto the dataset in ``data_dir`` and check every fold.

    Raises HarnessError (naming the file) for an unreadable split or ids the dataset lacks.
    ``pixels=False`` skips decoding: no duplicate-image checks and no identity probe.
    ``id_map``: a CSV of (case id, dataset id) for splits whose tool renamed the cases.
    """
    from harness.data import load_cohort

    data_dir = Path(data_dir).expanduser()
    split = read_split(splits, fmt)  # read first: a bad split file fails before any indexing
    cohort = load_cohort(data_dir, layout)
    mapper = CaseMapper(cohort, read_id_map(id_map) if id_map else None)
    refs = [c for f in split.folds for r in f.roles.values() for c in r]
    mapping = mapper.map_cases(refs)
    if mapping.unknown:
        raise _unknown_error(split, mapping, mapper, data_dir)
    samples = _samples(cohort, mapping)
    manifests = _manifests(split, mapping)
    if not manifests:
        raise HarnessError(f"split file {split.source}: no fold has both training and held-out cases")
    problems: list[Problem] = list(cohort.problems)
    fp = probe = None
    if pixels:
        from harness.data.cache import VolumeStore
        from harness.paths import default_cache_dir

        rows = cohort.series[cohort.series["series_id"].astype(str).isin(set(samples["sample_id"]))]
        with VolumeStore((Path(cache_dir) if cache_dir else default_cache_dir()) / "arrays",
                         progress=progress, workers=jobs) as store:
            volumes, decode_problems = store.load_many(rows)
        problems += decode_problems
        data = TaskData("check-split", "classification", samples, None,
                        {k: v.array for k, v in volumes.items()})
        fp = fingerprints(data)
        ok = np.array([bool(h) for h in fp.hashes])
        if ok.sum() >= 4:
            probe = identity_probe(fp.thumbs[ok], samples["patient_id"].to_numpy()[ok],
                                   features=f"{SERIES_THUMB[0]}x{SERIES_THUMB[1]}x{SERIES_THUMB[2]} "
                                            "normalised series thumbnails", seed=seed)
    folds, findings = split_integrity(samples, manifests, fp, near_threshold=near_threshold)
    if (samples["study_id"] == samples["dataset_patient"]).all():  # BraTS: a subject is its one study
        findings = [f for f in findings if f.kind != "studies on both sides"]
    folds = folds.rename(columns={"protocol": "comparison"})
    folds = folds[[c for c in FOLD_COLUMNS if c in folds.columns]]
    if fp is not None:
        probe_of = _fold_probe(samples, manifests, fp)
        folds["probe_recognised"] = [probe_of.get((c, i), "-") for c, i in zip(folds["comparison"], folds["fold"])]
    details = _details(samples, manifests, fp, _cases_of(split, mapping), near_threshold)
    labelled = samples[samples["target"] != ""]
    return CheckSplitResult(str(data_dir), cohort.layout, split, mapping, samples, folds, findings, details,
                            probe, _balance(split, mapping, cohort), near_threshold, problems,
                            site=site_association(labelled, seed=seed) if len(labelled) else None)
