"""Training arms and folds: fit a U-Net per (pre-processing, loss) and fold, predict, score.

Kept apart from the suite's bookkeeping (the runner's driver with the segmentation task
plugin, harness.segmentation.task) so the ablations can be run and tested on their own.
The driver keeps every finished fold in the runner's fold cache (scores and label maps,
written atomically) so a rerun resumes.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any, Callable, Sequence

import numpy as np
import pandas as pd

from harness.hashing import json_digest
from harness.segmentation.data import SegCase
from harness.segmentation.labels import Thresholds, probabilities_to_labels
from harness.segmentation.lesionwise import SCORE_COLUMNS, score_regions
from harness.segmentation.postprocess import remove_dust
from harness.segmentation.preprocess import Preprocessor


@dataclass(frozen=True)
class Arm:
    """One row of an ablation table: how the model is trained and its output cleaned."""

    table: str            # "preprocessing" | "loss" | "postprocessing" | "transfer"
    name: str             # unique across the suite, e.g. "pre-zscore"
    label: str            # what the report shows
    preprocess: str = "zscore_rescale"
    loss: str = "dice_focal_edge005"
    postprocess: bool = True
    #: transfer arms: "source_only" | "target_only" | "finetune"; freeze group for finetune
    transfer: str = ""
    freeze: str = ""

    @property
    def train_key(self) -> tuple[str, str]:
        return (self.preprocess, self.loss)


@dataclass
class EvalSettings:
    thresholds: Thresholds = field(default_factory=Thresholds)
    max_dust: int = 50
    dilation: int = 3
    min_lesion: float = 50.0


def digest(obj: Any) -> str:
    """Cache key of a segmentation stage (32 hex characters)."""
    return json_digest(obj, 32)


def preprocess_cases(method: str, train: Sequence[SegCase], others: Sequence[Sequence[SegCase]]
                     ) -> tuple[list[SegCase], list[list[SegCase]]]:
    """Fit on ``train`` only, transform everything."""
    pre = Preprocessor(method).fit([c.image for c in train])
    tf = lambda cs: [replace(c, image=pre.transform(c.image)) for c in cs]  # noqa: E731
    return tf(train), [tf(o) for o in others]


def fit_predict(model_factory: Callable[[], Any], train: Sequence[SegCase], val: Sequence[SegCase],
                test: Sequence[SegCase], params: dict, *, seed: int, device: str,
                log: Callable[[str], None], init_state: dict | None = None, freeze: str = "",
                settings: EvalSettings) -> tuple[dict[str, np.ndarray], list[dict[str, float]], Any]:
    """Train (optionally from ``init_state`` with a frozen group), predict test labels."""
    import torch

    from harness.segmentation.training import TrainConfig, freeze as freeze_group, predict_probabilities, train_model

    torch.manual_seed(seed)
    model = model_factory()
    if init_state is not None:
        model.load_state_dict(init_state)
    if freeze:
        freeze_group(model, freeze)
    history: list[dict[str, float]] = []
    if params.get("epochs", 1) > 0:
        cfg = TrainConfig.from_params(params, seed=seed, device=device)
        model, history = train_model(model, list(train), list(val), cfg, log=log)
    probs = predict_probabilities(model, test, device=device)
    labels = {c.patient_id: probabilities_to_labels(p, settings.thresholds) for c, p in zip(test, probs)}
    return labels, history, model


def score_cases(labels: dict[str, np.ndarray], cases: Sequence[SegCase], settings: EvalSettings,
                *, postprocess: bool) -> pd.DataFrame:
    """One row per patient x region with the seg-eval columns."""
    rows = []
    for c in cases:
        pred = labels[c.patient_id]
        if postprocess:
            pred = remove_dust(pred, settings.max_dust)
        for s in score_regions(pred, c.labels, spacing=c.spacing, dilation=settings.dilation,
                               min_lesion_volume=settings.min_lesion):
            rows.append({"subject": c.patient_id, **s.to_dict()})
    return pd.DataFrame(rows, columns=["subject", "region", *SCORE_COLUMNS])


#: Metrics restricted to the patients whose reference has a lesion of the region that the
#: lesion-wise score counts (``Num_TP + Num_FN > 0``: a lesion of more than ``min_lesion``
#: voxels). An empty prediction scores exactly 0 there, so a net that never predicts the
#: region cannot hide behind the patients without it (who score 1 for an empty map).
PRESENT_METRICS: tuple[str, ...] = ("lesionwise_dice_ET_present",)
PRESENT = "_present"


def metric_names() -> list[str]:
    """Summary metric names: each family's region mean and regions, then the present-only ones."""
    out = []
    for col, short in (("LesionWise_Score_Dice", "lesionwise_dice"), ("LesionWise_Score_HD95", "lesionwise_hd95"),
                       ("Legacy_Dice", "legacy_dice"), ("Legacy_HD95", "legacy_hd95")):
        out += [f"{short}_{r}" for r in ("mean", "ET", "TC", "WT")]
    return out + list(PRESENT_METRICS)


_SHORT = {"lesionwise_dice": "LesionWise_Score_Dice", "lesionwise_hd95": "LesionWise_Score_HD95",
          "legacy_dice": "Legacy_Dice", "legacy_hd95": "Legacy_HD95"}


def per_patient(scores: pd.DataFrame, metric: str) -> pd.Series:
    """Per-patient value of a summary metric (region mean, one region, or one region on
    the patients whose reference has a scored lesion of it: ``..._<region>_present``)."""
    present = metric.endswith(PRESENT)
    short, _, region = metric.removesuffix(PRESENT).rpartition("_")
    col = _SHORT[short]
    if region == "mean":
        return scores.groupby("subject")[col].mean()
    rows = scores[scores["region"] == region]
    if present:
        rows = rows[(rows["Num_TP"] + rows["Num_FN"]) > 0]
    return rows.set_index("subject")[col]
