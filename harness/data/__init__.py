"""Dataset adapters, the cohort index, and the ingestion cache.

Only modules in this package touch file formats (DICOM, NIfTI, CSV).

- :func:`load_cohort` / :func:`detect_layout` (detect.py): index a dataset folder.
- :class:`VolumeStore` (cache.py): decode series once, cached by content + preprocessing.
- :func:`dataset_fingerprint` (cache.py): one hash over pixels and labels.
- :func:`check_dataset` / :func:`format_check_report` (check.py): ``harness data check``.
- :func:`ingest_dataset` / :func:`format_ingest_report` (ingest.py): ``harness data ingest``.

The names are imported on first use (PEP 562), not with the package: a decode worker
process imports ``harness.data.cache`` and should not pay for pandas and every adapter.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

#: public name -> the submodule that defines it
_EXPORTS: dict[str, str] = {
    "VolumeStore": "cache", "dataset_fingerprint": "cache", "default_cache_dir": "cache",
    "CheckReport": "check", "check_dataset": "check", "format_check_report": "check",
    "IngestReport": "ingest", "ingest_dataset": "ingest", "format_ingest_report": "ingest",
    "ingest_report_json": "ingest",
    "LABEL_MODALITIES": "cohort", "MODALITIES": "cohort", "SERIES_COLUMNS": "cohort",
    "Cohort": "cohort", "Problem": "cohort",
    "LAYOUTS": "detect", "detect_layout": "detect", "load_cohort": "detect",
    "ModalityMap": "modality_map", "make_modality_map": "modality_map",
    "SeriesError": "volume", "Volume": "volume",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{module}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))


if TYPE_CHECKING:
    from harness.data.cache import VolumeStore, dataset_fingerprint, default_cache_dir
    from harness.data.check import CheckReport, check_dataset, format_check_report
    from harness.data.cohort import LABEL_MODALITIES, MODALITIES, SERIES_COLUMNS, Cohort, Problem
    from harness.data.detect import LAYOUTS, detect_layout, load_cohort
    from harness.data.ingest import (IngestReport, format_ingest_report, ingest_dataset,
                                     ingest_report_json)
    from harness.data.modality_map import ModalityMap, make_modality_map
    from harness.data.volume import SeriesError, Volume
