"""The 16 attribution methods of Jin et al. behind one registry, all through Captum.

Every method is ``fn(model, x, target, config, inputs) -> Tensor`` of x's shape
(1, M, *spatial): one heatmap per modality. Gradient methods use the model's
internals; perturbation methods (but occlusion) treat each (modality, SLIC superpixel)
as one feature. The reference input is ``config.baseline_value`` everywhere (zeros by
default, as in the paper).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F
from captum.attr import (
    IntegratedGradients,
    DeepLift,
    Deconvolution,
    FeatureAblation,
    FeaturePermutation,
    GradientShap,
    GuidedBackprop,
    GuidedGradCam,
    InputXGradient,
    KernelShap,
    LayerGradCam,
    Lime,
    NoiseTunnel,
    Occlusion,
    Saliency,
    ShapleyValueSampling,
)
from torch import nn

from harness.errors import HarnessError
from harness.explain.config import ExplainConfig
from harness.explain.superpixels import modality_feature_mask

CONV_TYPES = (nn.Conv1d, nn.Conv2d, nn.Conv3d)
RECURRENT_TYPES = (nn.LSTM, nn.GRU, nn.RNN)


@dataclass
class MethodInputs:
    """Per-case extras some methods need; computed on demand when not given.

    ``feature_mask``: (1, M, *spatial) long ids (SLIC per modality). ``batch``: other
    cases of x's shape (N, M, *spatial) for feature permutation, which needs a batch to
    permute across. ``layer``: the layer for Grad-CAM (default: last convolution).
    """

    feature_mask: torch.Tensor | None = None
    batch: torch.Tensor | None = None
    layer: nn.Module | None = None
    #: Written by integrated gradients: the steps it needed and its relative convergence delta.
    ig_steps_used: int | None = None
    ig_relative_delta: float | None = None


MethodFn = Callable[[nn.Module, torch.Tensor, int, ExplainConfig, MethodInputs], torch.Tensor]


@dataclass(frozen=True)
class Method:
    """A registered method: its function, its family and whether it needs superpixels."""

    name: str
    label: str
    family: str  # "gradient" or "perturbation"
    fn: MethodFn
    needs_conv: bool = False


def last_conv(model: nn.Module) -> nn.Module:
    """The topmost convolution (the last one registered): Grad-CAM's layer in the paper."""
    convs = [m for m in model.modules() if isinstance(m, CONV_TYPES)]
    if not convs:
        raise HarnessError(f"{type(model).__name__} has no convolutional layer for Grad-CAM")
    return convs[-1]


def has_conv(model: nn.Module) -> bool:
    return any(isinstance(m, CONV_TYPES) for m in model.modules())


def is_recurrent(model: nn.Module) -> bool:
    return any(isinstance(m, RECURRENT_TYPES) for m in model.modules())


def _ref(x: torch.Tensor, cfg: ExplainConfig) -> torch.Tensor:
    return torch.full_like(x, float(cfg.baseline_value))


def _mask(x: torch.Tensor, cfg: ExplainConfig, extra: MethodInputs) -> torch.Tensor:
    if extra.feature_mask is None:
        extra.feature_mask = modality_feature_mask(x, cfg.n_segments, cfg.compactness)
    return extra.feature_mask


def _grad_input(x: torch.Tensor) -> torch.Tensor:
    return x.detach().clone().requires_grad_(True)


# -- gradient methods ---------------------------------------------------------------------

def saliency(model, x, target, cfg, extra):
    """Plain gradient, signed (abs=False) so the heatmap keeps direction."""
    return Saliency(model).attribute(_grad_input(x), target=target, abs=False)


def deconvolution(model, x, target, cfg, extra):
    return Deconvolution(model).attribute(_grad_input(x), target=target)


def guided_backprop(model, x, target, cfg, extra):
    return GuidedBackprop(model).attribute(_grad_input(x), target=target)


