"""Label provenance: pseudo-labels, imputed labels, and labels that follow from others.

Why: a benchmark inherits the weaknesses of its labels. The capstone's stage-2
pseudo-grades come from a grader whose tables show a single predicted class; Valbuena
et al. filled every missing LGG survival at random within 4-7 years, which makes
"long survival" a synonym of "LGG"; a target that follows from another label is learnt
from that label, not from the images.
"""

from __future__ import annotations

from typing import Any

import pandas as pd

#: Agreement above which one label is called predictable from another.
PREDICTABLE_AT = 0.9


def pseudo_label_checks(tables: dict[str, pd.DataFrame]) -> list[dict[str, Any]]:
    """Flag a pseudo-labeller that gives (nearly) every scan one class."""
    out = []
    grades = tables.get("pseudo_grades")
    if grades is not None and len(grades):
        counts = grades["pseudo_grade"].astype(str).value_counts()
        share = float(counts.iloc[0] / counts.sum())
        out.append({
            "label": "pseudo_grade (stage 2)", "n": int(counts.sum()),
            "distribution": ", ".join(f"{k}: {v}" for k, v in counts.items()),
            "flag": share >= 0.95,
            "message": (f"the pseudo-labeller gives {share:.0%} of {counts.sum()} scans the grade "
                        f"{counts.index[0]}" + ("; a single-class labeller cannot tell a grade rise, so the "
                                                "eligibility rule selects on noise" if share >= 0.95 else "")),
        })
    return out


def imputed_label_checks(samples: pd.DataFrame) -> list[dict[str, Any]]:
    """Share of imputed labels, overall and per class (the BraTS LGG survival filling)."""
    if "imputed" not in samples.columns:
        return []
    per_patient = samples.drop_duplicates("patient_id")
    imputed = per_patient["imputed"].astype(bool)
    out = [{
        "label": "target", "n": int(len(per_patient)), "distribution": f"{int(imputed.sum())} imputed",
        "flag": bool(imputed.any()),
        "message": f"{int(imputed.sum())} of {len(per_patient)} patients' labels (or inputs) are imputed",
    }]
    for cls, g in per_patient.groupby(per_patient["target"].astype(str)):
        share = float(g["imputed"].astype(bool).mean())
        if share > 0:
            out.append({"label": f"class {cls}", "n": int(len(g)), "distribution": f"{share:.0%} imputed",
                        "flag": share >= 0.5,
                        "message": f"class {cls!r}: {share:.0%} of its {len(g)} patients carry an imputed value"})
    return out


def predictable_from(views: dict[str, Any]) -> list[dict[str, Any]]:
    """For task variants of one cohort (e.g. grade and survival class): how well each
    target is predicted by the other through the best one-to-one lookup per patient."""
    out = []
    names = [n for n in views if n]
    for a in names:
        for b in names:
            if a == b:
                continue
            sa = views[a].samples.drop_duplicates("patient_id").set_index("patient_id")["target"].astype(str)
            sb = views[b].samples.drop_duplicates("patient_id").set_index("patient_id")["target"].astype(str)
            both = pd.concat([sa.rename("a"), sb.rename("b")], axis=1, join="inner")
            if both.empty:
                continue
            mapping = both.groupby("b")["a"].agg(lambda s: s.value_counts().index[0])
            acc = float((both["b"].map(mapping) == both["a"]).mean())
            base = float(both["a"].value_counts(normalize=True).iloc[0])
            out.append({"label": f"{a} from {b}", "n": int(len(both)), "distribution": f"{acc:.0%} (majority {base:.0%})",
                        "flag": acc >= PREDICTABLE_AT and acc > base,
                        "message": f"{a} is predicted from {b} alone for {acc:.0%} of {len(both)} patients "
                                   f"(majority rate {base:.0%})"})
    return out


def label_provenance(stage_tables: dict[str, pd.DataFrame], samples: pd.DataFrame,
                     views: dict[str, Any]) -> pd.DataFrame:
    rows = pseudo_label_checks(stage_tables) + imputed_label_checks(samples) + predictable_from(views)
    return pd.DataFrame(rows, columns=["label", "n", "distribution", "flag", "message"])
