"""The explain report: a self-contained HTML page (figures as base64 PNG) and Markdown.

Per case a grid (rows: the input modalities, then one row per method; columns: the
modalities) with the tumour outline; then the score table, the modality importance
and the timings. Matplotlib's Agg backend only: no display needed.
"""

from __future__ import annotations

import base64
import html
import io
import math
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from harness.explain.engine import SCORE_COLUMNS, CaseExplanation, label_of  # noqa: E402
from harness.explain.postprocess import CMAP  # noqa: E402
from harness.explain.sanity import adebayo_verdict, sanity_table  # noqa: E402


def _png(fig: Any) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=72, bbox_inches="tight")
    plt.close(fig)
    return base64.b64encode(buf.getvalue()).decode("ascii")


def _plane(arr: np.ndarray, z: int | None) -> np.ndarray:
    """A 2D view: the array itself, or axial slice z of a 3D one."""
    return arr if arr.ndim == 2 else arr[z]


def _key_slice(case: CaseExplanation) -> int | None:
    """For 3D cases, the axial slice with the largest tumour area (as Jin et al. show)."""
    if case.x.ndim == 3:
        return None
    if case.mask is not None and case.mask.any():
        return int(np.argmax(case.mask.reshape(case.mask.shape[0], -1).sum(axis=1)))
    return case.x.shape[1] // 2


def case_figure(case: CaseExplanation, modalities: list[str], methods: list[str], classes: list[str]) -> str:
    """The grid of one case as base64 PNG."""
    z = _key_slice(case)
    rows = 1 + len(methods)
    cols = len(modalities)
    fig, axes = plt.subplots(rows, cols, figsize=(1.25 * cols + 1.6, 1.25 * rows), squeeze=False)
    mask = _plane(case.mask, z) if case.mask is not None else None
    for j, mod in enumerate(modalities):
        ax = axes[0, j]
        ax.imshow(_plane(case.x[j], z), cmap="gray")
        ax.set_title(f"{mod}\nShapley {case.shapley[j]:+.2f}", fontsize=7)
    for i, name in enumerate(methods, start=1):
        for j in range(cols):
            ax = axes[i, j]
            if name in case.display:
                ax.imshow(_plane(case.display[name][j], z), cmap=CMAP, vmin=-1, vmax=1)
            else:
                ax.text(0.5, 0.5, "failed" if name in case.errors else "n/a", ha="center", va="center", fontsize=7)
        axes[i, 0].set_ylabel(label_of(name), fontsize=7, rotation=0, ha="right", va="center")
    for ax in axes.ravel():
        if mask is not None and mask.any():
            ax.contour(mask, levels=[0.5], colors="lime", linewidths=0.6)
        ax.set_xticks([])
        ax.set_yticks([])
    fig.suptitle(f"{case.patient_id}: truth {classes[case.label]}, predicted {classes[case.pred]} "
                 f"(p={case.prob:.2f})", fontsize=8)
    return _png(fig)


def timing_figure(summary: dict[str, dict[str, float]]) -> str:
    names = list(summary)
    secs = [summary[n]["seconds"] for n in names]
    fig, ax = plt.subplots(figsize=(6, 0.25 * len(names) + 0.8))
    ax.barh([label_of(n) for n in names][::-1], secs[::-1], color="tab:gray")
    ax.set_xscale("log")
    ax.set_xlabel("seconds per case (log)")
    return _png(fig)


def deletion_figure(cases: list[CaseExplanation], methods: list[str]) -> str:
    fig, ax = plt.subplots(figsize=(6, 3.5))
    for name in methods:
        curves = [c.deletion[name] for c in cases if name in c.deletion]
        if curves:
            mean = np.mean(curves, axis=0)
            ax.plot(np.linspace(0, 1, len(mean)), mean, label=label_of(name), lw=1)
    ax.set_xlabel("share of inputs deleted (highest attribution first)")
    ax.set_ylabel("target probability")
    ax.legend(fontsize=6, ncol=2)
    return _png(fig)


def _fmt(v: float) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "–"
    return f"{v:.3g}"


def score_rows(summary: dict[str, dict[str, float]]) -> list[list[str]]:
    return [[label_of(n)] + [_fmt(row[c]) for c in SCORE_COLUMNS] for n, row in summary.items()]


def _html_table(header: list[str], rows: list[list[str]]) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in r) + "</tr>" for r in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _md_table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines)


CSS = """body{font-family:sans-serif;max-width:1200px;margin:2em auto;color:#222}
table{border-collapse:collapse;font-size:13px;margin:1em 0}td,th{border:1px solid #ccc;padding:3px 7px;text-align:right}
td:first-child,th:first-child{text-align:left}th{background:#f2f2f2}.note{color:#555;font-size:13px}
img{max-width:100%}.case{display:inline-block;vertical-align:top;margin:0 1em 1em 0}"""


