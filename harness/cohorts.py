"""The embedded default data: synthetic cohorts generated once, then reused from the cache."""

from __future__ import annotations

import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any

from harness.locks import file_lock, lock_name

def synthetic_cohort_dir(cache_dir: Path, spec: dict[str, Any]) -> Path:
    """Where the synthetic cohort for ``spec`` lives: its name spells out every knob."""
    grid = str(spec.get("grid_mm", 2.0)).replace(".", "p")
    name = (
        f"{spec['cohort']}-n{spec.get('patients', 'default')}-s{spec.get('seed', 0)}"
        f"-{spec.get('signal', 'growth')}-g{grid}"
    )
    if spec.get("signal_modality"):  # the known-truth option: class shown on one modality only
        name += f"-only{spec['signal_modality']}"
    return Path(cache_dir) / "cohorts" / name


def ensure_synthetic_cohort(cache_dir: Path, spec: dict[str, Any], *, progress: bool = True) -> Path:
    """Generate the cohort unless it is already complete; return its folder.

    Generation writes into a temporary sibling folder and renames it when done, so a run
    killed mid-generation never leaves a half cohort that looks complete.
    """
    target = synthetic_cohort_dir(cache_dir, spec)
    if target.is_dir():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    # Two runs on one cache: the second waits for the first's cohort instead of
    # generating its own and failing to rename it onto the finished one.
    with file_lock(target.parent.parent / "locks" / lock_name("cohort", target.name), what=f"generating {target.name}"):
        if target.is_dir():
            return target
        return _generate(target, spec, progress=progress)


def _generate(target: Path, spec: dict[str, Any], *, progress: bool) -> Path:
    from harness.synth import generate_cohort

    print(f"generating synthetic {spec['cohort']} cohort into {target} (once; cached after)", file=sys.stderr)
    tmp = Path(tempfile.mkdtemp(prefix=target.name + ".", suffix=".partial", dir=target.parent))
    try:
        shutil.rmtree(tmp)
        generate_cohort(
            spec["cohort"],
            tmp,
            n_patients=spec.get("patients"),
            seed=int(spec.get("seed", 0)),
            signal=spec.get("signal", "growth"),
            grid_mm=float(spec.get("grid_mm", 2.0)),
            progress=progress,
            **({"signal_modality": spec["signal_modality"]} if spec.get("signal_modality") else {}),
        )
        tmp.rename(target)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return target
