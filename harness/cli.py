"""Command line: ``python -m harness {run,data,list,ui,check-split,...}``."""

from __future__ import annotations

import argparse
import importlib
import os
import signal
import subprocess
import sys
from pathlib import Path

from harness.argtypes import positive_int
from harness.errors import HarnessError
from harness.paths import default_cache_dir

SYNTH_FLAVOURS = ("rembrandt", "btp", "brats20")
#: Modules that add subcommands: each has ``add_commands(subparsers, common_parent)`` and
#: sets ``func`` on its parsers, so a capability brings its own CLI without editing this file.
PLUGIN_COMMAND_MODULES: tuple[str, ...] = ("harness.segmentation.cli", "harness.explain.cli", "harness.audit.cli",
                                            "harness.checksplit.cli")


def _csv_list(text: str) -> list[str]:
    return [t.strip() for t in text.split(",") if t.strip()]


def _add_common_options(parser: argparse.ArgumentParser, default: object) -> None:
    parser.add_argument(
        "--cache-dir", type=Path, default=default,
        help="where generated cohorts, decoded arrays, features, manifests and finished folds "
        "are cached (default: ./.harness-cache or $HARNESS_CACHE_DIR)",
    )
    parser.add_argument("--no-progress", action="store_true",
                        default=False if default is not argparse.SUPPRESS else argparse.SUPPRESS,
                        help="hide progress bars")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m harness",
        description="Benchmark and audit harness for brain-tumour MRI models: runs baselines "
        "under patient-level splits next to the published leaky protocols, logs to MLflow.",
    )
    _add_common_options(parser, default=default_cache_dir())
    # The same options after the subcommand (`run --suite x --no-progress`) override.
    common = argparse.ArgumentParser(add_help=False)
    _add_common_options(common, default=argparse.SUPPRESS)
    sub = parser.add_subparsers(dest="command", required=True)

    run = sub.add_parser("run", parents=[common], help="run a suite: every baseline under every protocol")
    run.add_argument("--suite", required=True, help="suite name (see `list`) or path to a .toml file")
    run.add_argument("--data", type=Path, help="dataset folder (default: the suite's synthetic cohort)")
    run.add_argument("--baselines", type=_csv_list, help="comma-separated baselines (default: the suite's)")
    run.add_argument("--protocols", type=_csv_list, help="comma-separated split protocols (default: the suite's)")
    run.add_argument("--out", type=Path, help="output folder (default: reports/<suite>/<timestamp>/)")
    run.add_argument("--tracking-uri", help="MLflow tracking URI (default: sqlite:///mlflow/mlflow.db; 'none' disables)")
    run.add_argument("--seed", type=int, help="seed for splits, models and bootstrap (default: the suite's)")
    run.add_argument("--profile", choices=("quick", "paper"), default="quick",
                     help="quick: reduced CPU settings (default); paper: the published settings")
    run.add_argument("--split-manifest", type=Path, help="use this split manifest (JSON) instead of creating one")
    run.add_argument("--device", default="cpu", help="torch device for neural baselines: cpu, cuda, cuda:1 ...")
    run.add_argument("--aux-data", type=Path,
                     help="auxiliary cohort for a pipeline's first stage, e.g. the REMBRANDT-style "
                     "grader data of the progression suite (default: the suite's synthetic one)")
    run.add_argument("--weights", action="append", default=[], metavar="[BASELINE=]FILE",
                     help="local pretrained weights for torch baselines (repeatable); FILE alone "
                     "applies to every one; nothing is downloaded, without it backbones start random")
    run.add_argument("--trust-model-file", action="store_true",
                     help="let --weights files be full pickles; unpickling runs any code the file holds, "
                     "so only for files you trust (default: safetensors, TorchScript or a state dict only)")
    run.add_argument("--jobs", type=positive_int, default=None, metavar="N",
                     help="fold jobs (and series decodes) at once; 1 runs folds one by one in this "
                     "process (default: one per core, at most 8)")
    run.add_argument("--threads-per-job", type=positive_int, default=1, metavar="T",
                     help="torch/BLAS threads of each fold job (default 1: results are then the "
                     "same whatever --jobs is; more threads change float sums slightly)")
    run.add_argument("--executor", choices=("process", "ray"), default="process",
                     help="process: a pool of --jobs local processes (default); ray: Ray tasks "
                     "(pip install '.[ray]'), on a new local instance or --ray-address")
    run.add_argument("--ray-address", metavar="ADDR",
                     help="address of a running Ray cluster, e.g. 10.0.0.5:6379 or 'auto' "
                     "(with --executor ray; default: start a local instance)")

    data = sub.add_parser("data", parents=[common], help="generate or check datasets")
    data_sub = data.add_subparsers(dest="data_command", required=True)
    synth = data_sub.add_parser("synth", parents=[common], help="write a known-truth synthetic cohort in a real layout")
    synth.add_argument("--cohort", choices=SYNTH_FLAVOURS, required=True)
    synth.add_argument("--out", type=Path, required=True, help="folder to create (must be empty or absent)")
    synth.add_argument("--patients", type=int, help="number of patients (default: the flavour's)")
    synth.add_argument("--seed", type=int, default=0)
    synth.add_argument("--signal", choices=("growth", "none"), default="growth",
                       help="growth: labels follow the imaged tumour (positive control); "
                       "none: labels drawn independently (negative control)")
    synth.add_argument("--grid-mm", type=float, default=2.0, help="voxel size of the working grid in mm")
    synth.add_argument("--scale", choices=("rembrandt",),
                       help="full-size preset: rembrandt = the real collection's size, 130 patients x "
                       "4 series x 212 slices (110,240 DICOM files; --patients and --slices-per-series "
                       "override it)")
    synth.add_argument("--slices-per-series", type=int, metavar="N",
                       help="rembrandt only: write each series as N thinner axial slices over the same "
                       "extent (default: one slice per grid plane)")
    ingest = data_sub.add_parser("ingest", parents=[common], help="index a dataset and decode every series "
                                 "into the cache with N worker processes")
    ingest.add_argument("dir", type=Path)
    ingest.add_argument("--jobs", type=positive_int, default=None, metavar="N",
                        help="decode worker processes (default: one per core; 1 decodes in this process)")
    ingest.add_argument("--layout", choices=SYNTH_FLAVOURS, help="skip detection")
    ingest.add_argument("--json", type=Path, metavar="FILE", help="also write the counts, timings and "
                        "problems as JSON")
    ingest.set_defaults(func=cmd_ingest)
    check = data_sub.add_parser("check", parents=[common], help="recognise a dataset's layout and list what is in it and what is broken")
    check.add_argument("dir", type=Path)
    check.add_argument("--layout", choices=SYNTH_FLAVOURS, help="skip detection")
    check.add_argument("--no-decode", action="store_true", help="index only; do not decode pixel data")

    sub.add_parser("list", parents=[common], help="list suites, baselines, split protocols and cohort flavours").set_defaults(func=cmd_list)

    ui = sub.add_parser("ui", parents=[common], help="start the MLflow UI for the local store")
    ui.add_argument("--tracking-uri", help="store to show (default: sqlite:///mlflow/mlflow.db)")
    ui.add_argument("--host", default="127.0.0.1", help="bind address (default 127.0.0.1: this machine only)")
    ui.add_argument("--port", type=int, default=5000)
    ui.set_defaults(func=cmd_ui)
    run.set_defaults(func=cmd_run)
    synth.set_defaults(func=cmd_synth)
    check.set_defaults(func=cmd_check)
    for module_name in PLUGIN_COMMAND_MODULES:
        importlib.import_module(module_name).add_commands(sub, common)
    return parser


