"""Errors the CLI turns into one clear message instead of a traceback."""


class HarnessError(Exception):
    """A problem the user can fix (bad input, bad option); printed without a traceback."""


class NoUsableDataError(HarnessError):
    """Raised when, after skipping every bad file, nothing usable is left."""


class LeakySplitError(HarnessError):
    """Raised when a split that claims to be patient-level puts a patient on both sides."""
