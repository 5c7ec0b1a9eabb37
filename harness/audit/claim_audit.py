"""``python -m harness audit CLAIM``: rerun a claim's pipeline under the paper's protocol and
with patients held out, beside the trivial controls, and write the verdict.

Each claim runs its suite restricted to the claim's baseline, its trivial controls and
its protocols (``harness.audit.claims``); the verdict comes from the run's
``summary.json`` by the rules of ``harness.audit.verdict``. ``audit all`` runs every
claim and writes an index.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from harness.audit import report as R
from harness.audit.claims import CLAIMS, Claim
from harness.audit.verdict import RULES, audit_record
from harness.console import log
from harness.errors import HarnessError
from harness.guard import TRIVIAL_CONTROLS
from harness.paths import default_cache_dir


@dataclass
class ClaimOptions:
    data: Path | None = None
    aux_data: Path | None = None
    signal: str | None = None
    patients: int | None = None
    seed: int | None = None
    profile: str = "quick"
    out: Path | None = None
    tracking_uri: str | None = None
    cache_dir: Path | None = None
    device: str = "cpu"
    progress: bool = True
    baselines: list[str] | None = None
    #: None: the claim's own suite; else one of ``Claim.regimes`` (e.g. "paper").
    regime: str | None = None
    #: Fold jobs at once (``run --jobs``); 1 fits them one by one in this process. The metrics
    #: do not depend on it (each job keeps one thread).
    jobs: int = 1


def claim_suite(claim: Claim, regime: str | None) -> str:
    """The suite that runs the claim in ``regime`` (refused when the claim has no such regime)."""
    if regime is None:
        return claim.suite
    if regime not in claim.regimes:
        known = ", ".join(claim.regimes) or "none"
        raise HarnessError(f"claim {claim.name!r} has no regime {regime!r}; its regimes: {known}")
    return claim.regimes[regime]


def regenerate_command(claim: Claim, opts: ClaimOptions) -> str:
    parts = ["python -m harness audit", claim.name]
    if opts.regime is not None:
        parts.append(f"--regime {opts.regime}")
    for flag, value in (("--signal", opts.signal), ("--patients", opts.patients), ("--seed", opts.seed)):
        if value is not None:
            parts.append(f"{flag} {value}")
    if opts.profile != "quick":
        parts.append(f"--profile {opts.profile}")
    return " ".join(parts)


def run_claim(claim: Claim, opts: ClaimOptions) -> tuple[dict[str, Any], list[Path]]:
    """Run the claim's suite and write ``audit.json`` (and ``audit.md``/``.html``) in ``opts.out``."""
    from harness.runner import RunOptions, run_suite
    from harness.suite import load_suite

    suite = load_suite(claim_suite(claim, opts.regime))
    if opts.patients is not None:
        suite.data["patients"] = opts.patients
    if opts.signal is not None:
        suite.data["signal"] = opts.signal
    if claim.target is not None and "targets" in suite.task_options:
        suite.task_options["targets"] = [claim.target]
    out = Path(opts.out or Path("reports") / "audit" / (claim.name + (f"-{opts.regime}-regime" if opts.regime else "")))
    # A dedicated audit (progression) reads every baseline of its suite; the others need only theirs.
    baselines = opts.baselines or (None if claim.dedicated else
                                   list(dict.fromkeys([claim.baseline, *claim.trivial_baselines,
                                                       *([claim.positive_control] if claim.positive_control else [])])))
    protocols = [claim.paper_protocol, *claim.honest_protocols]
    log(f"audit {claim.name}: {suite.name} suite, {', '.join(baselines or ['its baselines'])} under "
        f"{', '.join(protocols)}")
    result = run_suite(suite, RunOptions(
        data=opts.data, aux_data=opts.aux_data, out=out, tracking_uri=opts.tracking_uri, seed=opts.seed,
        profile=opts.profile, device=opts.device, cache_dir=opts.cache_dir or default_cache_dir(), progress=opts.progress,
        baselines=baselines, protocols=[p for p in protocols if p in suite.protocols], jobs=opts.jobs,
    ))
    record = audit_record(claim, result.summary)
    record["regenerate"] = regenerate_command(claim, opts)
    record["regime"] = opts.regime or "suite"
    record["suite"] = suite.name
    seed = int(result.summary.get("seed", 0) or 0)
    view = _claim_view(claim, suite, opts) if claim.real_labels or claim.test_selection else None
    if claim.real_labels and view is not None:
        record["label_provenance"] = _real_label_scores(claim, view, out, protocols, seed)
    if claim.test_selection and view is not None:
        from harness.audit.backbone_selection import BACKBONES, backbone_selection

        record["test_set_selection"] = _selection_study(out, claim.target or "")
        # The grid's features at the input size the suite gives the claim's backbone (the paper's 240 px).
        size = suite.baseline_params.get(claim.baseline, {}).get("image_size") if claim.baseline in BACKBONES else None
        record["test_set_selection_backbones"] = backbone_selection(
            view, metric=claim.metric, work_dir=(opts.cache_dir or default_cache_dir()) / "audit-backbones",
            seed=seed, device=opts.device, image_size=size)
    record["failures"] = list(result.failures)
    paths = [out / "audit.json"]
    out.mkdir(parents=True, exist_ok=True)
    paths[0].write_text(json.dumps(record, indent=2, default=str) + "\n", encoding="utf-8")
    if claim.dedicated is None:  # the progression claim's own stages write its audit.md/.html
        paths += claim_report(claim, record).write(out, "audit")
    return record, paths


