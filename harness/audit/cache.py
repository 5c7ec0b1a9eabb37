"""Cache of the audit's surrogate results, keyed by everything they depend on.

Why: a warm rerun of a suite refits no model, yet the audit used to refit its surrogates
(permutation null, selection study, preprocessing scope, identity probe) every time,
which dominated the rerun. These are deterministic functions of the feature matrix, the
targets, the patients, the split manifests, the metric and the seed, so their results
are stored under ``<cache>/audit/<kind>-<key>.json`` and reused when the key matches.

The key (:func:`harness.hashing.json_digest`) covers the content of every input (the
feature matrix bytes, the sample ids, patients and targets, the manifests' sha256), the
parameters (metric, classes, n_permutations, seed, ...), :data:`AUDIT_CACHE_VERSION`,
the source of the surrogate modules and the numpy / scikit-learn versions: any change
misses. Entries are written atomically; an unreadable or malformed entry is recomputed
and overwritten, never trusted.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict
from functools import lru_cache
from pathlib import Path
from typing import Any, Callable, TypeVar

import numpy as np
import pandas as pd

from harness.atomic import atomic_write
from harness.hashing import json_digest

#: Bump when a cached result's meaning changes without a change to the modules' source.
AUDIT_CACHE_VERSION = 1

#: Modules whose source is part of every key (a code change there misses the cache).
_SURROGATE_MODULES: tuple[str, ...] = ("permutation.py", "selection.py", "identity_probe.py", "leakage.py",
                                       "head_outline.py")

T = TypeVar("T")


@lru_cache(maxsize=1)
def code_version() -> dict[str, str]:
    """The cache format version, the surrogate modules' source digest and library versions."""
    from importlib.metadata import PackageNotFoundError, version

    here = Path(__file__).parent
    src = hashlib.sha256()
    for name in _SURROGATE_MODULES:
        src.update((here / name).read_bytes())
    libs = {}
    for lib in ("numpy", "scikit-learn", "pandas"):
        try:
            libs[lib] = version(lib)
        except PackageNotFoundError:  # pragma: no cover - a vendored install
            libs[lib] = "unknown"
    return {"format": str(AUDIT_CACHE_VERSION), "source": src.hexdigest()[:16], **libs}


@lru_cache(maxsize=None)
def module_digest(name: str) -> str:
    """sha256 (16 hex) of one module of this package's source, e.g. ``report.py`` for figures."""
    return hashlib.sha256((Path(__file__).parent / name).read_bytes()).hexdigest()[:16]


def array_digest(x: Any) -> str:
    """sha256 of an array's dtype, shape and bytes (C order)."""
    a = np.ascontiguousarray(np.asarray(x))
    h = hashlib.sha256(f"{a.dtype.str}|{a.shape}|".encode())
    if a.dtype == object:
        h.update(json.dumps(a.tolist(), default=str).encode())
    else:
        h.update(a.tobytes())
    return h.hexdigest()


def samples_digest(samples: pd.DataFrame) -> str:
    """Digest of the columns the surrogates read: sample ids, patients and targets, in row order."""
    cols = {c: samples[c].astype(str).tolist() for c in ("sample_id", "patient_id", "target") if c in samples}
    return json_digest(cols)


def surrogate_inputs(x: Any, samples: pd.DataFrame, manifests: dict, *, metric: str, regression: bool,
                     classes: list | None, seed: int, manifest_shas: dict[str, str] | None = None) -> dict[str, Any]:
    """What every surrogate result depends on (``n_jobs`` is left out: results do not depend on it).

    ``manifest_shas``: the manifests' sha256 when the caller has them (each costs a canonical dump)."""
    return {"x": array_digest(x), "samples": samples_digest(samples), "seed": int(seed),
            "manifests": manifest_shas or {p: m.sha256 for p, m in manifests.items()}, "metric": metric,
            "regression": bool(regression), "classes": None if classes is None else [str(c) for c in classes]}


class AuditCache:
    """``<root>/<kind>-<key>.json`` entries; ``root=None`` disables caching (always computes)."""

    def __init__(self, root: Path | None) -> None:
        self.root = None if root is None else Path(root)
        self.hits = 0
        self.misses = 0

    @classmethod
    def under(cls, cache_dir: Path | None) -> AuditCache:
        return cls(None if cache_dir is None else Path(cache_dir) / "audit")

    def key(self, kind: str, inputs: dict[str, Any]) -> str:
        return json_digest({"kind": kind, "code": code_version(), "inputs": inputs})

    def path(self, kind: str, key: str) -> Path | None:
        return None if self.root is None else self.root / f"{kind}-{key}.json"

    def _load(self, path: Path, key: str) -> Any:
        """The stored payload, or None when the file is missing, torn or not ours."""
        try:
            doc = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError, UnicodeDecodeError):
            return None
        if not isinstance(doc, dict) or doc.get("key") != key or "payload" not in doc:
            return None
        return doc["payload"]

    def cached(self, kind: str, inputs: dict[str, Any], compute: Callable[[], T],
               encode: Callable[[T], Any], decode: Callable[[Any], T]) -> T:
        """``decode(stored)`` on a hit; otherwise ``compute()``, stored as ``encode(result)``.

        A stored payload that ``decode`` rejects (any exception) counts as damaged: recomputed."""
        key = self.key(kind, inputs)
        path = self.path(kind, key)
        if path is not None and path.exists():
            payload = self._load(path, key)
            if payload is not None:
                try:
                    result = decode(payload)
                except Exception:  # noqa: BLE001 - a damaged entry: recompute below
                    pass
                else:
                    self.hits += 1
                    return result
        self.misses += 1
        result = compute()
        if path is not None:
            text = json.dumps({"kind": kind, "key": key, "payload": encode(result)}, default=_plain)
            atomic_write(path, lambda fh: fh.write(text), text=True)
        return result


