"""The one training engine: each caller's hooks reproduce its former hand-written loop
bit for bit (same seed: identical history, torch.equal weights), and the engine's own
selection, early-stopping and checkpoint rules.

The reference loops below are the loops the engine replaced, kept verbatim in spirit
(same RNG call order, same loss reduction) so a change in the engine's step order,
RNG use or bookkeeping fails here.
"""

from __future__ import annotations

import ast
import copy
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from harness.training.engine import Engine, Scored, Selection, snapshot

ROOT = Path(__file__).resolve().parents[1]


def _equal_weights(a: nn.Module, b: nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


# --- segmentation -------------------------------------------------------------------


def _seg_cases(n: int = 3):
    from harness.segmentation.data import SegCase

    rng = np.random.default_rng(0)
    cases = []
    for i in range(n):
        lab = np.zeros((8, 8, 8), np.uint8)
        lab[2:6, 2:6, 2:6] = 2
        lab[3:5, 3:5, 3:5] = 3
        img = rng.normal(size=(4, 8, 8, 8)).astype(np.float32) + lab[None]
        cases.append(SegCase(f"p{i}", img, lab, (1.0, 1.0, 1.0)))
    return cases


def _seg_reference(model, train, val, cfg):
    """The segmentation loop as it was before the engine (harness/segmentation/training.py)."""
    from harness.segmentation.losses import make_loss
    from harness.segmentation.training import _batch, _val_dice
    from harness.training.engine import seed_everything

    seed_everything(cfg.seed)
    opt = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=cfg.lr)
    sched = torch.optim.lr_scheduler.ExponentialLR(opt, gamma=cfg.lr_decay)
    loss_fn = make_loss(cfg.loss)
    rng = np.random.default_rng(cfg.seed)
    best, best_state, stale = -np.inf, copy.deepcopy(model.state_dict()), 0
    history = []
    for epoch in range(cfg.epochs):
        model.train()
        order = rng.permutation(len(train))
        losses = []
        for i in range(0, len(order), cfg.batch_size):
            idx = order[i:i + cfg.batch_size]
            flips = rng.random(len(idx)) < 0.5 if cfg.flip else None
            x, y = _batch([train[j] for j in idx], "cpu", flips)
            opt.zero_grad(set_to_none=True)
            loss = loss_fn(model(x), y)
            loss.backward()
            opt.step()
            losses.append(float(loss.detach()))
        sched.step()
        val_dice = _val_dice(model, val, "cpu") if val else float("nan")
        history.append({"epoch": epoch, "train_loss": float(np.mean(losses)), "val_dice": val_dice})
        score = val_dice if val else -history[-1]["train_loss"]
        if score > best:
            best, stale, best_state = score, 0, copy.deepcopy(model.state_dict())
        else:
            stale += 1
        if stale >= cfg.patience:
            break
    model.load_state_dict(best_state)
    return model, history


@pytest.mark.parametrize("with_val,kw", [
    (True, dict(epochs=2, seed=7)),
    (False, dict(epochs=2, seed=3, batch_size=1)),
    (True, dict(epochs=6, seed=1, patience=1, lr=0.05)),  # stops early
])
def test_segmentation_hooks_reproduce_the_reference_loop(tmp_path, with_val, kw):
    from baselines.unet3d import UNet3D
    from harness.segmentation.training import TrainConfig, train_model

    cases = _seg_cases()
    val = cases[2:] if with_val else []
    torch.manual_seed(0)
    a = UNet3D(4, 3, (4, 8))
    b = copy.deepcopy(a)
    ckpt = tmp_path / "ckpt" / "best.pt"
    a, hist = train_model(a, cases, val, TrainConfig(**kw, checkpoint=ckpt), log=lambda s: None)
    b, ref = _seg_reference(b, cases, val, TrainConfig(**kw))
    assert _nan_equal(hist, ref)
    assert all(list(r) == ["epoch", "train_loss", "val_dice", "seconds"] for r in hist)
    assert _equal_weights(a, b)
    assert ckpt.exists()
    if kw.get("patience") == 1:
        assert len(hist) < kw["epochs"]


def _nan_equal(hist, ref) -> bool:
    """Every reference field equal (same type, same value); NaN val_dice (no validation
    cases) counts as equal to NaN."""
    if len(hist) != len(ref):
        return False
    for h, r in zip(hist, ref):
        for k, v in r.items():
            w = h[k]
            if type(v) is not type(w) or not (v == w or (isinstance(v, float) and math.isnan(v) and math.isnan(w))):
                return False
    return True


# --- explain ------------------------------------------------------------------------