def _claim_view(claim: Claim, suite: Any, opts: ClaimOptions) -> Any:
    """The claim's task view, rebuilt from the run's cache (so its ``imputed`` flags are the
    ones the run used)."""
    from harness.runner import RunOptions, prepare_data

    prepared = prepare_data(suite, RunOptions(data=opts.data, cache_dir=opts.cache_dir or default_cache_dir(),
                                              progress=False, seed=opts.seed))
    return prepared.views.get(claim.target or "", prepared.task_data)


def _real_label_scores(claim: Claim, view: Any, out: Path, protocols: list[str], seed: int) -> list[dict[str, Any]]:
    """The claim's metric on real labels only, per protocol."""
    from harness.audit.real_labels import label_scope_section

    runs = [(claim.baseline, p) for p in protocols]
    return label_scope_section(out, view.samples, runs, claim.metric, view.classes, variant=claim.target or "",
                               seed=seed)


def _selection_study(out: Path, variant: str) -> dict[str, Any] | None:
    """The suite audit's selection study for the claim's target (``reports/audit.json``), or
    None when the run wrote none."""
    path = out / "reports" / "audit.json"
    if not path.is_file():
        return None
    variants = json.loads(path.read_text(encoding="utf-8")).get("variants", {})
    study = (variants.get(variant) or {}).get("selection")
    return None if study is None else {**study, "source": "reports/leakage.md, section 'Selection on the test set'"}


def _selection_section(record: dict[str, Any]) -> R.Section | None:
    study = record.get("test_set_selection")
    if not study:
        return None
    s = R.Section("Test-set selection")
    s.paragraphs = [
        f"Choosing the configuration on the test score, as the paper did, {_choice_sentence(study)}",
        "The grid is the suite audit's surrogate model (ridge penalty x train share on the run's features); "
        f"the full grid is in {study['source']}. The next section runs the same study over ImageNet backbones."]
    return s


def _choice_sentence(study: dict[str, Any]) -> str:
    """What the test-set choice picks and reports, what nested CV gives, and the optimism."""
    chosen = ", ".join(f"{k}={v:g}" if isinstance(v, (int, float)) else f"{k}={v}"
                       for k, v in study["selected"].items())
    return (f"picks {chosen} and reports {R.fmt(study['selected_score'])}; nested patient-level cross-validation "
            f"over the same grid gives {R.fmt(study['nested_score'])}. Optimism of selecting on the test set: "
            f"{study['optimism']:+.3f}.")


def _backbone_selection_section(record: dict[str, Any]) -> R.Section | None:
    study = record.get("test_set_selection_backbones")
    if not study:
        return None
    s = R.Section("Test-set selection over backbones")
    s.paragraphs = [
        f"The grid: frozen ImageNet backbones ({', '.join(study['backbones'])}"
        + (f", {study['image_size']} px inputs" if study.get("image_size") else "")
        + ") x ridge penalty on their pooled features x train share. Choosing on the mean test score of "
        "random patient splits, as the paper did, "
        + _choice_sentence(study)]
    if study.get("skipped"):
        s.paragraphs.append(f"Left out (no real weights on this machine): {', '.join(study['skipped'])}.")
    grid = pd.DataFrame(study["grid"])
    from harness.audit.inflation import LOWER_IS_BETTER

    top = grid.sort_values("test_score", ascending=study["metric"] in LOWER_IS_BETTER).head(10)
    s.tables.append(("the ten best grid points by test score", top.round(4)))
    return s


def _provenance_section(record: dict[str, Any]) -> R.Section | None:
    entries = record.get("label_provenance")
    if not entries:
        return None
    s = R.Section("Label provenance: real labels only")
    rows = []
    for e in entries:
        real, every = e["real_labels"], e["all_labels"]
        rows.append({"baseline": e["baseline"], "protocol": e["protocol"], "test rows": e["n_test_rows"],
                     "imputed labels": R.fmt(e["imputed_share"]),
                     f"{e['metric']} (all labels)": f"{R.fmt(every['mean'])} {R.fmt(tuple(every['ci95']))}",
                     f"{e['metric']} (real labels)": (f"{R.fmt(real['mean'])} {R.fmt(tuple(real['ci95']))}"
                                                      if real["mean"] is not None else "n/a (none real)"),
                     "real-label patients": real["n_patients"]})
    s.paragraphs = ["The share of test labels that were imputed, and the same predictions scored on the "
                    "test rows whose labels were observed (95% patient-bootstrap CI). A score that holds only "
                    "with the imputed labels was learnt from the imputation rule, not from the images."]
    s.tables.append(("real labels", pd.DataFrame(rows)))
    return s


