"""Hand-crafted image features shared by the baselines."""

from harness.features.dwtdct import DwtDctConfig, dwtdct_features, dwtdct_features_loop

__all__ = ["DwtDctConfig", "dwtdct_features", "dwtdct_features_loop"]
