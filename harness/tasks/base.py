"""TaskData: the samples of one task, their targets, groups and pixels.

A task view decides the sample unit (for grading: one axial slice of one series, as the
published pipelines use), the target, and which series and slices take part. Baselines
see only :class:`TaskData`, never files.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Iterable, Mapping

import numpy as np
import pandas as pd

SAMPLE_COLUMNS = (
    "sample_id",
    "patient_id",
    "study_id",
    "image_id",  # the series the sample comes from
    "modality",
    "slice_index",
    "target",
)


@dataclass
class TaskData:
    """Samples of one task with their targets, groups and access to their pixels.

    ``volumes`` maps ``image_id`` to a (z, y, x) array; slices are cut on demand so the
    whole cohort never sits in memory as slices. ``content_keys`` maps ``image_id`` to
    the ingestion cache's content key, so features can be cached per series.
    """

    task: str
    target_kind: str  # "classification" | "regression"
    samples: pd.DataFrame
    classes: list[str] | None
    volumes: Mapping[str, np.ndarray] = field(repr=False, default_factory=dict)
    content_keys: Mapping[str, str] = field(repr=False, default_factory=dict)
    #: ``image_id`` -> voxel spacing (dz, dy, dx) in mm, where known (for cuts in mm).
    spacings: Mapping[str, tuple[float, float, float]] = field(repr=False, default_factory=dict)
    #: ``study_id`` -> the ``image_id`` of every series of that scan in the view, sorted,
    #: where the view knows them (progression): inputs per scan, not per series, need it.
    study_series: Mapping[str, tuple[str, ...]] = field(repr=False, default_factory=dict)

    def __len__(self) -> int:
        return len(self.samples)

    @property
    def sample_ids(self) -> list[str]:
        return self.samples["sample_id"].tolist()

    @property
    def y(self) -> np.ndarray:
        return self.samples["target"].to_numpy()

    @property
    def groups(self) -> np.ndarray:
        return self.samples["patient_id"].to_numpy()

    def subset(self, sample_ids: Iterable[str]) -> "TaskData":
        """The same task restricted to ``sample_ids``, in that order."""
        indexed = self.samples.set_index("sample_id", drop=False)
        rows = indexed.loc[list(sample_ids)].reset_index(drop=True)
        return replace(self, samples=rows)

    def slices(self, rows: pd.DataFrame | None = None) -> np.ndarray:
        """Pixel arrays (n, y, x) of the given sample rows (default: all), as float32."""
        rows = self.samples if rows is None else rows
        return np.stack(
            [
                np.asarray(self.volumes[img][int(z)], dtype=np.float32)
                for img, z in zip(rows["image_id"], rows["slice_index"])
            ]
        ) if len(rows) else np.zeros((0, 1, 1), np.float32)


#: A voxel is head, not air, above this share of its volume's 99th percentile.
HEAD_THRESHOLD = 0.1


def head_threshold(volume: np.ndarray, rel_threshold: float = HEAD_THRESHOLD) -> float:
    """The intensity above which a voxel counts as head: ``rel_threshold`` x the volume's
    99th percentile (0 for an empty volume)."""
    return rel_threshold * float(np.percentile(volume, 99)) if volume.size else 0.0


def foreground_fraction(volume: np.ndarray, rel_threshold: float = HEAD_THRESHOLD) -> np.ndarray:
    """Per-slice share of pixels brighter than ``rel_threshold`` x the volume's 99th percentile.

    Why: slices above the head or below the skull base carry nothing but noise; the
    published pipelines drop them implicitly by reading only "image" files, we do it
    explicitly and configurably.
    """
    threshold = head_threshold(volume, rel_threshold)
    if threshold <= 0:
        return np.zeros(volume.shape[0])
    return (volume > threshold).reshape(volume.shape[0], -1).mean(axis=1)


