"""Segmentation: a 3D U-Net under the BraTS 2023 lesion-wise evaluation.

Reproduces, at CPU scale, the framework of Ren et al. (BraTS 2023): pre-processing,
loss, post-processing and transfer-learning ablations, plus a standalone evaluator
(``python -m harness seg-eval``). Modules, one job each:

- labels: label conventions (BraTS 2020 ET=4, BraTS 2023 ET=3), regions, thresholds
- surface: HD95 between two masks
- lesionwise: BraTS 2023 lesion-wise and legacy Dice / HD95
- evaluate: score folders of NIfTI predictions against references (seg-eval)
- postprocess: dust removal and hole filling (cc3d)
- losses, preprocess, data, training, transfer: the model side
- task, experiment, report: the ``segmentation`` task plugin of the runner (ablation arms
  as ``unet3d`` parameter variants), its fits and scores, its HTML / Markdown report
"""

from harness.segmentation.labels import REGIONS
from harness.segmentation.lesionwise import RegionScore, score_regions

__all__ = ["REGIONS", "RegionScore", "score_regions"]