def smoothgrad(model, x, target, cfg, extra):
    """SmoothGrad: gradient averaged over Gaussian neighbours (sd relative to the input range)."""
    scale = float(x.abs().max().clamp_min(1e-8))
    return NoiseTunnel(Saliency(model)).attribute(
        _grad_input(x), target=target, nt_type="smoothgrad", nt_samples=cfg.smoothgrad_samples,
        nt_samples_batch_size=min(cfg.smoothgrad_samples, cfg.internal_batch_size),
        stdevs=cfg.smoothgrad_stdev * scale, abs=False)


def input_x_gradient(model, x, target, cfg, extra):
    return InputXGradient(model).attribute(_grad_input(x), target=target)


def integrated_gradients(model, x, target, cfg, extra):
    """IG with enough steps: doubled from ``ig_steps`` until Captum's convergence delta is
    within ``ig_tolerance`` of f(x) - f(x0) (or ``ig_max_steps``); both are recorded."""
    ig, ref = IntegratedGradients(model), _ref(x, cfg)
    with torch.no_grad():
        gap = abs(float(model(x)[0, target]) - float(model(ref)[0, target]))
    steps = max(1, int(cfg.ig_steps))
    while True:
        attr, delta = ig.attribute(_grad_input(x), baselines=ref, target=target, n_steps=steps,
                                   internal_batch_size=cfg.internal_batch_size, return_convergence_delta=True)
        relative = abs(float(delta.sum())) / gap if gap > 1e-12 else abs(float(delta.sum()))
        if relative <= cfg.ig_tolerance or steps >= cfg.ig_max_steps:
            break
        steps = min(2 * steps, int(cfg.ig_max_steps))
    extra.ig_steps_used, extra.ig_relative_delta = steps, relative
    return attr


def deeplift(model, x, target, cfg, extra):
    return DeepLift(model).attribute(_grad_input(x), baselines=_ref(x, cfg), target=target)


def gradient_shap(model, x, target, cfg, extra):
    """GradientSHAP with the reference as its baseline distribution (one zero image)."""
    return GradientShap(model).attribute(
        _grad_input(x), baselines=_ref(x, cfg), target=target, n_samples=cfg.gradshap_samples,
        stdevs=cfg.gradshap_stdev)


def _upsample(attr: torch.Tensor, size: tuple[int, ...]) -> torch.Tensor:
    mode = {1: "linear", 2: "bilinear", 3: "trilinear"}[len(size)]
    return F.interpolate(attr, size=size, mode=mode, align_corners=False)


def _per_modality_cam(cam: torch.Tensor, x: torch.Tensor) -> torch.Tensor | None:
    """A layer map of batch B*M (a per-modality wrapper folds modalities into the batch) as (B, M, ...)."""
    b, m = x.shape[:2]
    if cam.shape[0] == b * m and m > 1 and cam.shape[1] == 1:
        return cam.reshape(b, m, *cam.shape[2:])
    return None


def _fit_cam(cam: torch.Tensor, x: torch.Tensor, mode: str | None = None) -> torch.Tensor:
    """(B, M, *layer spatial) -> x's shape. A 2D map of an input with one more axis (three
    cuts read as channels by a 2D network) is upsampled in-plane and repeated along it."""
    nd = cam.dim() - 2
    size = tuple(x.shape[-nd:])
    cam = _upsample(cam, size) if mode is None else F.interpolate(cam, size=size, mode=mode)
    while cam.dim() < x.dim():
        cam = cam.unsqueeze(2)
    return cam.expand_as(x).contiguous()


def grad_cam(model, x, target, cfg, extra):
    """Grad-CAM on the last convolution, upsampled to the input; the same map for every modality.

    Grad-CAM sees the fused feature maps, not the modalities: it cannot tell them apart,
    which is why its modality-importance correlation is undefined (ties) in the report.
    A model that runs each modality through its layers separately (a per-modality
    wrapper, batch B*M at the layer) gets one map per modality.
    """
    layer = extra.layer or last_conv(model)
    cam = LayerGradCam(model, layer).attribute(_grad_input(x), target=target, relu_attributions=False)
    per = _per_modality_cam(cam.detach(), x)
    if per is not None:
        return _fit_cam(per, x)
    cam = _upsample(cam.detach(), tuple(x.shape[2:]))
    return cam.expand_as(x).contiguous()


