"""The baseline interface and its registry.

A baseline follows scikit-learn's fit/predict contract: ``fit(train, val, ctx)`` returns
``self`` and ``predict(data)`` returns one prediction per sample of ``data``, in order.
A classifier that can say how sure it is also implements ``predict_proba`` (one row of
class probabilities per sample, columns in ``classes_`` order); the runner then writes the
probabilities beside the labels and the patient-level metrics average them.
"""

from __future__ import annotations

import hashlib
import importlib
import inspect
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, ClassVar

import numpy as np

from harness.errors import HarnessError
from harness.source_closure import source_digest

if TYPE_CHECKING:  # pragma: no cover
    from harness.tasks import TaskData


@dataclass
class FitContext:
    """What a baseline may use besides its data: device, seed, profile, caches, a logger.

    ``history`` collects per-epoch records (dicts) for the overfitting report.
    ``weights`` maps a baseline name (or ``"*"``) to a local pretrained-weights file
    (``--weights``); nothing is ever downloaded. ``tags`` are extra run tags a baseline
    reports (e.g. which weights it started from).
    """

    seed: int = 0
    device: str = "cpu"
    profile: str = "quick"
    work_dir: Path | None = None
    history: list[dict[str, float]] = field(default_factory=list)
    log: Callable[[str], None] = print
    weights: dict[str, Path] = field(default_factory=dict)
    #: ``--trust-model-file``: weights files may be full pickles (they can run code).
    trust_model_files: bool = False
    tags: dict[str, str] = field(default_factory=dict)


#: The tasks a baseline may claim: the runner's task plugins (harness.tasks) and the
#: segmentation suite. A baseline naming any other task is refused when it registers.
KNOWN_TASKS: frozenset[str] = frozenset({"grading", "progression", "survival", "segmentation"})
#: The target kinds a baseline may claim.
KNOWN_TARGET_KINDS: frozenset[str] = frozenset({"classification", "regression", "segmentation"})


class Baseline(ABC):
    """A model the harness can fit and evaluate. Subclasses set ``name`` and ``tasks``.

    Its parameters are the keys of its ``profiles`` (plus ``extra_params``): anything
    else is refused when the baseline is built, so a misspelt suite parameter fails
    loudly instead of being ignored.
    """

    name: ClassVar[str] = ""
    tasks: ClassVar[frozenset[str]] = frozenset()
    #: "classification" or "regression" targets this baseline handles.
    target_kinds: ClassVar[frozenset[str]] = frozenset({"classification", "regression"})
    #: Published defaults and the reduced CPU profile; ``params`` overrides both.
    profiles: ClassVar[dict[str, dict[str, Any]]] = {"quick": {}, "paper": {}}
    #: Optional parameters that no profile sets (their default lives in the code).
    extra_params: ClassVar[frozenset[str]] = frozenset()

    @classmethod
    def param_names(cls) -> frozenset[str]:
        """Every parameter this baseline accepts."""
        names: set[str] = set(cls.extra_params)
        for values in cls.profiles.values():
            names.update(values)
        return frozenset(names)

    def __init__(self, profile: str = "quick", **params: Any) -> None:
        if profile not in self.profiles:
            raise HarnessError(
                f"baseline {self.name!r} has no profile {profile!r}; known: {sorted(self.profiles)}"
            )
        unknown = sorted(set(params) - self.param_names())
        if unknown:
            raise HarnessError(
                f"baseline {self.name!r} has no parameter(s) {', '.join(map(repr, unknown))}; "
                f"it takes: {', '.join(sorted(self.param_names())) or 'none'}"
            )
        self.profile = profile
        self.params: dict[str, Any] = {**self.profiles[profile], **params}

    def prefetch(self, data: "TaskData", ctx: FitContext) -> None:
        """Work that every fold of this baseline would repeat on ``data`` (a frozen
        backbone's embeddings of every sample), done once by the driver before the folds
        fan out, so fold jobs read it instead of computing it beside other folds' training.
        Must not change what ``fit`` computes. Default: nothing to share."""

    def get_params(self) -> dict[str, Any]:
        """The resolved parameters, logged to MLflow as the baseline's config."""
        return {"profile": self.profile, **self.params}

    @abstractmethod
    def fit(self, train: "TaskData", val: "TaskData | None", ctx: FitContext) -> "Baseline":
        """Fit on ``train``; ``val`` is for early stopping or model selection only."""

    @abstractmethod
    def predict(self, data: "TaskData") -> np.ndarray:
        """One prediction per sample: class labels (as in ``data.classes``) or values."""

    def predict_proba(self, data: "TaskData") -> np.ndarray | None:
        """Class probabilities, shape (len(data), len(self.classes_)), or None for a model
        that gives labels only (the default; its patients are then scored by a vote)."""
        return None


