"""Split integrity and target structure: how a split can let a model cheat.

Why: a headline number is only as honest as the wall between training and test. This
module checks that wall for every protocol and fold from the manifest and the pixels:
patients and studies on both sides, exact and near-duplicate images across the wall
(a copy under another patient ID passes any patient-level check), and, for
progression, a later scan of a patient in training while an earlier one is tested. It
also describes how the target varies within a patient, which decides what a
patient-mixing split is worth to a model that merely recognises the patient.

A *flag* is a leak found in a fold; flags under a protocol declared leaky (the
published ones) are reported as "declared".
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from harness.audit.images import Fingerprints
from harness.splits import SplitManifest, is_leaky

from harness.audit.thresholds import NEAR_DUPLICATE_THRESHOLD  # noqa: E402,F401 - re-exported


@dataclass
class Finding:
    """One leak in one fold (or, with ``fold`` None, in the whole run)."""

    kind: str
    protocol: str
    fold: int | None
    declared: bool
    message: str
    count: int = 1

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class LeakageResult:
    """Per-fold integrity table, the flags, and the target-structure summary."""

    folds: pd.DataFrame
    findings: list[Finding] = field(default_factory=list)
    target: dict[str, Any] = field(default_factory=dict)

    @property
    def flags(self) -> list[Finding]:
        return list(self.findings)

    def undeclared(self) -> list[Finding]:
        return [f for f in self.findings if not f.declared]


# --------------------------------------------------------------------------- integrity


def _fit_and_test(manifest: SplitManifest, fold_index: int) -> tuple[list[str], list[str]]:
    fold = next(f for f in manifest.folds if f.index == fold_index)
    return list(fold.train) + list(fold.val), list(fold.test)


def _near_duplicates(
    fp: Fingerprints, pos: pd.Index, fit_ids: list[str], test_ids: list[str], patient: pd.Series,
    threshold: float,
) -> list[tuple[str, str, float]]:
    """(test sample, fit sample, correlation) pairs of *different* patients above threshold."""
    a = pos.get_indexer(test_ids)
    b = pos.get_indexer(fit_ids)
    a, b = a[a >= 0], b[b >= 0]
    if len(a) == 0 or len(b) == 0:
        return []
    pa = patient.iloc[a].to_numpy()
    pb = patient.iloc[b].to_numpy()
    out = []
    for start in range(0, len(a), 1024):
        c = fp.thumbs[a[start:start + 1024]] @ fp.thumbs[b].T
        c[pa[start:start + 1024, None] == pb[None, :]] = -1.0
        rows, cols = np.nonzero(c >= threshold)
        for r, k in zip(rows, cols):
            out.append((fp.sample_ids[a[start + r]], fp.sample_ids[b[k]], float(c[r, k])))
    return out


def split_integrity(
    samples: pd.DataFrame,
    manifests: dict[str, SplitManifest],
    fp: Fingerprints | None = None,
    *,
    near_threshold: float = NEAR_DUPLICATE_THRESHOLD,
) -> tuple[pd.DataFrame, list[Finding]]:
    """One row per protocol x fold, and every leak found, for all manifests."""
    s = samples.assign(sample_id=samples["sample_id"].astype(str)).set_index("sample_id", drop=False)
    patient = s["patient_id"].astype(str)
    study = s["study_id"].astype(str) if "study_id" in s else patient
    date = s["study_date"].astype(str) if "study_date" in s else None
    pos = fp.index() if fp is not None else pd.Index([])
    fp_patient = patient.reindex(pos).fillna("") if fp is not None else None
    hash_of = pd.Series(fp.hashes, index=pos) if fp is not None else None
    rows, findings = [], []
    for protocol, manifest in manifests.items():
        declared = is_leaky(manifest)
        for fold in manifest.folds:
            fit_ids, test_ids = _fit_and_test(manifest, fold.index)
            fit_ids = [i for i in map(str, fit_ids) if i in s.index]
            test_ids = [i for i in map(str, test_ids) if i in s.index]
            fit_p, test_p = set(patient.loc[fit_ids]), set(patient.loc[test_ids])
            both_p = sorted(fit_p & test_p)
            both_s = sorted(set(study.loc[fit_ids]) & set(study.loc[test_ids]))
            exact, near, later = [], [], []
            if fp is not None and hash_of is not None:
                fit_h = hash_of.reindex(fit_ids)
                test_h = hash_of.reindex(test_ids)
                fit_map: dict[str, list[str]] = {}
                for sid, h in fit_h.items():
                    if h:
                        fit_map.setdefault(h, []).append(sid)
                for sid, h in test_h.items():
                    for other in fit_map.get(h, []) if h else []:
                        if patient.loc[other] != patient.loc[sid]:
                            exact.append((sid, other))
                exact_pairs = {(a, b) for a, b in exact}
                near = [t for t in _near_duplicates(fp, pos, fit_ids, test_ids, fp_patient, near_threshold)
                        if (t[0], t[1]) not in exact_pairs]
            if date is not None and both_p:
                fit_d = pd.DataFrame({"p": patient.loc[fit_ids], "d": date.loc[fit_ids]}).groupby("p")["d"].max()
                test_d = pd.DataFrame({"p": patient.loc[test_ids], "d": date.loc[test_ids]}).groupby("p")["d"].min()
                later = [p for p in both_p if fit_d.get(p, "") > test_d.get(p, "")]
            rows.append({
                "protocol": protocol, "leaky_protocol": declared, "fold": fold.index,
                "train_patients": len(fit_p), "test_patients": len(test_p),
                "test_samples": len(test_ids), "patients_both_sides": len(both_p),
                "studies_both_sides": len(both_s), "exact_duplicates": len(exact),
                "near_duplicates": len(near), "later_scan_trains_earlier": len(later),
            })
            where = f"{protocol} fold {fold.index}"
            if both_p:
                findings.append(Finding("patients on both sides", protocol, fold.index, declared,
                                        f"{where}: {len(both_p)} patient(s) in training and test, e.g. "
                                        f"{', '.join(both_p[:5])}", len(both_p)))
            if both_s:
                findings.append(Finding("studies on both sides", protocol, fold.index, declared,
                                        f"{where}: {len(both_s)} stud(ies) in training and test, e.g. "
                                        f"{', '.join(both_s[:3])}", len(both_s)))
            if exact:
                a, b = exact[0]
                findings.append(Finding("exact duplicate image", protocol, fold.index, False,
                                        f"{where}: {len(exact)} test image(s) identical, pixel for pixel, to a "
                                        f"training image of another patient, e.g. {a} = {b} "
                                        f"({patient.loc[a]} vs {patient.loc[b]})", len(exact)))
            if near:
                a, b, c = max(near, key=lambda t: t[2])
                findings.append(Finding("near-duplicate image", protocol, fold.index, False,
                                        f"{where}: {len(near)} test/training image pair(s) of different patients "
                                        f"with thumbnail correlation >= {near_threshold}, e.g. {a} ~ {b} (r = {c:.4f})",
                                        len(near)))
            if later:
                findings.append(Finding("later scan trains earlier", protocol, fold.index, declared,
                                        f"{where}: for {len(later)} patient(s) a later scan is in training while an "
                                        f"earlier scan is tested, e.g. {', '.join(later[:5])}", len(later)))
    return pd.DataFrame(rows), findings


# --------------------------------------------------------------------------- target structure


def target_structure(samples: pd.DataFrame, target_kind: str) -> dict[str, Any]:
    """How the target varies within patients (and studies), in numbers and in words."""
    s = samples.assign(patient_id=samples["patient_id"].astype(str))
    n_rows, n_pat = len(s), s["patient_id"].nunique()
    per = s.groupby("patient_id")["target"]
    distinct = int(s["target"].astype(str).nunique())
    if target_kind == "regression":
        y = s["target"].astype(float)
        within = float(s.assign(y=y).groupby("patient_id")["y"].var(ddof=0).mean())
        total = float(y.var(ddof=0))
        between = float(s.assign(y=y).groupby("patient_id")["y"].mean().var(ddof=0))
        share_within = within / total if total > 0 else 0.0
        constant = bool((per.nunique() <= 1).all())
    else:
        within = float(1.0 - per.agg(lambda t: t.astype(str).value_counts(normalize=True).iloc[0]).mean())
        total = between = float("nan")
        share_within = within
        constant = bool((per.nunique() <= 1).all())
    rows_per_patient = n_rows / max(n_pat, 1)
    sentence = (
        f"{n_rows} rows, {n_pat} patients, {distinct} distinct targets, within-patient "
        + (f"variance {within:.3g}" if target_kind == "regression" else f"disagreement {within:.3g}")
        + (f" (between-patient variance {between:.3g})" if target_kind == "regression" else "")
    )
    if constant:
        meaning = (
            f"Every row of a patient carries the same target ({rows_per_patient:.1f} rows per patient). "
            "A split that puts a patient's rows on both sides lets a model score by recognising the "
            "patient and copying the target it saw in training; only patient-held-out splits measure "
            "prediction."
        )
    else:
        meaning = (
            f"The target varies within patients (share of variance within patients {share_within:.2f}); "
            "recognising the patient helps a model only as far as the patient's targets agree."
        )
    return {
        "rows": n_rows, "patients": n_pat, "distinct_targets": distinct,
        "within_patient": within, "between_patient": between, "total": total,
        "share_within": share_within, "constant_within_patient": constant,
        "rows_per_patient": rows_per_patient, "sentence": sentence, "meaning": meaning,
    }


def memorisation_oracle(
    samples: pd.DataFrame, manifest: SplitManifest, target_kind: str
) -> dict[str, float]:
    """What a pure patient recogniser scores on a split: the share of test rows whose
    patient is in training, and (regression) the MAE of copying that patient's training
    target (the training mean for unseen patients)."""
    s = samples.assign(sample_id=samples["sample_id"].astype(str)).set_index("sample_id")
    seen_rows = total = 0
    abs_err = []
    for fold in manifest.folds:
        fit = s.loc[[i for i in list(fold.train) + list(fold.val) if i in s.index]]
        test = s.loc[[i for i in fold.test if i in s.index]]
        seen = test["patient_id"].isin(set(fit["patient_id"]))
        seen_rows += int(seen.sum())
        total += len(test)
        if target_kind == "regression" and len(fit):
            by_patient = fit.groupby("patient_id")["target"].mean()
            guess = test["patient_id"].map(by_patient).fillna(float(fit["target"].astype(float).mean()))
            abs_err += list(np.abs(guess.astype(float) - test["target"].astype(float)))
    out = {"test_rows_patient_seen": seen_rows / total if total else float("nan")}
    if abs_err:
        out["oracle_mae"] = float(np.mean(abs_err))
    return out


def check_leakage(
    samples: pd.DataFrame,
    target_kind: str,
    manifests: dict[str, SplitManifest],
    fp: Fingerprints | None = None,
    *,
    near_threshold: float = NEAR_DUPLICATE_THRESHOLD,
) -> LeakageResult:
    """Split integrity of every manifest, plus the target structure and what it allows."""
    folds, findings = split_integrity(samples, manifests, fp, near_threshold=near_threshold)
    target = target_structure(samples, target_kind)
    target["oracle"] = {p: memorisation_oracle(samples, m, target_kind) for p, m in manifests.items()}
    if target["constant_within_patient"]:
        mixing = [p for p in manifests if not folds[(folds["protocol"] == p)].empty
                  and (folds.loc[folds["protocol"] == p, "patients_both_sides"] > 0).any()]
        for p in mixing:
            seen = target["oracle"][p]["test_rows_patient_seen"]
            findings.append(Finding(
                "target constant within patients", p, None, is_leaky(manifests[p]),
                f"{p}: the target is constant within patients and {seen:.0%} of test rows belong to a "
                "patient seen in training, so recognising the patient is enough to score"
                + (f" (a pure recogniser: MAE {target['oracle'][p]['oracle_mae']:.3g})"
                   if "oracle_mae" in target["oracle"][p] else ""),
            ))
    return LeakageResult(folds, findings, target)
