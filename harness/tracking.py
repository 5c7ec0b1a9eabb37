"""MLflow tracking: one experiment per suite, a parent run per baseline x protocol, a
nested run per fold. The only module that imports mlflow.

Uses the explicit ``MlflowClient`` API rather than the fluent one, so no global "active
run" state leaks between parent and fold runs, and a run killed mid-way can be found
again by its ``harness.run_key`` tag and resumed.
"""

from __future__ import annotations

import functools
import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

from harness.errors import HarnessError, interrupts_deferred

RUN_KEY_TAG = "harness.run_key"
FOLD_TAG = "harness.fold"
PARENT_TAG = "mlflow.parentRunId"
#: MLflow 3's UI opens an experiment by this tag: "custom_model_development" shows the
#: runs table (the machine-learning sidebar); without it the UI guesses, often GenAI.
EXPERIMENT_KIND_TAG = "mlflow.experimentKind"
EXPERIMENT_KIND = "custom_model_development"
#: The UI's datasets table caps a digest at 36 characters; the full fingerprint is a tag.
DATASET_DIGEST_CHARS = 32
#: MLflow's UI restores a "shared view" (columns, grouping) from the experiment tag
#: ``mlflow.sharedViewState.<key>`` when the URL carries ``?viewStateShareKey=<key>``; the
#: value may be plain JSON, merged over the UI's defaults. The harness writes one such view.
SHARED_VIEW_TAG_PREFIX = "mlflow.sharedViewState."
COMPARE_VIEW_KEY = "harness-compare"
WORKFLOW_PARAM, WORKFLOW_ML = "workflowType", "machine_learning"
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


@dataclass(frozen=True)
class DatasetRecord:
    """What the UI's Dataset column shows: name, digest (the dataset fingerprint), source."""

    name: str
    fingerprint: str
    source: str
    context: str = "training"


@dataclass
class FoldRecord:
    index: int
    params: Mapping[str, Any]
    metrics: Mapping[str, float]
    tags: Mapping[str, str]
    artifacts: list[Path]


class UninterruptedClient:
    """An ``MlflowClient`` whose every call finishes before a SIGTERM or Ctrl-C is raised.

    A signal that lands inside a store write can leave the SQLite lock with an abandoned
    transaction; the cleanup that marks the runs KILLED then fails with "database is
    locked" (see :func:`harness.errors.interrupts_deferred`).
    """

    def __init__(self, client: Any) -> None:
        self._client = client

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._client, name)
        if not callable(attr):
            return attr

        @functools.wraps(attr)
        def call(*args: Any, **kwargs: Any) -> Any:
            with interrupts_deferred():
                return attr(*args, **kwargs)
        return call


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
        self.client: Any = UninterruptedClient(MlflowClient(tracking_uri=tracking_uri))
        try:
            exp = self.client.get_experiment_by_name(experiment)
            if exp is None:
                self.experiment_id = self.client.create_experiment(
                    experiment, artifact_location=default_artifact_root(tracking_uri),
                    tags={EXPERIMENT_KIND_TAG: EXPERIMENT_KIND},
                )
            else:
                self.experiment_id = exp.experiment_id
                if exp.tags.get(EXPERIMENT_KIND_TAG) != EXPERIMENT_KIND:
                    self.client.set_experiment_tag(self.experiment_id, EXPERIMENT_KIND_TAG, EXPERIMENT_KIND)
        except Exception as exc:  # connection refused, bad URI, locked database...
            raise HarnessError(f"cannot open MLflow tracking store {tracking_uri}: {exc}") from exc

    def set_compare_view(self, metrics: list[str]) -> None:
        """Store the runs-table view ``harness ui`` links to: parents grouped by the
        ``comparison`` tag, the suite's metrics (pooled estimate, CI, fold mean and sd) shown."""
        cols = ["attributes.`Dataset`", "tags.`baseline`", "tags.`protocol`", "tags.`leaky_protocol`"]
        for m in metrics:
            cols += [f"metrics.`{m}{s}`" for s in ("", "_ci95_lo", "_ci95_hi", "_fold_mean", "_fold_sd")]
        state = {
            "selectedColumns": cols,
            "groupBy": {"aggregateFunction": "average",
                        "groupByKeys": [{"mode": "tag", "groupByData": "comparison"}]},
            "groupsExpanded": {},
            # parents only (fold runs carry no run key): each row is one result
            "searchFilter": f"tags.`{RUN_KEY_TAG}` LIKE '%'",
            "orderByKey": f"metrics.`{metrics[0]}`" if metrics else "attributes.start_time",
            "orderByAsc": False,
        }
        value = json.dumps(state, separators=(",", ":"))
        exp = self.client.get_experiment(self.experiment_id)
        if exp.tags.get(SHARED_VIEW_TAG_PREFIX + COMPARE_VIEW_KEY) != value:
            self.client.set_experiment_tag(self.experiment_id, SHARED_VIEW_TAG_PREFIX + COMPARE_VIEW_KEY, value)

    # -- parent runs -------------------------------------------------------------------
    def open_parent(
        self, run_key: str, run_name: str, params: Mapping[str, Any], tags: Mapping[str, str],
        dataset: "DatasetRecord | None" = None,
    ) -> "ParentRun":
        """The one parent run of this key: reused, resumed or new, never a second one.

        - A FINISHED parent is reused as it is (``complete``): a warm rerun logs nothing.
        - An unfinished one (a SIGKILL leaves it RUNNING; an interrupt, FAILED or KILLED)
          is resumed: its finished fold runs count, its stale RUNNING ones become KILLED.
        - Only when the key has no parent at all is one created.
        Stores written before this rule may hold several parents of a key: the newest
        FINISHED one is reused, else the newest other one resumed.
        """
        parents = [r for r in self._runs(f"tags.`{RUN_KEY_TAG}` = '{run_key}'")
                   if PARENT_TAG not in r.data.tags]
        parents.sort(key=lambda r: r.info.start_time or 0, reverse=True)
        finished = [r for r in parents if r.info.status == "FINISHED"]
        if finished:
            return ParentRun(self, finished[0].info.run_id, resumed=True, complete=True)
        if parents:
            run_id = parents[0].info.run_id
            self.client.update_run(run_id, status="RUNNING")
            parent = ParentRun(self, run_id, resumed=True)
            parent.kill_stale_children()
            return parent
        run = self.client.create_run(
            self.experiment_id,
            run_name=run_name,
            tags={RUN_KEY_TAG: run_key, **{k: str(v) for k, v in tags.items()}},
        )
        parent = ParentRun(self, run.info.run_id, resumed=False)
        parent.log_params(params)
        if dataset is not None:
            parent.log_dataset(dataset)
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

    def __init__(self, tracker: Tracker, run_id: str, *, resumed: bool, complete: bool = False) -> None:
        self.tracker = tracker
        self.client = tracker.client
        self.run_id = run_id
        self.resumed = resumed
        #: True for a FINISHED parent found in the store: it already has its summary.
        self.complete = complete
        #: Set when this run logs a new fold run; a complete parent then gets its summary again.
        self.changed = False

    @property
    def needs_summary(self) -> bool:
        """False when the parent was finished before and this run added nothing to it."""
        return not self.complete or self.changed

    def log_dataset(self, dataset: DatasetRecord) -> None:
        """``log_input`` of the dataset, so the UI's Dataset column and compare view show it."""
        from mlflow.entities import Dataset, DatasetInput, InputTag

        entity = Dataset(name=dataset.name, digest=dataset.fingerprint[:DATASET_DIGEST_CHARS],
                         source_type="local", source=json.dumps({"uri": dataset.source}),
                         profile=json.dumps({"fingerprint": dataset.fingerprint}))
        self.client.log_inputs(self.run_id, datasets=[
            DatasetInput(entity, tags=[InputTag("mlflow.data.context", dataset.context)])])

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

    def set_tags(self, tags: Mapping[str, str]) -> None:
        """Tags known only when the run ends (e.g. ``harness.did_not_learn``)."""
        for key, value in tags.items():
            self.client.set_tag(self.run_id, key, str(value))

    def log_fold(self, fold: FoldRecord, run_name: str) -> str:
        """One nested run for a finished fold: params, metrics, tags, artifacts, FINISHED."""
        self.changed = True
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
        """Close the parent. Interrupted or failed, its fold runs still RUNNING are marked
        KILLED first: a signal can land inside ``create_run``, after the store made the
        run but before ``log_fold`` could guard it."""
        if status != "FINISHED":
            self.kill_stale_children()
        self.client.set_terminated(self.run_id, status=status)


