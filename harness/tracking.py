"""MLflow tracking: one experiment per suite, a parent run per baseline x protocol, a
nested run per fold. The only module that imports mlflow.

Uses the explicit ``MlflowClient`` API rather than the fluent one, so no global "active
run" state leaks between parent and fold runs, and a run killed mid-way can be found
again by its ``harness.run_key`` tag and resumed.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

from harness.errors import HarnessError

RUN_KEY_TAG = "harness.run_key"
FOLD_TAG = "harness.fold"
PARENT_TAG = "mlflow.parentRunId"
#: mlflow limits a param value to 6000 characters; longer values are cut with a marker.
MAX_PARAM_CHARS = 6000


def default_tracking_uri(root: Path | None = None) -> str:
    """``sqlite:///<root>/mlflow/mlflow.db`` (root: the working directory)."""
    root = (root or Path.cwd()).resolve()
    return f"sqlite:///{root / 'mlflow' / 'mlflow.db'}"


def default_artifact_root(tracking_uri: str) -> str | None:
    """Artifacts beside a local SQLite store (``mlflow/artifacts``); a server decides its own."""
    if tracking_uri.startswith("sqlite:///"):
        db = Path(tracking_uri[len("sqlite:///"):])
        return (db.parent / "artifacts").resolve().as_uri()
    return None


def _prepare_local_store(tracking_uri: str) -> None:
    if tracking_uri.startswith("sqlite:///"):
        Path(tracking_uri[len("sqlite:///"):]).parent.mkdir(parents=True, exist_ok=True)


@dataclass
class FoldRecord:
    index: int
    params: Mapping[str, Any]
    metrics: Mapping[str, float]
    tags: Mapping[str, str]
    artifacts: list[Path]


class Tracker:
    """Writes runs to one MLflow experiment."""

    def __init__(self, tracking_uri: str, experiment: str) -> None:
        from harness.locks import store_lock

        # A new sqlite store's tables are created on first open: by one run at a time.
        with store_lock(tracking_uri):
            self._open(tracking_uri, experiment)

    def _open(self, tracking_uri: str, experiment: str) -> None:
        os.environ.setdefault("MLFLOW_ENABLE_ASYNC_LOGGING", "false")
        _prepare_local_store(tracking_uri)
        from mlflow.tracking import MlflowClient

        self.tracking_uri = tracking_uri
        self.client = MlflowClient(tracking_uri=tracking_uri)
        try:
            exp = self.client.get_experiment_by_name(experiment)
            if exp is None:
                self.experiment_id = self.client.create_experiment(
                    experiment, artifact_location=default_artifact_root(tracking_uri)
                )
            else:
                self.experiment_id = exp.experiment_id
        except Exception as exc:  # connection refused, bad URI, locked database...
            raise HarnessError(f"cannot open MLflow tracking store {tracking_uri}: {exc}") from exc

    # -- parent runs -------------------------------------------------------------------
    def open_parent(
        self, run_key: str, run_name: str, params: Mapping[str, Any], tags: Mapping[str, str]
    ) -> "ParentRun":
        """Resume the unfinished parent run with this key, or start a new one.

        A run killed mid-way (SIGKILL) stays RUNNING in the store; resuming it keeps its
        finished fold runs, and its stale RUNNING fold runs are marked KILLED.
        """
        for run in self._runs(f"tags.`{RUN_KEY_TAG}` = '{run_key}'"):
            if run.info.status != "FINISHED" and PARENT_TAG not in run.data.tags:
                self.client.update_run(run.info.run_id, status="RUNNING")
                parent = ParentRun(self, run.info.run_id, resumed=True)
                parent.kill_stale_children()
                return parent
        run = self.client.create_run(
            self.experiment_id,
            run_name=run_name,
            tags={RUN_KEY_TAG: run_key, **{k: str(v) for k, v in tags.items()}},
        )
        parent = ParentRun(self, run.info.run_id, resumed=False)
        parent.log_params(params)
        return parent

    def _runs(self, filter_string: str) -> list[Any]:
        return list(
            self.client.search_runs([self.experiment_id], filter_string=filter_string, max_results=10000)
        )

    def stuck_runs(self) -> list[str]:
        """IDs of runs in this experiment still marked RUNNING."""
        return [r.info.run_id for r in self._runs("attributes.status = 'RUNNING'")]


