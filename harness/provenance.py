"""Where a result came from: git commit, package versions and the machine, for run tags
and ``summary.json``.

Why the machine: the same seed, config and packages give bit-identical metrics on one
machine, but a network trained on another CPU (other SIMD kernels, other float sums) can
end elsewhere; without the CPU on record a reader cannot tell such a difference from a
change in the code (docs/parallel.md, "Across machines")."""

from __future__ import annotations

import os
import platform
import subprocess
from importlib import metadata
from pathlib import Path
from typing import Any

TRACKED_PACKAGES = (
    "brain-mri-harness",
    "numpy",
    "scipy",
    "pandas",
    "scikit-learn",
    "pydicom",
    "nibabel",
    "PyWavelets",
    "mlflow",
    "torch",
    "timm",
)


def git_commit(repo: Path | None = None) -> str:
    """The checkout's HEAD commit (with ``-dirty`` if modified), or ``unknown``."""
    repo = repo or Path(__file__).resolve().parents[1]
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=repo, capture_output=True, text=True, timeout=10
        )
        if commit.returncode != 0:
            return "unknown"
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=repo, capture_output=True, text=True, timeout=10,
        )
        return commit.stdout.strip() + ("-dirty" if dirty.stdout.strip() else "")
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def package_versions() -> dict[str, str]:
    versions: dict[str, str] = {}
    for name in TRACKED_PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return versions


def cpu_model(cpuinfo: Path = Path("/proc/cpuinfo")) -> str:
    """The CPU's model name (Linux ``/proc/cpuinfo``), else what ``platform`` knows."""
    try:
        for line in cpuinfo.read_text(encoding="utf-8", errors="replace").splitlines():
            key, _, value = line.partition(":")
            if key.strip() == "model name" and value.strip():
                return value.strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown"


def environment() -> dict[str, Any]:
    """What a run's numbers depend on besides its config: code, packages, interpreter, machine."""
    return {
        "git_commit": git_commit(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpu": cpu_model(),
        "cpu_count": os.cpu_count(),
        "packages": package_versions(),
    }