def fold_aggregates(metric: str, values: list[float]) -> dict[str, float]:
    """Mean, sd and t-based 95% CI of a metric over folds, as parent-run metrics.

    Why beside the pooled bootstrap estimate: the fold spread is what nnU-Net-style
    tables report, and it shows an unstable protocol at a glance. One fold: sd and CI NaN
    (not logged).
    """
    import math

    vals = [float(v) for v in values if v == v]
    n = len(vals)
    out = {f"{metric}_fold_mean": float("nan"), f"{metric}_fold_sd": float("nan"),
           f"{metric}_fold_ci95_lo": float("nan"), f"{metric}_fold_ci95_hi": float("nan")}
    if n == 0:
        return out
    mean = sum(vals) / n
    out[f"{metric}_fold_mean"] = mean
    if n > 1:
        from scipy import stats

        sd = math.sqrt(sum((v - mean) ** 2 for v in vals) / (n - 1))
        half = float(stats.t.ppf(0.975, n - 1)) * sd / math.sqrt(n)
        out.update({f"{metric}_fold_sd": sd, f"{metric}_fold_ci95_lo": mean - half,
                    f"{metric}_fold_ci95_hi": mean + half})
    return out


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
    suite's baselines and protocols are compared, so the CLI prints these links. Where a
    run stored the compare view (:meth:`Tracker.set_compare_view`), the link opens it.
    """
    from mlflow.tracking import MlflowClient

    if tracking_uri.startswith("sqlite:///") and not Path(tracking_uri[len("sqlite:///"):]).exists():
        return []
    try:
        experiments = MlflowClient(tracking_uri=tracking_uri).search_experiments()
    except Exception:  # an unreachable store: the UI itself will say so
        return []
    out = []
    for e in experiments:
        if not e.name.startswith("harness/"):
            continue
        url = f"{base_url}/#/experiments/{e.experiment_id}/runs"
        # MLflow 3.17 picks the sidebar (GenAI or model training) from this URL parameter or
        # the browser's last choice, not from the experiment's kind tag.
        query = [f"{WORKFLOW_PARAM}={WORKFLOW_ML}"]
        if SHARED_VIEW_TAG_PREFIX + COMPARE_VIEW_KEY in (e.tags or {}):
            query.insert(0, f"viewStateShareKey={COMPARE_VIEW_KEY}")  # grouped by 'comparison'
        out.append((e.name, f"{url}?{'&'.join(query)}"))
    return out
