"""The baseline contract, checked over every registered baseline (``list_baselines()``).

As scikit-learn's ``parametrize_with_checks`` and timm's tests over ``list_models()``: a
new baseline module is picked up here without editing any table. For each baseline and
each task it claims, on a tiny cohort of that task:

- ``fit`` returns the estimator and ``predict`` gives one value per test sample, in the
  training classes for classification, finite for regression;
- a classifier's ``predict_proba``, where it gives one, has a row per sample summing to 1,
  a column per class in ``classes_``, and its argmax is ``predict``;
- the same seed gives the same predictions (determinism on CPU);
- ``get_params`` round-trips through ``create_baseline`` (same resolved parameters);
- unknown parameters are refused when the baseline is built.

Sizes are shrunk generically: any parameter named below is set to a tiny value where the
baseline accepts it. The six largest backbones (``BIG_ARCHS``, 17-134 M parameters) are
fitted only under ``-m slow``; their construction and params are still checked by default.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

pytest.importorskip("timm")

from baselines import FitContext, create_baseline, list_baselines  # noqa: E402
from harness.errors import HarnessError  # noqa: E402
from conftest import patients_subset  # noqa: E402

#: Generic shrinking: parameter name -> tiny value (applied only where the baseline has it).
TINY_VALUES: dict[str, Any] = {
    "image_size": 80,  # inception needs >= 75 px
    "epochs": 1, "patience": 1,
    "max_train_slices": 48, "max_val_slices": 16, "max_train_samples": 48,
    "hidden": 8, "dense1": 8, "dense2": 8, "seq_len": 4,
    "n_coefficients": 20, "widths": [4, 8], "batch_size": 4,
}
#: Backbones fitted only under ``-m slow`` (each takes seconds to build and run on 2 cores).
BIG_ARCHS = {"resnet101", "vgg16", "inception_resnet_v2", "densenet201", "resnet50", "efficientnet_b4"}


def tiny_params(cls: type) -> dict[str, Any]:
    names = cls.param_names()  # type: ignore[attr-defined]
    return {k: v for k, v in TINY_VALUES.items() if k in names}


def cases() -> list[Any]:
    out = []
    for name, cls in list_baselines().items():
        for task in sorted(cls.tasks):
            marks = [pytest.mark.slow] if name in BIG_ARCHS else []
            out.append(pytest.param(name, task, id=f"{name}-{task}", marks=marks))
    return out


# -- tiny data per task -----------------------------------------------------------------
def _split_by_patient(data: Any) -> tuple[Any, Any, Any]:
    pids = sorted(data.samples["patient_id"].unique())
    return patients_subset(data, pids[3:]), patients_subset(data, pids[2:3]), patients_subset(data, pids[:2])


def _prepared(suite_dict: dict[str, Any], root: Path, cache: Path) -> Any:
    from harness.runner import RunOptions, prepare_data
    from harness.suite import parse_suite

    return prepare_data(parse_suite(suite_dict), RunOptions(data=root, cache_dir=cache, progress=False)).task_data


@pytest.fixture(scope="module")
def task_splits(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """Lazily built (train, val, test, cache) per task: only the tasks a test asks for."""
    from harness.synth import generate_cohort

    built: dict[str, Any] = {}

    def get(task: str) -> Any:
        if task in built:
            return built[task]
        cache = tmp_path_factory.mktemp(f"contract-{task}")
        if task == "grading":  # the shared tiny grading view (conftest), built only when asked for
            data, _ = request.getfixturevalue("tiny_grading")
            built[task] = (*_split_by_patient(data), cache)
        elif task == "progression":
            root = generate_cohort("btp", cache / "btp", n_patients=5, seed=1, signal="growth", grid_mm=8.0,
                                   progress=False)
            data = _prepared({"suite": {"name": "c", "task": "progression"}, "data": {"cohort": "btp"},
                              "task": {"modalities": ["T1post", "FLAIR"], "eligibility": "all"}}, root, cache)
            built[task] = (*_split_by_patient(data), cache)
        elif task == "survival":
            root = generate_cohort("brats20", cache / "brats", n_patients=6, seed=4, signal="growth", grid_mm=8.0,
                                   progress=False)
            data = _prepared({"suite": {"name": "c", "task": "survival"}, "data": {"cohort": "brats20"},
                              "task": {"targets": ["grade"]}}, root, cache)
            built[task] = (*_split_by_patient(data), cache)
        elif task == "segmentation":
            built[task] = (*_segmentation_cases(), cache)
        else:  # pragma: no cover - KNOWN_TASKS and this fixture must move together
            raise AssertionError(f"no tiny data for task {task!r}: add it here")
        return built[task]

    return {"get": get}


def _segmentation_cases() -> tuple[list[Any], list[Any], list[Any]]:
    """Six 16^3 cases with a bright blob labelled as tumour (enough to fit a U-Net once)."""
    from harness.segmentation.data import SegCase

    rng = np.random.default_rng(0)
    out = []
    for i in range(6):
        img = rng.normal(0, 0.1, (4, 16, 16, 16)).astype(np.float32)
        lab = np.zeros((16, 16, 16), np.uint8)
        c = 5 + i % 4
        lab[c:c + 5, c:c + 5, c:c + 5] = 2
        lab[c + 1:c + 3, c + 1:c + 3, c + 1:c + 3] = 3
        img[:, lab > 0] += 1.0
        out.append(SegCase(f"p{i}", img, lab, (1.0, 1.0, 1.0)))
    return out[:4], out[4:5], out[5:]


# -- the contract -----------------------------------------------------------------------
def _fit_predict(name: str, task: str, task_splits: dict[str, Any], seed: int = 0) -> tuple[Any, np.ndarray, Any]:
    train, val, test, cache = task_splits["get"](task)
    cls = list_baselines()[name]
    model = create_baseline(name, profile="quick", **tiny_params(cls))
    ctx = FitContext(seed=seed, work_dir=cache, log=lambda _: None)
    assert model.fit(train, val, ctx) is model, f"{name}.fit must return the estimator"
    return model, np.asarray(model.predict(test)), (train, test)


@pytest.mark.parametrize("name,task", cases())
def test_fit_predict_is_deterministic(name: str, task: str, task_splits: dict[str, Any]) -> None:
    model, pred, (train, test) = _fit_predict(name, task, task_splits)
    assert len(pred) == len(test)
    if task == "segmentation":
        assert all(p.shape == c.labels.shape for p, c in zip(pred, test))
    elif train.target_kind == "classification":
        assert set(map(str, pred)) <= set(map(str, train.classes or set(train.y)))
        proba = model.predict_proba(test)
        if proba is not None:  # sklearn's contract: rows of probabilities, argmax = predict
            assert proba.shape == (len(test), len(model.classes_))
            assert np.allclose(proba.sum(axis=1), 1.0) and (proba >= 0).all()
            assert [str(model.classes_[i]) for i in proba.argmax(axis=1)] == list(map(str, pred))
    else:
        assert np.isfinite(pred.astype(float)).all()
    _, again, _ = _fit_predict(name, task, task_splits)
    if task == "segmentation":
        assert all(np.array_equal(a, b) for a, b in zip(pred, again)), f"{name}: same seed, other predictions"
    else:
        assert list(map(str, pred)) == list(map(str, again)), f"{name}: same seed, other predictions"


@pytest.mark.parametrize("name", sorted(list_baselines()))
def test_get_params_round_trip_and_unknown_params_refused(name: str) -> None:
    cls = list_baselines()[name]
    for profile in cls.profiles:
        model = create_baseline(name, profile=profile, **tiny_params(cls))
        params = model.get_params()
        assert params["profile"] == profile
        rebuilt = create_baseline(name, **params)  # profile travels inside get_params
        assert rebuilt.get_params() == params
    with pytest.raises(HarnessError, match="no parameter"):
        create_baseline(name, not_a_parameter_of_any_baseline=1)


def test_every_baseline_claims_only_known_tasks() -> None:
    from baselines import KNOWN_TASKS

    for name, cls in list_baselines().items():
        assert cls.tasks and set(cls.tasks) <= KNOWN_TASKS, name
