"""Tests of the explain engine on models and data whose answer is known."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from harness.explain import METHODS, ExplainConfig, attribute, method_names
from harness.explain.methods import MethodInputs, applicable_methods
from harness.explain.postprocess import postprocess, scale
from harness.explain.scores import (
    cascading_randomisation,
    completeness_error,
    deletion_curve,
    localisation,
    modality_shapley,
    msfi,
)
from harness.explain.superpixels import modality_feature_mask

FAST = ExplainConfig(ig_steps=16, smoothgrad_samples=4, gradshap_samples=4, lime_samples=30, kernelshap_samples=30,
                     shapley_samples=1, n_segments=6, occlusion_window=4, occlusion_stride=4, deletion_steps=8)


def tiny_cnn(m: int = 4, seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Conv2d(m, 6, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                         nn.Conv2d(6, 6, 3, padding=1), nn.ReLU(), nn.AdaptiveMaxPool2d(1), nn.Flatten(),
                         nn.Linear(6, 2)).eval()


def case(m: int = 4, size: int = 16, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(1, m, size, size, generator=g) + 0.1
    x[..., :2, :] = 0  # background rows, as outside a head
    return x


class ChannelModel(nn.Module):
    """Logits depend on the mean of one channel only: that channel must rank first."""

    def __init__(self, channel: int) -> None:
        super().__init__()
        self.channel = channel

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = x[:, self.channel].flatten(1).mean(1) * 4.0
        return torch.stack([-s, s], dim=1)


class LinearModel(nn.Module):
    def __init__(self, shape: tuple[int, ...], seed: int = 0) -> None:
        super().__init__()
        torch.manual_seed(seed)
        self.fc = nn.Linear(int(np.prod(shape)), 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(x.flatten(1))


@pytest.mark.parametrize("name", list(METHODS))
def test_each_method_gives_one_map_per_modality_of_input_shape(name: str) -> None:
    x = case()
    attr = attribute(name, tiny_cnn(), x, 1, FAST, MethodInputs(batch=case(seed=1).repeat(3, 1, 1, 1)))
    assert attr.shape == x.shape
    assert torch.isfinite(attr).all()


@pytest.mark.parametrize("name", ["gradient", "integrated_gradients", "grad_cam", "occlusion", "feature_ablation",
                                  "feature_permutation"])
def test_methods_on_3d_input(name: str) -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv3d(2, 4, 3, padding=1), nn.ReLU(), nn.AdaptiveMaxPool3d(1), nn.Flatten(),
                          nn.Linear(4, 2)).eval()
    x = torch.rand(1, 2, 8, 8, 8)
    assert attribute(name, model, x, 0, FAST).shape == x.shape


def test_registry_has_the_16_methods_of_the_paper() -> None:
    assert len(METHODS) == 16
    assert len(method_names("gradient")) == 10 and len(method_names("perturbation")) == 6


def test_recurrent_models_get_gradient_methods_only() -> None:
    class Rnn(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.lstm = nn.LSTM(4, 3, batch_first=True)
            self.fc = nn.Linear(3, 2)

        def forward(self, x):
            return self.fc(self.lstm(x.flatten(2).transpose(1, 2))[0][:, -1])

    keep, skipped = applicable_methods(Rnn())
    assert set(keep) == set(method_names("gradient")) - {"grad_cam", "guided_grad_cam"}
    assert "lime" in skipped and "grad_cam" in skipped
    x = torch.rand(1, 4, 6, 6)
    assert attribute("integrated_gradients", Rnn(), x, 1, FAST).shape == x.shape


def test_superpixel_ids_are_unique_per_modality_and_foreground_only() -> None:
    x = torch.zeros(1, 4, 16, 16)
    x[..., 2:, :8], x[..., 2:, 8:] = 0.3, 0.9  # two regions below two background rows
    x[..., 2:9, :] += 0.5
    mask = modality_feature_mask(x, n_segments=6)[0]
    ids = [set(mask[m].unique().tolist()) for m in range(4)]
    assert all(not (ids[i] & ids[j]) for i in range(4) for j in range(i + 1, 4))
    assert (mask[:, :2, :] == mask[:, :1, :1]).all()  # the background is one feature per modality
    assert len(ids[0]) > 2


@pytest.mark.parametrize("channel", [0, 2, 3])
def test_modality_shapley_ranks_the_only_channel_the_model_reads_first(channel: int) -> None:
    phi = modality_shapley(ChannelModel(channel), case(), 1)
    assert int(np.argmax(phi)) == channel
    assert np.allclose(np.delete(phi, channel), 0, atol=1e-9)


def test_modality_shapley_is_exact_for_an_additive_model() -> None:
    x = case(m=3)
    model = LinearModel(tuple(x.shape[1:]))
    phi = modality_shapley(model, x, 1)
    with torch.no_grad():
        p_all = torch.softmax(model(x), 1)[0, 1]
        p_none = torch.softmax(model(torch.zeros_like(x)), 1)[0, 1]
    assert phi.sum() == pytest.approx(float(p_all - p_none), abs=1e-6)  # efficiency


def test_integrated_gradients_completeness() -> None:
    x = case()
    lin = LinearModel(tuple(x.shape[1:]))
    attr = attribute("integrated_gradients", lin, x, 1, FAST)[0].numpy()
    assert completeness_error(lin, x, 1, attr) < 1e-4
    cnn = tiny_cnn()
    cfg = ExplainConfig(ig_steps=128)
    attr = attribute("integrated_gradients", cnn, x, 1, cfg)[0].numpy()
    assert completeness_error(cnn, x, 1, attr) < 0.05


def test_cascading_randomisation_changes_gradient_maps() -> None:
    model, x = tiny_cnn(), case()
    original = attribute("gradient", model, x, 1)[0].numpy()
    res = cascading_randomisation(model, x, 1, lambda m: attribute("gradient", m, x, 1)[0].numpy(), original)
    assert res.layers[0].endswith("7") and len(res.similarity) == 3  # top (Linear) first, then the convs
    assert res.passed and res.final < 0.5
    assert np.allclose(attribute("gradient", model, x, 1)[0].numpy(), original)  # the model is untouched


def test_cascading_randomisation_flags_a_model_independent_map() -> None:
    model, x = tiny_cnn(), case()
    edge = np.abs(np.diff(x[0].numpy(), axis=-1, prepend=0))  # an "edge detector": ignores the model
    res = cascading_randomisation(model, x, 1, lambda m: edge, edge)
    assert not res.passed and res.final == pytest.approx(1.0)


def test_postprocess_scales_to_unit_range_and_keeps_sign() -> None:
    rng = np.random.default_rng(0)
    a = rng.normal(size=(2, 20, 20)).astype(np.float32)
    out = postprocess(a, sigma=0.0)
    assert out.min() >= -1 and out.max() <= 1 and np.mean(np.abs(out) == 1) <= 0.03
    assert np.array_equal(np.sign(out), np.sign(a))
    assert np.all(scale(np.zeros((2, 4, 4))) == 0)
    assert postprocess(a[:, :10, :10], size=(20, 20)).shape == (2, 20, 20)


def test_msfi_and_localisation_on_hand_maps() -> None:
    mask = np.zeros((8, 8), bool)
    mask[2:4, 2:4] = True
    attr = np.zeros((2, 8, 8))
    attr[0][mask] = 1.0  # modality 0: all evidence on the tumour
    attr[1, 6, 6] = 1.0  # modality 1: all evidence elsewhere
    assert msfi(attr, mask, np.array([1.0, 0.0])) == pytest.approx(1.0)
    assert msfi(attr, mask, np.array([0.0, 1.0])) == pytest.approx(0.0)
    assert msfi(attr, mask, np.array([1.0, 1.0])) == pytest.approx(0.5)
    energy, hit = localisation(attr, mask)
    assert energy == pytest.approx(4 / 5) and hit == 1.0


def test_deletion_curve_drops_fastest_for_the_true_ranking() -> None:
    model, x = ChannelModel(1), case()
    good = np.zeros(x.shape[1:])
    good[1] = 1.0
    curve, auc = deletion_curve(model, x, 1, good, steps=8)
    _, bad_auc = deletion_curve(model, x, 1, -good, steps=8)
    assert curve[0] > curve[-1] and auc < bad_auc


def test_cli_name_lists_match_the_registries():
    from harness.explain.models import MODELS
    from harness.explain.names import METHOD_NAMES, MODEL_NAMES

    assert list(METHOD_NAMES) == method_names()
    assert list(MODEL_NAMES) == list(MODELS)


def test_building_the_command_line_imports_neither_torch_nor_sklearn():
    import subprocess
    import sys

    code = ("import sys, harness.cli as c; c.build_parser(); "
            "print(sorted(m for m in ('torch', 'sklearn', 'captum', 'mlflow') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
