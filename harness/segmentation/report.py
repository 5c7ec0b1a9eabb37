"""The segmentation report: ablation tables with CIs and example slices, HTML + Markdown.

Self-contained: figures are PNGs drawn with matplotlib's Agg backend and embedded as
base64, so the HTML can be mailed or attached to an MLflow run as one file.
"""

from __future__ import annotations

import base64
import html
import io
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from harness.segmentation.postprocess import remove_dust

TABLES: tuple[tuple[str, str], ...] = (
    ("preprocessing", "Pre-processing (Ren et al. Table 1)"),
    ("loss", "Loss functions (Table 2)"),
    ("postprocessing", "Post-processing (Table 4)"),
    ("transfer", "Transfer learning to a second, coarser and noisier site (Table 5)"),
)
COLUMNS: tuple[tuple[str, str], ...] = (
    ("lesionwise_dice_mean", "Lesion-wise Dice"), ("lesionwise_hd95_mean", "Lesion-wise HD95"),
    ("legacy_dice_mean", "Legacy Dice"), ("legacy_hd95_mean", "Legacy HD95"),
    ("lesionwise_dice_ET", "LW Dice ET"), ("lesionwise_dice_TC", "LW Dice TC"), ("lesionwise_dice_WT", "LW Dice WT"),
    # Patients with a scored ET lesion only: there an empty ET map scores 0 (see experiment.PRESENT_METRICS).
    ("lesionwise_dice_ET_present", "LW Dice ET, patients with ET"),
)
_COLOURS = {1: (0.9, 0.1, 0.1), 2: (0.1, 0.8, 0.1), 3: (1.0, 0.9, 0.0)}


def collect_examples(fold_cases: Mapping[int, Sequence[Any]], fold_labels: dict[int, dict[str, np.ndarray]],
                     settings: Any, n: int = 3) -> list[dict[str, Any]]:
    """The axial slice with most tumour for ``n`` test patients: FLAIR, truth, prediction."""
    out: list[dict[str, Any]] = []
    for k in sorted(fold_labels):
        for case in fold_cases[k]:
            if len(out) >= n:
                return out
            gt = case.labels
            if not gt.any():
                continue
            z = int(np.argmax((gt > 0).sum(axis=(1, 2))))
            pred = remove_dust(fold_labels[k][case.patient_id], settings.max_dust)
            out.append({"patient_id": case.patient_id, "fold": k, "slice": z, "flair": case.image[3][z],
                        "truth": gt[z], "pred": pred[z]})
    return out


def _overlay(ax: Any, image: np.ndarray, labels: np.ndarray, title: str) -> None:
    ax.imshow(image, cmap="gray", origin="lower")
    rgba = np.zeros((*labels.shape, 4))
    for value, colour in _COLOURS.items():
        rgba[labels == value] = (*colour, 0.55)
    ax.imshow(rgba, origin="lower", interpolation="nearest")
    ax.set_title(title, fontsize=8)
    ax.axis("off")


def examples_png(examples: list[dict[str, Any]]) -> bytes | None:
    if not examples:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(len(examples), 2, figsize=(5, 2.5 * len(examples)), squeeze=False)
    for row, ex in zip(axes, examples):
        _overlay(row[0], ex["flair"], ex["truth"], f"{ex['patient_id']} z={ex['slice']}: ground truth")
        _overlay(row[1], ex["flair"], ex["pred"], f"prediction (fold {ex['fold']})")
    fig.text(0.5, 0.005, "red NCR, green ED, yellow ET", ha="center", fontsize=8)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90)
    plt.close(fig)
    return buf.getvalue()


def _cell(entry: dict | None, digits: int) -> str:
    if entry is None or entry["mean"] is None:
        return "-"
    lo, hi = entry["ci95"]
    ci = f" [{lo:.{digits}f}, {hi:.{digits}f}]" if lo is not None and hi is not None else ""
    return f"{entry['mean']:.{digits}f}{ci}"


def table_rows(summary: dict[str, Any], table: str, arms: Sequence[Any]) -> tuple[list[str], list[list[str]]]:
    index = {(r["baseline"], r["metric"]): r for r in summary["results"]}
    header = ["arm"] + [label for _, label in COLUMNS] + ["patients"]
    rows = []
    for arm in arms:
        if arm.table != table:
            continue
        b = f"unet3d/{arm.name}"
        if (b, COLUMNS[0][0]) not in index:
            continue
        cells = [_cell(index.get((b, m)), 1 if "hd95" in m else 3) for m, _ in COLUMNS]
        rows.append([arm.label] + cells + [str(index[(b, COLUMNS[0][0])]["n_patients"])])
    return header, rows


def write_report(summary: dict[str, Any], arms: Sequence[Any], examples: list[dict[str, Any]],
                 out_dir: Path) -> list[Path]:
    """report.md and report.html under ``out_dir``; returns their paths."""
    ds = summary["dataset"]
    intro = (f"Suite `{summary['suite']}` on {ds['name']} ({ds['n_patients']} patients), patient-level k-fold. "
             "Means over folds with 95% patient-bootstrap CIs; HD95 in mm (374 = missed lesion or false positive). "
             "Lesion-wise scores follow the BraTS 2023 evaluation; legacy scores are whole-volume.")
    md = ["# Segmentation suite: Ren et al. (BraTS 2023) ablations at CPU scale", "", intro, ""]
    body = [f"<h1>Segmentation suite: Ren et al. (BraTS 2023) ablations at CPU scale</h1><p>{html.escape(intro)}</p>"]
    for table, title in TABLES:
        header, rows = table_rows(summary, table, arms)
        if not rows:
            continue
        md += [f"## {title}", "", "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        md += ["| " + " | ".join(r) + " |" for r in rows] + [""]
        body.append(f"<h2>{html.escape(title)}</h2><table><tr>"
                    + "".join(f"<th>{html.escape(h)}</th>" for h in header) + "</tr>"
                    + "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in r) + "</tr>" for r in rows)
                    + "</table>")
    if summary.get("failures"):
        md += ["## Failures", ""] + [f"- {f}" for f in summary["failures"]] + [""]
        body.append("<h2>Failures</h2><ul>" + "".join(f"<li>{html.escape(f)}</li>" for f in summary["failures"])
                    + "</ul>")
    png = examples_png(examples)
    if png is not None:
        (out_dir / "examples.png").write_bytes(png)
        md += ["## Example slices (default arm, post-processed)", "", "![examples](examples.png)", ""]
        body.append("<h2>Example slices (default arm, post-processed)</h2>"
                    f"<img alt='examples' src='data:image/png;base64,{base64.b64encode(png).decode()}'/>")
    md += [f"Run time: {summary['seconds']} s."]
    body.append(f"<p>Run time: {summary['seconds']} s.</p>")
    style = ("<style>body{font-family:sans-serif;max-width:1100px;margin:auto}table{border-collapse:collapse}"
             "td,th{border:1px solid #ccc;padding:3px 6px;font-size:13px}</style>")
    md_path, html_path = out_dir / "report.md", out_dir / "report.html"
    md_path.write_text("\n".join(md) + "\n")
    html_path.write_text(f"<!doctype html><html><head><meta charset='utf-8'><title>segmentation report</title>"
                         f"{style}</head><body>{''.join(body)}</body></html>\n")
    return [md_path, html_path]
