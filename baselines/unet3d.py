"""``unet3d``: a small 3D U-Net for BraTS-style segmentation (Ren et al. 2023, CPU scale).

Four input channels (T1, T1post, T2, FLAIR), three sigmoid outputs for the overlapping
regions ET, TC, WT. Each level is two 3x3x3 convolutions with instance norm and leaky
ReLU, as in the optimized U-Net Ren et al. build on; strided convolutions go down,
transposed convolutions come up. Layers are grouped (``encoder``, ``middle``,
``decoder``) so transfer learning can freeze them by name. The training loop is shared
(harness.segmentation.training); this module only holds the model and its defaults.
"""

from __future__ import annotations

from typing import Any, ClassVar, Sequence

import numpy as np

from baselines.registry import Baseline, FitContext, register_baseline
from harness.errors import HarnessError

try:  # torch is needed only to build or fit the model, not to list baselines
    import torch
    from torch import nn
    from torch.nn import functional as F
except ImportError:  # pragma: no cover
    torch = None  # type: ignore[assignment]
    nn = None  # type: ignore[assignment]

#: Parameter groups for freezing, from input to output.
FREEZE_GROUPS: tuple[str, ...] = ("encoder", "middle", "decoder", "none")


if nn is not None:

    class ConvBlock(nn.Module):
        """Two (conv 3x3x3 -> instance norm -> leaky ReLU); the first may stride by 2."""

        def __init__(self, c_in: int, c_out: int, stride: int = 1) -> None:
            super().__init__()
            self.net = nn.Sequential(
                nn.Conv3d(c_in, c_out, 3, stride=stride, padding=1, bias=False),
                nn.InstanceNorm3d(c_out, affine=True),
                nn.LeakyReLU(0.01, inplace=True),
                nn.Conv3d(c_out, c_out, 3, padding=1, bias=False),
                nn.InstanceNorm3d(c_out, affine=True),
                nn.LeakyReLU(0.01, inplace=True),
            )

        def forward(self, x: "torch.Tensor") -> "torch.Tensor":
            return self.net(x)

    class UNet3D(nn.Module):
        """Encoder ``enc[0..L-2]`` + bottleneck ``enc[L-1]``, decoder ``up[i]``/``dec[i]``, 1x1 head.

        Inputs of any size: padded to a multiple of 2**(L-1) and cropped back.
        """

        def __init__(self, in_channels: int = 4, out_channels: int = 3,
                     widths: Sequence[int] = (8, 16, 32, 64), head_prior: float | None = None) -> None:
            super().__init__()
            widths = [int(w) for w in widths]
            if len(widths) < 2:
                raise HarnessError("unet3d needs at least two levels (widths)")
            self.widths = widths
            self.enc = nn.ModuleList(
                [ConvBlock(in_channels, widths[0])]
                + [ConvBlock(widths[i - 1], widths[i], stride=2) for i in range(1, len(widths))]
            )
            self.up = nn.ModuleList(
                [nn.ConvTranspose3d(widths[i + 1], widths[i], 2, stride=2) for i in range(len(widths) - 1)]
            )
            self.dec = nn.ModuleList([ConvBlock(2 * widths[i], widths[i]) for i in range(len(widths) - 1)])
            self.head = nn.Conv3d(widths[0], out_channels, 1)
            if head_prior is not None:
                if not 0.0 < head_prior < 1.0:
                    raise HarnessError(f"unet3d: head_prior must be a probability in (0, 1), got {head_prior}")
                # Start every voxel at p = head_prior, as RetinaNet does for focal loss: from
                # p = 0.5 the soft Dice has no net pull on the bias and the first epochs go
                # into pushing ~99.7% background voxels down, so a small region (ET) is
                # never reached in a CPU-sized budget (docs/segmentation.md, "ET").
                assert self.head.bias is not None
                nn.init.constant_(self.head.bias, float(np.log(head_prior / (1.0 - head_prior))))

        @property
        def multiple(self) -> int:
            return 2 ** (len(self.widths) - 1)

        def forward(self, x: "torch.Tensor") -> "torch.Tensor":
            size = x.shape[2:]
            m = self.multiple
            pad = [(-s) % m for s in size]
            if any(pad):
                x = F.pad(x, [p for d in reversed(pad) for p in (0, d)])
            skips = []
            for i, block in enumerate(self.enc):
                x = block(x)
                if i < len(self.enc) - 1:
                    skips.append(x)
            for i in reversed(range(len(self.dec))):
                x = self.dec[i](torch.cat([self.up[i](x), skips[i]], dim=1))
            x = self.head(x)
            return x[(...,) + tuple(slice(0, s) for s in size)]

        def parameter_groups(self) -> dict[str, list["nn.Parameter"]]:
            """Parameters by freezing group. ``middle`` is the deepest levels on both
            sides (the paper's encoder conv 5-7 and decoder 6-4, scaled down): the last
            encoder level, the bottleneck and the first decoder level."""
            n = len(self.widths)
            deep_dec = n - 2  # the decoder level right after the bottleneck
            groups: dict[str, list[nn.Parameter]] = {
                "encoder": [p for b in self.enc for p in b.parameters()],
                "decoder": [p for m in (*self.up, *self.dec, self.head) for p in m.parameters()],
                "middle": [p for m in (self.enc[n - 2], self.enc[n - 1], self.up[deep_dec], self.dec[deep_dec])
                           for p in m.parameters()],
                "none": [],
            }
            return groups


