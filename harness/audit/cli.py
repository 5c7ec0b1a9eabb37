"""``python -m harness audit progression-mae``: the capstone claim's audit in one command."""

from __future__ import annotations

import argparse
from pathlib import Path


def add_commands(subparsers, common_parent) -> None:
    audit = subparsers.add_parser("audit", parents=[common_parent], help="audits of published claims")
    sub = audit.add_subparsers(dest="audit_command", required=True)
    p = sub.add_parser("progression-mae", parents=[common_parent],
                       help="the capstone's 0.02-month MAE under its row split vs patient-held-out splits; "
                       "writes audit.md beside summary.json")
    p.add_argument("--data", type=Path, help="a Brain-Tumor-Progression download (default: the synthetic BTP cohort)")
    p.add_argument("--aux-data", type=Path, help="REMBRANDT-style cohort for the stage-1 grader")
    p.add_argument("--out", type=Path, help="output folder (default: reports/progression-mae/<timestamp>/)")
    p.add_argument("--suite", default="progression", help="suite name or .toml (default: progression)")
    p.add_argument("--patients", type=int, help="synthetic cohort size (default: the suite's)")
    p.add_argument("--signal", choices=("growth", "none"), help="synthetic cohort signal (default: the suite's)")
    p.add_argument("--seed", type=int)
    p.add_argument("--baselines", help="comma-separated (default: the suite's)")
    p.add_argument("--tracking-uri", help="MLflow tracking URI ('none' disables)")
    p.add_argument("--profile", choices=("quick", "paper"), default="quick")
    p.add_argument("--device", default="cpu")
    p.set_defaults(func=cmd_progression_mae)


def cmd_progression_mae(args: argparse.Namespace) -> int:
    from datetime import datetime

    from harness.runner import RunOptions, run_suite
    from harness.suite import load_suite

    suite = load_suite(args.suite)
    if args.patients is not None:
        suite.data["patients"] = args.patients
    if args.signal is not None:
        suite.data["signal"] = args.signal
    out = args.out or Path("reports") / "progression-mae" / datetime.now().strftime("%Y%m%d-%H%M%S")
    result = run_suite(suite, RunOptions(
        data=args.data, aux_data=args.aux_data, out=out, tracking_uri=args.tracking_uri, seed=args.seed,
        profile=args.profile, device=args.device, cache_dir=args.cache_dir, progress=not args.no_progress,
        baselines=[b.strip() for b in args.baselines.split(",")] if args.baselines else None,
    ))
    audit = Path(out) / "audit.md"
    if audit.exists():
        print(f"audit: {audit}")
        return 1 if result.failures else 0
    print("audit.md was not written (see the failures above)")
    return 1
