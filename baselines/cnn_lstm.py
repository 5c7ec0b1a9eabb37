"""``cnn_lstm``: the capstone paper's progression pipeline, stage by stage.

1. Grader: ``resnet18_grader`` trained on the REMBRANDT-style auxiliary cohort only
   (``--aux-data``); it never sees a progression patient (checked, not assumed).
2. Pseudo-grades: every progression scan (patient, date) gets the most common slice
   prediction over its T1post and FLAIR series; saved as a table.
3. Eligibility: patients whose pseudo-grade rises between the two dates (the paper kept
   6 of 20); configurable, and a rule that leaves too few patients is reported plainly.
4. DWT-DCT vectors of length 100 per patient-date-series (cached per series).
5. A bidirectional LSTM (hidden 128, 1 layer) regressing MonthDif, 30 epochs, early
   stopping on validation loss with minimum improvement 0.01 over 5 epochs.

Stages 1-3 decide which rows exist, so they run once per suite run, before the splits,
and every baseline (controls included) sees the same rows (:func:`grading_stages`).
Stages 4-5 are the baseline :class:`CnnLstm`, fitted per fold.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pandas as pd
import torch
from torch import nn

from harness.hashing import json_digest
from baselines.registry import Baseline, FitContext, register_baseline
from baselines.torch_loop import LoopConfig, fit_model, make_loader, predict_batches, seed_everything
from harness.errors import HarnessError
from harness.tasks import TaskData

# --------------------------------------------------------------------------- stages 4-5


class BiLstmRegressor(nn.Module):
    """Bidirectional LSTM over a (B, T, F) sequence; the last step's output -> one value."""

    def __init__(self, n_features: int, hidden: int = 128, layers: int = 1) -> None:
        super().__init__()
        self.lstm = nn.LSTM(n_features, hidden, num_layers=layers, batch_first=True, bidirectional=True)
        self.out = nn.Linear(2 * hidden, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        seq, _ = self.lstm(x)
        return self.out(seq[:, -1]).squeeze(-1)


@register_baseline
class CnnLstm(Baseline):
    """Capstone progression model: DWT-DCT series vectors into a BiLSTM regressing MonthDif."""

    name = "cnn_lstm"
    tasks = frozenset({"progression"})
    target_kinds = frozenset({"regression"})
    profiles = {
        # CPU profile: DWT-DCT at 128 px (the LSTM itself is tiny and keeps the paper's settings).
        "quick": {"image_size": 128, "n_coefficients": 100, "hidden": 128, "layers": 1, "epochs": 30,
                  "patience": 5, "min_delta": 0.01, "lr": 1e-3, "batch_size": 16, "val_fraction": 0.2,
                  "sequence": "vector", "min_foreground": 0.15},
        "paper": {"image_size": 256, "n_coefficients": 100, "hidden": 128, "layers": 1, "epochs": 30,
                  "patience": 5, "min_delta": 0.01, "lr": 1e-3, "batch_size": 16, "val_fraction": 0.2,
                  "sequence": "vector", "min_foreground": 0.15},
    }

    def _features(self, data: TaskData) -> np.ndarray:
        from harness.features.dwtdct import DwtDctConfig
        from harness.features.series import sample_dwtdct

        p = self.params
        cfg = DwtDctConfig(image_size=int(p["image_size"]), n_coefficients=int(p["n_coefficients"]))
        return sample_dwtdct(data, self.cache_, cfg, float(p["min_foreground"]))

    def _sequences(self, x: np.ndarray) -> torch.Tensor:
        z = (x - self.mu_) / self.sd_
        t = torch.from_numpy(z.astype(np.float32))
        # "vector": one step of 100 features (the paper's row vector);
        # "coefficients": 100 steps of one coefficient each.
        return t.unsqueeze(1) if self.params["sequence"] == "vector" else t.unsqueeze(-1)

    def fit(self, train: TaskData, val: TaskData | None, ctx: FitContext) -> "CnnLstm":
        p = self.params
        if p["sequence"] not in ("vector", "coefficients"):
            raise HarnessError(f"cnn_lstm sequence must be 'vector' or 'coefficients', got {p['sequence']!r}")
        self.cache_ = ctx.work_dir / "features" if ctx.work_dir else None
        gen = seed_everything(ctx.seed)
        x, y = self._features(train), train.y.astype(np.float32)
        if val is None or len(val) == 0:
            # No validation set from the protocol (the paper's 48/12): hold out rows, as
            # Keras' validation_split would.
            rng = np.random.default_rng(ctx.seed)
            order = rng.permutation(len(x))
            n_val = int(round(float(p["val_fraction"]) * len(x))) if len(x) > 4 else 0
            vx, vy, x, y = x[order[:n_val]], y[order[:n_val]], x[order[n_val:]], y[order[n_val:]]
        else:
            vx, vy = self._features(val), val.y.astype(np.float32)
        self.mu_ = x.mean(axis=0)
        self.sd_ = x.std(axis=0) + 1e-6
        # Targets are standardised on training rows for the optimiser and mapped back in
        # predict(); the loss the paper reports (MAE in months) is unchanged by this.
        self.y_mu_, self.y_sd_ = float(y.mean()), float(y.std()) + 1e-6
        y = (y - self.y_mu_) / self.y_sd_
        vy = (vy - self.y_mu_) / self.y_sd_
        n_features = 1 if p["sequence"] == "coefficients" else x.shape[1]
        self.model_ = BiLstmRegressor(n_features, int(p["hidden"]), int(p["layers"]))
        val_loader = (
            make_loader(self._sequences(vx), torch.from_numpy(vy), batch_size=p["batch_size"], shuffle=False)
            if len(vx) else None
        )
        fit_model(
            self.model_,
            make_loader(self._sequences(x), torch.from_numpy(y), batch_size=p["batch_size"], shuffle=True, generator=gen),
            val_loader, nn.MSELoss(),
            LoopConfig(epochs=int(p["epochs"]), lr=float(p["lr"]), patience=int(p["patience"]),
                       min_delta=float(p["min_delta"]), monitor="val_loss"),
            ctx, tag=self.name,
        )
        self.device_ = ctx.device
        return self

    def predict(self, data: TaskData) -> np.ndarray:
        if len(data) == 0:
            return np.zeros(0)
        x = self._sequences(self._features(data))
        out = predict_batches(self.model_, x, batch_size=256, device=self.device_).numpy().astype(float)
        return out * self.y_sd_ + self.y_mu_


# --------------------------------------------------------------------------- stages 1-3


@dataclass
class StageOutput:
    """What stages 1-3 leave behind: the eligible view plus tables and tags to record."""

    task_data: TaskData
    tables: dict[str, pd.DataFrame] = field(default_factory=dict)
    tags: dict[str, str] = field(default_factory=dict)
    message: str = ""


def aux_grading_data(aux_dir: Path, cache_dir: Path, *, modalities: list[str], slice_step: int,
                     min_foreground: float, progress: bool) -> tuple[TaskData, str, list]:
    """Stage 1's training data: the auxiliary (REMBRANDT-style) cohort as a grading view."""
    from harness.data.cache import VolumeStore, dataset_fingerprint
    from harness.data.detect import load_cohort
    from harness.tasks import grading_task

    cohort = load_cohort(aux_dir)
    series = cohort.series[cohort.series["modality"].isin(modalities)]
    store = VolumeStore(cache_dir / "arrays", progress=progress)
    volumes, problems = store.load_many(series)
    data, task_problems = grading_task(
        cohort, {k: v.array for k, v in volumes.items()}, {k: v.content_key for k, v in volumes.items()},
        modalities=modalities, min_foreground=min_foreground, slice_step=slice_step,
    )
    return data, dataset_fingerprint(cohort, store), list(cohort.problems) + problems + task_problems


def check_isolation(aux: TaskData, progression: TaskData) -> None:
    """Stage 1 must never see a progression patient: refuse any shared patient ID."""
    shared = sorted(set(aux.samples["patient_id"]) & set(progression.samples["patient_id"]))
    if shared:
        raise HarnessError(
            f"the auxiliary grading cohort shares patient(s) {shared[:10]} with the progression "
            "cohort; the stage-1 grader must never see a progression patient"
        )


def progression_slices(data: TaskData, modalities: list[str], min_foreground: float) -> TaskData:
    """One slice sample per head-containing slice of every scan's ``modalities`` series."""
    from harness.tasks import foreground_fraction

    series = data.samples[data.samples["modality"].isin(modalities)].drop_duplicates("image_id")
    rows = []
    for rec in series.itertuples(index=False):
        fg = foreground_fraction(np.asarray(data.volumes[rec.image_id]))
        for z in np.flatnonzero(fg >= min_foreground):
            rows.append({"sample_id": f"{rec.image_id}#z{int(z):03d}", "patient_id": rec.patient_id,
                         "study_id": rec.study_id, "image_id": rec.image_id, "modality": rec.modality,
                         "slice_index": int(z), "target": "", "study_date": rec.study_date})
    frame = pd.DataFrame(rows, columns=["sample_id", "patient_id", "study_id", "image_id", "modality",
                                        "slice_index", "target", "study_date"])
    return TaskData("grading", "classification", frame, None, data.volumes, data.content_keys)


def grading_stages(
    data: TaskData,
    *,
    aux_dir: Path,
    cache_dir: Path,
    options: dict[str, Any],
    seed: int,
    profile: str,
    device: str,
    weights: dict[str, Path],
    grader_params: dict[str, Any],
    log: Callable[[str], None],
    progress: bool = True,
) -> StageOutput:
    """Stages 1-3: train the grader on ``aux_dir``, pseudo-grade every scan, filter patients."""
    from baselines.resnet18_grader import ResNet18Grader
    from harness.tasks.progression import eligibility_table, scan_grades, select_eligible

    grade_mods = list(options.get("grade_modalities", ["T1post", "FLAIR"]))
    min_fg = float(options.get("min_foreground", 0.15))
    aux_mods = list(options.get("aux_modalities", ["T1", "T1post", "T2", "FLAIR"]))
    aux, aux_fp, _aux_problems = aux_grading_data(
        aux_dir, cache_dir, modalities=aux_mods, slice_step=int(options.get("aux_slice_step", 2)),
        min_foreground=min_fg, progress=progress,
    )
    check_isolation(aux, data)
    grader = ResNet18Grader(profile=profile, **grader_params)
    key = json_digest(
        {"aux": aux_fp, "params": grader.get_params(), "seed": seed, "mods": grade_mods, "aux_mods": aux_mods,
         "min_fg": min_fg, "series": sorted(set(data.samples["image_id"])),
         "keys": sorted(set(data.content_keys.get(i, i) for i in data.samples["image_id"]))}, 24)
    cached = cache_dir / "stages" / f"pseudo-grades-{key}.csv"
    tags = {"aux_dataset_fingerprint": aux_fp, "aux_data": str(aux_dir),
            "aux_patients": str(aux.samples["patient_id"].nunique())}
    tag_file = cached.with_suffix(".tags.json")
    if cached.exists() and tag_file.exists():
        slices = pd.read_csv(cached, dtype={"patient_id": str, "grade": str, "study_date": str})
        tags.update(json.loads(tag_file.read_text()))
        log(f"stage 1-2: pseudo-grades reused from {cached}")
    else:
        ctx = FitContext(seed=seed, device=device, profile=profile, work_dir=cache_dir, log=log, weights=weights)
        # 10% of the auxiliary patients validate the grader (best checkpoint on accuracy).
        pids = np.array(sorted(aux.samples["patient_id"].unique()))
        rng = np.random.default_rng(seed)
        val_p = set(rng.choice(pids, size=max(1, len(pids) // 10), replace=False)) if len(pids) > 2 else set()
        is_val = aux.samples["patient_id"].isin(val_p)
        log(f"stage 1: training the grader on the {int((~is_val).sum())} slices (profile {profile}: "
            f"at most {grader.params['max_train_slices']} used) of "
            f"{len(pids) - len(val_p)} auxiliary patients ({aux_dir})")
        grader.fit(aux.subset(aux.samples.loc[~is_val, "sample_id"]),
                   aux.subset(aux.samples.loc[is_val, "sample_id"]) if val_p else None, ctx)
        slices_view = progression_slices(data, grade_mods, min_fg)
        log(f"stage 2: pseudo-grading {len(slices_view)} slices of {slices_view.samples['image_id'].nunique()} "
            f"{'/'.join(grade_mods)} series")
        slices = slices_view.samples.assign(grade=grader.predict(slices_view))
        slices = slices[["patient_id", "study_id", "study_date", "image_id", "modality", "slice_index", "grade"]]
        cached.parent.mkdir(parents=True, exist_ok=True)
        slices.to_csv(cached, index=False)
        tags.update({k: v for k, v in ctx.tags.items()})
        if ctx.history:
            last = ctx.history[-1]
            tags["grader_val_accuracy_best"] = str(max((h.get("val_metric", float("nan")) for h in ctx.history),
                                                       default=float("nan")))
            tags["grader_epochs"] = str(last["epoch"] + 1)
        tag_file.write_text(json.dumps({k: v for k, v in tags.items() if k.startswith(("grader", "resnet18"))}))
    grades = scan_grades(slices)
    table = eligibility_table(grades)
    rule = str(options.get("eligibility", "grade_rise"))
    view, message = select_eligible(
        data, table, rule=rule, min_patients=int(options.get("min_eligible_patients", 6)),
        on_too_few=str(options.get("on_too_few", "use_all")),
    )
    tags.update({"eligibility_rule": rule, "eligibility_outcome": message[:480],
                 "eligible_patients": str(int(table["grade_rises"].sum())),
                 "patients_used": str(view.samples["patient_id"].nunique())})
    log(f"stage 3: {message}")
    return StageOutput(view, {"pseudo_grades": grades, "eligibility": table, "pseudo_grade_slices": slices},
                       tags, message)