class ParentRun:
    """A baseline x protocol run and its nested fold runs."""

    def __init__(self, tracker: Tracker, run_id: str, *, resumed: bool) -> None:
        self.tracker = tracker
        self.client = tracker.client
        self.run_id = run_id
        self.resumed = resumed

    def _children(self) -> list[Any]:
        return self.tracker._runs(f"tags.`{PARENT_TAG}` = '{self.run_id}'")

    def kill_stale_children(self) -> None:
        for child in self._children():
            if child.info.status == "RUNNING":
                self.client.set_terminated(child.info.run_id, status="KILLED")

    def finished_folds(self) -> set[int]:
        return {
            int(c.data.tags[FOLD_TAG])
            for c in self._children()
            if c.info.status == "FINISHED" and FOLD_TAG in c.data.tags
        }

    def log_params(self, params: Mapping[str, Any]) -> None:
        _log_batch(self.client, self.run_id, params=params)

    def log_metrics(self, metrics: Mapping[str, float]) -> None:
        _log_batch(self.client, self.run_id, metrics=metrics)

    def log_artifact(self, path: Path, artifact_path: str | None = None) -> None:
        self.client.log_artifact(self.run_id, str(path), artifact_path)

    def log_fold(self, fold: FoldRecord, run_name: str) -> str:
        """One nested run for a finished fold: params, metrics, tags, artifacts, FINISHED."""
        run = self.client.create_run(
            self.tracker.experiment_id,
            run_name=run_name,
            tags={PARENT_TAG: self.run_id, FOLD_TAG: str(fold.index), **dict(fold.tags)},
        )
        try:
            _log_batch(self.client, run.info.run_id, params=fold.params, metrics=fold.metrics)
            for artifact in fold.artifacts:
                self.client.log_artifact(run.info.run_id, str(artifact))
        except BaseException as exc:  # SIGTERM/SIGINT mid-log: KILLED, and the rerun logs it again
            self.client.set_terminated(run.info.run_id,
                                       status="KILLED" if isinstance(exc, KeyboardInterrupt) else "FAILED")
            raise
        self.client.set_terminated(run.info.run_id, status="FINISHED")
        return run.info.run_id

    def finish(self, status: str = "FINISHED") -> None:
        self.client.set_terminated(self.run_id, status=status)


def _log_batch(
    client: Any,
    run_id: str,
    *,
    params: Mapping[str, Any] | None = None,
    metrics: Mapping[str, float] | None = None,
) -> None:
    from mlflow.entities import Metric, Param

    now = int(time.time() * 1000)
    param_list = [Param(str(k), _param_value(v)) for k, v in sorted((params or {}).items())]
    metric_list = [
        Metric(str(k), float(v), now, 0) for k, v in sorted((metrics or {}).items()) if v == v
    ]
    # MLflow caps a batch at 100 params / 1000 metrics.
    for start in range(0, max(len(param_list), len(metric_list)), 100):
        client.log_batch(
            run_id, params=param_list[start : start + 100], metrics=metric_list[start : start + 100]
        )


def _param_value(value: Any) -> str:
    text = str(value)
    return text if len(text) <= MAX_PARAM_CHARS else text[: MAX_PARAM_CHARS - 12] + "...[cut]"


def experiment_pages(tracking_uri: str, base_url: str) -> list[tuple[str, str]]:
    """(experiment name, URL of its runs table) for each harness experiment in a store.

    MLflow 3's UI opens experiments on its GenAI overview; the runs table is where a
    suite's baselines and protocols are compared, so the CLI prints these links.
    """
    from mlflow.tracking import MlflowClient

    if tracking_uri.startswith("sqlite:///") and not Path(tracking_uri[len("sqlite:///"):]).exists():
        return []
    try:
        experiments = MlflowClient(tracking_uri=tracking_uri).search_experiments()
    except Exception:  # an unreachable store: the UI itself will say so
        return []
    return [(e.name, f"{base_url}/#/experiments/{e.experiment_id}/runs")
            for e in experiments if e.name.startswith("harness/")]