def write_report(out_dir: Path, *, title: str, meta: dict[str, Any], cases: list[CaseExplanation],
                 methods: list[str], summary: dict[str, dict[str, float]], modalities: list[str],
                 classes: list[str], importance: np.ndarray, known_modality: str | None,
                 skipped: dict[str, str], problems: list[str]) -> tuple[Path, Path]:
    """Write report.html and report.md into out_dir; returns their paths."""
    out_dir.mkdir(parents=True, exist_ok=True)
    header = ["method"] + list(SCORE_COLUMNS)
    rows = score_rows(summary)
    order = np.argsort(-importance, kind="stable")
    mi_header = ["modality", "mean |Shapley|", "rank"]
    mi_rows = [[modalities[i] + (" (carries the class)" if modalities[i] == known_modality else ""),
                f"{importance[i]:.3f}", str(r + 1)] for r, i in enumerate(order)]
    verdict = ""
    if known_modality:
        first = modalities[int(order[0])]
        ok = first == known_modality
        verdict = (f"Known truth: only {known_modality} carries the class. Modality importance ranks "
                   f"{first} first: {'PASS' if ok else 'FAIL'}.")
    time_rows = [[label_of(n), _fmt(summary[n]["seconds"])] for n in methods]
    meta_rows = [[str(k), str(v)] for k, v in meta.items()]
    notes = [f"{c}: {d}" for c, d in SCORE_COLUMNS.items()]
    failures = sorted({f"{n}: {e}" for c in cases for n, e in c.errors.items()})
    sanity = sanity_table(cases, methods)
    sanity_header = ["method", "cases", "final similarity (mean)", "95% CI (cases)", "minus gradient [95% CI]"]
    sanity_rows = [[label_of(r.method), str(r.n_cases), _fmt(r.mean), f"[{_fmt(r.ci95[0])}, {_fmt(r.ci95[1])}]",
                    "" if r.minus_gradient is None or r.minus_gradient_ci95 is None else
                    f"{r.minus_gradient:+.3f} [{r.minus_gradient_ci95[0]:+.3f}, {r.minus_gradient_ci95[1]:+.3f}]"]
                   for r in sanity]
    sanity_text = adebayo_verdict(sanity) if sanity else "The randomisation check was not run."

    parts = [f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>",
             f"<style>{CSS}</style></head><body><h1>{html.escape(title)}</h1>",
             _html_table(["setting", "value"], meta_rows),
             "<h2>Modality importance (exact Shapley values over modality subsets)</h2>",
             f"<p>{html.escape(verdict)}</p>" if verdict else "",
             _html_table(mi_header, mi_rows),
             "<h2>Scores per method (mean over cases)</h2>", _html_table(header, rows),
             "<ul class='note'>" + "".join(f"<li>{html.escape(n)}</li>" for n in notes) + "</ul>",
             f"<p class='note'>Deletion area with a random ranking (chance): "
             f"{_fmt(float(np.nanmean([c.random_deletion_auc for c in cases])))}</p>",
             "<h2>Sanity check: cascading randomisation of the weights (Adebayo et al. 2018)</h2>",
             f"<p>{html.escape(sanity_text)}</p>", _html_table(sanity_header, sanity_rows),
             "<h2>Deletion curves</h2>", f"<img src='data:image/png;base64,{deletion_figure(cases, methods)}'>",
             "<h2>Compute time per method</h2>", _html_table(["method", "seconds per case"], time_rows),
             f"<img src='data:image/png;base64,{timing_figure(summary)}'>",
             "<h2>Heatmaps per case</h2><p class='note'>Red: evidence for the class explained (the true one), "
             "blue: against; scaled per case by the 99th percentile of |attribution| to [-1, 1]; green: tumour.</p>"]
    for case in cases:
        parts.append(f"<div class='case'><img src='data:image/png;base64,"
                     f"{case_figure(case, modalities, methods, classes)}'></div>")
    if skipped or failures or problems:
        parts.append("<h2>Not run / problems</h2><ul>")
        parts += [f"<li>{html.escape(n)}: {html.escape(r)}</li>" for n, r in skipped.items()]
        parts += [f"<li>{html.escape(f)}</li>" for f in failures]
        parts += [f"<li>{html.escape(p)}</li>" for p in problems]
        parts.append("</ul>")
    parts.append("</body></html>")
    html_path = out_dir / "report.html"
    html_path.write_text("\n".join(parts), encoding="utf-8")

    md = [f"# {title}", "", _md_table(["setting", "value"], meta_rows), "",
          "## Modality importance (exact Shapley)", "", verdict, "", _md_table(mi_header, mi_rows), "",
          "## Scores per method (mean over cases)", "", _md_table(header, rows), "",
          *[f"- {n}" for n in notes], "",
          "## Sanity check: cascading randomisation of the weights (Adebayo et al. 2018)", "", sanity_text, "",
          _md_table(sanity_header, sanity_rows), "", "## Compute time", "", _md_table(["method", "seconds per case"], time_rows)]
    if skipped or failures:
        md += ["", "## Not run / problems", ""] + [f"- {n}: {r}" for n, r in skipped.items()] + [f"- {f}" for f in failures]
    md_path = out_dir / "report.md"
    md_path.write_text("\n".join(md) + "\n", encoding="utf-8")
    return html_path, md_path
