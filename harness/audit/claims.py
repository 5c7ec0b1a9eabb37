"""The published claims the harness audits, each with the paper's own protocol.

One record per claim: which suite reproduces it, the model the paper used, the number it
reports, the split it reports it under (the paper protocol) and the patient-held-out
protocols it is checked against. ``python -m harness audit --list`` prints them.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from harness.errors import HarnessError


@dataclass(frozen=True)
class Claim:
    name: str
    paper: str
    #: What the paper says, in its words (number, metric, split, data).
    statement: str
    suite: str
    #: The reproducing baseline; its result under ``paper_protocol`` is the reproduction.
    baseline: str
    metric: str
    reported: float
    paper_protocol: str
    honest_protocols: tuple[str, ...]
    trivial_baselines: tuple[str, ...]
    #: Survival-suite claims score one of several targets.
    target: str | None = None
    lower_is_better: bool = False
    #: Claims with a dedicated audit (their own stages and report) name its command.
    dedicated: str | None = None
    #: Score the claim's predictions on real (not imputed) labels too: the samples'
    #: ``imputed`` column (Valbuena's randomly filled LGG survival).
    real_labels: bool = False
    #: The paper chose its configuration on the test score: report the suite audit's
    #: selection study (test-set choice against nested patient-level CV) beside the verdict.
    test_selection: bool = False
    #: An honest model known to read the signal the claim's target leaves in the images: the
    #: audit runs it under the honest protocols, so a low honest score of the paper's pipeline
    #: can be told apart from a harness that cannot read the target at all.
    positive_control: str | None = None
    #: Other suites that run the same claim on data of another shape, by regime name
    #: (``audit CLAIM --regime NAME``): e.g. the paper's own eligible-patient count and rows.
    regimes: dict[str, str] = field(default_factory=dict)
    notes: tuple[str, ...] = field(default_factory=tuple)

    def summary_row(self) -> dict[str, str]:
        return {"claim": self.name, "paper": self.paper, "reported": f"{self.metric} {self.reported:g}",
                "paper protocol": self.paper_protocol, "baseline": self.baseline, "suite": self.suite}


CAPSTONE = "Capstone: CNN-LSTM grading and progression on REMBRANDT / Brain-Tumor-Progression"
FASIHI = "Fasihi & Mikhael (2021), DWT-DCT LSTM grade classifier, as cited by the capstone paper"
VALBUENA = "Valbuena et al.: transfer learning for glioma grade and survival on BraTS 2020"

#: The Valbuena claims are reproduced with efficientnet_lite0: the one backbone of the paper's families
#: (EfficientNet) with real ImageNet weights offline; a random-weight backbone is not the paper's pipeline.
CLAIMS: dict[str, Claim] = {c.name: c for c in (
    Claim("capstone-grading-accuracy", CAPSTONE,
          "ResNet-18 slice grader: 84.7% best validation accuracy, random 80/10/10 split over images, REMBRANDT",
          suite="grading", baseline="resnet18_grader", metric="accuracy", reported=0.847,
          paper_protocol="row_random", honest_protocols=("patient_kfold",),
          trivial_baselines=("majority", "patient_memorizer"), positive_control="enhancement_probe"),
    Claim("fasihi-dwtdct-accuracy", FASIHI,
          "DWT-DCT features into an LSTM: 86.98% grade accuracy (random split over images)",
          suite="grading", baseline="dwtdct_lstm", metric="accuracy", reported=0.8698,
          paper_protocol="row_random", honest_protocols=("patient_kfold",),
          trivial_baselines=("majority", "patient_memorizer"), positive_control="enhancement_probe"),
    Claim("progression-mae", CAPSTONE,
          "BiLSTM on DWT-DCT series vectors regressing MonthDif: MAE 0.02 months, 48/12 row split, "
          "Brain-Tumor-Progression", suite="progression", baseline="cnn_lstm", metric="mae", reported=0.02,
          paper_protocol="row_random", honest_protocols=("leave_one_patient_out", "patient_kfold"),
          trivial_baselines=("mean", "patient_memorizer"), lower_is_better=True,
          dedicated="audit progression-mae", regimes={"paper": "progression-paper"},
          positive_control="perfusion_ridge"),
    Claim("valbuena-grade-f1", VALBUENA,
          "Transfer backbones: grade (HGG/LGG) F1 0.97 (accuracy 97%), 80/20 split over images (a patient's "
          "4 modality images are separate samples), BraTS 2020",
          suite="survival", baseline="efficientnet_lite0", metric="macro_f1", reported=0.97, target="grade",
          paper_protocol="image_level", honest_protocols=("patient_kfold",),
          trivial_baselines=("majority", "patient_memorizer", "clinical_only"), positive_control="enhancement_probe",
          notes=("clinical_only reads only the clinical inputs the paper fused with the image (age, extent of "
                 "resection). BraTS 2020 gives them for HGG patients only, so an empty resection field points to "
                 "LGG under any split: a fused model's honest score may come from the table, not the image.",)),
    Claim("valbuena-survival-accuracy", VALBUENA,
          "Survival class (< 1 year / 1-5 years / > 5 years): 65% accuracy, same split; LGG survival labels "
          "randomly imputed, configuration chosen on the test score",
          suite="survival", baseline="efficientnet_lite0", metric="accuracy", reported=0.65, target="survival_class",
          paper_protocol="image_level", honest_protocols=("patient_kfold",),
          trivial_baselines=("majority", "patient_memorizer", "clinical_only"), real_labels=True,
          test_selection=True,
          notes=("The LGG survival labels are imputed at random (see the label-provenance section of the "
                 "suite's leakage report).",)),
)}


def get_claim(name: str) -> Claim:
    try:
        return CLAIMS[name]
    except KeyError:
        raise HarnessError(f"unknown claim {name!r}; known: {', '.join(CLAIMS)} (or 'all')") from None


def format_claims() -> str:
    """The ``audit --list`` table."""
    rows = [c.summary_row() for c in CLAIMS.values()]
    cols = list(rows[0])
    width = {c: max(len(c), *(len(r[c]) for r in rows)) for c in cols}
    lines = ["  ".join(c.ljust(width[c]) for c in cols)]
    lines += ["  ".join(r[c].ljust(width[c]) for c in cols) for r in rows]
    lines += ["", *(f"{c.name}: {c.statement}" for c in CLAIMS.values())]
    lines += [f"{c.name} --regime {r}: runs suite {s!r}" for c in CLAIMS.values() for r, s in c.regimes.items()]
    return "\n".join(lines)
