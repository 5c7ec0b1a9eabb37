"""Baselines that fail on purpose, to test what the executors do with a failing fold."""

from __future__ import annotations

import multiprocessing
import os

from baselines.controls import MajorityClass


class RaisingMajority(MajorityClass):
    """Raises in every fit: its run fails, the others go on."""

    name = "raising_majority"

    def fit(self, train, val, ctx):
        raise RuntimeError("this baseline always fails")


class DyingMajority(MajorityClass):
    """Kills its worker process (as the OOM killer would); in the driver it only raises."""

    name = "dying_majority"

    def fit(self, train, val, ctx):
        if multiprocessing.parent_process() is not None:
            os._exit(3)
        raise RuntimeError("would have killed the worker")
