"""``check-split``: each kind of leak injected into a tiny synthetic cohort is caught and named,
a clean split exits 0, in all four formats; bad split files get one clear line, no traceback."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
import pytest

from harness.checksplit.readers import detect_format, read_split
from harness.cli import main

REM = [f"HF{i:04d}" for i in range(1, 9)]
BRATS = [f"BraTS20_Training_{i:03d}" for i in range(1, 9)]


@pytest.fixture(scope="module")
def btp(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A Brain-Tumor-Progression-style cohort: 3 patients, two dated studies each."""
    from harness.synth import generate_cohort

    return generate_cohort("btp", tmp_path_factory.mktemp("btp") / "c", n_patients=3, seed=3, grid_mm=6.0,
                           progress=False, jobs=1)


def run(data: Path, splits: Path, out: Path, cache: Path, *extra: str) -> tuple[int, dict | None]:
    rc = main(["--cache-dir", str(cache), "check-split", "--data", str(data), "--splits", str(splits),
               "--out", str(out), "--no-progress", *extra])
    js = out / "check_split.json"
    return rc, json.loads(js.read_text()) if js.exists() else None


def kinds(report: dict) -> set[str]:
    return {f["kind"] for f in report["findings"]}


# --------------------------------------------------------------------------- writers, one per format


def write_nnunet(path: Path, folds: list[tuple[list[str], list[str]]]) -> Path:
    path.write_text(json.dumps([{"train": t, "val": v} for t, v in folds]))
    return path


def write_clinicadl(folder: Path, folds: list[tuple[list, list]], test: list | None = None) -> Path:
    """Folds of (participant_id, session_id) pairs, as ``clinicadl tsvtools kfold`` writes them."""
    def tsv(p: Path, rows: list) -> None:
        p.parent.mkdir(parents=True, exist_ok=True)
        with p.open("w", newline="") as fh:
            w = csv.writer(fh, delimiter="\t")
            w.writerow(["participant_id", "session_id", "diagnosis"])
            w.writerows([[pid, ses, "x"] for pid, ses in rows])
    for i, (train, val) in enumerate(folds):
        tsv(folder / f"split-{i}" / "train.tsv", train)
        tsv(folder / f"split-{i}" / "validation.tsv", val)
    if test is not None:
        tsv(folder / "test.tsv", test)
    return folder


def write_monai(path: Path, data: Path, fold_of: dict[str, int], image=lambda d, c: f"{c}/{c}_t1.nii.gz") -> Path:
    path.write_text(json.dumps({"training": [{"image": image(data, c), "fold": k} for c, k in fold_of.items()]}))
    return path


