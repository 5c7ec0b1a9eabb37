"""Where a result came from: git commit and package versions, for run tags."""

from __future__ import annotations

import subprocess
from importlib import metadata
from pathlib import Path

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
