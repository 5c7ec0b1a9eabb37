"""``harness check-split``: check anyone's split (nnU-Net, ClinicaDL, MONAI, CSV) for leaks.

- readers.py: split files -> folds of case ids by role;
- mapping.py: case ids -> the dataset's series and patients, through the adapters;
- checks.py: the harness's own split-integrity checks on those folds;
- report.py: leakage report (md + html) and a JSON; cli.py: the subcommand.
"""

from typing import Any

from harness.checksplit.readers import FORMATS, read_split

__all__ = ["CheckSplitResult", "FORMATS", "check_split", "read_split"]


def __getattr__(name: str) -> Any:
    """The checks import scikit-learn: loaded on first use (PEP 562), not when the CLI
    builds its parser."""
    if name in ("CheckSplitResult", "check_split"):
        from harness.checksplit import checks

        return getattr(checks, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
