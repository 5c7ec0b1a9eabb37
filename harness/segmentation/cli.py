"""``python -m harness seg-eval``: the standalone BraTS 2023 lesion-wise evaluator.

Plugged into the main CLI through ``harness.cli.PLUGIN_COMMAND_MODULES``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from harness.segmentation.labels import CONVENTIONS
from harness.segmentation.lesionwise import DEFAULT_DILATION, DEFAULT_MIN_LESION
from harness.segmentation.surface import HD95_METHODS


def add_commands(subparsers: argparse._SubParsersAction, common_parent: argparse.ArgumentParser) -> None:
    """Add ``seg-eval`` to the harness CLI."""
    p = subparsers.add_parser(
        "seg-eval", parents=[common_parent],
        help="score predicted label maps against references (BraTS 2023 lesion-wise + legacy Dice/HD95)",
        description="Evaluate prediction NIfTI files against reference files matched by subject ID; "
        "one row per subject and region (ET, TC, WT). Bad subjects are reported; the rest are scored.",
    )
    p.add_argument("--pred", type=Path, required=True, help="folder of predicted label maps (.nii/.nii.gz)")
    p.add_argument("--ref", type=Path, required=True, help="folder of reference label maps (searched recursively)")
    p.add_argument("--out", type=Path, required=True, help="results CSV to write")
    p.add_argument("--labels", choices=sorted(CONVENTIONS), default="brats2023",
                   help="label convention of both folders: brats2023 (ET=3, default) or brats2020 (ET=4)")
    p.add_argument("--dilation", type=int, default=DEFAULT_DILATION,
                   help=f"ground-truth dilation (voxels) that merges nearby lesions (default {DEFAULT_DILATION})")
    p.add_argument("--min-lesion", type=float, default=DEFAULT_MIN_LESION,
                   help=f"ground-truth lesions this size or smaller are left out (default {DEFAULT_MIN_LESION:g})")
    p.add_argument("--volume-unit", choices=("voxels", "mm3"), default="mm3",
                   help="unit of --min-lesion: mm3 (default, the official code) or voxels (same on 1 mm data)")
    p.add_argument("--hd95", choices=HD95_METHODS, default=HD95_METHODS[0],
                   help="HD95 definition: surface (default: the official surface-element distances) "
                   "or voxel (boundary voxels, unweighted; the harness's earlier metric)")
    p.set_defaults(func=cmd_seg_eval)


def cmd_seg_eval(args: argparse.Namespace) -> int:
    """0: every subject scored; 1: some subjects could not be scored (see the problems file)."""
    from harness.segmentation.evaluate import evaluate_folders, problems_frame, region_means

    result = evaluate_folders(args.pred, args.ref, convention=args.labels, dilation=args.dilation,
                              min_lesion_volume=args.min_lesion, volume_unit=args.volume_unit,
                              hd_method=args.hd95)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    result.scores.to_csv(out, index=False, lineterminator="\n")
    problems_path = out.with_name(out.stem + "_problems.csv")
    if result.problems:
        problems_frame(result.problems).to_csv(problems_path, index=False, lineterminator="\n")
        print(f"{len(result.problems)} subject(s) not scored (also in {problems_path}):", file=sys.stderr)
        for sid, problem in result.problems:
            print(f"  {sid}: {problem}", file=sys.stderr)
    elif problems_path.exists():
        problems_path.unlink()
    means = region_means(result.scores)
    if len(means):
        print(means.to_string(index=False, float_format=lambda v: f"{v:.4f}"))
    print(f"scored {result.n_subjects} subject(s); results: {out}")
    return 1 if result.problems else 0
