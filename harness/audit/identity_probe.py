"""Identity probe: can the patient be recognised from the features a baseline uses?

Why: if a nearest-neighbour lookup names the patient of a held-out *row* far above
chance, a row-level split hands the model the patient's training target, whatever the
task. The probe measures that, against the chance rate of guessing the most frequent
patient, with rows of each patient split across folds (the row-level situation).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd


@dataclass
class IdentityProbe:
    accuracy: float
    chance: float
    n_patients: int
    n_rows: int
    features: str

    @property
    def lift(self) -> float:
        return self.accuracy / self.chance if self.chance > 0 else float("nan")

    def sentence(self) -> str:
        return (f"A 1-nearest-neighbour probe on {self.features} names the patient of a held-out row "
                f"{self.accuracy:.0%} of the time ({self.n_rows} rows, {self.n_patients} patients; chance "
                f"{self.chance:.0%}, {self.lift:.1f}x chance).")


def identity_probe(x: np.ndarray, patients: np.ndarray, *, features: str = "features",
                   n_splits: int = 5, seed: int = 0, standardize: bool = True) -> IdentityProbe:
    """Cross-validated 1-NN accuracy at predicting ``patients`` from ``x``, standardised
    unless ``standardize`` is false (features already on one scale, such as mask
    occupancies, where scaling would weight a border voxel that varies in one row of
    hundreds as much as the outline itself)."""
    from sklearn.model_selection import StratifiedKFold, cross_val_predict
    from sklearn.neighbors import KNeighborsClassifier
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    patients = np.asarray(patients).astype(str)
    counts = pd.Series(patients).value_counts()
    usable = np.isin(patients, counts[counts >= 2].index)
    x, patients = np.asarray(x)[usable], patients[usable]
    n_pat = len(set(patients))
    if n_pat < 2:
        return IdentityProbe(float("nan"), float("nan"), n_pat, len(patients), features)
    k = int(min(n_splits, pd.Series(patients).value_counts().min()))
    cv = StratifiedKFold(n_splits=max(k, 2), shuffle=True, random_state=seed)
    model = make_pipeline(StandardScaler(), KNeighborsClassifier(1)) if standardize else KNeighborsClassifier(1)
    pred = cross_val_predict(model, x, patients, cv=cv)
    chance = float(pd.Series(patients).value_counts(normalize=True).iloc[0])
    return IdentityProbe(float(np.mean(pred == patients)), chance, n_pat, len(patients), features)
