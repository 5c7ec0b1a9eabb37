"""Suite files (benchmarks/suites/<name>.toml): what a suite runs, resolved to one config.

The resolved config (file + command-line overrides) is what is logged to MLflow as
params and stored in ``summary.json``, so a run can be repeated from its record.
"""

from __future__ import annotations

import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

from harness.errors import HarnessError

REPO_ROOT = Path(__file__).resolve().parents[1]


def suite_dirs() -> list[Path]:
    """Where suites are looked up: ./benchmarks/suites, then the installed checkout's."""
    dirs = [Path.cwd() / "benchmarks" / "suites", REPO_ROOT / "benchmarks" / "suites"]
    seen: list[Path] = []
    for d in dirs:
        if d.resolve() not in [s.resolve() for s in seen] and d.is_dir():
            seen.append(d)
    return seen


def available_suites() -> dict[str, Path]:
    found: dict[str, Path] = {}
    for d in reversed(suite_dirs()):
        for path in sorted(d.glob("*.toml")):
            found[path.stem] = path
    return dict(sorted(found.items()))


@dataclass
class SuiteConfig:
    name: str
    task: str
    description: str = ""
    #: Synthetic cohort used when no --data is given: flavour, patients, seed, signal, grid_mm.
    data: dict[str, Any] = field(default_factory=dict)
    #: Task-view options (modalities, min_foreground, slice_step, ...).
    task_options: dict[str, Any] = field(default_factory=dict)
    baselines: list[str] = field(default_factory=list)
    baseline_params: dict[str, dict[str, Any]] = field(default_factory=dict)
    #: protocol name -> its parameters, in the order the table shows them.
    protocols: dict[str, dict[str, Any]] = field(default_factory=dict)
    metrics: list[str] = field(default_factory=list)
    n_boot: int = 1000
    #: Auxiliary synthetic cohort for a pipeline's separate first stage (``[aux_data]``,
    #: same keys as ``data``); ``--aux-data DIR`` replaces it.
    aux_data: dict[str, Any] = field(default_factory=dict)
    #: ``[explain]``: when present, a suite run also writes the explainability report.
    explain: dict[str, Any] = field(default_factory=dict)
    #: ``[audit]``: options of the leakage/overfitting reports (see docs/audit.md).
    audit: dict[str, Any] = field(default_factory=dict)
    #: The suite file this came from (what the explain report rereads).
    source: str = ""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def load_suite(name_or_path: str) -> SuiteConfig:
    """Load a suite by name (benchmarks/suites/NAME.toml) or by path to a .toml file."""
    path, raw = read_suite_file(name_or_path)
    return parse_suite(raw, source=str(path))


def read_suite_file(name_or_path: str) -> tuple[Path, dict[str, Any]]:
    """The suite file's path and its raw TOML tables."""
    path = Path(name_or_path)
    if path.suffix != ".toml":
        suites = available_suites()
        if name_or_path not in suites:
            known = ", ".join(suites) or "none found"
            raise HarnessError(f"unknown suite {name_or_path!r}; known suites: {known}")
        path = suites[name_or_path]
    try:
        raw = tomllib.loads(path.read_text())
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise HarnessError(f"{path}: cannot read suite file: {exc}") from exc
    return path, raw


def parse_suite(raw: dict[str, Any], source: str = "<suite>") -> SuiteConfig:
    try:
        head = raw["suite"]
        baselines = raw.get("baselines", {})
        metrics = raw.get("metrics", {})
        return SuiteConfig(
            name=head["name"],
            task=head["task"],
            description=head.get("description", ""),
            data=dict(raw.get("data", {})),
            task_options=dict(raw.get("task", {})),
            baselines=list(baselines.get("default", [])),
            baseline_params={k: dict(v) for k, v in baselines.get("params", {}).items()},
            protocols={k: dict(v) for k, v in raw.get("protocols", {}).items()},
            metrics=list(metrics.get("names", [])),
            n_boot=int(metrics.get("n_boot", 1000)),
            aux_data=dict(raw.get("aux_data", {})),
            explain=dict(raw.get("explain", {})),
            audit=dict(raw.get("audit", {})),
            source=source,
        )
    except KeyError as exc:
        raise HarnessError(f"{source}: missing key {exc} in suite file") from exc
