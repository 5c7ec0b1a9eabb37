"""Registered baselines, discovered: every public module of this package is imported
and registers its classes, so adding a baseline is adding one file.

Like timm's model registry: ``create_baseline("majority", profile="quick")`` builds one
by name; ``"package.module:ClassName"`` imports a user's own baseline.
"""

from __future__ import annotations

import importlib
import pkgutil

from baselines.registry import (
    KNOWN_TASKS,
    Baseline,
    FitContext,
    create_baseline,
    get_baseline,
    list_baselines,
    register_baseline,
)

#: Modules that hold shared machinery, not baselines (imported by those that need them).
_SUPPORT_MODULES = frozenset({"registry", "torch_loop", "torch_inputs", "timm_backbone"})


def _discover() -> list[str]:
    """Import every baseline module; torch ones are skipped where torch is missing."""
    skipped: list[str] = []
    for info in sorted(pkgutil.iter_modules(__path__), key=lambda m: m.name):
        if info.name.startswith("_") or info.name in _SUPPORT_MODULES:
            continue
        try:
            importlib.import_module(f"{__name__}.{info.name}")
        except ModuleNotFoundError as exc:  # pragma: no cover - the harness runs without torch
            if exc.name not in ("torch", "torchvision", "timm", "captum"):
                raise
            skipped.append(info.name)
    return skipped


SKIPPED_MODULES = _discover()

__all__ = ["KNOWN_TASKS", "Baseline", "FitContext", "create_baseline", "get_baseline", "list_baselines",
           "register_baseline", "SKIPPED_MODULES"]
