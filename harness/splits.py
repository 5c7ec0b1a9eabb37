"""Split protocols and split manifests.

A protocol turns a samples frame into folds of sample ids. Patient-level protocols
(``patient_kfold``, ``leave_one_patient_out``) never put a patient on two sides of a
split; the published protocols (``row_random``, ``image_level``) are reproduced on
purpose and marked ``leaky`` so reports can show what the leak is worth.

A :class:`SplitManifest` records protocol, seed, resolved parameters, task, dataset
fingerprint and every fold's sample ids. Its canonical JSON is hashed (``sha256``) to tag
runs, and any manifest, including one a user supplies, is checked for patient overlap
before use (:func:`validate_manifest`).

Samples frame columns: ``sample_id`` (unique), ``patient_id``, ``image_id`` (the image or
series a sample comes from; needed by ``image_level``) and ``target`` (class label or
float; used only to stratify).
"""

from __future__ import annotations

import hashlib
import json
import os
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Sequence

import numpy as np
import pandas as pd
from sklearn.model_selection import StratifiedGroupKFold, train_test_split

from harness.atomic import atomic_write
from harness.errors import HarnessError, LeakySplitError

TASKS: tuple[str, ...] = ("classification", "regression")
ROLES: tuple[str, ...] = ("train", "val", "test")
#: Role pairs reported by :func:`patient_overlaps`, in this order.
OVERLAP_KINDS: tuple[str, ...] = ("train/test", "val/test", "train/val")
_MANIFEST_KEYS: tuple[str, ...] = (
    "protocol",
    "leaky",
    "seed",
    "params",
    "task",
    "dataset_fingerprint",
    "folds",
)


# --------------------------------------------------------------------------- data classes


@dataclass
class Fold:
    """One fold: sample ids for training, validation (may be empty) and test."""

    index: int
    train: list[str]
    val: list[str]
    test: list[str]

    def roles(self) -> dict[str, list[str]]:
        """Sample ids by role name."""
        return {"train": self.train, "val": self.val, "test": self.test}

    def to_dict(self) -> dict:
        """Canonical form: ids sorted so the manifest hash does not depend on order."""
        return {"index": self.index, **{r: sorted(ids) for r, ids in self.roles().items()}}


@dataclass
class SplitManifest:
    """Everything needed to reproduce (and audit) the folds of one protocol run."""

    protocol: str
    leaky: bool
    seed: int
    params: dict
    task: str
    dataset_fingerprint: str
    folds: list[Fold] = field(default_factory=list)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["params"] = _jsonable(self.params)
        d["folds"] = [f.to_dict() for f in sorted(self.folds, key=lambda f: f.index)]
        return d

    def to_json(self) -> str:
        """Canonical JSON: sorted keys, sorted id lists, fixed separators."""
        return json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":"), ensure_ascii=True)

    @property
    def sha256(self) -> str:
        """Hash of the canonical JSON; used as a run tag."""
        return hashlib.sha256(self.to_json().encode("utf-8")).hexdigest()

    def save(self, path: str | os.PathLike) -> None:
        """Write the canonical JSON atomically, so an interrupted run leaves no torn file."""
        atomic_write(Path(path), lambda fh: fh.write(self.to_json()), text=True)

    @classmethod
    def load(cls, path: str | os.PathLike) -> SplitManifest:
        """Read a manifest; a bad or incomplete file raises HarnessError naming it."""
        path = Path(path)
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise HarnessError(f"split manifest {path}: cannot read JSON ({exc})") from exc
        manifest = cls.from_dict(data, source=str(path))
        manifest.source = str(path)  # type: ignore[attr-defined]  # not a field: kept out of the JSON and its hash
        return manifest

    @classmethod
    def from_dict(cls, data: Any, *, source: str = "<dict>") -> SplitManifest:
        """Build from parsed JSON, checking keys and types."""
        if not isinstance(data, dict):
            raise HarnessError(f"split manifest {source}: expected a JSON object")
        missing = [k for k in _MANIFEST_KEYS if k not in data]
        if missing:
            raise HarnessError(f"split manifest {source}: missing keys {missing}")
        if not isinstance(data["folds"], list) or not isinstance(data["params"], dict):
            raise HarnessError(
                f"split manifest {source}: 'folds' must be a list, 'params' an object"
            )
        folds = []
        for i, f in enumerate(data["folds"]):
            if not isinstance(f, dict) or any(k not in f for k in ("index", *ROLES)):
                raise HarnessError(
                    f"split manifest {source}: fold {i} needs keys 'index', 'train', 'val', 'test'"
                )
            if not all(isinstance(f[r], list) for r in ROLES):
                raise HarnessError(f"split manifest {source}: fold {i} roles must be id lists")
            folds.append(Fold(int(f["index"]), *([str(s) for s in f[r]] for r in ROLES)))
        return cls(
            protocol=str(data["protocol"]),
            leaky=bool(data["leaky"]),
            seed=int(data["seed"]),
            params=dict(data["params"]),
            task=str(data["task"]),
            dataset_fingerprint=str(data["dataset_fingerprint"]),
            folds=folds,
        )


