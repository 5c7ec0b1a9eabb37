"""Loss functions: values on known inputs and gradients that point the right way."""

from __future__ import annotations

import pytest
import torch

from harness.segmentation.losses import (
    LOSSES,
    PRESETS,
    CompoundLoss,
    edge_loss,
    gradient_magnitude,
    make_loss,
)


def target() -> torch.Tensor:
    t = torch.zeros(1, 3, 6, 6, 6, dtype=torch.float64)
    t[:, :, 2:4, 2:4, 2:4] = 1.0
    return t


@pytest.mark.parametrize("name", sorted(LOSSES))
def test_gradients_are_exact(name):
    torch.manual_seed(0)
    logits = torch.randn(1, 3, 4, 4, 4, dtype=torch.float64, requires_grad=True)
    t = (torch.rand(1, 3, 4, 4, 4, dtype=torch.float64) > 0.5).double()
    assert torch.autograd.gradcheck(lambda x: LOSSES[name](x, t), (logits,), eps=1e-6, atol=1e-5)


@pytest.mark.parametrize("name", ["dice", "focal", "ce", "mse"])
def test_gradient_descent_moves_towards_the_target(name):
    t = target()
    logits = torch.zeros_like(t, requires_grad=True)
    LOSSES[name](logits, t).backward()
    g = logits.grad
    assert (g[t == 1] < 0).all()       # raise the logit where the target is 1
    if name != "dice":                 # soft Dice ignores true negatives' count but not their p
        assert (g[t == 0] > 0).all()
    # one step lowers the loss
    with torch.no_grad():
        stepped = logits - 1.0 * g / g.abs().max()
    assert LOSSES[name](stepped, t) < LOSSES[name](logits.detach(), t)


def test_perfect_confident_prediction_has_near_zero_loss():
    t = target()
    logits = (t * 2 - 1) * 30.0
    for name in ("dice", "focal", "ce", "mse", "edge"):
        assert float(LOSSES[name](logits, t)) < 1e-3, name


def test_edge_loss_sees_boundaries_not_intensity():
    t = target()
    gm = gradient_magnitude(t)
    assert gm[0, 0, 0, 0, 0] < 1e-2 and gm[0, 0, 2, 2, 1] > 0.4   # flat vs at the boundary
    shifted = torch.roll(t, shifts=1, dims=4)
    assert edge_loss((t * 2 - 1) * 30, t) < edge_loss((shifted * 2 - 1) * 30, t)


def test_compound_loss_is_the_weighted_sum():
    torch.manual_seed(1)
    logits, t = torch.randn(2, 3, 5, 5, 5), (torch.rand(2, 3, 5, 5, 5) > 0.7).float()
    loss = make_loss("mse_ce_edge")
    expected = sum(w * LOSSES[k](logits, t) for k, w in PRESETS["mse_ce_edge"].items())
    assert torch.isclose(loss(logits, t), expected)
    assert set(loss.parts) == {"mse", "ce", "edge"}
    assert PRESETS["dice_focal_edge05"]["edge"] == 0.05 and PRESETS["dice_focal_edge005"]["edge"] == 0.005
    with pytest.raises(Exception, match="unknown"):
        CompoundLoss({"hinge": 1.0})