def guided_grad_cam(model, x, target, cfg, extra):
    """Guided Grad-CAM: Guided Backprop (per modality) times the upsampled Grad-CAM."""
    layer = extra.layer or last_conv(model)
    probe = LayerGradCam(model, layer).attribute(_grad_input(x), target=target, relu_attributions=True)
    per = _per_modality_cam(probe.detach(), x)
    if per is None:
        return GuidedGradCam(model, layer).attribute(_grad_input(x), target=target, interpolate_mode="nearest")
    return GuidedBackprop(model).attribute(_grad_input(x), target=target) * _fit_cam(per, x, "nearest")


# -- perturbation methods -----------------------------------------------------------------

def occlusion(model, x, target, cfg, extra):
    """A window over one modality at a time (window depth 1 along the modality axis)."""
    win = tuple(min(cfg.occlusion_window, s) for s in x.shape[2:])
    stride = tuple(min(cfg.occlusion_stride, w) for w in win)
    return Occlusion(model).attribute(
        x.detach(), sliding_window_shapes=(1, *win), strides=(1, *stride), baselines=float(cfg.baseline_value),
        target=target, perturbations_per_eval=cfg.perturbations_per_eval)


def feature_ablation(model, x, target, cfg, extra):
    return FeatureAblation(model).attribute(
        x.detach(), baselines=float(cfg.baseline_value), target=target, feature_mask=_mask(x, cfg, extra),
        perturbations_per_eval=cfg.perturbations_per_eval)


def _permutation_batch(x: torch.Tensor, cfg: ExplainConfig, extra: MethodInputs) -> torch.Tensor:
    """The case first, then other cases (given) or, failing those, flipped copies of itself."""
    n = max(2, int(cfg.permutation_batch))
    others = extra.batch if extra.batch is not None else torch.empty((0, *x.shape[1:]), dtype=x.dtype)
    others = others.to(x.device, x.dtype)
    fillers = [torch.flip(x, dims=(d,)) for d in range(2, x.dim())]
    fillers += [torch.flip(x, dims=tuple(range(2, x.dim())))]
    pool = torch.cat([others, *fillers], dim=0)
    return torch.cat([x, pool[: n - 1]], dim=0)


def feature_permutation(model, x, target, cfg, extra):
    """Permute each feature's values across a batch (x first); x's row is returned."""
    batch = _permutation_batch(x.detach(), cfg, extra)
    torch.manual_seed(cfg.seed)
    attr = FeaturePermutation(model).attribute(
        batch, target=target, feature_mask=_mask(x, cfg, extra), perturbations_per_eval=1)
    return attr[:1]


def lime(model, x, target, cfg, extra):
    torch.manual_seed(cfg.seed)
    return Lime(model).attribute(
        x.detach(), baselines=float(cfg.baseline_value), target=target, feature_mask=_mask(x, cfg, extra),
        n_samples=cfg.lime_samples, perturbations_per_eval=cfg.perturbations_per_eval)


def shapley_sampling(model, x, target, cfg, extra):
    torch.manual_seed(cfg.seed)
    return ShapleyValueSampling(model).attribute(
        x.detach(), baselines=float(cfg.baseline_value), target=target, feature_mask=_mask(x, cfg, extra),
        n_samples=cfg.shapley_samples, perturbations_per_eval=cfg.perturbations_per_eval)


def kernel_shap(model, x, target, cfg, extra):
    torch.manual_seed(cfg.seed)
    return KernelShap(model).attribute(
        x.detach(), baselines=float(cfg.baseline_value), target=target, feature_mask=_mask(x, cfg, extra),
        n_samples=cfg.kernelshap_samples, perturbations_per_eval=cfg.perturbations_per_eval)


