"""The ``check-split`` subcommand: exit 0 when the split is clean, 1 on any leak.

Errors (an unreadable split file, ids the dataset lacks) raise HarnessError, which the
main CLI prints as one line and exits 2: never a traceback.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from harness.argtypes import positive_int
from harness.audit.thresholds import NEAR_DUPLICATE_THRESHOLD
from harness.checksplit.readers import FORMATS

LAYOUT_CHOICES = ("rembrandt", "btp", "brats20")


def add_commands(sub: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser("check-split", parents=[common],
                       help="check a split file (nnU-Net, ClinicaDL, MONAI, CSV) for patient and image leaks")
    p.add_argument("--data", type=Path, required=True, help="dataset folder (TCIA patient folders or BraTS 2020)")
    p.add_argument("--splits", type=Path, required=True,
                   help="splits_final.json, a ClinicaDL split folder, a MONAI datalist JSON or a CSV")
    p.add_argument("--format", choices=FORMATS, default="auto", help="split format (default: detect)")
    p.add_argument("--out", type=Path, help="report folder (default: reports/check-split/<timestamp>/)")
    p.add_argument("--layout", choices=LAYOUT_CHOICES, help="dataset layout (default: detect)")
    p.add_argument("--near-threshold", type=float, default=NEAR_DUPLICATE_THRESHOLD,
                   help=f"thumbnail correlation at or above which two images are near-duplicates "
                        f"(default {NEAR_DUPLICATE_THRESHOLD})")
    p.add_argument("--id-map", type=Path, metavar="CSV",
                   help="two columns, the split's case id and the dataset id it stands for, for tools that "
                        "renamed cases (e.g. nnU-Net's BRATS_001 -> BraTS20_Training_001)")
    p.add_argument("--jobs", type=positive_int, default=1, metavar="N",
                   help="decode worker processes for series not yet in the cache (default 1)")
    p.add_argument("--no-pixels", action="store_true",
                   help="ids only: skip decoding (no duplicate-image checks, no identity probe)")
    p.set_defaults(func=cmd_check_split)


def cmd_check_split(args: argparse.Namespace) -> int:
    from harness.checksplit.checks import check_split
    from harness.checksplit.report import verdict, write_outputs

    result = check_split(args.data, args.splits, fmt=args.format, cache_dir=args.cache_dir,
                         near_threshold=args.near_threshold, layout=args.layout, pixels=not args.no_pixels,
                         progress=not args.no_progress, id_map=args.id_map, jobs=args.jobs)
    out = args.out or Path("reports") / "check-split" / time.strftime("%Y%m%d-%H%M%S", time.gmtime())
    paths = write_outputs(result, out)
    print(f"check-split: {result.split.format} split {result.split.source}, {len(result.split.folds)} fold(s), "
          f"{len(result.mapping.cases)} cases -> {len(result.samples)} image series ({result.layout})")
    print(result.folds.to_string(index=False))
    for f in result.findings:
        print(f"LEAK {f.message}")
    if result.probe is not None:
        print(result.probe.sentence())
    print(verdict(result))
    for path in paths:
        print(f"wrote {path}")
    return 0 if result.clean else 1
