"""Audits of a suite run: leakage, overfitting, and the progression-MAE claim.

``write_suite_reports`` is called by the runner at the end of every suite run; the
``audit`` CLI command (:mod:`harness.audit.cli`) reruns the capstone's setup.
"""

from harness.audit.suite_reports import write_suite_reports

__all__ = ["write_suite_reports"]
