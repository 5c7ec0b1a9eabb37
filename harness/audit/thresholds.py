"""Thresholds the audit and the command line share, in a module with no heavy imports
(the CLI builds its parser without numpy's or scikit-learn's import cost)."""

#: Thumbnail correlation at or above which two images of different patients count as
#: near-duplicates (different synthetic patients reach 0.98 for series, 0.9905 for
#: edge-of-head slices; see docs/audit.md).
NEAR_DUPLICATE_THRESHOLD = 0.995
