"""``harness data ingest DIR --jobs N``: index a dataset and decode every series into the cache.

What ``run`` does before any model, on its own: after it, every run on the same data
(and the same cache) starts from memory-mapped arrays without reading an image file.
Decoding is spread over ``jobs`` worker processes (see :class:`VolumeStore`); the
report says how many series and slice files there were, what was decoded or already
cached, how long indexing and decoding took, and names every bad file with its reason.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from harness.data.cache import VolumeStore
from harness.data.cohort import Problem
from harness.data.detect import load_cohort
from harness.data.modality_map import ModalityMap
from harness.errors import NoUsableDataError


@dataclass
class IngestReport:
    """Counts and timings of one ingestion (``n_slices``: image files of the series)."""

    root: Path
    layout: str | None
    jobs: int
    n_patients: int = 0
    n_series: int = 0
    n_slices: int = 0
    n_series_ok: int = 0
    n_series_failed: int = 0
    n_decoded: int = 0
    n_cache_hits: int = 0
    n_files_read: int = 0
    index_seconds: float = 0.0
    decode_seconds: float = 0.0
    problems: list[Problem] = field(default_factory=list)
    error: str | None = None

    @property
    def seconds(self) -> float:
        return self.index_seconds + self.decode_seconds

    @property
    def ok(self) -> bool:
        return self.error is None and self.n_series_ok > 0


def ingest_dataset(
    root: Path | str,
    store: VolumeStore,
    *,
    layout: str | None = None,
    modality_map: ModalityMap | Mapping[str, str | None] | None = None,
    clinical_csv: str | os.PathLike | None = None,
) -> IngestReport:
    """Index ``root`` and load every series through ``store`` (its ``workers`` decode).

    Never raises for bad data: an unrecognised folder gives a report with ``error`` set.
    The volumes themselves are not kept (they are in the cache): memory stays that of
    the index plus one series per worker.
    """
    root = Path(root)
    report = IngestReport(root=root, layout=layout, jobs=store.workers)
    start = time.perf_counter()
    try:
        cohort = load_cohort(root, layout, modality_map=modality_map,
                             clinical_csv=clinical_csv, allow_empty=True)
    except NoUsableDataError as exc:
        report.error = str(exc)
        return report
    report.index_seconds = time.perf_counter() - start
    series = cohort.series
    report.layout = cohort.layout
    report.problems = list(cohort.problems)
    report.n_patients = int(series["patient_id"].nunique())
    report.n_series = len(series)
    report.n_slices = int(series["files"].map(len).sum()) if len(series) else 0
    if series.empty:
        report.error = f"no image series found in {root}"
        return report
    before = (store.n_decoded, store.n_cache_hits, store.n_files_read)
    start = time.perf_counter()
    volumes, problems = store.load_many(series)
    report.decode_seconds = time.perf_counter() - start
    report.n_series_ok = len(volumes)
    del volumes
    report.n_series_failed = report.n_series - report.n_series_ok
    report.n_decoded = store.n_decoded - before[0]
    report.n_cache_hits = store.n_cache_hits - before[1]
    report.n_files_read = store.n_files_read - before[2]
    report.problems += problems
    return report


def format_ingest_report(report: IngestReport) -> str:
    """A plain-text report for the terminal."""
    lines = [f"Dataset: {report.root}", f"Layout: {report.layout or 'not recognised'}"]
    if report.error and not report.n_series:
        lines += [f"Error: {report.error}"]
        return "\n".join(lines)
    rate = report.n_slices / report.decode_seconds if report.decode_seconds > 0 else 0.0
    lines += [
        f"Found: {report.n_patients} patients, {report.n_series} series, "
        f"{report.n_slices} image files",
        f"Series: {report.n_series_ok} ok, {report.n_series_failed} rejected "
        f"({report.n_decoded} decoded, {report.n_cache_hits} already cached; "
        f"{report.n_files_read} files read)",
        f"Time: index {report.index_seconds:.1f} s, decode {report.decode_seconds:.1f} s "
        f"(--jobs {report.jobs}, {rate:,.0f} files/s), total {report.seconds:.1f} s",
    ]
    if report.problems:
        lines.append(f"Problems ({len(report.problems)}):")
        lines += [f"  {p.path}: {p.reason}" for p in report.problems]
    else:
        lines.append("Problems: none")
    return "\n".join(lines)


def ingest_report_json(report: IngestReport) -> str:
    """The report as JSON: flat counts and seconds, plus ``problems`` as [path, reason]."""
    out = {
        "root": str(report.root), "layout": report.layout, "jobs": report.jobs,
        "n_patients": report.n_patients, "n_series": report.n_series, "n_slices": report.n_slices,
        "n_series_ok": report.n_series_ok, "n_series_failed": report.n_series_failed,
        "n_decoded": report.n_decoded, "n_cache_hits": report.n_cache_hits,
        "n_files_read": report.n_files_read, "index_seconds": round(report.index_seconds, 4),
        "decode_seconds": round(report.decode_seconds, 4), "seconds": round(report.seconds, 4),
        "error": report.error, "problems": [[p.path, p.reason] for p in report.problems],
    }
    return json.dumps(out, indent=1) + "\n"
