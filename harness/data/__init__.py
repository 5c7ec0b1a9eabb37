"""Dataset adapters, the cohort index, and the ingestion cache.

Only modules in this package touch file formats (DICOM, NIfTI, CSV).

- :func:`load_cohort` / :func:`detect_layout` (detect.py): index a dataset folder.
- :class:`VolumeStore` (cache.py): decode series once, cached by content + preprocessing.
- :func:`dataset_fingerprint` (cache.py): one hash over pixels and labels.
- :func:`check_dataset` / :func:`format_check_report` (check.py): ``harness data check``.
"""

from harness.data.cache import VolumeStore, dataset_fingerprint, default_cache_dir
from harness.data.check import CheckReport, check_dataset, format_check_report
from harness.data.cohort import LABEL_MODALITIES, MODALITIES, SERIES_COLUMNS, Cohort, Problem
from harness.data.detect import LAYOUTS, detect_layout, load_cohort
from harness.data.modality_map import ModalityMap, make_modality_map
from harness.data.volume import SeriesError, Volume

__all__ = [
    "LABEL_MODALITIES", "LAYOUTS", "MODALITIES", "SERIES_COLUMNS", "CheckReport", "Cohort",
    "ModalityMap", "Problem", "SeriesError", "Volume", "VolumeStore", "check_dataset",
    "dataset_fingerprint", "default_cache_dir", "detect_layout", "format_check_report",
    "load_cohort", "make_modality_map",
]
