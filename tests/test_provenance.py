"""The machine a run's numbers came from is on record (summary.json, MLflow tags)."""

from __future__ import annotations

from pathlib import Path

from harness.provenance import cpu_model, environment


def test_cpu_model_reads_the_model_name_and_falls_back_without_cpuinfo(tmp_path: Path):
    info = tmp_path / "cpuinfo"
    info.write_text("processor\t: 0\nvendor_id\t: AuthenticAMD\nmodel name\t: AMD EPYC 9B14\n\n"
                    "processor\t: 1\nmodel name\t: AMD EPYC 9B14\n")
    assert cpu_model(info) == "AMD EPYC 9B14"
    assert cpu_model(tmp_path / "absent") not in ("", "AMD EPYC 9B14")


def test_environment_names_code_interpreter_machine_and_packages():
    env = environment()
    assert {"git_commit", "python", "platform", "cpu", "cpu_count", "packages"} <= set(env)
    assert {"torch", "numpy", "scikit-learn"} <= set(env["packages"])  # type: ignore[arg-type]