def labels_from_proba(classes: list, proba: np.ndarray) -> np.ndarray:
    """The most probable class of each row (ties: the first in ``classes`` order)."""
    if not len(proba):
        return np.array([], dtype=object)
    return np.array([classes[i] for i in np.asarray(proba).argmax(axis=1)], dtype=object)


_REGISTRY: dict[str, type[Baseline]] = {}


def check_baseline_class(cls: type[Baseline]) -> None:
    """Refuse a baseline whose declarations cannot be honoured: no name, no tasks, a task
    or target kind the harness does not know, or no ``quick`` profile."""
    where = f"{cls.__module__}.{cls.__qualname__}"
    if not cls.name:
        raise HarnessError(f"baseline class {where} has no name")
    if not cls.tasks:
        raise HarnessError(f"baseline {cls.name!r} ({where}) claims no task")
    unknown_tasks = sorted(set(cls.tasks) - KNOWN_TASKS)
    if unknown_tasks:
        raise HarnessError(f"baseline {cls.name!r} ({where}) claims unknown task(s) {unknown_tasks}; "
                           f"known: {sorted(KNOWN_TASKS)}")
    unknown_kinds = sorted(set(cls.target_kinds) - KNOWN_TARGET_KINDS)
    if unknown_kinds:
        raise HarnessError(f"baseline {cls.name!r} ({where}) claims unknown target kind(s) {unknown_kinds}")
    if "quick" not in cls.profiles:
        raise HarnessError(f"baseline {cls.name!r} ({where}) has no 'quick' profile")
    if inspect.isabstract(cls):
        raise HarnessError(f"baseline {cls.name!r} ({where}) does not implement fit and predict")


def register_baseline(cls: type[Baseline]) -> type[Baseline]:
    """Class decorator: make ``cls`` available by its ``name`` (checked first)."""
    check_baseline_class(cls)
    if cls.name in _REGISTRY and _REGISTRY[cls.name] is not cls:
        raise HarnessError(f"baseline name {cls.name!r} registered twice "
                           f"({_REGISTRY[cls.name].__module__} and {cls.__module__})")
    _REGISTRY[cls.name] = cls
    return cls


def get_baseline(name: str) -> type[Baseline]:
    """Find a registered baseline, or import ``package.module:ClassName``."""
    if ":" in name:
        module_name, _, attr = name.partition(":")
        try:
            cls = getattr(importlib.import_module(module_name), attr)
        except (ImportError, AttributeError) as exc:
            raise HarnessError(f"cannot import baseline {name!r}: {exc}") from exc
        if not (isinstance(cls, type) and issubclass(cls, Baseline)):
            raise HarnessError(f"{name!r} is not a Baseline subclass")
        check_baseline_class(cls)
        return cls
    try:
        return _REGISTRY[name]
    except KeyError:
        raise HarnessError(
            f"unknown baseline {name!r}; known: {', '.join(sorted(_REGISTRY))}"
        ) from None


@lru_cache(maxsize=None)
def baseline_code_digest(name: str) -> str:
    """sha256 (16 hex digits) of the code behind baseline ``name``: the module that defines
    it and every module of the harness and the baselines it imports, directly or not
    (``harness.source_closure``).

    Part of every fold's cache key, so a fold cached by other code is refitted, not
    reused: a fix to a baseline, or to the feature extractor or training engine it calls,
    changes its results at the next run without a version bump.
    """
    cls = get_baseline(name)
    digest = source_digest(cls.__module__)
    if digest != "unknown":
        return digest
    source = inspect.getsourcefile(cls)  # defined outside an importable module
    if source is None or not Path(source).is_file():
        return "unknown"
    return hashlib.sha256(Path(source).read_bytes()).hexdigest()[:16]


def create_baseline(name: str, profile: str = "quick", **overrides: Any) -> Baseline:
    """The one way the harness builds a baseline, as timm's ``create_model``: the
    registered (or ``module:Class``) baseline ``name`` with ``profile``'s parameters and
    ``overrides`` on top. Unknown names, profiles and parameters fail here."""
    return get_baseline(name)(profile=profile, **overrides)


def list_baselines(task: str | None = None) -> dict[str, type[Baseline]]:
    """Registered baselines by name, optionally only those claiming ``task``."""
    return {n: c for n, c in sorted(_REGISTRY.items()) if task is None or task in c.tasks}
