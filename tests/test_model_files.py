"""Model and weight files: only safe formats load by default; a malicious pickle never runs.

The malicious file's ``__reduce__`` writes a marker file when unpickled, so each test can
see whether the code ran, on every path that reads weights.
"""

from __future__ import annotations

import os
import pickle
import re
from pathlib import Path

import pytest
import torch

from harness.errors import HarnessError
from harness.explain.models import MultiModalCNN
from harness.model_files import UntrustedModelFileError, load_model, load_state_dict

REPO = Path(__file__).resolve().parents[1]


class _Plant:
    """Unpickling this calls ``open(marker, "w")``: code the file's author chose."""

    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


@pytest.fixture
def evil(tmp_path: Path) -> tuple[Path, Path, Path]:
    """(a torch.save'd dict with a planted object, a plain pickle, the marker path)."""
    marker = tmp_path / "PWNED"
    as_torch = tmp_path / "evil.pt"
    torch.save({"weight": torch.zeros(2), "payload": _Plant(marker)}, as_torch)
    as_pickle = tmp_path / "evil.pkl"
    with open(as_pickle, "wb") as fh:
        pickle.dump(_Plant(marker), fh)
    return as_torch, as_pickle, marker


def _cnn() -> MultiModalCNN:
    torch.manual_seed(0)
    return MultiModalCNN(4, 2)


def test_malicious_pickle_never_runs_through_load_state_dict(evil):
    as_torch, as_pickle, marker = evil
    for path in (as_torch, as_pickle):
        with pytest.raises(UntrustedModelFileError) as exc:
            load_state_dict(path)
        msg = str(exc.value)
        assert str(path) in msg and "state_dict" in msg and "--trust-model-file" in msg
        assert "safetensors" in msg and "torch.jit" in msg  # what to do instead
    assert not marker.exists()


def test_malicious_pickle_never_runs_through_load_model(evil):
    as_torch, _, marker = evil
    with pytest.raises(UntrustedModelFileError):
        load_model(as_torch, architecture="multimodal_cnn", build=_cnn)
    assert not marker.exists()


def test_trust_flag_unpickles_with_a_warning(evil, capsys):
    as_torch, _, marker = evil
    with pytest.raises(HarnessError, match="not a state dict of tensors"):
        load_state_dict(as_torch, trust=True)
    assert marker.exists()  # trusted: the planted code did run
    assert "--trust-model-file" in capsys.readouterr().err


def test_full_pickled_module_needs_trust(tmp_path, capsys):
    path = tmp_path / "whole.pt"
    torch.save(_cnn(), path)
    with pytest.raises(UntrustedModelFileError):
        load_model(path, architecture="multimodal_cnn", build=_cnn)
    model = load_model(path, architecture="multimodal_cnn", build=_cnn, trust=True)
    assert isinstance(model, MultiModalCNN)
    assert "warning" in capsys.readouterr().err


@pytest.mark.parametrize("fmt", ["state_dict", "checkpoint", "safetensors", "torchscript"])
def test_safe_formats_load_the_same_weights(tmp_path, fmt):
    src = _cnn()
    x = torch.randn(2, 4, 16, 16)
    if fmt == "state_dict":
        path = tmp_path / "m.pt"
        torch.save(src.state_dict(), path)
    elif fmt == "checkpoint":
        path = tmp_path / "m.pth"
        torch.save({"state_dict": src.state_dict(), "epoch": 3}, path)
    elif fmt == "safetensors":
        from safetensors.torch import save_file

        path = tmp_path / "m.safetensors"
        save_file(src.state_dict(), str(path))
    else:
        path = tmp_path / "m.ts"
        torch.jit.save(torch.jit.script(src.eval()), str(path))
    model = load_model(path, architecture="multimodal_cnn", build=lambda: MultiModalCNN(4, 2))
    torch.testing.assert_close(model.eval()(x), src.eval()(x))
    state = load_state_dict(path)
    assert set(state) == set(src.state_dict())


