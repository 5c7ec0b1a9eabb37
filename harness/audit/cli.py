"""``python -m harness audit``: the published claims, each audited in one command.

``audit --list`` shows every claim; ``audit CLAIM`` reruns its pipeline under the paper's
protocol and with patients held out and writes ``audit.json`` / ``.md`` / ``.html``;
``audit all`` runs every claim and writes ``reports/reference/index.md`` and ``.html``.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from harness.argtypes import positive_int
from harness.audit.claims import CLAIMS


def add_commands(subparsers, common_parent) -> None:
    p = subparsers.add_parser(
        "audit", parents=[common_parent], help="audits of published claims (audit --list, audit CLAIM, audit all)",
        description="Rerun a published claim's pipeline under the paper's protocol and with patients held out, "
                    "beside the trivial controls, and write a verdict (survives / does not survive / inconclusive).")
    p.add_argument("claim", nargs="?", choices=[*CLAIMS, "all"], metavar="CLAIM",
                   help=f"one of: {', '.join(CLAIMS)}, or 'all'")
    p.add_argument("--list", action="store_true", help="list the claims with paper, number, metric and protocol")
    p.add_argument("--data", type=Path, help="a real download for the claim's suite (default: its synthetic cohort)")
    p.add_argument("--aux-data", type=Path, help="REMBRANDT-style cohort for the progression stage-1 grader")
    p.add_argument("--out", type=Path, help="output folder (default: reports/audit/CLAIM, or reports/reference "
                                            "for 'all')")
    p.add_argument("--patients", type=int, help="synthetic cohort size (default: the suite's)")
    p.add_argument("--signal", choices=("growth", "none"), help="synthetic cohort signal (default: the suite's)")
    p.add_argument("--seed", type=int)
    p.add_argument("--baselines", help="comma-separated (default: the claim's baseline and trivial controls)")
    p.add_argument("--tracking-uri", help="MLflow tracking URI ('none' disables)")
    p.add_argument("--regime", help="run the claim on data of another shape, e.g. 'paper' for progression-mae: "
                                    "the paper's 6 eligible patients x 10 rows (default: the claim's suite)")
    p.add_argument("--profile", choices=("quick", "paper"), default="quick")
    p.add_argument("--device", default="cpu")
    p.add_argument("--jobs", type=positive_int, default=1, metavar="N",
                   help="fold jobs at once, as for run (default 1: one by one; the metrics do not depend on it)")
    p.set_defaults(func=cmd_audit)


def cmd_audit(args: argparse.Namespace) -> int:
    from harness.audit.claim_audit import ClaimOptions, run_all, run_claim
    from harness.audit.claims import format_claims, get_claim
    from harness.errors import HarnessError

    if args.list or args.claim is None:
        print(format_claims())
        return 0 if args.list else 2
    opts = ClaimOptions(
        data=args.data, aux_data=args.aux_data, signal=args.signal, patients=args.patients, seed=args.seed,
        profile=args.profile, out=args.out, tracking_uri=args.tracking_uri, cache_dir=args.cache_dir,
        device=args.device, progress=not args.no_progress, regime=args.regime, jobs=args.jobs,
        baselines=[b.strip() for b in args.baselines.split(",")] if args.baselines else None)
    if args.claim == "all":
        if args.regime is not None:
            raise HarnessError("audit all runs every claim in each of its regimes; --regime belongs to one claim")
        if args.data is not None:
            raise HarnessError("audit all runs several suites on their own cohorts; --data belongs to one claim")
        records, paths = run_all(opts)
    else:
        record, paths = run_claim(get_claim(args.claim), opts)
        records = [record]
    for r in records:
        print(f"{r['claim']}: {r['verdict']} (reproduced: {r['reproduced']}) - {'; '.join(r['reasons'])}")
    for path in paths:
        if path.suffix in (".md", ".json") and path.name.startswith(("audit", "index")):
            print(f"  {path}")
    return 1 if any(r["failures"] for r in records) else 0
