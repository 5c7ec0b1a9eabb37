"""``python -m harness explain``: the explainability report from the command line.

Wired in through ``harness.cli.PLUGIN_COMMAND_MODULES`` (``add_commands``).
"""

from __future__ import annotations

import argparse
from pathlib import Path


def _csv_list(text: str) -> list[str]:
    return [t.strip() for t in text.split(",") if t.strip()]


def add_commands(subparsers: argparse._SubParsersAction, common_parent: argparse.ArgumentParser) -> None:
    from harness.explain.names import METHOD_NAMES, MODEL_NAMES

    p = subparsers.add_parser(
        "explain", parents=[common_parent],
        help="explainability report: 16 Captum methods on multi-modal inputs, scored against known truth")
    p.add_argument("--suite", default="explain", help="suite with [data] and [explain] tables (default: explain)")
    p.add_argument("--baseline", help=f"model to explain (default: the suite's): {', '.join(MODEL_NAMES)}, or a "
                                      "registered torch baseline (resnet18_grader, a timm backbone, dwtdct_lstm, "
                                      "unet3d), fitted on the cohort's training patients")
    p.add_argument("--modalities", type=_csv_list,
                   help="modalities a registered single-modality baseline is fitted on and explained for "
                        "(default: all four)")
    p.add_argument("--profile", help="a registered baseline's profile (default: quick)")
    p.add_argument("--model-file", type=Path,
                   help="a model to explain instead of training one: TorchScript, or a state dict (.pt/.pth, "
                        "read with weights_only) or .safetensors file for the architecture named by --baseline "
                        "(default multimodal_cnn)")
    p.add_argument("--trust-model-file", action="store_true",
                   help="also accept a full pickle of an nn.Module as --model-file; unpickling runs any code "
                        "the file holds, so only for files you trust")
    p.add_argument("--methods", type=_csv_list,
                   help=f"comma-separated methods (default: all): {', '.join(METHOD_NAMES)}")
    p.add_argument("--cases", type=int, help="held-out cases to explain (default: the suite's)")
    p.add_argument("--dims", type=int, choices=(2, 3), help="2D slices or 3D volumes (default: the model's)")
    p.add_argument("--size", type=int, help="in-plane (2D) or cubic (3D) input size in pixels")
    p.add_argument("--data", type=Path, help="a brats20-layout folder (default: the known-truth cohort)")
    p.add_argument("--out", type=Path, help="output folder (default: reports/<suite>-explain/<timestamp>/)")
    p.add_argument("--tracking-uri", help="MLflow tracking URI ('none' disables)")
    p.add_argument("--seed", type=int)
    p.set_defaults(func=cmd_explain)


def cmd_explain(args: argparse.Namespace) -> int:
    from harness.explain.run import ExplainOptions, run_explain

    res = run_explain(ExplainOptions(
        suite=args.suite, data=args.data, baseline=args.baseline, model_file=args.model_file,
        trust_model_file=args.trust_model_file,
        methods=args.methods, cases=args.cases, modalities=args.modalities, profile=args.profile, dims=args.dims, size=args.size, out=args.out,
        tracking_uri=args.tracking_uri, seed=args.seed, cache_dir=args.cache_dir, progress=not args.no_progress))
    ranked = sorted(res.importance, key=lambda m: res.importance[m], reverse=True)
    print("modality importance (mean |Shapley|): " + ", ".join(f"{m} {res.importance[m]:.3f}" for m in ranked))
    if res.known_modality:
        print(f"known truth: {res.known_modality} carries the class; ranked first: {ranked[0] == res.known_modality}")
    print(f"{'method':<22} {'msfi':>6} {'energy':>7} {'del_auc':>8} {'rand_sim':>8} {'seconds':>8}")
    for name, row in res.summary.items():
        print(f"{name:<22} {row['msfi']:>6.3f} {row['energy']:>7.3f} {row['deletion_auc']:>8.3f} "
              f"{row['randomisation_similarity']:>8.3f} {row['seconds']:>8.3f}")
    print(f"report: {res.html}")
    return 0
