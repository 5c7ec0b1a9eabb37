"""Knobs of the explain engine: one dataclass, filled from a suite's ``[explain]`` table.

The sample counts and batch sizes trade time for fidelity; they are all here so a user
can see and change them in one place (and so they are logged to MLflow as params).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from typing import Any

from harness.errors import HarnessError


@dataclass
class ExplainConfig:
    """Settings for attribution, post-processing and scoring (defaults: the quick profile)."""

    # -- references and batching
    baseline_value: float = 0.0  # reference input for IG, DeepLift, GradientSHAP, ablation
    perturbations_per_eval: int = 16  # perturbed inputs per forward pass (perturbation methods)
    internal_batch_size: int = 32  # IG steps per forward/backward pass
    # -- sample counts
    ig_steps: int = 32  # starting point: doubled until the completeness error is within ig_tolerance
    ig_tolerance: float = 0.005  # |sum(IG) - (f(x) - f(x0))| / |f(x) - f(x0)| the steps must reach
    ig_max_steps: int = 512  # cost ceiling: the steps used and the completeness error are reported per case
    smoothgrad_samples: int = 16
    smoothgrad_stdev: float = 0.15  # noise sd, in units of the (normalised) input
    gradshap_samples: int = 16
    gradshap_stdev: float = 0.1
    lime_samples: int = 200
    kernelshap_samples: int = 200
    shapley_samples: int = 4  # permutations for Shapley value sampling
    permutation_batch: int = 4  # batch size for feature permutation (Jin et al. used 4)
    # -- superpixels (SLIC, foreground only) and occlusion
    n_segments: int = 24  # SLIC superpixels per case (shared by every modality, ids per modality)
    compactness: float = 0.1
    occlusion_window: int = 8  # pixels (voxels) along each spatial axis, one modality at a time
    occlusion_stride: int = 4
    # -- post-processing (display and localisation scores)
    smooth_sigma: float = 1.0  # Gaussian sigma in pixels; 0 disables
    percentile: float = 99.0
    # -- scores
    mask_dilation: int = 2  # pixels the tumour mask is dilated by (MSFI, localisation)
    deletion_steps: int = 16
    sanity_methods: list[str] = field(default_factory=lambda: ["all"])
    sanity_threshold: float = 0.5  # a method passes when rank similarity after full randomisation < this
    sanity_cases: int = 1  # cases that get the (costly) randomisation check, the first ones
    seed: int = 0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_mapping(cls, raw: dict[str, Any] | None, source: str = "[explain]") -> "ExplainConfig":
        """Build from a TOML table; unknown keys are an error, not silently ignored."""
        raw = dict(raw or {})
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(raw) - known)
        if unknown:
            raise HarnessError(f"{source}: unknown explain option(s) {unknown}; known: {sorted(known)}")
        return cls(**raw)
