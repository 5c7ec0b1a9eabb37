"""The cohort index: what an adapter found on disk, before any pixel is decoded.

An adapter walks a dataset folder and returns a :class:`Cohort`: one row per image
series (a DICOM series folder or a NIfTI volume), one row per patient with its labels,
and every problem it met. Pixels are decoded later, through the ingestion cache.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # imported where used, so decode workers (which need Problem) stay light
    import pandas as pd

#: Columns of :attr:`Cohort.series`, in order.
SERIES_COLUMNS: tuple[str, ...] = (
    "series_id",  # unique, "<patient_id>/<study_id>/<modality>"
    "patient_id",  # the dataset's own patient ID (never a name)
    "study_id",  # "<patient_id>_<MM-DD-YYYY>" for TCIA, the subject ID for BraTS
    "study_date",  # ISO "YYYY-MM-DD", or "" when unknown
    "modality",  # canonical name: T1, T1post, T2, FLAIR, ADC, dT1, sRCBV, nRCBV, nCBF, MASK, SEG
    "series_description",  # as found on disk (DICOM SeriesDescription or file suffix)
    "format",  # "dicom" | "nifti"
    "files",  # tuple[str, ...]: the DICOM slice files (unsorted) or the one NIfTI file
    "institution",  # DICOM InstitutionName (the acquiring site), "" when unknown (NIfTI)
)

#: Canonical modality names an adapter may emit.
MODALITIES: tuple[str, ...] = (
    "T1",
    "T1post",
    "T2",
    "FLAIR",
    "ADC",
    "dT1",
    "sRCBV",
    "nRCBV",
    "nCBF",
    "MASK",
    "SEG",
)

#: Modalities that are label maps rather than images.
LABEL_MODALITIES: frozenset[str] = frozenset({"MASK", "SEG"})


@dataclass(frozen=True)
class Problem:
    """One bad input: the file (or folder) and why it was skipped."""

    path: str
    reason: str

    def __str__(self) -> str:
        return f"{self.path}: {self.reason}"


@dataclass
class Cohort:
    """What an adapter found: series, patients with labels, and problems.

    ``patients`` has a ``patient_id`` column plus label columns that depend on the
    layout: ``grade`` ("II", "III", "IV", or NA) for REMBRANDT; ``grade`` ("HGG"/"LGG"),
    ``age``, ``survival_days``, ``survival_censored``, ``extent_of_resection`` for BraTS.
    """

    layout: str
    root: Path
    series: pd.DataFrame
    patients: pd.DataFrame
    problems: list[Problem] = field(default_factory=list)
    #: Series found on disk but not used (a second series of a modality in a study, an
    #: unknown description, a folder whose first files do not parse): same columns as
    #: ``series``, ``series_id`` unique. Why kept: ``data check`` and ``run`` still read
    #: every file in them, so a bad file is named even where the adapter skips it.
    skipped: pd.DataFrame | None = None

    @property
    def patient_ids(self) -> list[str]:
        return sorted(self.series["patient_id"].unique().tolist())

    def series_of(self, patient_id: str) -> pd.DataFrame:
        return self.series[self.series["patient_id"] == patient_id]


def empty_series_frame() -> pd.DataFrame:
    import pandas as pd

    return pd.DataFrame({c: pd.Series(dtype=object) for c in SERIES_COLUMNS})
