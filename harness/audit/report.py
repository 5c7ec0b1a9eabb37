"""Report rendering: one document model, written as self-contained HTML and Markdown.

Why: a report must open in a browser from a file (no server, no network), so figures
are PNGs drawn with matplotlib's Agg backend and embedded as base64; the Markdown twin
links the same PNGs written beside it, for reading in a repository.
"""

from __future__ import annotations

import base64
import html
import io
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import pandas as pd


@dataclass
class Figure:
    name: str
    png: bytes
    caption: str


@dataclass
class Section:
    title: str
    paragraphs: list[str] = field(default_factory=list)
    tables: list[tuple[str, pd.DataFrame]] = field(default_factory=list)
    figures: list[Figure] = field(default_factory=list)
    flags: list[str] = field(default_factory=list)


@dataclass
class Report:
    title: str
    intro: list[str] = field(default_factory=list)
    sections: list[Section] = field(default_factory=list)

    def write(self, out_dir: Path, stem: str) -> list[Path]:
        """``<stem>.html`` (self-contained), ``<stem>.md`` and its figures under ``figures/``."""
        out_dir.mkdir(parents=True, exist_ok=True)
        fig_dir = out_dir / "figures"
        paths = []
        for s in self.sections:
            for f in s.figures:
                fig_dir.mkdir(exist_ok=True)
                (fig_dir / f"{stem}-{f.name}.png").write_bytes(f.png)
        html_path, md_path = out_dir / f"{stem}.html", out_dir / f"{stem}.md"
        html_path.write_text(to_html(self), encoding="utf-8")
        md_path.write_text(to_markdown(self, stem), encoding="utf-8")
        paths += [html_path, md_path]
        return paths


# --------------------------------------------------------------------------- formatting


def fmt(value: Any) -> str:
    """Numbers to 3 significant decimals, CIs as [lo, hi], None/NaN as '-'."""
    if value is None:
        return "-"
    if isinstance(value, (bool, np.bool_)):
        return "yes" if value else "no"
    if isinstance(value, (tuple, list)) and len(value) == 2:
        if any(v is None or (isinstance(v, float) and math.isnan(v)) for v in value):
            return "-"
        return f"[{fmt(value[0])}, {fmt(value[1])}]"
    if isinstance(value, (float, np.floating)):
        if math.isnan(value):
            return "-"
        return f"{value:.3f}" if abs(value) < 1000 else f"{value:.0f}"
    return str(value)


def _cells(df: pd.DataFrame) -> tuple[list[str], list[list[str]]]:
    return [str(c) for c in df.columns], [[fmt(v) for v in row] for row in df.itertuples(index=False)]


def md_table(df: pd.DataFrame) -> str:
    if df is None or df.empty:
        return "_(none)_"
    head, rows = _cells(df)
    esc = lambda t: t.replace("|", "\\|")  # noqa: E731
    lines = ["| " + " | ".join(map(esc, head)) + " |", "|" + "---|" * len(head)]
    lines += ["| " + " | ".join(map(esc, r)) + " |" for r in rows]
    return "\n".join(lines)


def html_table(df: pd.DataFrame) -> str:
    if df is None or df.empty:
        return "<p><em>(none)</em></p>"
    head, rows = _cells(df)
    th = "".join(f"<th>{html.escape(h)}</th>" for h in head)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in r) + "</tr>" for r in rows)
    return f"<table><thead><tr>{th}</tr></thead><tbody>{body}</tbody></table>"


_CSS = """body{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;color:#222}
table{border-collapse:collapse;margin:.6em 0;font-size:.88em}td,th{border:1px solid #ccc;padding:3px 7px;text-align:left}
th{background:#f2f2f2}.flag{background:#fde8e8;border-left:4px solid #c62828;padding:.4em .8em;margin:.3em 0}
.ok{background:#e8f5e9;border-left:4px solid #2e7d32;padding:.4em .8em}figure{margin:1em 0}img{max-width:100%}
figcaption{font-size:.85em;color:#555}h2{border-bottom:1px solid #ddd;padding-bottom:.2em}"""


def to_html(report: Report) -> str:
    parts = [f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>{html.escape(report.title)}</title>"
             f"<style>{_CSS}</style></head><body><h1>{html.escape(report.title)}</h1>"]
    parts += [f"<p>{html.escape(p)}</p>" for p in report.intro]
    for s in report.sections:
        parts.append(f"<h2>{html.escape(s.title)}</h2>")
        parts += [f"<div class='flag'>FLAG: {html.escape(f)}</div>" for f in s.flags]
        parts += [f"<p>{html.escape(p)}</p>" for p in s.paragraphs]
        for caption, df in s.tables:
            if caption:
                parts.append(f"<p><strong>{html.escape(caption)}</strong></p>")
            parts.append(html_table(df))
        for f in s.figures:
            data = base64.b64encode(f.png).decode("ascii")
            parts.append(f"<figure><img alt='{html.escape(f.caption)}' src='data:image/png;base64,{data}'>"
                         f"<figcaption>{html.escape(f.caption)}</figcaption></figure>")
    parts.append("</body></html>")
    return "\n".join(parts)