def test_state_dict_that_does_not_fit_the_architecture(tmp_path):
    path = tmp_path / "other.pt"
    torch.save(MultiModalCNN(3, 2).state_dict(), path)
    with pytest.raises(HarnessError, match="does not fit architecture 'multimodal_cnn'"):
        load_model(path, architecture="multimodal_cnn", build=_cnn)


def test_weights_for_a_timm_backbone_refuse_a_malicious_pickle(evil):
    from baselines.timm_backbone import create_backbone

    as_torch, _, marker = evil
    with pytest.raises(UntrustedModelFileError):
        create_backbone("resnet18", weights=as_torch)
    assert not marker.exists()


def test_explain_model_file_refuses_a_malicious_pickle(evil, known_truth, tmp_path, capsys):
    import harness.cli as cli

    as_torch, _, marker = evil
    code = cli.main(["--cache-dir", str(tmp_path / "cache"), "--no-progress", "explain", "--data", str(known_truth),
                     "--model-file", str(as_torch), "--tracking-uri", "none", "--out", str(tmp_path / "out"),
                     "--methods", "saliency", "--cases", "1", "--size", "16"])
    err = capsys.readouterr().err
    assert code == 2 and "refused" in err and str(as_torch) in err and "--trust-model-file" in err
    assert not marker.exists()


@pytest.mark.parametrize("baseline", ["resnet18_grader", "efficientnet_lite0"])
def test_fold_job_weights_refuse_a_malicious_pickle(evil, tiny_rembrandt, session_cache, baseline):
    """``--weights`` as a fold job carries it (FoldJob -> FitContext -> the baseline's backbone)."""
    from harness.folds import FoldJob, run_fold_job
    from harness.runner import RunOptions, prepare_data
    from harness.splits import Fold
    from harness.suite import parse_suite

    as_torch, _, marker = evil
    suite = parse_suite({"suite": {"name": "g", "task": "grading"}, "data": {"cohort": "rembrandt"},
                         "task": {"modalities": ["T1post"], "slice_step": 4}})
    data = prepare_data(suite, RunOptions(data=tiny_rembrandt, cache_dir=session_cache, progress=False)).task_data
    ids = data.sample_ids
    job = FoldJob(run_index=0, data_key="", baseline=baseline, params={"image_size": 32, "epochs": 1},
                  fold=Fold(index=0, train=ids[4:], val=[], test=ids[:4]), seed=0, device="cpu", profile="quick",
                  work_dir=str(session_cache), weights={"*": str(as_torch)}, threads=1)
    with pytest.raises(UntrustedModelFileError, match="refused"):
        run_fold_job(job, data)
    assert not marker.exists()


@pytest.mark.slow
def test_run_weights_refuse_a_malicious_pickle(evil, tiny_rembrandt, session_cache, tmp_path):
    """``run --weights FILE`` for a torch baseline: the fold fails with the reason; no code runs."""
    from test_runner import run_tiny

    as_torch, _, marker = evil
    result = run_tiny(tiny_rembrandt, session_cache, tmp_path / "out", baselines=["resnet18_grader"],
                      protocols=["row_random"], weights={"*": as_torch}, jobs=1)
    assert result.failures and all("refused" in f and str(as_torch) in f for f in result.failures)
    assert not marker.exists()


def test_no_torch_load_outside_the_model_files_module():
    """Every weights path goes through harness.model_files (the safe-by-default loader)."""
    pattern = re.compile(r"\btorch\.load\(|weights_only\s*=\s*False|\bpickle\.loads?\(")
    offenders = []
    for root in ("harness", "baselines"):
        for path in (REPO / root).rglob("*.py"):
            rel = path.relative_to(REPO).as_posix()
            if rel in ("harness/model_files.py", "harness/parallel/executors.py"):
                continue  # executors unpickles only the file this process wrote for its own workers
            for n, line in enumerate(path.read_text().splitlines(), 1):
                if pattern.search(line) and not line.lstrip().startswith("#"):
                    offenders.append(f"{rel}:{n}: {line.strip()}")
    assert offenders == []
    assert os.path.exists(REPO / "harness" / "model_files.py")
