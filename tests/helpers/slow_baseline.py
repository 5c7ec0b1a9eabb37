"""A majority baseline that sleeps in fit, so a test can kill a run between folds."""

from __future__ import annotations

import os
import time

from baselines.controls import MajorityClass


class SlowMajority(MajorityClass):
    name = "slow_majority"

    def fit(self, train, val, ctx):
        time.sleep(float(os.environ.get("SLOW_BASELINE_SECONDS", "0")))
        return super().fit(train, val, ctx)
