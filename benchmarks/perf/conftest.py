"""Shared reporting for the perf benchmarks: every figure is a ratio to a bare baseline.

Each benchmark times the harness code path with pytest-benchmark and a bare baseline
(plain pydicom, plain PyTorch, a per-slice loop, ...) in the same run, then calls
``report_ratio``. That stores, in ``benchmark.extra_info`` (and so in the
``--benchmark-json`` file that ``benchmarks/results.py`` tabulates):

- ``ratio``: the figure; ``ratio_is`` says what it divides by what;
- ``baseline``: the bare baseline in words, ``baseline_seconds`` its time;
- ``target``: e.g. ``">= 1.6"`` (issue 7), ``"mean seconds < 3"`` for a target on another
  figure, or None when the figure is reported only;
- ``target_value``: the figure the target applies to when it is not the ratio;
- ``met``: whether the figure meets the target (None without a target);
- ``label``: the benchmark in words;

and prints one line. The test then asserts ``met`` where there is a target.
"""

from __future__ import annotations

import operator
from typing import Any, Callable

import pytest

_OPS: dict[str, Callable[[float, float], bool]] = {
    ">=": operator.ge, ">": operator.gt, "<=": operator.le, "<": operator.lt,
}


@pytest.fixture
def report_ratio(benchmark) -> Callable[..., bool | None]:
    """``report_ratio(ratio, ratio_is=..., baseline=..., baseline_seconds=..., target=(op, x), **extra)``.

    The target applies to the ratio, or to ``target_value`` (named ``target_of``) when given,
    e.g. an absolute time budget. Returns ``met`` (None without a target).
    """

    def report(ratio: float, *, ratio_is: str, baseline: str, baseline_seconds: float | None = None,
               target: tuple[str, float] | None = None, target_value: float | None = None,
               target_of: str | None = None, label: str | None = None, **extra: Any) -> bool | None:
        value = ratio if target_value is None else target_value
        met = None if target is None else bool(_OPS[target[0]](value, target[1]))
        target_text = None
        if target is not None:
            target_text = f"{target[0]} {target[1]:g}" if target_of is None else f"{target_of} {target[0]} {target[1]:g}"
        benchmark.extra_info.update(
            ratio=round(float(ratio), 4),
            ratio_is=ratio_is,
            baseline=baseline,
            baseline_seconds=None if baseline_seconds is None else round(float(baseline_seconds), 5),
            target=target_text,
            target_value=None if target_value is None else round(float(target_value), 5),
            met=met,
            label=label or benchmark.name,
            **extra,
        )
        verdict = "" if target is None else f" (target {target_text}: {'met' if met else 'NOT met'})"
        print(f"\n{label or benchmark.name}: ratio {ratio:.3f} = {ratio_is}{verdict}")
        return met

    return report
