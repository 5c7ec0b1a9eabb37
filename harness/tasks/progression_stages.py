"""Progression stages 1-3, which run once per suite run before any split.

They decide which rows exist, so they belong to the task, not to a baseline: every
baseline of the progression suite (controls included) sees the rows they keep.

1. Grader: ``resnet18_grader`` trained on the REMBRANDT-style auxiliary cohort only
   (``--aux-data``); it never sees a progression patient (checked, not assumed).
2. Pseudo-grades: every progression scan (patient, date) gets the most common slice
   prediction over its T1post and FLAIR series; saved as a table.
3. Eligibility: patients whose pseudo-grade rises between the two dates (the paper kept
   6 of 20); configurable, and a rule that leaves too few patients is reported plainly.

Stages 4-5 (DWT-DCT vectors, BiLSTM) are the baseline ``cnn_lstm``, fitted per fold.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pandas as pd

from harness.errors import HarnessError
from harness.hashing import json_digest
from harness.tasks.base import TaskData


#: The paper's stage-1 grader (the capstone's ResNet-18), used when ``[task] grader`` is not set.
DEFAULT_GRADER = "resnet18_grader"


@dataclass
class StageOutput:
    """What stages 1-3 leave behind: the eligible view plus tables and tags to record."""

    task_data: TaskData
    tables: dict[str, pd.DataFrame] = field(default_factory=dict)
    tags: dict[str, str] = field(default_factory=dict)
    message: str = ""


def aux_grading_data(aux_dir: Path, cache_dir: Path, *, modalities: list[str], slice_step: int,
                     min_foreground: float, progress: bool, slice_sampling: str = "all",
                     crop_mm: float = 0.0) -> tuple[TaskData, str, list]:
    """Stage 1's training data: the auxiliary (REMBRANDT-style) cohort as a grading view,
    sampled as the pseudo-grader will sample the progression scans (``slice_sampling``,
    ``crop_mm``: `harness.tasks.grading`)."""
    from harness.data.cache import VolumeStore, dataset_fingerprint
    from harness.data.detect import load_cohort
    from harness.tasks.grading import grading_task

    cohort = load_cohort(aux_dir)
    series = cohort.series[cohort.series["modality"].isin(modalities)]
    store = VolumeStore(cache_dir / "arrays", progress=progress)
    volumes, problems = store.load_many(series)
    spacings = {k: (float(v.spacing[0]), float(v.spacing[1]), float(v.spacing[2])) for k, v in volumes.items()}
    data, task_problems = grading_task(
        cohort, {k: v.array for k, v in volumes.items()}, {k: v.content_key for k, v in volumes.items()},
        modalities=modalities, min_foreground=min_foreground, slice_step=slice_step,
        slice_sampling=slice_sampling, lesion_crop_mm=crop_mm, spacings=spacings,
    )
    data = replace(data, spacings=spacings)
    return data, dataset_fingerprint(cohort, store), list(cohort.problems) + problems + task_problems


def _commonest_share(targets: Any) -> float:
    counts = pd.Series(np.asarray(targets).astype(str)).value_counts(normalize=True)
    return float(counts.iloc[0]) if len(counts) else float("nan")


def grader_scores(grader: Any, train: TaskData, val: TaskData | None, seed: int) -> dict[str, str]:
    """The grader's accuracy on its own training slices (at most 1,000, drawn with
    ``seed``) beside the guard's trivial control (the training majority), and on every
    slice of the held-out auxiliary patients beside the share of their commonest grade: the
    bar a constant answer clears there.

    Why: the checkpoint is chosen on a validation subsample, so its best-epoch score alone
    cannot say whether the grader learned (training) and whether that carries to unseen
    patients (all validation slices).
    """
    from harness.guard import guard_rows, score_rows

    scored = train.subset(guard_rows(train.sample_ids, seed))
    train_acc, train_trivial = score_rows("accuracy", grader, scored, train.y)
    out = {"grader_train_accuracy": f"{train_acc:.3f}", "grader_train_majority": f"{train_trivial:.3f}",
           "grader_train_slices_scored": str(len(scored))}
    if val is not None and len(val):
        out.update({"grader_val_accuracy": f"{float(np.mean(grader.predict(val) == val.y)):.3f}",
                    "grader_val_majority": f"{_commonest_share(val.y):.3f}",
                    "grader_val_slices": str(len(val)),
                    "grader_val_patients": str(val.samples["patient_id"].nunique())})
    return out


#: The grader's cross-validated scores on the auxiliary cohort (tags ``grader_cv_<metric>``).
GRADER_CV_METRICS = ("accuracy", "balanced_accuracy", "patient_balanced_accuracy")


def grader_cross_validation(make_grader: Callable[[], Any], aux: TaskData, *, n_folds: int, seed: int,
                            make_ctx: Callable[[], Any]) -> dict[str, str]:
    """The grader's held-out scores on the auxiliary cohort, from a patient-grouped,
    grade-stratified ``n_folds``-fold CV (each fold a fresh grader with the same
    parameters), with 95% patient-bootstrap CIs, beside the commonest grade's share.

    Why: a held-out tenth of 40 patients is 4 patients, too few to say whether the grader
    reads the grade or the patient; scoring every auxiliary patient once, unseen, can.
    """
    from sklearn.model_selection import StratifiedGroupKFold

    from harness.metrics import estimate, proba_column

    samples = aux.samples.reset_index(drop=True)
    y = aux.y.astype(str)
    cv = StratifiedGroupKFold(n_splits=n_folds, shuffle=True, random_state=seed)
    folds = []
    for train_idx, test_idx in cv.split(np.zeros(len(y)), y, samples["patient_id"].to_numpy()):
        grader = make_grader()
        grader.fit(aux.subset(samples["sample_id"].iloc[train_idx]), None, make_ctx())
        test = aux.subset(samples["sample_id"].iloc[test_idx])
        proba = grader.predict_proba(test)
        classes = list(grader.classes_)
        frame = pd.DataFrame({"patient_id": test.samples["patient_id"].to_numpy(), "y_true": test.y.astype(str),
                              "y_pred": np.asarray(classes)[proba.argmax(1)]})
        for j, c in enumerate(classes):
            frame[proba_column(c)] = proba[:, j]
        folds.append(frame)
    out = {"grader_cv_folds": str(n_folds), "grader_cv_slices": str(len(y)),
           "grader_cv_patients": str(samples["patient_id"].nunique()),
           "grader_cv_majority": f"{_commonest_share(y):.3f}",
           "grader_cv_chance_balanced": f"{1 / max(1, len(set(y))):.3f}"}
    for metric in GRADER_CV_METRICS:
        est = estimate(metric, folds, classes=aux.classes, n_boot=1000, seed=seed)
        out[f"grader_cv_{metric}"] = f"{est.mean:.3f} [{est.ci95[0]:.3f}, {est.ci95[1]:.3f}]"
    return out


def grader_sentence(tags: dict[str, Any]) -> str:
    """Stage 1 in words, from the tags :func:`grader_scores` wrote (older caches: what they have)."""
    parts = []
    if "grader" in tags:
        parts.append(f"grader {tags['grader']} (slices: {tags.get('grader_slices', 'all')})")
    if "grader_cv_accuracy" in tags:
        parts.append(f"with auxiliary patients held out ({tags['grader_cv_folds']}-fold patient CV, "
                     f"{tags['grader_cv_patients']} patients, 95% patient-bootstrap CI) it scores slice accuracy "
                     f"{tags['grader_cv_accuracy']} against {tags['grader_cv_majority']} for the commonest grade, "
                     f"slice balanced accuracy {tags['grader_cv_balanced_accuracy']} and patient balanced accuracy "
                     f"{tags['grader_cv_patient_balanced_accuracy']} against chance {tags['grader_cv_chance_balanced']}")
    if "grader_train_accuracy" in tags:
        parts.append(f"the grader scores {tags['grader_train_accuracy']} on its training slices against "
                     f"{tags['grader_train_majority']} for the commonest grade")
    if "grader_val_accuracy" in tags:
        parts.append(f"{tags['grader_val_accuracy']} on all {tags.get('grader_val_slices', '?')} slices of the "
                     f"{tags.get('grader_val_patients', '?')} held-out auxiliary patients against "
                     f"{tags['grader_val_majority']}")
    elif "grader_val_accuracy_best" in tags:
        parts.append(f"validation accuracy {tags['grader_val_accuracy_best']} (best epoch) against "
                     f"{tags.get('grader_val_majority', 'n/a')} for the commonest grade")
    if "grader_val_history" in tags:
        parts.append(f"validation accuracy per epoch (subsample): {tags['grader_val_history']}")
    return "; ".join(parts) if parts else "grader scores not recorded"


def check_isolation(aux: TaskData, progression: TaskData) -> None:
    """Stage 1 must never see a progression patient: refuse any shared patient ID."""
    shared = sorted(set(aux.samples["patient_id"]) & set(progression.samples["patient_id"]))
    if shared:
        raise HarnessError(
            f"the auxiliary grading cohort shares patient(s) {shared[:10]} with the progression "
            "cohort; the stage-1 grader must never see a progression patient"
        )


def progression_slices(data: TaskData, modalities: list[str], min_foreground: float, *,
                       slice_sampling: str = "all", crop_mm: float = 0.0) -> tuple[TaskData, list]:
    """One slice sample per head-containing slice of every scan's ``modalities`` series;
    with ``slice_sampling = "lesion"`` only the slices where the scan's FLAIR shows the
    lesion, cut to ``crop_mm`` around it when asked (as the grader's training view was)."""
    from harness.tasks.base import foreground_fraction
    from harness.tasks.lesion import DEFAULT_SPACING_MM, lesions_per_scan, series_lesion_view

    every_series = data.samples.drop_duplicates("image_id")
    lesions: dict = {}
    problems: list = []
    if slice_sampling == "lesion":
        lesions, problems = lesions_per_scan(every_series, data.volumes, "FLAIR", data.spacings, id_column="image_id")
    volumes, keys = dict(data.volumes), dict(data.content_keys)
    rows = []
    for rec in every_series[every_series["modality"].isin(modalities)].itertuples(index=False):
        volume = np.asarray(data.volumes[rec.image_id])
        view = series_lesion_view(
            rec.image_id, volume, np.flatnonzero(foreground_fraction(volume) >= min_foreground),
            lesions.get(str(rec.study_id)), crop_mm=crop_mm, content_key=keys.get(rec.image_id, rec.image_id),
            spacing_mm=data.spacings.get(rec.image_id, DEFAULT_SPACING_MM))
        view.record(rec.image_id, volumes, keys, problems)
        for z in view.keep:
            rows.append({"sample_id": f"{rec.image_id}#z{int(z):03d}", "patient_id": rec.patient_id,
                         "study_id": rec.study_id, "image_id": rec.image_id, "modality": rec.modality,
                         "slice_index": int(z), "target": "", "study_date": rec.study_date})
    frame = pd.DataFrame(rows, columns=["sample_id", "patient_id", "study_id", "image_id", "modality",
                                        "slice_index", "target", "study_date"])
    return TaskData("grading", "classification", frame, None, volumes, keys, spacings=data.spacings), problems


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
    """Stages 1-3: train the grader on ``aux_dir``, pseudo-grade every scan, filter patients.

    ``options`` (the suite's ``[task]``): ``grader`` (a registered grading baseline; the
    paper's ``resnet18_grader`` by default), ``grader_slice_sampling`` and ``grader_crop_mm``
    (how the grader's slices are sampled, in the auxiliary cohort and the progression
    scans alike), ``grader_cv_folds`` (> 1: score the grader with auxiliary patients held
    out first). ``grader_params`` are that baseline's suite parameters.
    """
    from baselines import FitContext, create_baseline
    from baselines.registry import baseline_code_digest
    from harness.tasks.progression import eligibility_table, scan_grades, select_eligible

    grade_mods = list(options.get("grade_modalities", ["T1post", "FLAIR"]))
    min_fg = float(options.get("min_foreground", 0.15))
    aux_mods = list(options.get("aux_modalities", ["T1", "T1post", "T2", "FLAIR"]))
    grader_name = str(options.get("grader", DEFAULT_GRADER))
    sampling = str(options.get("grader_slice_sampling", "all"))
    crop_mm = float(options.get("grader_crop_mm", 0.0))
    cv_folds = int(options.get("grader_cv_folds", 0))
    aux, aux_fp, _aux_problems = aux_grading_data(
        aux_dir, cache_dir, modalities=aux_mods, slice_step=int(options.get("aux_slice_step", 2)),
        min_foreground=min_fg, progress=progress, slice_sampling=sampling, crop_mm=crop_mm,
    )
    check_isolation(aux, data)
    grader = create_baseline(grader_name, profile=profile, **grader_params)
    slices_how = sampling + (f", cut to {crop_mm:g} mm around the lesion" if crop_mm else "")
    key = json_digest(
        {"aux": aux_fp, "params": grader.get_params(), "seed": seed, "mods": grade_mods, "aux_mods": aux_mods,
         "min_fg": min_fg, "series": sorted(set(data.samples["image_id"])),
         "keys": sorted(set(data.content_keys.get(i, i) for i in data.samples["image_id"])),
         "grader": grader_name, "sampling": sampling, "crop_mm": crop_mm, "cv": cv_folds,
         # other grader code, other pseudo-grades: recomputed, not reused (as the fold cache)
         "code": baseline_code_digest(grader_name)}, 24)
    cached = cache_dir / "stages" / f"pseudo-grades-{key}.csv"
    tags = {"aux_dataset_fingerprint": aux_fp, "aux_data": str(aux_dir),
            "aux_patients": str(aux.samples["patient_id"].nunique()), "grader": grader_name, "grader_slices": slices_how}
    tag_file = cached.with_suffix(".tags.json")
    if cached.exists() and tag_file.exists():
        slices = pd.read_csv(cached, dtype={"patient_id": str, "grade": str, "study_date": str})
        tags.update(json.loads(tag_file.read_text()))
        log(f"stage 1-2: pseudo-grades reused from {cached}")
    else:
        def make_ctx(quiet: bool = False) -> FitContext:
            return FitContext(seed=seed, device=device, profile=profile, work_dir=cache_dir,
                              log=(lambda _line: None) if quiet else log, weights=weights)

        if cv_folds > 1:
            log(f"stage 1: {grader_name} scored with auxiliary patients held out ({cv_folds}-fold patient CV "
                f"over {aux.samples['patient_id'].nunique()} patients, {len(aux)} slices: {slices_how})")
            tags.update(grader_cross_validation(
                lambda: create_baseline(grader_name, profile=profile, **grader_params), aux,
                n_folds=cv_folds, seed=seed, make_ctx=lambda: make_ctx(quiet=True)))
        ctx = make_ctx()
        # 10% of the auxiliary patients validate the grader (best checkpoint on accuracy).
        pids = np.array(sorted(aux.samples["patient_id"].unique()))
        rng = np.random.default_rng(seed)
        val_p = set(rng.choice(pids, size=max(1, len(pids) // 10), replace=False)) if len(pids) > 2 else set()
        is_val = aux.samples["patient_id"].isin(val_p)
        cap = grader.params.get("max_train_slices", grader.params.get("max_train_samples"))
        log(f"stage 1: training {grader_name} on the {int((~is_val).sum())} slices ({slices_how}; profile "
            f"{profile}: {'at most ' + str(cap) if cap else 'all'} used) of "
            f"{len(pids) - len(val_p)} auxiliary patients ({aux_dir})")
        aux_train = aux.subset(aux.samples.loc[~is_val, "sample_id"])
        aux_val = aux.subset(aux.samples.loc[is_val, "sample_id"]) if val_p else None
        grader.fit(aux_train, aux_val, ctx)
        tags.update(grader_scores(grader, aux_train, aux_val, seed))
        slices_view, view_problems = progression_slices(data, grade_mods, min_fg, slice_sampling=sampling,
                                                        crop_mm=crop_mm)
        for problem in view_problems:
            log(f"stage 2: {problem}")
        log(f"stage 2: pseudo-grading {len(slices_view)} slices ({slices_how}) of "
            f"{slices_view.samples['image_id'].nunique()} {'/'.join(grade_mods)} series")
        slices = slices_view.samples.assign(grade=grader.predict(slices_view))
        slices = slices[["patient_id", "study_id", "study_date", "image_id", "modality", "slice_index", "grade"]]
        cached.parent.mkdir(parents=True, exist_ok=True)
        slices.to_csv(cached, index=False)
        tags.update({k: v for k, v in ctx.tags.items()})
        if ctx.history:
            last = ctx.history[-1]
            best = max((h.get("val_metric", float("nan")) for h in ctx.history), default=float("nan"))
            tags["grader_val_accuracy_best"] = str(best)
            tags["grader_val_history"] = ", ".join(f"{h.get('val_metric', float('nan')):.3f}" for h in ctx.history)
            tags["grader_epochs"] = str(last["epoch"] + 1)
        log(f"stage 1: {grader_sentence(tags)}")
        tag_file.write_text(json.dumps({k: v for k, v in tags.items()
                                        if k.startswith(("grader", "resnet18", grader_name))}))
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
