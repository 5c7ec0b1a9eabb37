"""Read other tools' split files into one neutral form: folds of case ids by role.

Why a neutral form: the checks do not care whether a split came from nnU-Net, ClinicaDL,
MONAI or a spreadsheet, only which cases sit on which side. Each reader turns a bad file
into a :class:`HarnessError` that names the file, never a traceback.

Roles: ``train`` (what the model fits), ``val`` (nnU-Net's and ClinicaDL's held-out fold,
MONAI's fold ``k``) and ``test`` (a held-out set shared by every fold, where present).
"""

from __future__ import annotations

import csv
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from harness.errors import HarnessError

FORMATS: tuple[str, ...] = ("auto", "nnunet", "clinicadl", "monai", "csv")
ROLES: tuple[str, ...] = ("train", "val", "test")

#: Role names as spelled in the wild -> the role they mean.
ROLE_ALIASES: dict[str, str] = {
    "train": "train", "training": "train", "tr": "train", "fit": "train",
    "val": "val", "valid": "val", "validation": "val", "dev": "val", "tune": "val",
    "test": "test", "testing": "test", "ts": "test", "holdout": "test", "hold-out": "test",
}
#: CSV column names tried, in order, for each field (case-insensitive).
CASE_COLUMNS = ("case_id", "case", "id", "subject_id", "subject", "image_id", "participant_id",
                "sample_id", "series_id", "study_id", "identifier")
FOLD_COLUMNS = ("fold", "split", "cv_fold", "kfold")
ROLE_COLUMNS = ("role", "set", "subset", "partition", "phase", "group_name", "stage")
PATIENT_COLUMNS = ("patient_id", "patient", "participant", "subject_patient")
SESSION_COLUMNS = ("session_id", "session", "visit", "timepoint")
#: MONAI record keys that may name the case directly.
MONAI_ID_KEYS = ("id", "case_id", "subject_id", "subject", "name", "identifier")
MONAI_IMAGE_KEYS = ("image", "img", "images", "t1", "flair")


@dataclass(frozen=True)
class CaseRef:
    """One case as the split file names it: the id, an optional session, and where it came from.

    ``hints`` are further strings the id mapper may try (e.g. MONAI image paths), and
    ``patient`` a patient id the file itself declares (CSV column, ClinicaDL participant).
    """

    case_id: str
    session: str = ""
    patient: str = ""
    hints: tuple[str, ...] = ()

    @property
    def label(self) -> str:
        return f"{self.case_id} {self.session}".strip()


@dataclass
class UserFold:
    index: int
    roles: dict[str, list[CaseRef]] = field(default_factory=dict)

    def cases(self, role: str) -> list[CaseRef]:
        return self.roles.get(role, [])


@dataclass
class UserSplit:
    """A split as read from a file: its format, the file(s) and the folds."""

    format: str
    source: str
    folds: list[UserFold]
    files: list[str] = field(default_factory=list)

    def all_cases(self) -> list[tuple[str, CaseRef]]:
        """(file the case came from, case) for every case of every fold and role."""
        return [(self.source, c) for f in self.folds for r in f.roles.values() for c in r]