def to_markdown(report: Report, stem: str) -> str:
    out = [f"# {report.title}", ""] + [p + "\n" for p in report.intro]
    for s in report.sections:
        out += [f"## {s.title}", ""]
        out += [f"> **FLAG:** {f}\n" for f in s.flags]
        out += [p + "\n" for p in s.paragraphs]
        for caption, df in s.tables:
            if caption:
                out.append(f"**{caption}**\n")
            out += [md_table(df), ""]
        out += [f"![{f.caption}](figures/{stem}-{f.name}.png)\n\n_{f.caption}_\n" for f in s.figures]
    return "\n".join(out)


# --------------------------------------------------------------------------- figures


def _png(fig: Any) -> bytes:
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buf, format="png", dpi=90)
    plt.close(fig)
    return buf.getvalue()


def _plt():
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def bars_with_ci(rows: Sequence[dict], *, group: str, bar: str, value: str = "mean", ci: str = "ci95",
                 ylabel: str = "", title: str = "", hline: float | None = None) -> bytes:
    """Grouped bars (one group per ``group`` value, one bar per ``bar`` value) with CI whiskers."""
    plt = _plt()
    groups = list(dict.fromkeys(r[group] for r in rows))
    bars = list(dict.fromkeys(r[bar] for r in rows))
    fig, ax = plt.subplots(figsize=(max(5.0, 1.6 * len(groups) + 1.2), 3.6))
    width = 0.8 / max(len(bars), 1)
    index = {(r[group], r[bar]): r for r in rows}
    for j, b in enumerate(bars):
        xs, ys, lo, hi = [], [], [], []
        for i, g in enumerate(groups):
            r = index.get((g, b))
            if r is None or r[value] is None or (isinstance(r[value], float) and math.isnan(r[value])):
                continue
            v = float(r[value])
            c = r.get(ci) or (None, None)
            xs.append(i - 0.4 + width * (j + 0.5))
            ys.append(v)
            ok = c[0] is not None and c[1] is not None and not any(isinstance(t, float) and math.isnan(t) for t in c)
            c_lo, c_hi = c
            lo.append(v - float(c_lo) if ok and c_lo is not None else 0.0)
            hi.append(float(c_hi) - v if ok and c_hi is not None else 0.0)
        ax.bar(xs, ys, width, label=str(b), yerr=[np.maximum(lo, 0), np.maximum(hi, 0)], capsize=3)
    if hline is not None:
        ax.axhline(hline, color="k", lw=0.8, ls="--")
    ax.set_xticks(range(len(groups)), [str(g) for g in groups], fontsize=8)
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=7, ncol=2)
    return _png(fig)


def learning_curves(curves: dict[int, pd.DataFrame], title: str) -> bytes:
    """Train and validation loss per epoch, one line pair per fold; best epochs marked."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(5.2, 3.3))
    for i, (fold, h) in enumerate(sorted(curves.items())):
        if "stage" in h and h["stage"].nunique() > 1:
            h = h[h["stage"] == h["stage"].iloc[-1]]
        color = plt.cm.tab10(i % 10)
        ax.plot(h["epoch"], h["train_loss"], color=color, lw=1, alpha=0.8,
                label="train" if i == 0 else None)
        if "val_loss" in h and h["val_loss"].notna().any():
            ax.plot(h["epoch"], h["val_loss"], color=color, lw=1, ls="--", label="validation" if i == 0 else None)
            b = h.loc[h["val_loss"].idxmin()]
            ax.plot([b["epoch"]], [b["val_loss"]], "o", color=color, ms=3)
    ax.set_xlabel("epoch")
    ax.set_ylabel("loss")
    ax.set_yscale("log")
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=7)
    return _png(fig)


def null_histograms(results: Sequence[Any]) -> bytes:
    """Permutation null per protocol with the observed score as a vertical line."""
    plt = _plt()
    fig, axes = plt.subplots(1, max(len(results), 1), figsize=(3.4 * max(len(results), 1), 2.8), squeeze=False)
    for ax, r in zip(axes[0], results):
        ax.hist(r.null, bins=20, color="#90a4ae")
        ax.axvline(r.observed, color="#c62828", lw=2)
        ax.set_title(f"{r.protocol}\np = {r.p_value:.3f}", fontsize=9)
        ax.set_xlabel(r.metric)
    return _png(fig)