def _control_role(baseline: str) -> str:
    """'trivial' for the predictors that ignore the inputs (majority, mean); 'control' for the
    other comparison models of ``Claim.trivial_baselines`` (the memoriser, the clinical table
    alone), which do read something and are not trivial."""
    return "trivial" if baseline in TRIVIAL_CONTROLS else "control"


def _rows(record: dict[str, Any]) -> pd.DataFrame:
    rows = []
    for role, entries in (("paper protocol", [record["paper_protocol"]]), ("honest", record["honest"]),
                          ("trivial", record["trivial"])):
        for e in entries:
            lo, hi = e["ci95"]
            rows.append({"role": _control_role(e["baseline"]) if role == "trivial" else role,
                         "baseline": e["baseline"], "protocol": e["protocol"],
                         "mean": R.fmt(e["mean"]), "95% CI": R.fmt((lo, hi)) if lo is not None else "n/a",
                         "did not learn": "yes" if e["did_not_learn"] else ""})
    return pd.DataFrame(rows)


def claim_report(claim: Claim, record: dict[str, Any]) -> R.Report:
    rep = R.Report(f"Audit: {claim.name}")
    ds = record.get("dataset", {})
    rep.intro += [
        f"Paper: {claim.paper}.", f"Claim: {claim.statement}.",
        f"Data: {ds.get('name', 'n/a')} ({ds.get('n_patients', '?')} patients, {ds.get('n_samples', '?')} "
        f"samples; fingerprint {str(ds.get('fingerprint', ''))[:16]}); seed {record.get('seed')}.",
        f"Regenerate: `{record['regenerate']}`.",
    ]
    s = R.Section("Verdict")
    s.paragraphs = [f"**{record['verdict']}** (reproduced under the paper's protocol: "
                    f"{'n/a' if record['reproduced'] is None else 'yes' if record['reproduced'] else 'no'})",
                    *record["reasons"], *claim.notes,
                    *([record["positive_control"]["text"]] if record.get("positive_control") else [])]
    rep.sections.append(s)
    s = R.Section(f"{claim.metric} under each protocol (95% patient-bootstrap CI)")
    s.tables.append(("results", _rows(record)))
    rep.sections.append(s)
    for extra in (_provenance_section(record), _selection_section(record), _backbone_selection_section(record)):
        if extra is not None:
            rep.sections.append(extra)
    s = R.Section("The rules behind the verdict")
    s.paragraphs = list(RULES)
    rep.sections.append(s)
    return rep


def _positive_control_cell(record: dict[str, Any]) -> str:
    pc = record.get("positive_control")
    if not pc:
        return ""
    return "; ".join(f"{pc['baseline']} {h['protocol']} {R.fmt(h['mean'])} {R.fmt(tuple(h['ci95']))}"
                     + (" (did not learn)" if h["did_not_learn"] else "" if h["beats_trivial"] else
                        " (not above trivial)") for h in pc["results"])


def write_index(records: list[dict[str, Any]], out_dir: Path) -> list[Path]:
    """``index.md`` and ``index.html``: claim -> reported -> paper protocol -> honest -> verdict."""
    rows = []
    for r in records:
        p = r["paper_protocol"]
        honest = "; ".join(f"{h['protocol']} {R.fmt(h['mean'])} {R.fmt(tuple(h['ci95']))}" for h in r["honest"])
        name = r["claim"] + (f" ({r['regime']} regime)" if r.get("regime", "suite") != "suite" else "")
        rows.append({"claim": name, "reported": f"{r['reported']['metric']} {r['reported']['value']:g} "
                                                      f"({r['reported']['protocol']})",
                     "paper protocol": f"{p['baseline']} {R.fmt(p['mean'])} {R.fmt(tuple(p['ci95']))}",
                     "honest": honest, "positive control (honest)": _positive_control_cell(r),
                     "verdict": r["verdict"], "regenerate": f"`{r.get('regenerate', '')}`"})
    rep = R.Report("Audits of the published claims")
    rep.intro.append("Each claim rerun under the paper's protocol and with patients held out; "
                     "`python -m harness audit all` regenerates this index and every audit below it.")
    s = R.Section("Claims")
    s.tables.append(("claims", pd.DataFrame(rows)))
    rep.sections.append(s)
    s = R.Section("The rules behind the verdicts")
    s.paragraphs = list(RULES)
    rep.sections.append(s)
    return rep.write(out_dir, "index")


def run_all(opts: ClaimOptions) -> tuple[list[dict[str, Any]], list[Path]]:
    root = Path(opts.out or Path("reports") / "reference")
    records, paths = [], []
    for claim in CLAIMS.values():
        record, written = run_claim(claim, ClaimOptions(**{**opts.__dict__, "out": root / claim.name}))
        records.append(record)
        paths += written
        for regime in claim.regimes:
            record, written = run_claim(claim, ClaimOptions(**{**opts.__dict__, "regime": regime,
                                                               "out": root / claim.name / f"{regime}-regime"}))
            records.append(record)
            paths += written
    return records, paths + write_index(records, root)