@register_baseline
class UNet3DBaseline(Baseline):
    """Small 3D U-Net, 4 MRI channels -> ET/TC/WT sigmoids (Ren et al. 2023, CPU scale)."""

    name: ClassVar[str] = "unet3d"
    tasks: ClassVar[frozenset[str]] = frozenset({"segmentation"})
    #: Case inputs ``python -m harness explain`` can give it: 4-channel volumes with labels.
    explain_inputs: ClassVar[dict[int, str]] = {3: "segmentation"}
    target_kinds: ClassVar[frozenset[str]] = frozenset({"segmentation"})
    profiles: ClassVar[dict[str, dict[str, Any]]] = {
        # CPU profile: tiny widths, few epochs, full volumes of a 4 mm grid.
        # head_prior: every output starts at this probability (None: PyTorch's default init).
        "quick": {"widths": [8, 16, 32, 64], "epochs": 12, "lr": 3e-3, "batch_size": 2,
                  "patience": 6, "loss": "dice_focal_edge005", "lr_decay": 0.97, "flip": True,
                  "head_prior": 0.01},
        # Ren et al.: Adam, lr 6e-5 with exponential decay, no weight decay.
        "paper": {"widths": [32, 64, 128, 256, 320], "epochs": 300, "lr": 6e-5, "batch_size": 2,
                  "patience": 50, "loss": "dice_focal_edge005", "lr_decay": 0.99, "flip": True,
                  "head_prior": None},
    }

    #: The segmentation suite's arms are parameter variants of this baseline (as nnU-Net's
    #: trainer variants): the pre-processing fitted on the training cases, the
    #: post-processing of its label maps, a start from the suite's source model
    #: (``init = "source"``) and the parameter group kept frozen while fine-tuning.
    #: Their defaults (none, dust removal, random init, nothing frozen) live in
    #: harness.segmentation.task; ``fit``/``predict`` here leave them to it.
    extra_params: ClassVar[frozenset[str]] = frozenset({"preprocess", "postprocess", "init", "freeze"})

    def __init__(self, profile: str = "quick", **params: Any) -> None:
        super().__init__(profile, **params)
        self.model: Any = None
        self.history: list[dict[str, float]] = []

    def build(self) -> "UNet3D":
        if torch is None:  # pragma: no cover
            raise HarnessError("unet3d needs torch: pip install torch")
        return UNet3D(4, 3, self.params["widths"], head_prior=self.params.get("head_prior"))

    def fit(self, train: Any, val: Any, ctx: FitContext) -> "UNet3DBaseline":
        """``train``/``val``: sequences of harness.segmentation.data.SegCase (pre-processed)."""
        from harness.segmentation.training import TrainConfig, train_model

        cfg = TrainConfig.from_params(self.params, seed=ctx.seed, device=ctx.device)
        if self.model is None:
            torch.manual_seed(ctx.seed)  # the initial weights depend on the seed alone, as in the suite
            self.model = self.build()
        self.model, history = train_model(self.model, list(train), list(val or []), cfg, log=ctx.log)
        ctx.history.extend(history)
        self.history = history
        return self

    # Per-voxel probabilities of each case (segmentation), not the row classifiers' contract:
    # the runner asks only classification baselines for class probabilities.
    def predict_proba(self, data: Any, device: str = "cpu") -> list[np.ndarray]:  # type: ignore[override]
        from harness.segmentation.training import predict_probabilities

        if self.model is None:
            raise HarnessError("unet3d: predict before fit")
        return predict_probabilities(self.model, list(data), device=device)

    def predict(self, data: Any) -> np.ndarray:
        """One 2023-convention label map per case (default thresholds, no post-processing)."""
        from harness.segmentation.labels import probabilities_to_labels

        return np.array([probabilities_to_labels(p) for p in self.predict_proba(data)], dtype=object)

    def explain_adapter(self, modalities: Sequence[str] = ("T1", "T1post", "T2", "FLAIR"), dims: int = 3,
                        region: str = "WT") -> Any:
        """The fitted U-Net for ``harness.explain``, reduced to one scalar score.

        Explained input: the (B, 4, D, H, W) volume as the network takes it (T1, T1post,
        T2, FLAIR). Score: S, ``region``'s logit (ET, TC or WT) summed over its predicted
        voxels (p > 0.5), smoothed (softplus over the volume); the two "classes" are [none, region] with scores [0, log(S / K)],
        K = 1% of the volume's voxels, so the target probability is S / (S + K)
        (:class:`harness.explain.adapters.SegmentationScore`). Class-score methods then
        apply in 3D.
        """
        from harness.explain.adapters import ExplainAdapter, SegmentationScore, without_inplace
        from harness.segmentation.data import CHANNELS
        from harness.segmentation.labels import REGIONS

        if self.model is None:
            raise HarnessError("unet3d: explain before fit")
        if dims != 3:
            raise HarnessError("unet3d segments volumes; explain it with --dims 3")
        if region not in REGIONS:
            raise HarnessError(f"unet3d: unknown region {region!r}; known: {', '.join(REGIONS)}")
        return ExplainAdapter(
            module=SegmentationScore(without_inplace(self.model).cpu(), REGIONS.index(region)).eval(),
            modalities=list(CHANNELS), classes=[f"no {region}", region], dims=3,
            prepare_fn=lambda x: torch.as_tensor(x, dtype=torch.float32), fixed_target=1,
            description=f"3D U-Net; score S = {region} logit summed over the predicted {region} voxels "
                        f"(softplus over the volume); p({region}) = S / (S + 1% of the voxels)")