def _fail(path: Path | str, why: str) -> HarnessError:
    return HarnessError(f"split file {path}: {why}")


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8-sig"))
    except FileNotFoundError:
        raise _fail(path, "no such file") from None
    except IsADirectoryError:
        raise _fail(path, "is a folder, not a JSON file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise _fail(path, f"cannot read it ({exc})") from None
    except json.JSONDecodeError as exc:
        raise _fail(path, f"not valid JSON (line {exc.lineno}, column {exc.colno}: {exc.msg})") from None


def _ids(value: Any, path: Path, where: str) -> list[str]:
    if not isinstance(value, list) or not all(isinstance(v, (str, int)) for v in value):
        raise _fail(path, f"{where} must be a list of case ids (strings)")
    return [str(v).strip() for v in value if str(v).strip()]


# --------------------------------------------------------------------------- nnU-Net


def read_nnunet(path: Path) -> UserSplit:
    """``splits_final.json``: a list of ``{"train": [...], "val": [...]}``, one per fold."""
    data = _read_json(path)
    if isinstance(data, dict) and {"train", "val"} <= set(data):
        data = [data]  # a single fold written as one object
    if not isinstance(data, list) or not data:
        raise _fail(path, "expected an nnU-Net splits list: [{\"train\": [...], \"val\": [...]}, ...]")
    folds = []
    for i, entry in enumerate(data):
        if not isinstance(entry, dict) or "train" not in entry or "val" not in entry:
            raise _fail(path, f"fold {i}: expected an object with 'train' and 'val' lists")
        folds.append(UserFold(i, {"train": [CaseRef(c) for c in _ids(entry["train"], path, f"fold {i} 'train'")],
                                  "val": [CaseRef(c) for c in _ids(entry["val"], path, f"fold {i} 'val'")]}))
    return UserSplit("nnunet", str(path), folds, [str(path)])


# --------------------------------------------------------------------------- ClinicaDL

_SPLIT_DIR = re.compile(r"^split[-_]?(\d+)$", re.IGNORECASE)


def _split_number(name: str) -> int:
    """N of a ``split-N`` folder name (only names that matched :data:`_SPLIT_DIR` get here)."""
    match = _SPLIT_DIR.match(name)
    return int(match.group(1)) if match else -1
#: ClinicaDL file stems -> roles (``*_baseline.tsv`` holds the baseline sessions only).
_TSV_ROLES = {"train": "train", "validation": "val", "valid": "val", "val": "val", "test": "test"}


def _read_tsv(path: Path) -> list[CaseRef]:
    try:
        with path.open(newline="", encoding="utf-8-sig") as fh:
            rows = list(csv.DictReader(fh, delimiter="\t"))
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise _fail(path, f"cannot read it as TSV ({exc})") from None
    if not rows:
        return []
    cols = {c.strip().lower(): c for c in rows[0] if c is not None}
    if "participant_id" not in cols:
        raise _fail(path, f"no participant_id column (found {', '.join(cols) or 'none'})")
    pc, sc = cols["participant_id"], cols.get("session_id")
    out = []
    for row in rows:
        pid = str(row.get(pc) or "").strip()
        if pid:
            out.append(CaseRef(pid, str(row.get(sc) or "").strip() if sc else "", patient=pid))
    return out


def _tsv_roles(folder: Path) -> dict[str, Path]:
    """role -> TSV file in ``folder``; ``train.tsv`` preferred over ``train_baseline.tsv``."""
    found: dict[str, Path] = {}
    for p in sorted(folder.glob("*.tsv"), key=lambda q: (q.stem.endswith("_baseline"), q.name)):
        stem = p.stem.lower().removesuffix("_baseline")
        role = _TSV_ROLES.get(stem)
        if role and role not in found:
            found[role] = p
    return found


def read_clinicadl(path: Path) -> UserSplit:
    """A ClinicaDL split folder: ``split-N/{train,validation}.tsv`` (k-fold), a ``test.tsv``
    beside them or inside each split, or one folder of ``train/validation/test.tsv``."""
    if not path.is_dir():
        raise _fail(path, "a ClinicaDL split is a folder of split-N/ folders or TSV files")
    split_dirs = sorted((d for d in path.rglob("*") if d.is_dir() and _SPLIT_DIR.match(d.name)
                         and len(d.relative_to(path).parts) <= 2),
                        key=lambda d: _split_number(d.name))
    top = _tsv_roles(path)
    files: list[str] = []
    folds = []
    if split_dirs:
        shared_test = _read_tsv(top["test"]) if "test" in top else []
        if "test" in top:
            files.append(str(top["test"]))
        for d in split_dirs:
            roles = _tsv_roles(d)
            if "train" not in roles or "val" not in roles:
                raise _fail(d, "expected train.tsv and validation.tsv in this split folder "
                               f"(found {', '.join(sorted(p.name for p in d.glob('*.tsv'))) or 'no TSV'})")
            fold = UserFold(_split_number(d.name), {r: _read_tsv(p) for r, p in roles.items()})
            if "test" not in fold.roles and shared_test:
                fold.roles["test"] = list(shared_test)
            files += [str(p) for p in roles.values()]
            folds.append(fold)
    elif "train" in top and ("val" in top or "test" in top):
        folds.append(UserFold(0, {r: _read_tsv(p) for r, p in top.items()}))
        files += [str(p) for p in top.values()]
    else:
        raise _fail(path, "no ClinicaDL split found: expected split-N/train.tsv and split-N/validation.tsv, "
                          "or train.tsv with validation.tsv or test.tsv")
    return UserSplit("clinicadl", str(path), folds, files)


# --------------------------------------------------------------------------- MONAI


def _monai_case(rec: Any, path: Path, where: str) -> CaseRef:
    if isinstance(rec, str):
        return CaseRef(rec, hints=(rec,))
    if not isinstance(rec, dict):
        raise _fail(path, f"{where}: expected a record object, got {type(rec).__name__}")
    lower = {str(k).lower(): v for k, v in rec.items()}
    paths: list[str] = []
    for key in MONAI_IMAGE_KEYS + ("label", "seg"):
        v = lower.get(key)
        if isinstance(v, str):
            paths.append(v)
        elif isinstance(v, list):
            paths += [str(x) for x in v if isinstance(x, str)]
    for key in MONAI_ID_KEYS:
        if lower.get(key) not in (None, ""):
            return CaseRef(str(lower[key]).strip(), patient=str(lower.get("patient_id") or ""),
                           hints=tuple(paths))
    if not paths:
        raise _fail(path, f"{where}: a record needs an 'image' path or an 'id' to name its case")
    return CaseRef(paths[0], patient=str(lower.get("patient_id") or ""), hints=tuple(paths))


def read_monai(path: Path, fold_key: str = "fold") -> UserSplit:
    """A MONAI datalist: ``{"training": [{"image": ..., "fold": k}, ...], "testing": [...]}``.

    Fold ``k`` validates on the training records with ``fold == k`` and trains on the rest;
    a ``validation`` list without fold keys is one fold's validation set; ``testing`` is
    held out from every fold.
    """
    data = _read_json(path)
    if not isinstance(data, dict) or not isinstance(data.get("training"), list):
        raise _fail(path, "expected a MONAI datalist: an object with a 'training' list of records")
    train = data["training"]
    test = [_monai_case(r, path, f"testing[{i}]") for i, r in enumerate(data.get("testing") or [])
            if not isinstance(r, dict) or r.get(fold_key) is None]
    with_fold, cases = [], []
    for i, rec in enumerate(train):
        case = _monai_case(rec, path, f"training[{i}]")
        fold = rec.get(fold_key) if isinstance(rec, dict) else None
        if fold is not None:
            try:
                fold = int(fold)
            except (TypeError, ValueError):
                raise _fail(path, f"training[{i}]: {fold_key} {fold!r} is not an integer") from None
        with_fold.append(fold)
        cases.append(case)
    folds = []
    if any(f is not None for f in with_fold):
        missing = [cases[i].case_id for i, f in enumerate(with_fold) if f is None]
        if missing:
            raise _fail(path, f"{len(missing)} training record(s) without a '{fold_key}' key, e.g. "
                              f"{', '.join(missing[:3])}")
        for k in sorted({f for f in with_fold if f is not None}):
            folds.append(UserFold(k, {"train": [c for c, f in zip(cases, with_fold) if f != k],
                                      "val": [c for c, f in zip(cases, with_fold) if f == k],
                                      **({"test": list(test)} if test else {})}))
    else:
        val = [_monai_case(r, path, f"validation[{i}]") for i, r in enumerate(data.get("validation") or [])]
        if not val and not test:
            raise _fail(path, f"no '{fold_key}' key in the training records and no 'validation' or "
                              "'testing' list: nothing is held out")
        folds.append(UserFold(0, {"train": cases, **({"val": val} if val else {}),
                                  **({"test": test} if test else {})}))
    return UserSplit("monai", str(path), folds, [str(path)])


# --------------------------------------------------------------------------- CSV


def _column(cols: dict[str, str], names: tuple[str, ...]) -> str | None:
    for n in names:
        if n in cols:
            return cols[n]
    return None


def read_csv_split(path: Path) -> UserSplit:
    """A table of case id + fold and/or role (+ optional patient id, session).

    - fold only: fold ``k`` holds out the rows with ``fold == k`` (a k-fold assignment);
    - role only: one fold with those roles;
    - fold and role: each row is the case's role in that fold; rows with role ``test``
      and no fold are held out from every fold.
    """
    try:
        text = path.read_text(encoding="utf-8-sig")
    except FileNotFoundError:
        raise _fail(path, "no such file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise _fail(path, f"cannot read it ({exc})") from None
    try:
        dialect = csv.Sniffer().sniff(text[:4096], delimiters=",;\t")
        rows = list(csv.DictReader(text.splitlines(), dialect=dialect))
    except csv.Error:
        rows = list(csv.DictReader(text.splitlines()))
    if not rows:
        raise _fail(path, "no rows")
    cols = {str(c).strip().lower(): c for c in rows[0] if c is not None}
    case_c = _column(cols, CASE_COLUMNS)
    fold_c, role_c = _column(cols, FOLD_COLUMNS), _column(cols, ROLE_COLUMNS)
    pat_c, ses_c = _column(cols, PATIENT_COLUMNS), _column(cols, SESSION_COLUMNS)
    if case_c is None:
        raise _fail(path, f"no case id column (tried {', '.join(CASE_COLUMNS)}; found {', '.join(cols)})")
    if fold_c is None and role_c is None:
        raise _fail(path, f"no fold or role column (tried {', '.join(FOLD_COLUMNS + ROLE_COLUMNS)}; "
                          f"found {', '.join(cols)})")
    entries: list[tuple[int | None, str | None, CaseRef]] = []
    for n, row in enumerate(rows, start=2):
        cid = str(row.get(case_c) or "").strip()
        if not cid:
            continue
        ref = CaseRef(cid, str(row.get(ses_c) or "").strip() if ses_c else "",
                      str(row.get(pat_c) or "").strip() if pat_c else "")
        fold = None
        raw_fold = str(row.get(fold_c) or "").strip() if fold_c else ""
        if raw_fold:
            try:
                fold = int(float(raw_fold))
            except ValueError:
                raw_role = ROLE_ALIASES.get(raw_fold.lower())
                if raw_role is None or role_c is not None:
                    raise _fail(path, f"line {n}: fold {raw_fold!r} is not a number") from None
                entries.append((None, raw_role, ref))  # a 'split' column that holds roles
                continue
        role = None
        if role_c:
            raw = str(row.get(role_c) or "").strip().lower()
            role = ROLE_ALIASES.get(raw) if raw else None
            if raw and role is None:
                raise _fail(path, f"line {n}: unknown role {raw!r} (expected one of train, val, test)")
        if fold is None and role is None:
            raise _fail(path, f"line {n}: case {cid} has neither a fold nor a role")
        entries.append((fold, role, ref))
    numbered = sorted({f for f, _, _ in entries if f is not None})
    folds = []
    if numbered and any(r is not None and f is not None for f, r, _ in entries):
        shared_test = [c for f, r, c in entries if f is None and r == "test"]
        for k in numbered:
            roles: dict[str, list[CaseRef]] = {}
            for f, r, c in entries:
                if f == k:
                    roles.setdefault(r or "val", []).append(c)
            if shared_test:
                roles.setdefault("test", []).extend(shared_test)
            folds.append(UserFold(k, roles))
    elif numbered:
        shared_test = [c for f, r, c in entries if f is None and r == "test"]
        for k in numbered:
            folds.append(UserFold(k, {"train": [c for f, _, c in entries if f is not None and f != k],
                                      "val": [c for f, _, c in entries if f == k],
                                      **({"test": shared_test} if shared_test else {})}))
    else:
        by_role: dict[str, list[Any]] = {}
        for _, r, c in entries:
            by_role.setdefault(str(r), []).append(c)
        folds.append(UserFold(0, by_role))
    for user_fold in folds:
        if not user_fold.cases("train") or not (user_fold.cases("val") or user_fold.cases("test")):
            raise _fail(path, f"fold {user_fold.index} needs training cases and held-out (val or test) cases")
    return UserSplit("csv", str(path), folds, [str(path)])


def read_id_map(path: Path | str) -> dict[str, str]:
    """``--id-map``: a two-column CSV, the split's case id then the dataset id it stands for
    (patient, study or series id), for tools that renamed cases (nnU-Net's ``BRATS_001``)."""
    path = Path(path).expanduser()
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        raise HarnessError(f"id map {path}: cannot read it ({exc})") from None
    rows = [r for r in csv.reader(text.splitlines()) if any(c.strip() for c in r)]
    if not rows or any(len(r) < 2 for r in rows):
        raise HarnessError(f"id map {path}: expected two columns per line: case id, dataset id")
    if rows[0][0].strip().lower() in CASE_COLUMNS + ("split_id", "nnunet_id"):
        rows = rows[1:]  # a header line
    out: dict[str, str] = {}
    for n, r in enumerate(rows, start=1):
        a, b = r[0].strip(), r[1].strip()
        if a in out and out[a] != b:
            raise HarnessError(f"id map {path}: case {a} mapped twice ({out[a]}, {b})")
        out[a] = b
    return out


# --------------------------------------------------------------------------- detection


def detect_format(path: Path) -> str:
    """'nnunet', 'clinicadl', 'monai' or 'csv' from the file's shape, not only its name."""
    if not path.exists():
        raise _fail(path, "no such file or folder")
    if path.is_dir():
        if any(_SPLIT_DIR.match(d.name) for d in path.rglob("*") if d.is_dir()) or list(path.glob("*.tsv")):
            return "clinicadl"
        raise _fail(path, "a folder, but no ClinicaDL split-N/ folders or TSV files in it")
    suffix = path.suffix.lower()
    if suffix == ".json":
        data = _read_json(path)
        if isinstance(data, list) or (isinstance(data, dict) and {"train", "val"} <= set(data)):
            return "nnunet"
        if isinstance(data, dict) and "training" in data:
            return "monai"
        raise _fail(path, "JSON that is neither an nnU-Net splits list nor a MONAI datalist "
                          "(an object with a 'training' list)")
    if suffix in (".csv", ".tsv", ".txt"):
        return "csv"
    raise _fail(path, f"unknown split format for suffix {suffix or '(none)'}; pass --format")


def read_split(path: Path | str, fmt: str = "auto") -> UserSplit:
    """Read a split file or folder in ``fmt`` (``auto`` detects)."""
    path = Path(path).expanduser()
    if fmt not in FORMATS:
        raise HarnessError(f"unknown split format {fmt!r}; choose one of {', '.join(FORMATS)}")
    if fmt == "auto":
        fmt = detect_format(path)
    if not path.exists():
        raise _fail(path, "no such file or folder")
    if fmt == "clinicadl":
        return read_clinicadl(path)
    if path.is_dir():
        raise _fail(path, f"a folder; the {fmt} format is one file")
    return {"nnunet": read_nnunet, "monai": read_monai, "csv": read_csv_split}[fmt](path)
