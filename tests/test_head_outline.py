"""Head outlines for the identity probe: the same in every contrast of one head, different
between heads, so a 1-nearest-neighbour on them names a patient across contrasts."""

from __future__ import annotations

import numpy as np
import pandas as pd

from harness.audit.head_outline import SERIES_OUTLINE, SLICE_OUTLINE, outline_features
from harness.audit.identity_probe import identity_probe
from harness.tasks.base import TaskData


def _head(radii: tuple[float, float, float], shift: tuple[int, int, int], contrast: int,
          rng: np.random.Generator) -> np.ndarray:
    """A 40^3 ellipsoid head whose inside looks different in each contrast (bright centre,
    bright rim, random blobs), noise-free air outside."""
    zz, yy, xx = np.mgrid[:40, :40, :40].astype(float)
    r = np.sqrt(((zz - 20 - shift[0]) / radii[0]) ** 2 + ((yy - 20 - shift[1]) / radii[1]) ** 2
                + ((xx - 20 - shift[2]) / radii[2]) ** 2)
    inside = r <= 1.0
    pattern = [1.5 - r, 0.5 + r, 1.0 + rng.random((40, 40, 40))][contrast % 3]
    return np.where(inside, 100.0 * pattern, 0.0).astype(np.float32)


def _cohort(n_patients: int, n_contrasts: int, slices: bool = False) -> TaskData:
    rng = np.random.default_rng(0)
    volumes, rows = {}, []
    for p in range(n_patients):
        radii = tuple(12.0 + rng.uniform(-2.5, 2.5) for _ in range(3))
        shift = tuple(int(v) for v in rng.integers(-2, 3, size=3))
        for c in range(n_contrasts):
            sid = f"P{p}_c{c}"
            volumes[sid] = _head(radii, shift, c, rng)
            for z in ([18, 20, 22] if slices else [-1]):
                rows.append({"sample_id": f"{sid}#{z}", "patient_id": f"P{p}", "study_id": f"P{p}", "image_id": sid,
                             "modality": f"c{c}", "slice_index": z, "target": "x"})
    return TaskData("survival", "classification", pd.DataFrame(rows), ["x"], volumes)


def test_outline_is_the_same_in_every_contrast_of_one_head():
    data = _cohort(2, 3)
    x = outline_features(data)
    assert x.shape == (6, int(np.prod(SERIES_OUTLINE)))
    assert np.allclose(x[0], x[1]) and np.allclose(x[0], x[2])  # one head, three contrasts
    assert not np.allclose(x[0], x[3])  # another head
    assert 0.0 < x[0].mean() < 1.0


def test_outline_probe_names_the_patient_across_contrasts():
    data = _cohort(8, 3)
    patients = data.samples["patient_id"].to_numpy()
    probe = identity_probe(outline_features(data), patients, features="outline", standardize=False, n_splits=3)
    assert probe.accuracy == 1.0 and probe.n_patients == 8 and probe.n_rows == 24


def test_slice_samples_get_slice_outlines_and_a_missing_series_a_zero_row():
    data = _cohort(2, 2, slices=True)
    volumes = dict(data.volumes)
    del volumes["P1_c1"]
    data = TaskData(data.task, data.target_kind, data.samples, data.classes, volumes)
    x = outline_features(data)
    assert x.shape == (12, int(np.prod(SLICE_OUTLINE)))
    assert np.allclose(x[0], x[3])  # slice 18 of contrasts 0 and 1 of one head
    assert not np.allclose(x[0], x[1])  # slices 18 and 20 differ
    assert (x[9:] == 0).all() and (x[:9].sum(axis=1) > 0).all()
