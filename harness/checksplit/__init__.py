"""``harness check-split``: check anyone's split (nnU-Net, ClinicaDL, MONAI, CSV) for leaks.

- readers.py: split files -> folds of case ids by role;
- mapping.py: case ids -> the dataset's series and patients, through the adapters;
- checks.py: the harness's own split-integrity checks on those folds;
- report.py: leakage report (md + html) and a JSON; cli.py: the subcommand.
"""

from harness.checksplit.checks import CheckSplitResult, check_split
from harness.checksplit.readers import FORMATS, read_split

__all__ = ["CheckSplitResult", "FORMATS", "check_split", "read_split"]