def _explain_reference(model, x, y, *, epochs, lr, batch_size, seed, weight_decay=1e-4, augment=True):
    """The explain CNN's loop as it was before the engine (harness/explain/models.py)."""
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    xt = torch.as_tensor(x, dtype=torch.float32)
    yt = torch.as_tensor(y, dtype=torch.long)
    counts = np.bincount(y, minlength=int(y.max()) + 1).astype(np.float64)
    weights = torch.as_tensor(counts.sum() / np.maximum(counts, 1) / len(counts), dtype=torch.float32)
    opt = torch.optim.Adam(model.parameters(), lr=lr, weight_decay=weight_decay)
    loss_fn = nn.CrossEntropyLoss(weight=weights)
    history = []
    spatial = tuple(range(2, xt.dim()))
    for epoch in range(epochs):
        model.train()
        order = rng.permutation(len(xt))
        total = 0.0
        for start in range(0, len(order), batch_size):
            idx = torch.as_tensor(order[start:start + batch_size])
            xb, yb = xt[idx], yt[idx]
            if augment:
                for d in spatial:
                    if rng.random() < 0.5:
                        xb = torch.flip(xb, dims=(d,))
            opt.zero_grad()
            loss = loss_fn(model(xb), yb)
            loss.backward()
            opt.step()
            total += float(loss.detach()) * len(idx)
        history.append({"epoch": float(epoch), "loss": total / len(xt)})
    model.eval()
    return model, history


@pytest.mark.parametrize("dims,shape", [(2, (20, 4, 12, 12)), (3, (10, 4, 8, 8, 8))])
def test_explain_hooks_reproduce_the_reference_loop(dims, shape):
    from harness.explain.models import MultiModalCNN, train_classifier

    g = np.random.default_rng(5)
    x = g.normal(size=shape).astype(np.float32)
    y = g.integers(0, 2, size=shape[0])
    torch.manual_seed(11)
    a = MultiModalCNN(4, 2, width=4, dims=dims)
    b = copy.deepcopy(a)
    kw = dict(epochs=3, lr=3e-3, batch_size=6, seed=2)
    fit = train_classifier(a, x, y, **kw)
    b, ref = _explain_reference(b, x, y, **kw)
    assert fit.history == ref
    assert _equal_weights(fit.model, b)
    assert not fit.model.training


# --- baselines ----------------------------------------------------------------------


class _Lin(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.f = nn.Sequential(nn.Linear(5, 8), nn.ReLU(), nn.Linear(8, 1))

    def forward(self, x):
        return self.f(x).squeeze(-1)


def _baseline_reference(model, train_loader, val_loader, loss_fn, cfg):
    """The baselines' loop as it was before the engine (baselines/torch_loop.py)."""
    from baselines.torch_loop import _better, evaluate, make_adam

    # the optimiser as the baselines build it (fused Adam where torch has it)
    opt = make_adam(list(model.parameters()), lr=cfg.lr, weight_decay=cfg.weight_decay)
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=cfg.step_size, gamma=cfg.gamma)
    best, best_state, best_epoch, stale, history = math.inf, None, -1, 0, []
    for epoch in range(cfg.epochs):
        lr = opt.param_groups[0]["lr"]
        model.train()
        total, n = torch.zeros(()), 0
        for x, y in train_loader:
            opt.zero_grad(set_to_none=True)
            loss = loss_fn(model(x), y)
            loss.backward()
            opt.step()
            total += loss.detach() * len(y)
            n += len(y)
        record = {"stage": "", "epoch": epoch, "lr": lr, "train_loss": float(total) / n}
        val_loss, val_metric = evaluate(model, val_loader, loss_fn, torch.device("cpu"))
        record.update(val_loss=val_loss, val_metric=val_metric)
        if _better(val_loss, best, "val_loss", cfg.min_delta) or best_state is None:
            best, best_state, best_epoch, stale = val_loss, snapshot(model), epoch, 0
        else:
            stale += 1
        record["best_epoch"] = best_epoch
        history.append(record)
        sched.step()
        if stale >= cfg.patience:
            break
    model.load_state_dict(best_state)
    return history


