"""Explainability report: 16 Captum attribution methods on multi-modal MRI inputs.

Follows Jin et al. (MethodsX 2023; Medical Image Analysis 2023): one heatmap per
modality, SLIC superpixels per modality for the perturbation methods, heatmaps scaled to
[-1, 1], and scores (Shapley modality importance, MSFI, localisation, deletion AUC,
cascading randomisation, IG completeness, time). Works on any ``torch.nn.Module`` that
takes (B, M, H, W) or (B, M, D, H, W) input and returns class scores; see docs/explain.md.

- :mod:`methods`: the 16 methods behind one registry (:data:`METHODS`).
- :mod:`superpixels`, :mod:`postprocess`, :mod:`scores`: feature masks, display maps, scores.
- :mod:`models`, :mod:`data`: the default small multi-modal CNN and the known-truth cohort.
- :mod:`adapters`, :mod:`baselines`: registered torch baselines, fitted and handed over.
- :mod:`run`, :mod:`report`, :mod:`cli`: the ``explain`` command end to end.
"""

from typing import Any

__all__ = ["METHODS", "ExplainConfig", "attribute", "method_names"]


def __getattr__(name: str) -> Any:
    """Imported on first use (PEP 562): the CLI imports this package without needing torch."""
    if name == "ExplainConfig":
        from harness.explain.config import ExplainConfig

        return ExplainConfig
    if name in ("METHODS", "attribute", "method_names"):
        from harness.explain import methods

        return getattr(methods, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
