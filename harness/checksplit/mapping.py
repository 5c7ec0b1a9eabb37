"""Map a split file's case ids to the dataset's series and patients.

Why: a split names cases in its tool's own words (nnU-Net case ids, BIDS participant and
session ids, image paths), while a leak is a fact about patients and pixels. The mapper
accepts every id the adapters know for a unit (series, study, patient; for BraTS 2020
also the 2017/2018/2019 and TCGA ids of ``name_mapping.csv``) and a few spelling
variants, and links BraTS subjects that share a TCGA patient, so two subject ids of one
person count as one patient. Ids it cannot place are reported, never guessed.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path, PurePosixPath

import pandas as pd

from harness.checksplit.readers import CaseRef
from harness.data.cohort import LABEL_MODALITIES, Cohort

#: BraTS name_mapping.csv columns with other ids of a subject; TCGA names the patient.
BRATS_ALIAS_COLUMNS = ("BraTS_2017_subject_ID", "BraTS_2018_subject_ID", "BraTS_2019_subject_ID")
BRATS_PATIENT_COLUMN = "TCGA_TCIA_subject_ID"
_MISSING = {"", "NA", "N/A", "NAN", "NONE"}
_CHANNEL = re.compile(r"_\d{4}$")  # nnU-Net channel suffix: case_0000.nii.gz
_EXT = re.compile(r"(\.nii(\.gz)?|\.nrrd|\.mha|\.mhd|\.npy|\.npz|\.h5|\.dcm|\.png|\.jpg)$", re.IGNORECASE)
_SESSION_MONTHS = re.compile(r"^(?:ses-)?m(\d+)$", re.IGNORECASE)
_SESSION_NUMBER = re.compile(r"^(?:ses-)?(?:v|visit|t|tp)?(\d+)$", re.IGNORECASE)


def norm(text: str) -> str:
    """Loose key: lower case, BIDS ``sub-``/``ses-`` prefix dropped, letters and digits only."""
    t = str(text).strip().lower()
    t = re.sub(r"^(sub|ses)-", "", t)
    return re.sub(r"[^0-9a-z]", "", t)


class _Groups:
    """Union-find over patient keys: subjects known to be one person end up together."""

    def __init__(self) -> None:
        self.parent: dict[str, str] = {}

    def find(self, a: str) -> str:
        self.parent.setdefault(a, a)
        while self.parent[a] != a:
            self.parent[a] = self.parent[self.parent[a]]
            a = self.parent[a]
        return a

    def union(self, a: str, b: str) -> None:
        ra, rb = self.find(a), self.find(b)
        if ra != rb:
            self.parent[max(ra, rb)] = min(ra, rb)


@dataclass
class MappedCase:
    ref: CaseRef
    series: list[str]
    dataset_patient: str


@dataclass
class Mapping:
    """Cases resolved to image series, with one patient key per dataset patient."""

    cases: dict[str, MappedCase] = field(default_factory=dict)  # by CaseRef.label
    unknown: list[CaseRef] = field(default_factory=list)
    patient_key: dict[str, str] = field(default_factory=dict)  # dataset patient -> patient key
    links: list[str] = field(default_factory=list)  # sentences: why subjects were joined
    matched_by: dict[str, int] = field(default_factory=dict)  # how ids were matched -> count


class CaseMapper:
    """Index of every id a cohort's units answer to."""

    def __init__(self, cohort: Cohort, id_map: dict[str, str] | None = None) -> None:
        self.cohort = cohort
        self.id_map = dict(id_map or {})
        s = cohort.series[~cohort.series["modality"].isin(LABEL_MODALITIES)]
        self.images = s
        self.by_exact: dict[str, tuple[str, str]] = {}  # id -> (level, unit)
        self.by_norm: dict[str, set[tuple[str, str]]] = {}
        self.series_of: dict[tuple[str, str], list[str]] = {}
        self.patient_of_series = dict(zip(s["series_id"].astype(str), s["patient_id"].astype(str)))
        self.studies: dict[str, list[tuple[str, str]]] = {}  # patient -> [(date, study)] sorted
        for level, col in (("series", "series_id"), ("study", "study_id"), ("patient", "patient_id")):
            for unit, grp in s.groupby(s[col].astype(str)):
                self._add(unit, level, unit)
                self.series_of[(level, unit)] = sorted(grp["series_id"].astype(str))
        for (pid, study), grp in s.groupby([s["patient_id"].astype(str), s["study_id"].astype(str)]):
            self.studies.setdefault(pid, []).append((str(grp["study_date"].iloc[0] or ""), study))
        for pid in self.studies:
            self.studies[pid].sort()
        self.groups = _Groups()
        self.links: list[str] = []
        if cohort.layout == "brats20":
            self._brats_aliases(Path(cohort.root) / "name_mapping.csv")

    def _add(self, alias: str, level: str, unit: str) -> None:
        self.by_exact.setdefault(alias, (level, unit))
        self.by_norm.setdefault(norm(alias), set()).add((level, unit))

    def _brats_aliases(self, path: Path) -> None:
        try:
            nm = pd.read_csv(path, dtype=str, keep_default_na=False)
        except Exception:  # noqa: BLE001 - the adapter already reported a bad CSV
            return
        nm.columns = [str(c).strip() for c in nm.columns]
        if "BraTS_2020_subject_ID" not in nm.columns:
            return
        known = set(self.images["patient_id"].astype(str))
        by_tcga: dict[str, list[str]] = {}
        for row in nm.to_dict("records"):
            sid = str(row["BraTS_2020_subject_ID"]).strip()
            if sid not in known:
                continue
            for col in BRATS_ALIAS_COLUMNS:
                alias = str(row.get(col, "")).strip()
                if alias.upper() not in _MISSING:
                    self._add(alias, "patient", sid)
            tcga = str(row.get(BRATS_PATIENT_COLUMN, "")).strip()
            if tcga.upper() not in _MISSING:
                by_tcga.setdefault(tcga, []).append(sid)
        for tcga, subjects in sorted(by_tcga.items()):
            for other in subjects[1:]:
                self.groups.union(subjects[0], other)
            if len(subjects) > 1:
                self.links.append(f"{', '.join(sorted(subjects))} are one patient ({tcga} in {path.name})")
            elif tcga not in self.by_exact:
                self._add(tcga, "patient", subjects[0])

    # -- lookups

    def _candidates(self, ref: CaseRef) -> list[tuple[str, str]]:
        """(how, text) pairs to try, most specific first."""
        if ref.case_id in self.id_map:  # the user's word is final: no fallback to guesses
            return [("id map", self.id_map[ref.case_id])]
        out = [("exact", ref.case_id)]
        stem = _EXT.sub("", PurePosixPath(ref.case_id.replace("\\", "/")).name)
        if stem != ref.case_id:
            out.append(("file name", stem))
        if _CHANNEL.search(stem):
            out.append(("nnU-Net channel suffix dropped", _CHANNEL.sub("", stem)))
        for hint in ref.hints:
            parts = PurePosixPath(hint.replace("\\", "/")).parts
            for part in reversed(parts):
                p = _CHANNEL.sub("", _EXT.sub("", part))
                out.append(("image path", p))
                if "_" in p:
                    out.append(("image path, suffix dropped", p.rsplit("_", 1)[0]))
        return out

    def _lookup(self, text: str) -> tuple[str, str] | None:
        hit = self.by_exact.get(text)
        if hit is not None:
            return hit
        found = self.by_norm.get(norm(text), set())
        if len(found) == 1:
            return next(iter(found))
        if found:  # several units share a loose key: take the coarsest only if it is unique
            for level in ("patient", "study", "series"):
                at = [u for u in found if u[0] == level]
                if len(at) == 1:
                    return at[0]
        return None

    def _session_study(self, patient: str, session: str) -> str | None:
        """The study a ClinicaDL/BIDS session names: ``ses-M06`` = 6 months after the first
        study (nearest), ``ses-2`` = the second study, or a study id / ISO date."""
        studies = self.studies.get(patient, [])
        if not studies:
            return None
        for d, st in studies:
            if session in (st, d) or norm(session) in (norm(st), norm(d)):
                return st
        m = _SESSION_MONTHS.match(session.strip())
        if m and all(d for d, _ in studies):
            first = date.fromisoformat(studies[0][0])
            months = int(m.group(1))
            return min(studies, key=lambda t: abs((date.fromisoformat(t[0]) - first).days / 30.44 - months))[1]
        m = _SESSION_NUMBER.match(session.strip())
        if m:
            n = int(m.group(1))
            i = n if n == 0 else n - 1
            return studies[i][1] if 0 <= i < len(studies) else None
        return None

    def map_cases(self, refs: list[CaseRef]) -> Mapping:
        out = Mapping()
        declared: dict[str, str] = {}  # declared patient -> first dataset patient
        for ref in refs:
            if ref.label in out.cases or ref in out.unknown:
                continue
            hit, how = None, ""
            for how, text in self._candidates(ref):
                hit = self._lookup(text)
                if hit is not None:
                    break
            if hit is None:
                out.unknown.append(ref)
                continue
            level, unit = hit
            series = self.series_of[(level, unit)]
            patient = self.patient_of_series[series[0]]
            if ref.session and level == "patient":
                study = self._session_study(patient, ref.session)
                if study is None:
                    out.unknown.append(ref)
                    continue
                series = self.series_of[("study", study)]
                how += " + session"
            out.matched_by[how] = out.matched_by.get(how, 0) + 1
            out.cases[ref.label] = MappedCase(ref, series, patient)
            if ref.patient and norm(ref.patient) != norm(patient) and ref.patient not in self.by_exact:
                first = declared.setdefault(ref.patient, patient)
                if first != patient:
                    self.groups.union(first, patient)
                    out.links.append(f"{first} and {patient} are one patient (both declared as "
                                     f"{ref.patient} in the split file)")
        out.links = self.links + out.links
        members: dict[str, list[str]] = {}
        for p in sorted(set(self.groups.parent) | {mc.dataset_patient for mc in out.cases.values()}):
            members.setdefault(self.groups.find(p), []).append(p)
        for mc in out.cases.values():
            group = members[self.groups.find(mc.dataset_patient)]
            out.patient_key[mc.dataset_patient] = "+".join(group) if len(group) > 1 else mc.dataset_patient
        return out

    def examples(self, n: int = 3) -> str:
        """A few ids of each level, for an error message."""
        parts = []
        for level in ("patient", "study", "series"):
            ids = sorted(u for (lv, u) in self.series_of if lv == level)[:n]
            if ids:
                parts.append(f"{level} ids like {', '.join(ids)}")
        return "; ".join(parts)
