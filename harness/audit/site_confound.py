"""Site and target: a confound that holding patients out does not remove.

Why: when the acquiring site (its scanner, protocol, bias field) goes with the label, a
model that reads the scanner reads part of the label. A patient-held-out split does not
stop it, because other patients of the same site sit in training; only holding sites out
does. Measured on the synthetic negative control (docs/learning.md, "The negative control
on a second seed"): labels drawn independently of the tumour, but by chance 11 of the 15
patients of one site grade IV, and a DWT-DCT logistic regression beat chance with
patients held out.

The test runs on patients, not rows (one site and one target per patient), and its
p-value comes from shuffling targets between patients, so it stays valid with the small
counts of a 40-patient cohort where a chi-square table would not.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

#: Below this p-value the report flags the association. A screening level, looser than
#: 0.05 on purpose: a model exploits an association long before a test calls it significant.
FLAG_P = 0.10
N_SHUFFLES = 2000


@dataclass
class SiteAssociation:
    n_patients: int
    sites: list[str]
    statistic: str
    observed: float
    p_value: float
    #: Patients per site and target (classification) or the target's median per site.
    table: pd.DataFrame = field(repr=False)
    #: Cramér's V (classification) or eta squared of the ranks (regression): 0 none, 1 total.
    effect: float = float("nan")

    @property
    def flagged(self) -> bool:
        return self.p_value < FLAG_P

    def sentence(self) -> str:
        what = ("Cramér's V" if self.statistic == "chi2" else "rank eta squared")
        text = (f"{self.n_patients} patients at {len(self.sites)} sites ({', '.join(self.sites)}): site and "
                f"target {'are' if self.flagged else 'are not clearly'} associated ({what} {self.effect:.2f}, "
                f"permutation p = {self.p_value:.3f} over {N_SHUFFLES} shuffles of the targets between patients)")
        if self.flagged:
            text += (". A model that recognises the site (scanner intensities, noise, bias field) can score above "
                     "chance even with patients held out; only a split that holds sites out removes that")
        return text + "."

    def to_dict(self) -> dict[str, Any]:
        return {"n_patients": self.n_patients, "sites": self.sites, "statistic": self.statistic,
                "observed": self.observed, "p_value": self.p_value, "effect": self.effect,
                "flagged": self.flagged, "sentence": self.sentence()}


def patient_sites(samples: pd.DataFrame) -> pd.DataFrame:
    """One row per patient with a known site: its commonest site and its target."""
    if "site" not in samples.columns:
        return pd.DataFrame(columns=["patient_id", "site", "target"])
    rows = samples[["patient_id", "site", "target"]].copy()
    rows["site"] = rows["site"].fillna("").astype(str).str.strip()
    rows = rows[rows["site"] != ""]
    if rows.empty:
        return pd.DataFrame(columns=["patient_id", "site", "target"])
    site = rows.groupby("patient_id")["site"].agg(lambda s: s.value_counts().index[0])
    target = rows.groupby("patient_id")["target"].first()
    return pd.DataFrame({"patient_id": site.index, "site": site.to_numpy(),
                         "target": target.loc[site.index].to_numpy()})


def _chi2(site_codes: np.ndarray, target_codes: np.ndarray, n_sites: int, n_targets: int) -> float:
    table = np.zeros((n_sites, n_targets))
    np.add.at(table, (site_codes, target_codes), 1.0)
    expected = table.sum(1, keepdims=True) * table.sum(0, keepdims=True) / table.sum()
    with np.errstate(divide="ignore", invalid="ignore"):
        return float(np.nansum(np.where(expected > 0, (table - expected) ** 2 / expected, 0.0)))


def _rank_eta2(site_codes: np.ndarray, ranks: np.ndarray, n_sites: int) -> float:
    """Share of the ranks' variance between sites (Kruskal-Wallis H scaled to [0, 1])."""
    total = float(((ranks - ranks.mean()) ** 2).sum())
    if total == 0:
        return 0.0
    between = sum(float((site_codes == k).sum()) * (float(ranks[site_codes == k].mean()) - float(ranks.mean())) ** 2
                  for k in range(n_sites) if (site_codes == k).any())
    return between / total


def site_association(samples: pd.DataFrame, *, regression: bool = False, seed: int = 0
                     ) -> SiteAssociation | None:
    """Site x target on patients; None when fewer than two sites (or targets) are known."""
    patients = patient_sites(samples)
    sites = sorted(patients["site"].unique().tolist())
    if len(sites) < 2 or patients["target"].nunique() < 2:
        return None
    site_codes = pd.Categorical(patients["site"], categories=sites).codes.astype(int)
    rng = np.random.default_rng(seed)
    if regression:
        y = pd.to_numeric(patients["target"], errors="coerce").to_numpy(dtype=float)
        keep = ~np.isnan(y)
        site_codes, y = site_codes[keep], y[keep]
        ranks = pd.Series(y).rank().to_numpy()
        observed = _rank_eta2(site_codes, ranks, len(sites))
        null = np.array([_rank_eta2(site_codes, rng.permutation(ranks), len(sites)) for _ in range(N_SHUFFLES)])
        table = pd.DataFrame({"site": sites, "patients": np.bincount(site_codes, minlength=len(sites)),
                              "target median": [float(np.median(y[site_codes == k])) if (site_codes == k).any()
                                                else float("nan") for k in range(len(sites))]})
        effect, statistic = observed, "rank_eta2"
    else:
        targets = sorted(patients["target"].astype(str).unique().tolist())
        target_codes = pd.Categorical(patients["target"].astype(str), categories=targets).codes.astype(int)
        observed = _chi2(site_codes, target_codes, len(sites), len(targets))
        null = np.array([_chi2(site_codes, rng.permutation(target_codes), len(sites), len(targets))
                         for _ in range(N_SHUFFLES)])
        table = pd.crosstab(pd.Series(patients["site"].to_numpy(), name="site"),
                            pd.Series(patients["target"].astype(str).to_numpy(), name="target")).reset_index()
        table.columns.name = None
        n = len(patients)
        effect = float(np.sqrt(observed / (n * max(1, min(len(sites), len(targets)) - 1))))
        statistic = "chi2"
    p_value = float((1 + np.sum(null >= observed - 1e-12)) / (1 + len(null)))
    return SiteAssociation(len(site_codes), sites, statistic, float(observed), p_value, table, effect)
