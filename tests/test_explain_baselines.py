"""The registered torch baselines, fitted through their own ``fit`` on a tiny explain
cohort and explained: slice classifiers (2D), the LSTM on features, the 3D U-Net."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

pytest.importorskip("timm")

import harness.cli as cli  # noqa: E402
from harness.errors import HarnessError  # noqa: E402
from harness.explain import ExplainConfig  # noqa: E402
from harness.explain.baselines import explainable_baseline, explainable_names, fit_baseline  # noqa: E402
from harness.explain.data import load_cases, patient_split  # noqa: E402
from harness.explain.engine import explain_case  # noqa: E402
from harness.explain.methods import applicable_methods, method_names  # noqa: E402

FAST = ExplainConfig(ig_steps=8, ig_max_steps=8, smoothgrad_samples=2, gradshap_samples=2, lime_samples=20, kernelshap_samples=20,
                     shapley_samples=1, n_segments=6, occlusion_window=8, occlusion_stride=8, deletion_steps=4,
                     sanity_cases=0)
TINY = {
    "resnet18_grader": {"image_size": 32, "epochs": 1, "max_train_slices": 48, "max_val_slices": 16},
    "resnet18": {"image_size": 32, "epochs": 1, "dense1": 16, "dense2": 16, "max_train_samples": 48},
    "dwtdct_lstm": {"image_size": 32, "epochs": 2, "hidden": 8, "seq_len": 4},
    "unet3d": {"widths": [4, 8], "epochs": 2, "batch_size": 2},
}


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def cohort(known_truth: Path) -> Path:
    return known_truth


@pytest.fixture(scope="module")
def cases2d(cohort: Path, tmp_path_factory: pytest.TempPathFactory):
    return load_cases(cohort, dims=2, size=32, slices_per_patient=3, cache_dir=tmp_path_factory.mktemp("c2"),
                      progress=False)[0]


@pytest.fixture(scope="module")
def cases3d(cohort: Path, tmp_path_factory: pytest.TempPathFactory):
    return load_cases(cohort, dims=3, size=16, cache_dir=tmp_path_factory.mktemp("c3"), progress=False)[0]


def _fit_and_explain(name, cases, dims, methods):
    train, test = patient_split(cases, 1 / 3, 0)
    fitted = fit_baseline(name, cases, train, test, dims=dims, modalities=list(cases.modalities), params=TINY[name])
    adapter = fitted.adapter
    key = [int(i) for i in test if cases.is_key[i]][:2]
    x = adapter.prepare(cases.x[key], cases.modalities).numpy()
    masks = adapter.prepare_mask(cases.mask[key], cases.x[key], cases.modalities)
    keep, skipped = applicable_methods(adapter.module, methods)
    target = adapter.fixed_target if adapter.fixed_target is not None else int(cases.y[key[0]])
    case = explain_case(adapter.module, x[0], target, keep, FAST, mask=None if masks is None else masks[0],
                        batch=x[1:], sanity=False)
    return fitted, x, keep, skipped, case


@pytest.mark.parametrize("name", ["resnet18_grader", "resnet18"])
def test_slice_classifiers_give_one_map_per_modality_of_the_input_shape(cases2d, name):
    methods = ["gradient", "integrated_gradients", "grad_cam", "guided_grad_cam", "deeplift", "occlusion",
               "feature_ablation"]
    fitted, x, keep, skipped, case = _fit_and_explain(name, cases2d, 2, methods)
    assert x.shape[1:] == (4, 32, 32) and fitted.adapter.modalities == cases2d.modalities
    assert keep == methods and not skipped and not case.errors
    for m in methods:
        assert case.attributions[m].shape == x.shape[1:] and np.isfinite(case.attributions[m]).all()
    # Grad-CAM sees each modality through the network separately: one map per modality
    cam = case.attributions["grad_cam"]
    assert cam.shape == (4, 32, 32)
    assert "test accuracy" in " ".join(fitted.meta)
    if name == "resnet18_grader":  # trained end to end: the maps depend on the input
        assert np.abs(case.attributions["gradient"]).sum() > 0
        with torch.no_grad():
            xt = torch.as_tensor(x[:1])
            assert not torch.allclose(fitted.adapter.module(xt), fitted.adapter.module(torch.zeros_like(xt)))


def test_slice_classifier_with_one_modality_is_the_network_itself(cases2d):
    train, test = patient_split(cases2d, 1 / 3, 0)
    fitted = fit_baseline("resnet18_grader", cases2d, train, test, dims=2, modalities=["T1post"],
                          params=TINY["resnet18_grader"])
    a = fitted.adapter
    x = a.prepare(cases2d.x[test[:3]], cases2d.modalities)
    assert x.shape == (3, 1, 32, 32) and float(x.min()) >= 0 and float(x.max()) <= 1
    with torch.no_grad():
        assert torch.allclose(a.module(x), fitted.baseline.model_(x), atol=1e-5)


def test_dwtdct_lstm_gets_the_gradient_methods_on_its_feature_sequence(cases3d):
    fitted, x, keep, skipped, case = _fit_and_explain("dwtdct_lstm", cases3d, 3, None)
    assert fitted.adapter.kind == "features"
    assert x.shape[1:] == (4, 16, 100)  # modality x slice x DWT-DCT coefficient
    assert set(keep) == set(method_names("gradient")) - {"grad_cam", "guided_grad_cam"}
    assert "occlusion" in skipped and "lime" in skipped
    assert case.mask is None and not case.errors
    for m in keep:
        assert case.attributions[m].shape == x.shape[1:]
    assert np.abs(case.attributions["integrated_gradients"]).sum() > 0


def test_unet3d_explains_a_region_score_in_3d(cases3d):
    methods = ["gradient", "integrated_gradients", "grad_cam"]
    fitted, x, keep, skipped, case = _fit_and_explain("unet3d", cases3d, 3, methods)
    assert x.shape[1:] == (4, 16, 16, 16) and fitted.adapter.classes == ["no WT", "WT"]
    assert keep == methods and not case.errors
    for m in methods:
        assert case.attributions[m].shape == x.shape[1:]
    assert np.abs(case.attributions["integrated_gradients"]).sum() > 0
    assert np.isfinite(case.scores["integrated_gradients"]["completeness_error"])
    assert "test WT Dice (held-out patients)" in fitted.meta


def test_timm_backbone_on_three_axial_cuts(cases3d):
    params = {**TINY["resnet18"], "gap_mm": 12.0}
    train, test = patient_split(cases3d, 1 / 3, 0)
    fitted = fit_baseline("resnet18", cases3d, train, test, dims=3, modalities=list(cases3d.modalities),
                          params=params)
    a = fitted.adapter
    x = a.prepare(cases3d.x[test[:2]], cases3d.modalities).numpy()
    masks = a.prepare_mask(cases3d.mask[test[:2]], cases3d.x[test[:2]], cases3d.modalities)
    assert x.shape == (2, 4, 3, 32, 32) and masks.shape == (2, 3, 32, 32)
    case = explain_case(a.module, x[0], int(cases3d.y[test[0]]), ["gradient", "grad_cam", "occlusion"], FAST,
                        mask=masks[0], sanity=False)
    assert not case.errors and all(v.shape == x.shape[1:] for v in case.attributions.values())


def test_which_baselines_explain_and_clear_errors_for_the_rest():
    assert {"resnet18_grader", "resnet18", "efficientnet_lite0", "dwtdct_lstm", "unet3d"} <= set(explainable_names())
    with pytest.raises(HarnessError, match="no torch module"):
        explainable_baseline("median")
    from harness.explain.baselines import sample_unit

    with pytest.raises(HarnessError, match="3D"):
        sample_unit(explainable_baseline("dwtdct_lstm"), 2)


SUITE = """
[suite]
name = "explain-baseline"
task = "explain"