def write_csv(path: Path, rows: list[dict]) -> Path:
    with path.open("w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    return path


def bids(pid: str) -> str:
    return "sub-" + pid.replace("-", "")


# --------------------------------------------------------------------------- clean splits exit 0


@pytest.mark.parametrize("fmt", ["nnunet", "clinicadl", "monai", "csv"])
def test_clean_split_exits_zero_in_every_format(fmt, tiny_rembrandt, known_truth, tmp_path, session_cache):
    ids, data = (REM, tiny_rembrandt) if fmt in ("nnunet", "clinicadl") else (BRATS, known_truth)
    halves = [(ids[:4], ids[4:]), (ids[4:], ids[:4])]
    if fmt == "nnunet":
        split = write_nnunet(tmp_path / "splits_final.json", halves)
    elif fmt == "clinicadl":
        split = write_clinicadl(tmp_path / "split", [([(bids(p), "ses-M00") for p in t],
                                                      [(bids(p), "ses-M00") for p in v]) for t, v in halves])
    elif fmt == "monai":
        split = write_monai(tmp_path / "datalist.json", data, {c: i // 4 for i, c in enumerate(ids)})
    else:
        split = write_csv(tmp_path / "split.csv", [{"case_id": c, "fold": i % 2} for i, c in enumerate(ids)])
    assert detect_format(split) == fmt
    rc, rep = run(data, split, tmp_path / "out", session_cache)
    assert rc == 0, rep["findings"]
    assert rep["clean"] and rep["details"] == [] and rep["split"]["format"] == fmt
    assert rep["dataset"]["cases"] == 8 and len(rep["folds"]) == 2
    assert all(f["patients_both_sides"] == 0 and f["near_duplicates"] == 0 for f in rep["folds"])
    assert rep["identity_probe"]["n_patients"] == 8
    assert {r["role"] for r in rep["class_balance"]} == {"train", "val"}
    assert (tmp_path / "out" / "leakage_report.md").read_text().count("CLEAN") == 1
    assert (tmp_path / "out" / "leakage_report.html").exists()
    # the site check is context, never a leak: REMBRANDT's DICOM names sites (InstitutionName),
    # BraTS its name_mapping.csv's older subject IDs
    assert rep["site"] is not None
    assert "Site and label" in (tmp_path / "out" / "leakage_report.md").read_text()


# --------------------------------------------------------------------------- injected leaks


def test_patient_overlap_is_caught_and_named(tiny_rembrandt, tmp_path, session_cache, capsys):
    split = write_nnunet(tmp_path / "splits_final.json", [(REM[:5], REM[4:]), (REM[4:], REM[:4])])
    rc, rep = run(tiny_rembrandt, split, tmp_path / "out", session_cache, "--no-pixels")
    assert rc == 1 and not rep["clean"]
    assert kinds(rep) == {"patients on both sides", "studies on both sides"}
    hits = [d for d in rep["details"] if d["kind"] == "patients on both sides"]
    assert [(d["fold"], d["patient"]) for d in hits] == [(0, "HF0005")]
    assert hits[0]["training_cases"] == ["HF0005 (train)"] and hits[0]["held_out_cases"] == ["HF0005 (val)"]
    assert "HF0005" in capsys.readouterr().out


def test_clinicadl_test_set_overlap_is_caught(tiny_rembrandt, tmp_path, session_cache):
    """A patient in a fold's training TSV and in the shared test.tsv."""
    s = lambda ps: [(bids(p), "ses-M00") for p in ps]  # noqa: E731
    split = write_clinicadl(tmp_path / "split", [(s(REM[:3]), s(REM[3:6]))], test=s(REM[5:]))
    rc, rep = run(tiny_rembrandt, split, tmp_path / "out", session_cache, "--no-pixels")
    assert rc == 1
    both = {(d["comparison"], d["patient"]) for d in rep["details"] if d["kind"] == "patients on both sides"}
    assert both == {("train+val|test", "HF0006")}


def _rename_dicom_patient(src: Path, dst: Path, new_id: str) -> None:
    shutil.copytree(src, dst)
    for f in dst.rglob("*.dcm"):
        ds = pydicom.dcmread(f)
        ds.PatientID = new_id
        ds.save_as(f)


def test_renamed_copy_of_a_subject_is_caught_by_its_pixels(tiny_rembrandt, tmp_path, session_cache):
    data = tmp_path / "rembrandt"
    shutil.copytree(tiny_rembrandt, data)
    _rename_dicom_patient(data / "HF0002", data / "HF0099", "HF0099")  # the same scans, a new id
    split = write_csv(tmp_path / "split.csv", [{"case_id": c, "role": "train"} for c in REM[:5]]
                      + [{"case_id": c, "role": "test"} for c in REM[5:] + ["HF0099"]])
    rc, rep = run(data, split, tmp_path / "out", session_cache)
    assert rc == 1
    # the ids alone look clean; the copy's T1 also nearly matches the original's T1post
    assert "exact duplicate image" in kinds(rep) and kinds(rep) <= {"exact duplicate image", "near-duplicate image"}
    pairs = {(d["held_out_patient"], d["training_patient"]) for d in rep["details"]}
    assert pairs == {("HF0099", "HF0002")}
    exact = [d for d in rep["details"] if d["kind"] == "exact duplicate image"]
    assert sorted(d["held_out_image"].rsplit("/", 1)[1] for d in exact) == ["FLAIR", "T1", "T1post", "T2"]
    assert all(d["held_out_cases"] == ["HF0099 (test)"] for d in rep["details"])


def test_noisy_renamed_copy_is_a_near_duplicate(known_truth, tmp_path, session_cache):
    data = tmp_path / "brats"
    shutil.copytree(known_truth, data)
    src, new = "BraTS20_Training_003", "BraTS20_Training_099"
    (data / new).mkdir()
    rng = np.random.default_rng(0)
    for f in (data / src).glob("*.nii.gz"):
        img = nib.load(f)
        arr = np.asarray(img.dataobj, dtype=np.float32)
        if not f.name.endswith("_seg.nii.gz"):
            arr = arr + 0.01 * float(arr.std()) * rng.normal(size=arr.shape).astype(np.float32)
        nib.save(nib.Nifti1Image(arr, img.affine), data / new / f.name.replace(src, new))
    fold_of = {c: (0 if c in BRATS[:4] else 1) for c in BRATS + [new]}
    split = write_monai(tmp_path / "datalist.json", data, fold_of,
                        image=lambda d, c: [f"{c}/{c}_{m}.nii.gz" for m in ("t1", "t1ce", "t2", "flair")])
    rc, rep = run(data, split, tmp_path / "out", session_cache)
    assert rc == 1
    assert kinds(rep) == {"near-duplicate image"}
    near = rep["details"]
    assert {(d["held_out_patient"], d["training_patient"]) for d in near} == {(new, src), (src, new)}
    assert all(d["correlation"] >= rep["near_duplicate_threshold"] for d in near)


def test_brats_subjects_of_one_tcga_patient_are_one_patient(known_truth, tmp_path, session_cache):
    data = tmp_path / "brats"
    shutil.copytree(known_truth, data)
    nm = (data / "name_mapping.csv").read_text().splitlines()
    rows = [r.split(",") for r in nm]
    col = rows[0].index("TCGA_TCIA_subject_ID")
    rows[2][col] = rows[6][col] = "TCGA-77-7777"  # subjects 002 and 006: one person
    (data / "name_mapping.csv").write_text("\n".join(",".join(r) for r in rows) + "\n")
    split = write_csv(tmp_path / "split.csv", [{"case": c, "fold": 0 if c in BRATS[:4] else 1} for c in BRATS])
    rc, rep = run(data, split, tmp_path / "out", session_cache, "--no-pixels")
    assert rc == 1
    both = [d for d in rep["details"] if d["kind"] == "patients on both sides"]
    assert {d["patient"] for d in both} == {"BraTS20_Training_002+BraTS20_Training_006"}
    assert any("TCGA-77-7777" in t for t in rep["links"])


def test_later_scan_in_training_with_earlier_scan_held_out(btp, tmp_path, session_cache):
    from harness.data import load_cohort

    pats = load_cohort(btp).patients
    months = {r.patient_id: round(r.interval_days / 30.44) for r in pats.itertuples()}
    p0, p1, p2 = sorted(months)
    train = [(bids(p0), f"ses-M{months[p0]:02d}"), (bids(p1), "ses-M00"), (bids(p1), f"ses-M{months[p1]:02d}")]
    val = [(bids(p0), "ses-M00"), (bids(p2), "ses-M00"), (bids(p2), f"ses-M{months[p2]:02d}")]
    split = write_clinicadl(tmp_path / "split", [(train, val)])
    rc, rep = run(btp, split, tmp_path / "out", session_cache, "--no-pixels")
    assert rc == 1
    assert {"patients on both sides", "later scan trains earlier"} <= kinds(rep)
    assert "studies on both sides" not in kinds(rep)  # different sessions, one patient
    later = [d for d in rep["details"] if d["kind"] == "later scan trains earlier"]
    assert [d["patient"] for d in later] == [p0] and later[0]["training_date"] > later[0]["held_out_date"]
    # the same patient the other way round (earlier scan trains) is an overlap but not a later-scan leak
    split2 = write_clinicadl(tmp_path / "split2", [([(bids(p0), "ses-M00")] + train[1:],
                                                    [(bids(p0), f"ses-M{months[p0]:02d}")] + val[1:])])
    rc2, rep2 = run(btp, split2, tmp_path / "out2", session_cache, "--no-pixels")
    assert rc2 == 1 and kinds(rep2) == {"patients on both sides"}


# --------------------------------------------------------------------------- errors: one line, exit 2


def test_unknown_ids_are_named_with_the_file(tiny_rembrandt, tmp_path, session_cache, capsys):
    split = write_nnunet(tmp_path / "splits_final.json", [(REM[:4] + ["HF7777"], REM[4:] + ["case_042"])])
    rc, rep = run(tiny_rembrandt, split, tmp_path / "out", session_cache, "--no-pixels")
    err = capsys.readouterr().err
    assert rc == 2 and rep is None
    assert str(split) in err and "HF7777" in err and "case_042" in err and "2 case id(s) not found" in err
    assert "Traceback" not in err


@pytest.mark.parametrize("name, text, fmt, expect", [
    ("splits_final.json", "[{\"train\": [\"HF0001\"], ", "auto", "not valid JSON"),
    ("splits_final.json", "[{\"training\": []}]", "nnunet", "fold 0: expected an object with 'train' and 'val'"),
    ("splits_final.json", "[{\"train\": \"HF0001\", \"val\": []}]", "nnunet", "must be a list of case ids"),
    ("datalist.json", "{\"training\": [{\"image\": \"a.nii.gz\", \"fold\": \"x\"}]}", "monai", "is not an integer"),
    ("datalist.json", "{\"training\": [{\"label\": 3}]}", "monai", "needs an 'image' path or an 'id'"),
    ("split.csv", "name,colour\nHF0001,red\n", "csv", "no case id column"),
    ("split.csv", "case_id,fold\nHF0001,first\n", "csv", "fold 'first' is not a number"),
    ("split.csv", "case_id,role\nHF0001,train\nHF0002,banana\n", "csv", "unknown role 'banana'"),
    ("split.csv", "", "csv", "no rows"),
    ("weird.yaml", "a: 1", "auto", "unknown split format"),
    ("nothing_here.json", None, "auto", "no such file"),
])
def test_malformed_split_files_get_one_clear_line(name, text, fmt, expect, tiny_rembrandt, tmp_path,
                                                  session_cache, capsys):
    path = tmp_path / name
    if text is not None:
        path.write_text(text)
    rc, _ = run(tiny_rembrandt, path, tmp_path / "out", session_cache, "--format", fmt, "--no-pixels")
    err = capsys.readouterr().err
    assert rc == 2 and "Traceback" not in err
    assert str(path) in err and expect in err, err


def test_clinicadl_folder_without_validation_is_refused(tiny_rembrandt, tmp_path, session_cache, capsys):
    folder = tmp_path / "split"
    write_clinicadl(folder, [([(bids(REM[0]), "ses-M00")], [(bids(REM[1]), "ses-M00")])])
    (folder / "split-0" / "validation.tsv").unlink()
    rc, _ = run(tiny_rembrandt, folder, tmp_path / "out", session_cache)
    err = capsys.readouterr().err
    assert rc == 2 and "split-0" in err and "validation.tsv" in err


# --------------------------------------------------------------------------- readers


def test_csv_fold_only_means_k_fold_and_role_rows_are_shared(tmp_path):
    p = write_csv(tmp_path / "s.csv", [{"case_id": "a", "fold": "0", "role": ""},
                                       {"case_id": "b", "fold": "1", "role": ""},
                                       {"case_id": "c", "fold": "2", "role": ""},
                                       {"case_id": "t", "fold": "", "role": "test"}])
    split = read_split(p)
    assert [f.index for f in split.folds] == [0, 1, 2]
    f1 = split.folds[1]
    assert [c.case_id for c in f1.cases("val")] == ["b"]
    assert sorted(c.case_id for c in f1.cases("train")) == ["a", "c"]
    assert [c.case_id for c in f1.cases("test")] == ["t"]


def test_monai_testing_list_is_held_out_of_every_fold(tmp_path):
    p = tmp_path / "d.json"
    p.write_text(json.dumps({"training": [{"image": "x/a.nii.gz", "fold": 0}, {"image": "x/b.nii.gz", "fold": 1}],
                             "testing": [{"image": "x/t.nii.gz"}]}))
    split = read_split(p)
    assert split.format == "monai" and len(split.folds) == 2
    assert all([c.case_id for c in f.cases("test")] == ["x/t.nii.gz"] for f in split.folds)


def test_nnunet_renamed_cases_map_through_an_id_map(known_truth, tmp_path, session_cache, capsys):
    """nnU-Net conversions rename cases (BRATS_001); --id-map says who they are."""
    nn = [f"BRATS_{i:03d}" for i in range(1, 9)]
    idmap = tmp_path / "ids.csv"
    idmap.write_text("case_id,dataset_id\n" + "".join(f"{a},{b}\n" for a, b in zip(nn, BRATS)))
    split = write_nnunet(tmp_path / "splits_final.json", [(nn[:4], nn[4:]), (nn[3:], nn[:4])])
    rc, _ = run(known_truth, split, tmp_path / "o0", session_cache, "--no-pixels")
    assert rc == 2 and "BRATS_001" in capsys.readouterr().err  # without the map: unknown ids
    rc, rep = run(known_truth, split, tmp_path / "o1", session_cache, "--no-pixels", "--id-map", str(idmap))
    assert rc == 1 and rep["matched_by"] == {"id map": 8}
    both = [d for d in rep["details"] if d["kind"] == "patients on both sides"]
    assert [(d["fold"], d["patient"], d["training_cases"]) for d in both] == [
        (1, "BraTS20_Training_004", ["BRATS_004 (train)"])]


def test_clinicadl_tsvtools_split_folder_and_baseline_files(tmp_path):
    """``tsvtools split`` writes train.tsv + test.tsv; kfold also writes *_baseline.tsv (ignored when
    the full file is there)."""
    top = tmp_path / "split"
    write_clinicadl(top, [], test=[("sub-A", "ses-M00")])
    (top / "train.tsv").write_text("participant_id\tsession_id\nsub-B\tses-M00\nsub-B\tses-M12\n")
    split = read_split(top)
    assert split.format == "clinicadl" and len(split.folds) == 1
    assert [c.label for c in split.folds[0].cases("train")] == ["sub-B ses-M00", "sub-B ses-M12"]
    assert [c.label for c in split.folds[0].cases("test")] == ["sub-A ses-M00"]
    kf = tmp_path / "kfold"
    write_clinicadl(kf, [([("sub-A", "ses-M00")], [("sub-B", "ses-M00")])])
    (kf / "split-0" / "train_baseline.tsv").write_text("participant_id\tsession_id\nsub-Z\tses-M00\n")
    assert [c.case_id for c in read_split(kf).folds[0].cases("train")] == ["sub-A"]


def test_csv_split_column_of_role_names_and_monai_validation_list(tmp_path):
    p = write_csv(tmp_path / "s.csv", [{"subject": "a", "split": "training"}, {"subject": "b", "split": "test"}])
    fold = read_split(p).folds[0]
    assert [c.case_id for c in fold.cases("train")] == ["a"] and [c.case_id for c in fold.cases("test")] == ["b"]
    m = tmp_path / "d.json"
    m.write_text(json.dumps({"training": [{"id": "a", "image": "x.nii.gz"}], "validation": [{"id": "b", "image": "y"}]}))
    fold = read_split(m).folds[0]
    assert [c.case_id for c in fold.cases("train")] == ["a"] and [c.case_id for c in fold.cases("val")] == ["b"]


def test_per_fold_probe_counts_what_a_lookup_gets_from_the_overlap(tiny_rembrandt, tmp_path, session_cache):
    split = write_nnunet(tmp_path / "splits_final.json", [(REM[:5], REM[4:]), (REM[4:], REM[:4])])
    rc, rep = run(tiny_rembrandt, split, tmp_path / "out", session_cache)
    assert rc == 1
    by_fold = {f["fold"]: f["probe_recognised"] for f in rep["folds"]}
    assert by_fold[1] == "-"  # no patient on both sides
    hits, n = map(int, by_fold[0].split("/"))
    assert n == 4 and hits == 4  # HF0005's 4 series: each nearest its own copy in training
