"""The one place model and weight files are read (``explain --model-file``, ``--weights``,
checkpoints).

Why one module: auditing other people's models is this tool's job, so their files are
untrusted input, and a full pickle (``torch.load(weights_only=False)``) runs whatever
code its author put in it. By default only formats that cannot run code load:

- **safetensors** (``.safetensors``): tensors only;
- **TorchScript** (``torch.jit.save``): a zip archive whose code is TorchScript, run by
  torch's own interpreter, not Python's unpickler;
- **a state dict** (``torch.save(model.state_dict())``): read with
  ``torch.load(weights_only=True)``, whose unpickler only builds tensors and plain
  containers, then loaded into a *named, registered* architecture.

A full pickle of an ``nn.Module`` loads only with ``trust=True`` (``--trust-model-file``
on the command line), and then with a warning. Without it the error says how to convert
the file into a safe format.
"""

from __future__ import annotations

import pickle
import sys
import zipfile
from pathlib import Path
from typing import Any, Callable

from harness.errors import HarnessError

#: What to tell a user whose file is a full pickle.
SAFE_FORMATS_HELP = (
    "save a state dict instead (torch.save(model.state_dict(), 'model.pt'), or safetensors' "
    "save_file(model.state_dict(), 'model.safetensors')) and name its architecture, or export "
    "TorchScript (torch.jit.save(torch.jit.script(model), 'model.pt')); only if you trust the "
    "file's author, pass --trust-model-file to unpickle it (a pickle can run any code)"
)


class UntrustedModelFileError(HarnessError):
    """A file that only a full (code-running) unpickle could read, without ``trust``."""


def _warn(message: str) -> None:
    print(f"warning: {message}", file=sys.stderr)


def is_torchscript(path: Path) -> bool:
    """A ``torch.jit.save`` archive: a zip with TorchScript code and constants."""
    if not zipfile.is_zipfile(path):
        return False
    try:
        with zipfile.ZipFile(path) as zf:
            names = zf.namelist()
    except (OSError, zipfile.BadZipFile):
        return False
    return any(n.endswith("/constants.pkl") for n in names) and any("/code/" in n for n in names)


def _torch_load_safe(path: Path) -> Any:
    import torch

    return torch.load(path, map_location="cpu", weights_only=True)


def _torch_load_trusted(path: Path) -> Any:
    import torch

    _warn(f"{path}: unpickling with --trust-model-file; this runs any code the file holds")
    return torch.load(path, map_location="cpu", weights_only=False)


def _pickle_reason(exc: BaseException) -> str:
    """The line of torch's long message that says what the pickle wanted."""
    for line in str(exc).splitlines():
        line = line.strip()
        if "WeightsUnpickler error:" in line:
            line = line.split("WeightsUnpickler error:", 1)[1].strip()
        if line and not line.startswith(("Weights only load failed", "Check the documentation")):
            return line[:200]
    return "it needs more than tensors"


def _read_pickle(path: Path, trust: bool, what: str) -> Any:
    """``torch.load`` with weights only; a full unpickle only when trusted."""
    try:
        return _torch_load_safe(path)
    except pickle.UnpicklingError as exc:
        if not trust:
            raise UntrustedModelFileError(
                f"{path}: refused to load {what}: it is a full pickle, which could run code "
                f"({_pickle_reason(exc)}); {SAFE_FORMATS_HELP}") from exc
    except (RuntimeError, EOFError, OSError, ValueError, zipfile.BadZipFile) as exc:
        raise HarnessError(f"{path}: cannot read {what}: {type(exc).__name__}: {exc}") from exc
    try:
        return _torch_load_trusted(path)
    except Exception as exc:  # noqa: BLE001 - anything the pickle's own code raised
        raise HarnessError(f"{path}: cannot read {what}: {type(exc).__name__}: {exc}") from exc


def _unwrap_state(obj: Any) -> Any:
    """``{"state_dict": ...}`` / ``{"model": ...}`` checkpoints -> the state dict."""
    if isinstance(obj, dict):
        for key in ("state_dict", "model_state_dict", "model"):
            inner = obj.get(key)
            if isinstance(inner, dict):
                return inner
    return obj


def _check_state(obj: Any, path: Path) -> dict[str, Any]:
    import torch

    obj = _unwrap_state(obj)
    if isinstance(obj, torch.nn.Module):
        return obj.state_dict()
    if not isinstance(obj, dict) or not obj:
        raise HarnessError(f"{path}: holds a {type(obj).__name__}, not a state dict of tensors")
    bad = [str(k) for k, v in obj.items() if not isinstance(v, torch.Tensor)]
    if bad:
        raise HarnessError(f"{path}: not a state dict of tensors (entries {bad[:3]} are not tensors)")
    return obj


def load_state_dict(path: Path | str, *, trust: bool = False) -> dict[str, Any]:
    """Tensors by name from a safetensors file, a TorchScript archive or a state dict.

    For ``--weights`` and checkpoints. A pickled ``nn.Module`` gives its state dict, but
    only with ``trust``.
    """
    path = Path(path)
    if not path.is_file():
        raise HarnessError(f"{path}: no such model file")
    if path.suffix == ".safetensors":
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            return dict(load_file(str(path)))
        except (SafetensorError, OSError, ValueError) as exc:
            raise HarnessError(f"{path}: not a readable safetensors file: {exc}") from exc
    if is_torchscript(path):
        return dict(_load_torchscript(path).state_dict())
    return _check_state(_read_pickle(path, trust, "weights"), path)


def _load_torchscript(path: Path) -> Any:
    import torch

    try:
        return torch.jit.load(str(path), map_location="cpu")
    except Exception as exc:  # noqa: BLE001 - torch raises RuntimeError and friends
        raise HarnessError(f"{path}: not a loadable TorchScript archive: {type(exc).__name__}: {exc}") from exc


def load_model(path: Path | str, *, architecture: str, build: Callable[[], Any],
               trust: bool = False) -> Any:
    """An ``nn.Module`` from a model file, for ``explain --model-file``.

    TorchScript loads as it is. A state dict or safetensors file is loaded (strictly)
    into ``build()``, the registered architecture named ``architecture``. A pickled
    ``nn.Module`` loads only with ``trust``.
    """
    import torch

    path = Path(path)
    if not path.is_file():
        raise HarnessError(f"{path}: no such model file")
    if is_torchscript(path):
        return _load_torchscript(path)
    if path.suffix == ".safetensors":
        state: Any = load_state_dict(path)
    else:
        state = _unwrap_state(_read_pickle(path, trust, "a model"))
        if isinstance(state, torch.nn.Module):  # only reachable with trust
            return state
    state = _check_state(state, path)
    model = build()
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise HarnessError(f"{path}: its state dict does not fit architecture {architecture!r}: "
                           f"{str(exc).splitlines()[0]} (name the model's architecture with --baseline)") from exc
    return model