def _plain(obj: Any) -> Any:
    if isinstance(obj, (np.floating, np.integer)):
        return obj.item()
    if isinstance(obj, np.bool_):
        return bool(obj)
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    raise TypeError(f"not JSON-encodable in an audit cache entry: {type(obj).__name__}")


# --------------------------------------------------------------------------- codecs


def frame_encode(df: pd.DataFrame) -> dict:
    return {"columns": [str(c) for c in df.columns], "rows": df.to_numpy(dtype=object).tolist()}


def frame_decode(d: dict) -> pd.DataFrame:
    df = pd.DataFrame(d["rows"], columns=d["columns"])
    if not len(df.columns) == len(d["columns"]):
        raise ValueError("column count")
    return df.infer_objects()


def permutation_encode(results: list) -> list[dict]:
    return [{"protocol": r.protocol, "metric": r.metric, "observed": r.observed,
             "null": np.asarray(r.null, dtype=float).tolist(), "p_value": r.p_value} for r in results]


def permutation_decode(rows: list[dict]) -> list:
    from harness.audit.permutation import PermutationResult

    return [PermutationResult(str(r["protocol"]), str(r["metric"]), float(r["observed"]),
                              np.asarray(r["null"], dtype=float), float(r["p_value"])) for r in rows]


def selection_encode(sel: Any) -> dict:
    return {"metric": sel.metric, "grid": frame_encode(sel.grid), "selected": sel.selected,
            "selected_score": sel.selected_score, "nested_score": sel.nested_score,
            "nested_folds": [float(v) for v in sel.nested_folds]}


def selection_decode(d: dict) -> Any:
    from harness.audit.selection import SelectionResult

    return SelectionResult(str(d["metric"]), frame_decode(d["grid"]),
                           {k: v if isinstance(v, str) else float(v) for k, v in d["selected"].items()},
                           float(d["selected_score"]),
                           float(d["nested_score"]), [float(v) for v in d["nested_folds"]])


def probe_encode(p: Any) -> dict:
    return asdict(p)


def probe_decode(d: dict) -> Any:
    from harness.audit.identity_probe import IdentityProbe

    return IdentityProbe(float(d["accuracy"]), float(d["chance"]), int(d["n_patients"]), int(d["n_rows"]),
                         str(d["features"]))


_PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def png_encode(png: bytes) -> str:
    import base64

    return base64.b64encode(png).decode("ascii")


def png_decode(text: str) -> bytes:
    import base64

    png = base64.b64decode(text.encode("ascii"), validate=True)
    if not png.startswith(_PNG_MAGIC):
        raise ValueError("not a PNG")
    return png


def figure_inputs(obj: Any) -> Any:
    """JSON-able stand-in for a figure's data: frames by their content, arrays by digest."""
    if isinstance(obj, pd.DataFrame):
        return {"frame": obj.to_json(orient="split", double_precision=15)}
    if isinstance(obj, np.ndarray):
        return {"array": array_digest(obj)}
    if isinstance(obj, dict):
        return {str(k): figure_inputs(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [figure_inputs(v) for v in obj]
    if hasattr(obj, "__dataclass_fields__"):
        return {k: figure_inputs(getattr(obj, k)) for k in obj.__dataclass_fields__}
    return obj


def leakage_inputs(samples: pd.DataFrame, target_kind: str, manifests: dict, fp: Any,
                   near_threshold: float, manifest_shas: dict[str, str] | None = None) -> dict[str, Any]:
    """What :func:`harness.audit.leakage.check_leakage` reads: every sample column, the
    manifests, the pixel fingerprints (hashes and thumbnails) and the threshold."""
    rows = pd.util.hash_pandas_object(samples.astype(str), index=True).to_numpy()
    return {"samples": array_digest(rows), "columns": [str(c) for c in samples.columns], "kind": target_kind,
            "manifests": manifest_shas or {p: m.sha256 for p, m in manifests.items()}, "near_threshold": float(near_threshold),
            "fp": None if fp is None else {"ids": json_digest(list(fp.sample_ids)),
                                           "hashes": json_digest([str(h) for h in fp.hashes]),
                                           "thumbs": array_digest(fp.thumbs)}}


def leakage_encode(r: Any) -> dict:
    return {"folds": frame_encode(r.folds), "findings": [f.to_dict() for f in r.findings], "target": r.target}


def leakage_decode(d: dict) -> Any:
    from harness.audit.leakage import Finding, LeakageResult

    return LeakageResult(frame_decode(d["folds"]), [Finding(**f) for f in d["findings"]], dict(d["target"]))