def test_baseline_hooks_reproduce_the_reference_loop():
    from baselines.registry import FitContext
    from baselines.torch_loop import LoopConfig, fit_model, make_loader, seed_everything

    g = torch.Generator().manual_seed(0)
    x = torch.randn(64, 5, generator=g)
    y = x @ torch.arange(1.0, 6.0)
    cfg = LoopConfig(epochs=8, lr=1e-2, step_size=2, gamma=0.5, patience=3)
    runs = []
    for _ in range(2):
        gen = seed_everything(4)
        model = _Lin()
        runs.append((model, make_loader(x[:48], y[:48], batch_size=8, shuffle=True, generator=gen),
                     make_loader(x[48:], y[48:], batch_size=8, shuffle=False)))
    (a, ta, va), (b, tb, vb) = runs
    assert _equal_weights(a, b)
    ctx = FitContext(seed=4)
    fit_model(a, ta, va, nn.MSELoss(), cfg, ctx)
    ref = _baseline_reference(b, tb, vb, nn.MSELoss(), cfg)
    assert _nan_equal(ctx.history, ref) and [list(r) for r in ctx.history] == [list(r) for r in ref]
    assert _equal_weights(a, b)


# --- the engine's own rules ---------------------------------------------------------


class _Batches:
    def __init__(self, n_batches: int = 2) -> None:
        g = torch.Generator().manual_seed(0)
        self.data = [((torch.randn(4, 5, generator=g),), torch.randn(4, generator=g)) for _ in range(n_batches)]

    def batches(self, epoch: int):
        return iter(self.data)


def _engine_fit(scores, selection, **kw):
    torch.manual_seed(0)
    model = _Lin()
    initial = snapshot(model)
    states = []
    calls = iter(scores)

    def validate(m, train_loss):
        states.append(snapshot(m))
        s = next(calls)
        return Scored({"s": s}, s)

    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    hist = Engine(loss_fn=nn.MSELoss(), epochs=len(scores), validate=validate, selection=selection,
                  **kw).fit(model, _Batches(), opt)
    return model, initial, states, hist


def _state_equal(model: nn.Module, state) -> bool:
    return all(torch.equal(v, state[k]) for k, v in model.state_dict().items())


def test_the_best_scored_epoch_is_kept_and_patience_stops():
    model, _, states, hist = _engine_fit([0.1, 0.5, 0.3, 0.2, 0.9], Selection(patience=2))
    assert len(hist) == 4  # epochs 2 and 3 do not improve on 0.5
    assert [h["s"] for h in hist] == [0.1, 0.5, 0.3, 0.2]
    assert _state_equal(model, states[1]) and not _state_equal(model, states[-1])
    assert not model.training


def test_fallbacks_when_no_epoch_improves():
    nan = float("nan")
    # "initial": the untrained weights stay unless an epoch beats `best`
    model, initial, _, _ = _engine_fit([nan, nan], Selection(fallback="initial"))
    assert _state_equal(model, initial)
    # "first": the first scored epoch is kept even with a NaN score
    model, initial, states, _ = _engine_fit([nan, nan], Selection(fallback="first"))
    assert _state_equal(model, states[0]) and not _state_equal(model, initial)


def test_the_checkpoint_hook_supplies_the_weights_loaded():
    seen = []

    def checkpoint(state):
        seen.append(state)
        return {k: torch.zeros_like(v) for k, v in state.items()}

    model, _, states, _ = _engine_fit([0.3, 0.1], Selection(), checkpoint=checkpoint)
    assert len(seen) == 1 and all(torch.equal(seen[0][k], states[0][k]) for k in states[0])
    assert all(torch.equal(v, torch.zeros_like(v)) for v in model.state_dict().values())


def test_lr_is_recorded_before_the_epochs_scheduler_step():
    torch.manual_seed(0)
    model = _Lin()
    opt = torch.optim.SGD(model.parameters(), lr=1.0)
    hist = Engine(loss_fn=nn.MSELoss(), epochs=3,
                  scheduler=lambda o: torch.optim.lr_scheduler.ExponentialLR(o, gamma=0.5),
                  record=lambda s: {"lr": s.lr}).fit(model, _Batches(), opt)
    assert [h["lr"] for h in hist] == [1.0, 0.5, 0.25]


# --- one engine, one seeding --------------------------------------------------------


def _modules_with(match) -> list[str]:
    found = set()
    for pkg in ("harness", "baselines"):
        for path in (ROOT / pkg).rglob("*.py"):
            if any(match(node) for node in ast.walk(ast.parse(path.read_text()))):
                found.add(path.relative_to(ROOT).as_posix())
    return sorted(found)


def test_one_training_step_and_one_seed_everything():
    """Training steps (``loss.backward()``) happen only in the engine, and
    ``seed_everything`` is defined once (torch_loop and segmentation re-export it)."""
    def backward_call(node: ast.AST) -> bool:
        return isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "backward"

    def seed_def(node: ast.AST) -> bool:
        return isinstance(node, ast.FunctionDef) and node.name == "seed_everything"

    assert _modules_with(backward_call) == ["harness/training/engine.py"]
    assert _modules_with(seed_def) == ["harness/training/engine.py"]
