"""``python -m harness seg-eval`` on a small folder with broken subjects."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from harness import cli
from harness.segmentation.evaluate import RESULT_COLUMNS, evaluate_folders, subject_id
from harness.synth.nifti_writer import write_nifti

AFFINE = np.diag([1.0, 1.0, 1.0, 1.0])


def label_map(shape=(20, 20, 20), et_value=3) -> np.ndarray:
    lab = np.zeros(shape, dtype=np.uint8)
    lab[4:14, 4:14, 4:14] = 2
    lab[6:12, 6:12, 6:12] = 1
    lab[7:11, 7:11, 7:11] = et_value
    return lab


@pytest.fixture()
def folders(tmp_path: Path) -> tuple[Path, Path]:
    pred, ref = tmp_path / "pred", tmp_path / "ref"
    for sid in ("S001", "S002", "S003", "S004"):
        write_nifti(ref / sid / f"{sid}_seg.nii.gz", label_map(), AFFINE)
        write_nifti(ref / sid / f"{sid}_flair.nii.gz", np.ones((20, 20, 20), np.float32), AFFINE)
    write_nifti(pred / "S001.nii.gz", label_map(), AFFINE)                       # perfect
    write_nifti(pred / "S002.nii.gz", label_map(shape=(20, 20, 18)), AFFINE)     # shape mismatch
    write_nifti(pred / "S003.nii.gz", label_map(et_value=4), AFFINE)             # 4 is not a 2023 label
    # S004: no prediction at all
    return pred, ref


def test_subject_ids():
    assert subject_id(Path("BraTS20_Training_001_seg.nii.gz")) == "BraTS20_Training_001"
    assert subject_id(Path("BraTS-GLI-00001-000-seg.nii.gz")) == "BraTS-GLI-00001-000"
    assert subject_id(Path("BraTS20_Training_001.nii")) == "BraTS20_Training_001"
    assert subject_id(Path("BraTS20_Training_001_flair.nii.gz")) is None
    assert subject_id(Path("notes.txt")) is None


def test_seg_eval_scores_good_subjects_and_reports_bad_ones(folders, tmp_path, monkeypatch, capsys):
    pred, ref = folders
    monkeypatch.setattr(cli, "PLUGIN_COMMAND_MODULES", ("harness.segmentation.cli",))
    out = tmp_path / "results.csv"
    rc = cli.main(["seg-eval", "--pred", str(pred), "--ref", str(ref), "--out", str(out)])
    assert rc == 1                                    # some subjects failed, the rest scored
    df = pd.read_csv(out)
    assert list(df.columns) == list(RESULT_COLUMNS)
    assert df["subject"].unique().tolist() == ["S001"]
    assert df["region"].tolist() == ["ET", "TC", "WT"]
    assert (df["LesionWise_Score_Dice"] == 1.0).all() and (df["LesionWise_Score_HD95"] == 0.0).all()
    assert (df["Num_TP"] == 1).all() and (df["Num_FP"] == 0).all() and (df["Num_FN"] == 0).all()
    problems = pd.read_csv(tmp_path / "results_problems.csv").set_index("subject")
    assert "shape mismatch" in problems.loc["S002", "reason"]
    assert "unknown label value(s) 4" in problems.loc["S003", "reason"]
    assert "S003.nii.gz" in problems.loc["S003", "path"]
    assert "no prediction" in problems.loc["S004", "reason"]
    err = capsys.readouterr().err
    assert "S002" in err and "S003" in err and "S004" in err


def test_brats2020_labels_option(folders, tmp_path):
    pred, ref = folders
    ref20, pred20 = tmp_path / "ref20", tmp_path / "pred20"
    write_nifti(ref20 / "S003_seg.nii.gz", label_map(et_value=4), AFFINE)
    lab = label_map(et_value=4)
    lab[lab == 4] = 1                                  # ET called NCR
    write_nifti(pred20 / "S003.nii.gz", lab, AFFINE)
    result = evaluate_folders(pred20, ref20, convention="brats2020")
    assert not result.problems
    scores = result.scores.set_index("region")
    assert scores.loc["ET", "LesionWise_Score_Dice"] == 0.0 and scores.loc["ET", "Num_FN"] == 1
    assert scores.loc["TC", "Legacy_Dice"] == 1.0
    # the same files read as 2023 labels are refused, not silently mis-scored
    assert len(evaluate_folders(pred20, ref20, convention="brats2023").problems) == 1
