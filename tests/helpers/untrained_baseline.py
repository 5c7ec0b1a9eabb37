"""A test-only baseline that cannot learn: its "fit" never looks at the targets.

It stands for a network trained with zero epochs or a zero learning rate: whatever the
data, it predicts the last class of ``classes`` for every sample (a random-weights
network collapsed onto one class), so its training score can never clearly beat the
majority class.
"""

from __future__ import annotations

import numpy as np

from baselines.registry import Baseline


class UntrainedGrader(Baseline):
    name = "untrained_grader"
    tasks = frozenset({"grading", "survival"})
    target_kinds = frozenset({"classification"})

    def fit(self, train, val, ctx):
        self.label_ = list(train.classes or sorted(set(train.y)))[-1]
        return self

    def predict(self, data):
        return np.full(len(data), self.label_, dtype=object)
