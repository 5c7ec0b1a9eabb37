"""The baseline interface and its registry.

A baseline follows scikit-learn's fit/predict contract: ``fit(train, val, ctx)`` returns
``self`` and ``predict(data)`` returns one prediction per sample of ``data``, in order.
"""

from __future__ import annotations

import importlib
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, ClassVar

import numpy as np

from harness.errors import HarnessError

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


class Baseline(ABC):
    """A model the harness can fit and evaluate. Subclasses set ``name`` and ``tasks``."""

    name: ClassVar[str] = ""
    tasks: ClassVar[frozenset[str]] = frozenset()
    #: "classification" or "regression" targets this baseline handles.
    target_kinds: ClassVar[frozenset[str]] = frozenset({"classification", "regression"})
    #: Published defaults and the reduced CPU profile; ``params`` overrides both.
    profiles: ClassVar[dict[str, dict[str, Any]]] = {"quick": {}, "paper": {}}

    def __init__(self, profile: str = "quick", **params: Any) -> None:
        if profile not in self.profiles:
            raise HarnessError(
                f"baseline {self.name!r} has no profile {profile!r}; known: {sorted(self.profiles)}"
            )
        self.profile = profile
        self.params: dict[str, Any] = {**self.profiles[profile], **params}

    def get_params(self) -> dict[str, Any]:
        """The resolved parameters, logged to MLflow as the baseline's config."""
        return {"profile": self.profile, **self.params}

    @abstractmethod
    def fit(self, train: "TaskData", val: "TaskData | None", ctx: FitContext) -> "Baseline":
        """Fit on ``train``; ``val`` is for early stopping or model selection only."""

    @abstractmethod
    def predict(self, data: "TaskData") -> np.ndarray:
        """One prediction per sample: class labels (as in ``data.classes``) or values."""


_REGISTRY: dict[str, type[Baseline]] = {}


def register_baseline(cls: type[Baseline]) -> type[Baseline]:
    """Class decorator: make ``cls`` available by its ``name``."""
    if not cls.name:
        raise ValueError(f"{cls.__qualname__} has no name")
    if cls.name in _REGISTRY and _REGISTRY[cls.name] is not cls:
        raise ValueError(f"baseline name {cls.name!r} registered twice")
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
        return cls
    try:
        return _REGISTRY[name]
    except KeyError:
        raise HarnessError(
            f"unknown baseline {name!r}; known: {', '.join(sorted(_REGISTRY))}"
        ) from None


def list_baselines() -> dict[str, type[Baseline]]:
    return dict(sorted(_REGISTRY.items()))
