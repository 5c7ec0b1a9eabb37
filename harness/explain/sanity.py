"""The cascading-randomisation sanity check over cases, and whether it reproduces Adebayo
et al. (2018): guided backprop and guided Grad-CAM change less under randomisation of the
model's weights than plain gradients do (they behave like edge detectors, not like
explanations of the model).

One case is noise (the verdict flipped with the run seed), so the check runs on several
held-out cases and each method's final similarity gets a bootstrap CI over cases; the
comparison with plain gradients is paired (the same cases in each replicate).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

from harness.explain.engine import CaseExplanation

#: Methods the 2018 finding is about, and the reference they are compared with.
GUIDED = ("guided_backprop", "guided_grad_cam")
REFERENCE = "gradient"
N_BOOT = 1000


@dataclass
class MethodSanity:
    method: str
    n_cases: int
    mean: float
    ci95: tuple[float, float]
    #: Paired difference (this method minus plain gradient) over the same cases.
    minus_gradient: float | None = None
    minus_gradient_ci95: tuple[float, float] | None = None


def _boot(values: np.ndarray, rng: np.random.Generator) -> tuple[float, float]:
    if len(values) < 2:
        return (float("nan"), float("nan"))
    idx = rng.integers(0, len(values), size=(N_BOOT, len(values)))
    means = values[idx].mean(axis=1)
    return float(np.percentile(means, 2.5)), float(np.percentile(means, 97.5))


def sanity_table(cases: Sequence[CaseExplanation], methods: Sequence[str], seed: int = 0) -> list[MethodSanity]:
    """Per method with a randomisation result: mean final similarity, CI over cases, and the
    paired difference to plain gradients."""
    rng = np.random.default_rng(seed)
    ref = {i: c.randomisation[REFERENCE].final for i, c in enumerate(cases) if REFERENCE in c.randomisation}
    out = []
    for name in methods:
        vals = {i: c.randomisation[name].final for i, c in enumerate(cases) if name in c.randomisation}
        vals = {i: v for i, v in vals.items() if v == v}
        if not vals:
            continue
        arr = np.array(list(vals.values()), dtype=float)
        row = MethodSanity(name, len(arr), float(arr.mean()), _boot(arr, rng))
        shared = [i for i in vals if i in ref and ref[i] == ref[i]]
        if name != REFERENCE and shared:
            diff = np.array([vals[i] - ref[i] for i in shared], dtype=float)
            row.minus_gradient, row.minus_gradient_ci95 = float(diff.mean()), _boot(diff, rng)
        out.append(row)
    return out


def adebayo_verdict(table: Sequence[MethodSanity]) -> str:
    """One sentence: reproduced, not reproduced, or not testable, with the numbers."""
    by = {r.method: r for r in table}
    if REFERENCE not in by or not any(g in by for g in GUIDED):
        return ("Adebayo et al. (2018) not testable here: the randomisation check needs plain gradients and "
                "guided backprop or guided Grad-CAM.")
    parts: list[str] = []
    verdicts: list[bool | None] = []
    for g in GUIDED:
        r = by.get(g)
        if r is None or r.minus_gradient is None or r.minus_gradient_ci95 is None:
            continue
        lo, hi = r.minus_gradient_ci95
        if lo == lo and lo > 0:
            verdicts.append(True)
        elif hi == hi and hi < 0:
            verdicts.append(False)
        else:
            verdicts.append(None)
        parts.append(f"{g} similarity {r.mean:.2f} vs gradient {by[REFERENCE].mean:.2f}, difference "
                     f"{r.minus_gradient:+.2f} [{lo:+.2f}, {hi:+.2f}] over {r.n_cases} cases")
    n = by[REFERENCE].n_cases
    if verdicts and all(v is True for v in verdicts):
        head = "Reproduces Adebayo et al. (2018)"
    elif any(v is False for v in verdicts):
        head = "Does not reproduce Adebayo et al. (2018)"
    else:
        head = "Inconclusive on Adebayo et al. (2018) (a CI includes no difference)"
    few = f" Only {n} case(s): too few for a CI." if n < 2 else ""
    return (f"{head}: guided methods should stay more similar to their original maps than plain gradients "
            f"when the weights are randomised. " + "; ".join(parts) + "." + few)