def cmd_run(args: argparse.Namespace) -> int:
    from harness.runner import RunOptions, run_suite
    from harness.suite import load_suite

    suite = load_suite(args.suite)
    result = run_suite(
        suite,
        RunOptions(
            data=args.data, baselines=args.baselines, protocols=args.protocols, out=args.out,
            tracking_uri=args.tracking_uri, seed=args.seed, profile=args.profile,
            split_manifest=args.split_manifest, device=args.device, cache_dir=args.cache_dir,
            progress=not args.no_progress, aux_data=args.aux_data,
            weights=_weights_option(args.weights), jobs=_jobs_option(args), executor=args.executor,
            threads_per_job=args.threads_per_job, ray_address=args.ray_address,
            trust_model_files=args.trust_model_file,
        ),
    )
    return 1 if result.failures else 0


def _jobs_option(args: argparse.Namespace) -> int:
    """``--jobs`` or one per core; with Ray and no --jobs, 0 lets the cluster's CPUs decide."""
    from harness.parallel import default_jobs

    if args.ray_address and args.executor != "ray":
        raise HarnessError("--ray-address needs --executor ray")
    if args.jobs is not None:
        return args.jobs
    return 0 if args.executor == "ray" else default_jobs()


def _weights_option(values: list[str]) -> dict[str, Path]:
    """``--weights FILE`` (all baselines) or ``--weights densenet121=FILE``."""
    out: dict[str, Path] = {}
    for value in values:
        name, sep, path = value.partition("=")
        if not sep:
            name, path = "*", value
        if not Path(path).is_file():
            raise HarnessError(f"--weights {value}: no such file {path}")
        out[name.strip()] = Path(path)
    return out


def cmd_synth(args: argparse.Namespace) -> int:
    from harness.synth import generate_cohort

    if args.out.exists() and any(args.out.iterdir()):
        raise HarnessError(f"{args.out}: folder exists and is not empty")
    generate_cohort(
        args.cohort, args.out, n_patients=args.patients, seed=args.seed,
        signal=args.signal, grid_mm=args.grid_mm, progress=not args.no_progress,
        scale=args.scale, slices_per_series=args.slices_per_series,
    )
    print(f"wrote synthetic {args.cohort} cohort to {args.out}")
    return 0


