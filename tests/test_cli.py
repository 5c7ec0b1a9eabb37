"""The command line a new user meets: list, data synth/check, clear errors."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from conftest import subprocess_env
from harness.cli import main


def test_list_shows_suites_baselines_protocols_and_flavours(capsys):
    assert main(["list"]) == 0
    out = capsys.readouterr().out
    for word in ("grading", "majority", "mean", "logreg_dwtdct", "patient_kfold",
                 "leave_one_patient_out", "leave_one_site_out", "row_random", "image_level", "rembrandt", "btp",
                 "brats20"):
        assert word in out
    assert "LEAKY" in out


def test_unknown_suite_is_one_clear_line(capsys):
    assert main(["run", "--suite", "no-such-suite", "--tracking-uri", "none"]) == 2
    err = capsys.readouterr().err
    assert "unknown suite 'no-such-suite'" in err and "grading" in err


def test_run_on_a_folder_without_data_stops_with_one_message(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    proc = subprocess.run(
        [sys.executable, "-m", "harness", "--cache-dir", str(tmp_path / "c"), "run", "--suite", "grading",
         "--data", str(empty), "--tracking-uri", "none", "--out", str(tmp_path / "o")],
        capture_output=True, text=True, env=subprocess_env(), timeout=120,
    )
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    assert str(empty) in proc.stderr


def test_data_synth_then_check(tmp_path, capsys):
    out = tmp_path / "btp"
    assert main(["--no-progress", "data", "synth", "--cohort", "btp", "--out", str(out),
                 "--patients", "3", "--grid-mm", "8", "--seed", "1"]) == 0
    assert (out / "PGBM-001").is_dir() and (out / "truth.csv").is_file()
    capsys.readouterr()
    assert main(["--no-progress", "--cache-dir", str(tmp_path / "cache"), "data", "check", str(out)]) == 0
    report = capsys.readouterr().out
    assert "btp" in report and "PGBM-001" in report or "3 patients" in report
    # refusing to overwrite a non-empty folder
    assert main(["data", "synth", "--cohort", "btp", "--out", str(out)]) == 2


def test_check_of_empty_folder_fails(tmp_path, capsys):
    (tmp_path / "nothing").mkdir()
    code = main(["--no-progress", "--cache-dir", str(tmp_path / "cache"), "data", "check", str(tmp_path / "nothing")])
    assert code != 0
    assert "nothing" in capsys.readouterr().err


def test_help_names_every_command():
    proc = subprocess.run([sys.executable, "-m", "harness", "--help"], capture_output=True, text=True,
                          env=subprocess_env(), timeout=60)
    assert proc.returncode == 0
    for cmd in ("run", "data", "list", "ui"):
        assert cmd in proc.stdout


def test_readme_and_ci_run_the_same_test_commands():
    root = Path(__file__).resolve().parents[1]
    readme, ci = (root / "README.md").read_text(), (root / ".ci" / "run").read_text()
    assert "python -m harness run --suite grading" in readme
    for command in ('pip install -e ".[test]"', "pytest"):
        assert command in readme and command in ci


@pytest.mark.parametrize("argv", [
    ["run", "--suite", "grading", "--jobs", "0"],
    ["run", "--suite", "grading", "--threads-per-job", "-1"],
    ["data", "ingest", "somewhere", "--jobs", "0"],
    ["audit", "capstone-grading-accuracy", "--jobs", "0"],
    ["check-split", "--data", "d", "--splits", "s.csv", "--jobs", "0"],
    ["audit", "capstone-grading-accuracy", "--jobs", "two"],
])
def test_every_jobs_option_refuses_less_than_one_the_same_way(argv, capsys):
    """One spelling of --jobs across commands: argparse refuses 0 or a non-number before
    anything runs (no command clamps it silently to 1)."""
    with pytest.raises(SystemExit) as exc:
        main(argv)
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert "must be at least 1" in err or "expected a whole number" in err