METHODS: dict[str, Method] = {m.name: m for m in (
    Method("gradient", "Gradient", "gradient", saliency),
    Method("deconvolution", "Deconvolution", "gradient", deconvolution),
    Method("guided_backprop", "Guided Backprop", "gradient", guided_backprop),
    Method("smoothgrad", "SmoothGrad", "gradient", smoothgrad),
    Method("input_x_gradient", "Input x Gradient", "gradient", input_x_gradient),
    Method("integrated_gradients", "Integrated Gradients", "gradient", integrated_gradients),
    Method("deeplift", "DeepLift", "gradient", deeplift),
    Method("gradient_shap", "Gradient SHAP", "gradient", gradient_shap),
    Method("grad_cam", "Grad-CAM", "gradient", grad_cam, needs_conv=True),
    Method("guided_grad_cam", "Guided Grad-CAM", "gradient", guided_grad_cam, needs_conv=True),
    Method("occlusion", "Occlusion", "perturbation", occlusion),
    Method("feature_ablation", "Feature Ablation", "perturbation", feature_ablation),
    Method("feature_permutation", "Feature Permutation", "perturbation", feature_permutation),
    Method("lime", "LIME", "perturbation", lime),
    Method("shapley_sampling", "Shapley Value Sampling", "perturbation", shapley_sampling),
    Method("kernel_shap", "Kernel SHAP", "perturbation", kernel_shap),
)}


def method_names(family: str | None = None) -> list[str]:
    """Registered names in the paper's order (optionally one family)."""
    return [n for n, m in METHODS.items() if family is None or m.family == family]


def applicable_methods(model: nn.Module, wanted: list[str] | None = None) -> tuple[list[str], dict[str, str]]:
    """The requested methods this model supports, and why the others are skipped.

    Recurrent models (the LSTM baselines) get the gradient methods only (on CPU: cuDNN's
    RNN backward refuses eval mode on GPU); Grad-CAM needs a convolution.
    """
    names = wanted or method_names()
    unknown = [n for n in names if n not in METHODS]
    if unknown:
        raise HarnessError(f"unknown explain method(s) {unknown}; known: {', '.join(METHODS)}")
    keep, skipped = [], {}
    conv, rnn = has_conv(model), is_recurrent(model)
    for n in names:
        m = METHODS[n]
        if m.needs_conv and not conv:
            skipped[n] = "no convolutional layer"
        elif rnn and m.family != "gradient":
            skipped[n] = "recurrent model: gradient methods only"
        else:
            keep.append(n)
    return keep, skipped


def attribute(name: str, model: nn.Module, x: torch.Tensor, target: int, cfg: ExplainConfig | None = None,
              extra: MethodInputs | None = None) -> torch.Tensor:
    """Run one registered method; returns a detached float tensor of x's shape."""
    if name not in METHODS:
        raise HarnessError(f"unknown explain method {name!r}; known: {', '.join(METHODS)}")
    if x.dim() not in (4, 5) or x.shape[0] != 1:
        raise HarnessError(f"explain expects one case shaped (1, M, H, W) or (1, M, D, H, W), got {tuple(x.shape)}")
    cfg = cfg or ExplainConfig()
    extra = extra if extra is not None else MethodInputs()
    model.eval()
    with warnings.catch_warnings():
        # Captum announces every hook it sets on ReLUs; that is expected here.
        warnings.filterwarnings("ignore", message=".*hooks.*", category=UserWarning)
        # torch.use_deterministic_algorithms(warn_only=True), set by the baselines' training
        warnings.filterwarnings("ignore", message=".*deterministic.*", category=UserWarning)
        attr = METHODS[name].fn(model, x, int(target), cfg, extra)
    attr = attr.detach().float()
    if attr.shape != x.shape:
        raise HarnessError(f"method {name} returned shape {tuple(attr.shape)} for input {tuple(x.shape)}")
    return attr
