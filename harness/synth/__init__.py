"""Known-truth synthetic cohorts written in the real TCIA / BraTS layouts.

The default dataset of the harness: a simulated cohort (MNI anatomy, Fisher-Kolmogorov
tumour growth, an MR imaging model with patient and site fingerprints) whose labels are
known, so the harness can be shown to judge correctly before it judges anyone else.
See docs/layouts.md for the files written.
"""

from harness.synth.cohort import DEFAULT_PATIENTS, FLAVOURS, SIGNALS, draw_parameters
from harness.synth.generate import generate_cohort

__all__ = ["DEFAULT_PATIENTS", "FLAVOURS", "SIGNALS", "draw_parameters", "generate_cohort"]