[data]
cohort = "brats20"
patients = 8
seed = 1
grid_mm = 6.0
signal_modality = "T1post"

[explain]
model = "resnet18_grader"
cases = 2
slices_per_patient = 3
methods = ["gradient", "integrated_gradients", "grad_cam", "occlusion"]

[explain.params]
image_size = 32
epochs = 1
max_train_slices = 48
max_val_slices = 16

[explain.config]
ig_steps = 8
occlusion_window = 8
occlusion_stride = 8
deletion_steps = 4
sanity_methods = ["gradient"]
"""


def test_explain_command_fits_and_explains_a_registered_baseline(tmp_path, monkeypatch):
    suite = tmp_path / "s.toml"
    suite.write_text(SUITE)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(cli, "PLUGIN_COMMAND_MODULES", ("harness.explain.cli",))
    rc = cli.main(["explain", "--suite", str(suite), "--cache-dir", str(tmp_path / "cache"), "--out",
                   str(tmp_path / "rep"), "--tracking-uri", "none", "--no-progress"])
    assert rc == 0
    result = json.loads((tmp_path / "rep" / "explain.json").read_text())
    assert set(result["summary"]) == {"gradient", "integrated_gradients", "grad_cam", "occlusion"}
    assert result["meta"]["sample unit"] == "slices"
    assert result["meta"]["explained input shape"].startswith("4 x 32 x 32")
    assert set(result["modality_importance"]) == {"T1", "T1post", "T2", "FLAIR"}
    assert (tmp_path / "rep" / "report.html").exists()
    rc = cli.main(["explain", "--suite", str(suite), "--baseline", "median", "--cache-dir", str(tmp_path / "cache"),
                   "--tracking-uri", "none", "--no-progress"])
    assert rc == 2
