"""Audits of a suite run: leakage, overfitting, and the progression-MAE claim.

``write_suite_reports`` is called by the runner at the end of every suite run; the
``audit`` CLI command (:mod:`harness.audit.cli`) reruns the capstone's setup.
"""

from typing import Any

__all__ = ["write_suite_reports"]


def __getattr__(name: str) -> Any:
    """Imported on first use (PEP 562): the CLI imports this package without scikit-learn."""
    if name == "write_suite_reports":
        from harness.audit.suite_reports import write_suite_reports

        return write_suite_reports
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