def cmd_ingest(args: argparse.Namespace) -> int:
    """``data ingest DIR --jobs N``: decode every series into the cache the run reads."""
    from harness.data.cache import VolumeStore
    from harness.data.ingest import format_ingest_report, ingest_dataset, ingest_report_json

    jobs = args.jobs
    if jobs is None:
        from harness.parallel.threads import usable_cores

        jobs = usable_cores()
    with VolumeStore(args.cache_dir / "arrays", progress=not args.no_progress, workers=jobs) as store:
        report = ingest_dataset(args.dir, store, layout=args.layout)
    print(format_ingest_report(report))
    if args.json:
        args.json.write_text(ingest_report_json(report))
    if report.error:
        print(f"error: {report.error}", file=sys.stderr)
    return 0 if report.ok else 1


def cmd_check(args: argparse.Namespace) -> int:
    from harness.data.cache import VolumeStore
    from harness.data.check import check_dataset, format_check_report

    store = VolumeStore(args.cache_dir / "arrays", progress=not args.no_progress)
    report = check_dataset(args.dir, layout=args.layout, decode=not args.no_decode, store=store)
    print(format_check_report(report))
    if report.error:
        print(f"error: {report.error}", file=sys.stderr)
    return 0 if report.usable else 1


def cmd_list(args: argparse.Namespace) -> int:
    from baselines import list_baselines
    from harness.splits import PROTOCOLS
    from harness.suite import available_suites, load_suite

    print("suites:")
    for name in available_suites():
        suite = load_suite(name)
        print(f"  {name:<14} task={suite.task:<12} {suite.description}")
    print("baselines:")
    for name, cls in list_baselines().items():
        doc = (cls.__doc__ or "").strip().splitlines()[0] if cls.__doc__ else ""
        print(f"  {name:<20} tasks={','.join(sorted(cls.tasks)):<28} {doc}")
    print("split protocols:")
    for name, proto in PROTOCOLS.items():
        print(f"  {name:<22} {'LEAKY (published protocol, reproduced on purpose)' if proto.leaky else proto.held_out}")
    print("synthetic cohort flavours (data synth --cohort):")
    print("  rembrandt   TCIA REMBRANDT DICOM layout, one time point, grades II/III/IV")
    print("  btp         TCIA Brain-Tumor-Progression DICOM layout, two dates per patient")
    print("  brats20     BraTS 2020 NIfTI layout with name_mapping.csv and survival_info.csv")
    return 0


def cmd_ui(args: argparse.Namespace) -> int:
    """Run ``mlflow ui`` in its own process group and stop the whole group on exit."""
    from harness.tracking import default_artifact_root, default_tracking_uri, experiment_pages

    uri = args.tracking_uri or default_tracking_uri()
    cmd = [sys.executable, "-m", "mlflow", "ui", "--backend-store-uri", uri,
           "--host", args.host, "--port", str(args.port)]
    artifacts = default_artifact_root(uri)
    if artifacts:
        cmd += ["--default-artifact-root", artifacts]
    base = f"http://{args.host}:{args.port}"
    print(f"MLflow UI for {uri} on {base} (Ctrl-C stops it)")
    for name, url in experiment_pages(uri, base):
        print(f"  {name}: {url}")
    proc = subprocess.Popen(cmd, start_new_session=True)
    # SIGTERM to us must also stop the UI's worker processes: turn it into SystemExit.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    try:
        return proc.wait()
    except KeyboardInterrupt:
        return 0
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)


def _raise_interrupted(signum: int, frame: object) -> None:
    from harness.errors import RunInterrupted, defer_interrupt, interrupts_are_deferred, note_interrupt

    # A second signal during the cleanup ends the process at once (the OS default).
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, signal.SIG_DFL)
    note_interrupt(signum)
    if interrupts_are_deferred():  # inside a tracking write: raised when it ends
        defer_interrupt(signum)
        return
    raise RunInterrupted(signum)


def install_signal_handlers() -> None:
    """SIGTERM and SIGINT raise :class:`RunInterrupted` in the main thread, so a run stops
    at once and its cleanup (MLflow runs marked KILLED, worker processes ended) happens."""
    import threading

    if threading.current_thread() is threading.main_thread():
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, _raise_interrupted)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    previous = {sig: signal.getsignal(sig) for sig in (signal.SIGTERM, signal.SIGINT)}
    from harness.errors import clear_interrupts

    clear_interrupts()
    install_signal_handlers()
    try:
        return int(args.func(args))
    except HarnessError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as exc:
        signum = getattr(exc, "signum", signal.SIGINT)
        print(f"interrupted ({signal.Signals(signum).name}): finished folds are kept in the cache; "
              "run the same command again to resume", file=sys.stderr)
        return 128 + int(signum)
    finally:
        for sig, handler in previous.items():
            if handler is not None:
                signal.signal(sig, handler)