def _jsonable(params: dict) -> dict:
    """Params as they read back from JSON (tuples become lists), for comparisons."""
    return json.loads(json.dumps(params, sort_keys=True))


# --------------------------------------------------------------------------- helpers


def _check_samples(
    samples: pd.DataFrame, needs: Sequence[str] = ("sample_id", "patient_id")
) -> None:
    """Required columns present, at least one row, unique sample ids."""
    missing = [c for c in needs if c not in samples.columns]
    if missing:
        raise HarnessError(f"samples frame lacks columns {missing}")
    if len(samples) == 0:
        raise HarnessError("samples frame is empty: nothing to split")
    dup = samples["sample_id"].astype(str)
    dup = dup[dup.duplicated()]
    if len(dup):
        raise HarnessError(f"sample_id values are not unique, e.g. {sorted(set(dup))[:5]}")


def _sub_seed(seed: int, *keys: int) -> int:
    """An independent, reproducible int seed for one fold/repeat."""
    return int(np.random.SeedSequence([int(seed), *keys]).generate_state(1)[0])


def _infer_task(target: pd.Series) -> str:
    """Float targets with many values are regression; anything else classification."""
    if pd.api.types.is_float_dtype(target) and target.nunique() > 20:
        return "regression"
    return "classification"


def _unit_labels(
    samples: pd.DataFrame, unit: str, task: str | None, n_bins: int
) -> tuple[np.ndarray, np.ndarray | None]:
    """Units (sorted) and one stratification label per unit (None: cannot stratify).

    Classification: the unit's most frequent target. Regression: quantile bin of the
    unit's mean target.
    """
    units = np.asarray(sorted(samples[unit].astype(str).unique()), dtype=object)
    if "target" not in samples.columns or samples["target"].isna().any():
        return units, None
    keyed = samples.assign(_u=samples[unit].astype(str))
    task = task or _infer_task(samples["target"])
    if task == "regression":
        per_unit = keyed.groupby("_u")["target"].mean().reindex(units)
        q = max(1, min(n_bins, len(units)))
        labels = pd.qcut(per_unit.rank(method="first"), q, labels=False, duplicates="drop")
        return units, labels.to_numpy().astype(str)
    counts = (
        pd.DataFrame({"u": keyed["_u"], "t": samples["target"].astype(str)})
        .value_counts()
        .reset_index(name="n")
        .sort_values(["u", "n", "t"], ascending=[True, False, True], kind="stable")
        .drop_duplicates("u")
        .set_index("u")["t"]
    )  # most frequent label per unit, ties -> smallest label
    return units, counts.reindex(units).to_numpy().astype(str)


