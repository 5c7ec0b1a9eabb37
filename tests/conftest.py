"""Shared fixtures: tiny synthetic cohorts generated once per test session."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

TINY = {"patients": 8, "seed": 3, "signal": "growth", "grid_mm": 6.0}


@pytest.fixture(scope="session")
def tiny_rembrandt(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A REMBRANDT-style cohort: 8 patients on a 6 mm grid (seconds to generate)."""
    from harness.synth import generate_cohort

    out = tmp_path_factory.mktemp("cohorts") / "rembrandt"
    generate_cohort("rembrandt", out, n_patients=TINY["patients"], seed=TINY["seed"],
                    signal=TINY["signal"], grid_mm=TINY["grid_mm"], progress=False)
    return out


@pytest.fixture(scope="session")
def known_truth(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A BraTS-2020-style cohort whose grade shows on T1post only (8 patients, 6 mm)."""
    from harness.synth import generate_cohort

    return generate_cohort("brats20", tmp_path_factory.mktemp("kt") / "c", n_patients=8, seed=1, grid_mm=6.0,
                           progress=False, signal_modality="T1post")


@pytest.fixture(scope="session")
def session_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("harness-cache")


@pytest.fixture()
def in_tmp_cwd(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Run with a scratch working directory, so reports/ and mlflow/ land there."""
    monkeypatch.chdir(tmp_path)
    return tmp_path


@pytest.fixture(scope="session")
def tiny_grading(tiny_rembrandt: Path, tmp_path_factory: pytest.TempPathFactory):
    """(TaskData, cache dir): the tiny cohort's grading view, T1post and FLAIR, every 3rd slice."""
    from harness.runner import RunOptions, prepare_data
    from harness.suite import parse_suite

    suite = parse_suite({"suite": {"name": "g", "task": "grading"}, "data": {"cohort": "rembrandt"},
                         "task": {"modalities": ["T1post", "FLAIR"], "slice_step": 3}})
    cache = tmp_path_factory.mktemp("grading-cache")
    return prepare_data(suite, RunOptions(data=tiny_rembrandt, cache_dir=cache, progress=False)).task_data, cache


def patients_subset(data, patients):
    """The rows of ``data`` whose patient is in ``patients``."""
    return data.subset(data.samples.loc[data.samples["patient_id"].isin(set(patients)), "sample_id"])


REPO_ROOT = Path(__file__).resolve().parents[1]


def subprocess_env(extra_pythonpath: Path | None = None) -> dict[str, str]:
    env = dict(os.environ)
    paths = [str(REPO_ROOT)] + ([str(extra_pythonpath)] if extra_pythonpath else [])
    env["PYTHONPATH"] = os.pathsep.join(paths + [env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    return env