def _take(
    labels: np.ndarray | None, n_units: int, n_take: int, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """Split unit positions into (rest, taken) with ``n_take`` taken; stratified when possible."""
    idx = np.arange(n_units)
    if n_take <= 0:
        return idx, idx[:0]
    if n_take >= n_units:
        return idx[:0], idx
    if labels is not None:
        try:
            rest, taken = train_test_split(
                idx, test_size=n_take, stratify=labels, random_state=seed
            )
            return np.sort(rest), np.sort(taken)
        except ValueError:  # a class too small to stratify: fall back to a plain split
            pass
    rest, taken = train_test_split(idx, test_size=n_take, random_state=seed)
    return np.sort(rest), np.sort(taken)


def _fraction_count(fraction: float, n: int) -> int:
    """Units for a fraction: rounded, but at least one when the fraction is positive."""
    return 0 if fraction <= 0 else max(1, int(round(fraction * n)))


def ratio_counts(ratios: Sequence[float], n: int) -> tuple[int, int, int]:
    """Resolve ``ratios`` (train, val, test) into unit counts.

    Integers summing to ``n`` are counts (e.g. ``(48, 0, 12)`` on 60 units); otherwise
    they must be non-negative fractions summing to 1 (e.g. ``(0.8, 0.1, 0.1)``); val and
    test then get ``round(fraction * n)`` units (at least one if the fraction is > 0)
    and train the rest.
    """
    vals = [float(r) for r in ratios]
    if len(vals) != 3 or any(v < 0 for v in vals):
        raise HarnessError(
            f"ratios must be three non-negative numbers (train, val, test), got {ratios}"
        )
    if all(v.is_integer() for v in vals) and sum(vals) == n:
        counts = tuple(int(v) for v in vals)
    elif abs(sum(vals) - 1.0) < 1e-6:
        n_val, n_test = _fraction_count(vals[1], n), _fraction_count(vals[2], n)
        counts = (n - n_val - n_test, n_val, n_test)
    else:
        raise HarnessError(
            f"ratios {tuple(ratios)} are neither fractions summing to 1 nor counts summing "
            f"to the {n} units being split"
        )
    if counts[0] < 1 or counts[2] < 1:
        raise HarnessError(f"ratios {tuple(ratios)} on {n} units leave no train or no test units")
    return counts  # type: ignore[return-value]


class _UnitIndex:
    """Sample ids grouped by unit (patient, image or sample), built once per split."""

    def __init__(self, samples: pd.DataFrame, unit: str) -> None:
        self._codes, self._units = pd.factorize(samples[unit].astype(str))
        self._ids = samples["sample_id"].astype(str).to_numpy(dtype=object)

    def ids(self, chosen: np.ndarray) -> list[str]:
        """Sorted sample ids of the chosen units (one vectorised pass over the samples)."""
        selected = np.zeros(len(self._units), dtype=bool)
        selected[self._units.get_indexer(chosen)] = True
        return sorted(self._ids[selected[self._codes]].tolist())


def _val_split(
    units: np.ndarray, labels: np.ndarray | None, pool: np.ndarray, val_fraction: float, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """Split unit positions ``pool`` into (train, val) units, keeping >= 1 training unit."""
    n_val = min(_fraction_count(val_fraction, len(pool)), len(pool) - 1)
    sub_labels = None if labels is None else labels[pool]
    rest, taken = _take(sub_labels, len(pool), n_val, seed)
    return units[pool[rest]], units[pool[taken]]


# --------------------------------------------------------------------------- protocols


class SplitProtocol:
    """Base class: a named, registered way of turning samples into folds."""

    name: ClassVar[str] = ""
    leaky: ClassVar[bool] = False
    #: What an honest protocol holds out, as ``python -m harness list`` says it.
    held_out: ClassVar[str] = "patient-level"
    defaults: ClassVar[dict[str, Any]] = {}
    needs: ClassVar[tuple[str, ...]] = ("sample_id", "patient_id")

    def resolve_params(self, **params: Any) -> dict[str, Any]:
        """Defaults filled in, unknown names rejected; this is what a manifest records."""
        unknown = sorted(set(params) - set(self.defaults))
        if unknown:
            raise HarnessError(
                f"split protocol {self.name!r} has no parameter(s) {unknown}; "
                f"known: {sorted(self.defaults)}"
            )
        return _jsonable({**self.defaults, **params})

    def split(
        self, samples: pd.DataFrame, seed: int, *, task: str | None = None, **params: Any
    ) -> list[Fold]:
        """Folds for ``samples``; deterministic given ``seed``."""
        _check_samples(samples, self.needs)
        return self._split(samples, int(seed), task, self.resolve_params(**params))

    def _split(self, samples: pd.DataFrame, seed: int, task: str | None, p: dict) -> list[Fold]:
        raise NotImplementedError


class PatientKFold(SplitProtocol):
    """Stratified group k-fold on patient; inner validation split also by patient."""

    name = "patient_kfold"
    leaky = False
    defaults = {"n_splits": 5, "val_fraction": None}

    def _split(self, samples: pd.DataFrame, seed: int, task: str | None, p: dict) -> list[Fold]:
        k = int(p["n_splits"])
        val_fraction = 1.0 / (k - 1) if p["val_fraction"] is None else float(p["val_fraction"])
        n_bins = max(1, min(10, samples["patient_id"].nunique() // max(k, 1)))
        units, labels = _unit_labels(samples, "patient_id", task, n_bins=n_bins)
        if k < 2 or len(units) < k:
            raise HarnessError(
                f"patient_kfold needs 2 <= n_splits <= patients ({len(units)}), got {k}"
            )
        patient_pos = pd.Index(units).get_indexer(samples["patient_id"].astype(str))
        index = _UnitIndex(samples, "patient_id")
        folds = []
        for i, test_units in enumerate(self._test_units(units, labels, patient_pos, k, seed)):
            pool = np.setdiff1d(np.arange(len(units)), test_units)
            train_u, val_u = _val_split(units, labels, pool, val_fraction, _sub_seed(seed, i))
            test_ids = index.ids(units[test_units])
            folds.append(Fold(i, index.ids(train_u), index.ids(val_u), test_ids))
        return folds

    @staticmethod
    def _test_units(
        units: np.ndarray, labels: np.ndarray | None, patient_pos: np.ndarray, k: int, seed: int
    ) -> list[np.ndarray]:
        """Patient positions of each test fold from StratifiedGroupKFold over the rows."""
        row_y = np.zeros(len(patient_pos), dtype=int) if labels is None else labels[patient_pos]
        for y in (row_y, np.zeros(len(patient_pos), dtype=int)):  # stratified, then plain
            cv = StratifiedGroupKFold(n_splits=k, shuffle=True, random_state=seed)
            try:
                with warnings.catch_warnings():  # "least populated class has only N members"
                    warnings.simplefilter("ignore", UserWarning)
                    splits = cv.split(patient_pos, y, groups=patient_pos)
                    tests = [np.unique(patient_pos[t]) for _, t in splits]
            except ValueError:
                continue
            if all(len(t) for t in tests):
                return tests
        raise HarnessError(f"patient_kfold could not form {k} non-empty folds")  # pragma: no cover


class LeaveOnePatientOut(SplitProtocol):
    """Each patient is one test fold; validation is a seeded subset of the others."""

    name = "leave_one_patient_out"
    leaky = False
    defaults = {"val_fraction": 0.2}

    def _split(self, samples: pd.DataFrame, seed: int, task: str | None, p: dict) -> list[Fold]:
        units, labels = _unit_labels(samples, "patient_id", task, n_bins=5)
        if len(units) < 2:
            raise HarnessError("leave_one_patient_out needs at least 2 patients")
        index = _UnitIndex(samples, "patient_id")
        folds = []
        for i in range(len(units)):
            pool = np.delete(np.arange(len(units)), i)
            val_fraction = float(p["val_fraction"])
            train_u, val_u = _val_split(units, labels, pool, val_fraction, _sub_seed(seed, i))
            folds.append(Fold(i, index.ids(train_u), index.ids(val_u), index.ids(units[i : i + 1])))
        return folds


class LeaveOneSiteOut(SplitProtocol):
    """Each acquiring site is one test fold (its patients); validation is a patient subset
    of the other sites. Why: where the site goes with the label, a model that reads the
    scanner scores above chance under patient-held-out splits too (harness.audit.site_confound);
    holding the site out measures the score without that route."""

    name = "leave_one_site_out"
    leaky = False
    held_out = "site-level (a site's patients held out together)"
    defaults = {"val_fraction": 0.2}

    def _split(self, samples: pd.DataFrame, seed: int, task: str | None, p: dict) -> list[Fold]:
        if "site" not in samples.columns:
            raise HarnessError("leave_one_site_out needs each sample's acquiring site; these samples name "
                               "none (the DICOM reader takes it from InstitutionName; NIfTI layouts have none)")
        site = samples["site"].fillna("").astype(str).str.strip()
        if (site == "").any():
            missing = sorted(samples.loc[site == "", "patient_id"].astype(str).unique())
            raise HarnessError(f"leave_one_site_out: no site for {len(missing)} patient(s), e.g. "
                               f"{', '.join(missing[:5])}; it needs every sample's acquiring site")
        per_patient = pd.DataFrame({"p": samples["patient_id"].astype(str), "s": site}).drop_duplicates()
        shared = per_patient[per_patient["p"].duplicated(keep=False)]["p"].unique()
        if len(shared):
            raise HarnessError(f"leave_one_site_out: patient(s) scanned at several sites, e.g. "
                               f"{', '.join(sorted(shared)[:5])}; a site fold would split them")
        sites = sorted(per_patient["s"].unique())
        if len(sites) < 2:
            raise HarnessError(f"leave_one_site_out needs at least 2 sites, got {sites}")
        units, labels = _unit_labels(samples, "patient_id", task, n_bins=5)
        site_of = per_patient.set_index("p")["s"].reindex(units).to_numpy()
        index = _UnitIndex(samples, "patient_id")
        folds = []
        for i, test_site in enumerate(sites):
            test = np.flatnonzero(site_of == test_site)
            pool = np.flatnonzero(site_of != test_site)
            train_u, val_u = _val_split(units, labels, pool, float(p["val_fraction"]), _sub_seed(seed, i))
            folds.append(Fold(i, index.ids(train_u), index.ids(val_u), index.ids(units[test])))
        return folds


class _UnitRandom(SplitProtocol):
    """Random (stratified when possible) split of units by ``ratios``, ``n_repeats`` times."""

    unit: ClassVar[str] = "sample_id"

    def _split(self, samples: pd.DataFrame, seed: int, task: str | None, p: dict) -> list[Fold]:
        units, labels = _unit_labels(samples, self.unit, task, n_bins=5)
        n_train, n_val, n_test = ratio_counts(p["ratios"], len(units))
        index = _UnitIndex(samples, self.unit)
        folds = []
        for r in range(int(p["n_repeats"])):
            rest, test = _take(labels, len(units), n_test, _sub_seed(seed, r, 0))
            rest_labels = None if labels is None else labels[rest]
            train, val = _take(rest_labels, len(rest), n_val, _sub_seed(seed, r, 1))
            folds.append(
                Fold(
                    r,
                    index.ids(units[rest[train]]),
                    index.ids(units[rest[val]]),
                    index.ids(units[test]),
                )
            )
        return folds


class RowRandom(_UnitRandom):
    """Published protocol: random rows (slices), patients ignored. Leaky by design.

    ``ratios`` = (train, val, test): fractions summing to 1, or integer counts summing to
    the number of samples (e.g. ``(48, 0, 12)``); see :func:`ratio_counts`.
    """

    name = "row_random"
    leaky = True
    defaults = {"ratios": [0.8, 0.1, 0.1], "n_repeats": 1}
    unit = "sample_id"


class ImageLevel(_UnitRandom):
    """Published protocol: each image is its own unit; a patient's images are split apart.

    Samples follow their image, so an image is never split, but patients are. ``ratios``
    as for ``row_random``, counted in images.
    """

    name = "image_level"
    leaky = True
    defaults = {"ratios": [0.8, 0.0, 0.2], "n_repeats": 1}
    unit = "image_id"
    needs = ("sample_id", "patient_id", "image_id")


PROTOCOLS: dict[str, type[SplitProtocol]] = {
    cls.name: cls for cls in (PatientKFold, LeaveOnePatientOut, LeaveOneSiteOut, RowRandom, ImageLevel)
}


def get_protocol(name: str) -> SplitProtocol:
    """The registered protocol ``name``; HarnessError listing the known ones otherwise."""
    try:
        return PROTOCOLS[name]()
    except KeyError:
        raise HarnessError(
            f"unknown split protocol {name!r}; known: {', '.join(sorted(PROTOCOLS))}"
        ) from None


# --------------------------------------------------------------------------- manifests


def make_manifest(
    protocol: str,
    samples: pd.DataFrame,
    *,
    seed: int,
    task: str,
    dataset_fingerprint: str,
    **params: Any,
) -> SplitManifest:
    """Run ``protocol`` on ``samples`` and record the result."""
    if task not in TASKS:
        raise HarnessError(f"unknown task {task!r}; known: {', '.join(TASKS)}")
    proto = get_protocol(protocol)
    resolved = proto.resolve_params(**params)
    return SplitManifest(
        protocol=protocol,
        leaky=proto.leaky,
        seed=int(seed),
        params=resolved,
        task=task,
        dataset_fingerprint=dataset_fingerprint,
        folds=proto.split(samples, int(seed), task=task, **resolved),
    )


def _assignments(manifest: SplitManifest) -> pd.DataFrame:
    """Long table (fold, role, sample_id), one row per listed id."""
    parts = [
        pd.DataFrame({"fold": f.index, "role": role, "sample_id": [str(s) for s in ids]})
        for f in manifest.folds
        for role, ids in f.roles().items()
    ]
    if not parts:
        return pd.DataFrame({"fold": [], "role": [], "sample_id": []})
    return pd.concat(parts, ignore_index=True)


def patient_overlaps(manifest: SplitManifest, samples: pd.DataFrame) -> list[tuple[int, str, str]]:
    """(fold, patient_id, "train/test" | "val/test" | "train/val") for every patient on
    two sides of a fold. Ids unknown to ``samples`` are ignored here."""
    patient_of = pd.Series(
        samples["patient_id"].astype(str).to_numpy(), index=samples["sample_id"].astype(str)
    )
    rows = _assignments(manifest)
    rows["patient_id"] = rows["sample_id"].map(patient_of)
    rows = rows.dropna(subset=["patient_id"]).drop_duplicates(["fold", "role", "patient_id"])
    if rows.empty:
        return []
    present = rows.assign(v=True).pivot_table(
        index=["fold", "patient_id"], columns="role", values="v", aggfunc="any", fill_value=False
    )
    out: list[tuple[int, str, str]] = []
    for kind in OVERLAP_KINDS:
        a, b = kind.split("/")
        if a in present.columns and b in present.columns:
            both = present.index[(present[a] & present[b]).to_numpy()]
            out.extend((int(f), str(pid), kind) for f, pid in both)
    return sorted(out, key=lambda t: (t[0], t[1], OVERLAP_KINDS.index(t[2])))


def is_leaky(manifest: SplitManifest) -> bool:
    """Leaky if the manifest says so or its protocol is registered as leaky."""
    registered = PROTOCOLS.get(manifest.protocol)
    return bool(manifest.leaky or (registered is not None and registered.leaky))


def validate_manifest(
    manifest: SplitManifest, samples: pd.DataFrame, *, dataset_fingerprint: str | None = None
) -> None:
    """Refuse a manifest that does not fit ``samples`` or leaks patients without saying so."""
    _check_samples(samples)
    # Name the file in every refusal, so a user with several manifests knows which one.
    where = getattr(manifest, "source", "") or "<in memory>"
    if dataset_fingerprint is not None and manifest.dataset_fingerprint != dataset_fingerprint:
        raise HarnessError(
            f"split manifest {where} was made for dataset {manifest.dataset_fingerprint!r}, "
            f"not this one ({dataset_fingerprint!r})"
        )
    rows = _assignments(manifest)
    unknown = rows.loc[~rows["sample_id"].isin(samples["sample_id"].astype(str)), "sample_id"]
    if len(unknown):
        names = sorted(set(unknown))
        raise HarnessError(
            f"split manifest {where} lists {len(names)} sample id(s) not in the dataset, "
            f"e.g. {names[:5]}"
        )
    dup = rows[rows.duplicated(["fold", "sample_id"], keep=False)]
    if len(dup):
        first = dup.iloc[0]
        roles = sorted(dup.loc[dup["sample_id"] == first["sample_id"], "role"].tolist())
        raise HarnessError(
            f"split manifest {where} fold {first['fold']}: sample {first['sample_id']!r} is listed "
            f"more than once ({', '.join(roles)}); {dup['sample_id'].nunique()} such sample(s)"
        )
    if is_leaky(manifest):
        return
    overlaps = patient_overlaps(manifest, samples)
    if overlaps:
        shown = "; ".join(f"patient {p} in fold {f} ({k})" for f, p, k in overlaps[:10])
        more = f" and {len(overlaps) - 10} more" if len(overlaps) > 10 else ""
        raise LeakySplitError(
            f"split manifest {where} for non-leaky protocol {manifest.protocol!r} puts patients on "
            f"both sides of a split: {shown}{more}"
        )


def load_or_create_manifest(
    path: Path,
    protocol: str,
    samples: pd.DataFrame,
    *,
    seed: int,
    task: str,
    dataset_fingerprint: str,
    **params: Any,
) -> tuple[SplitManifest, bool]:
    """Reuse the manifest at ``path`` if it was made with the same settings (after
    validating it), else make, save and return a new one. The bool says "reused"."""
    path = Path(path)
    resolved = get_protocol(protocol).resolve_params(**params)
    if path.exists():
        old = SplitManifest.load(path)
        wanted = (protocol, int(seed), resolved, task, dataset_fingerprint)
        found = (old.protocol, old.seed, _jsonable(old.params), old.task, old.dataset_fingerprint)
        same = found == wanted
        if same:
            validate_manifest(old, samples, dataset_fingerprint=dataset_fingerprint)
            return old, True
    manifest = make_manifest(
        protocol, samples, seed=seed, task=task, dataset_fingerprint=dataset_fingerprint, **resolved
    )
    validate_manifest(manifest, samples, dataset_fingerprint=dataset_fingerprint)
    manifest.save(path)
    return manifest, False
