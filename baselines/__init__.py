"""Registered baselines. Each module registers its classes on import.

Like timm's model registry: ``get_baseline("majority")`` finds a class by name;
``"package.module:ClassName"`` imports a user's own baseline.
"""

from baselines.registry import (
    Baseline,
    FitContext,
    get_baseline,
    list_baselines,
    register_baseline,
)

# Importing the modules registers their baselines.
from baselines import controls as _controls  # noqa: F401,E402
from baselines import logreg_dwtdct as _logreg_dwtdct  # noqa: F401,E402
from baselines import perfusion_ridge as _perfusion_ridge  # noqa: F401,E402

# Torch baselines: registered only where torch is installed (the harness runs without it).
try:  # noqa: SIM105
    import torch as _torch  # noqa: F401
except ImportError:  # pragma: no cover
    pass
else:
    from baselines import cnn_lstm as _cnn_lstm  # noqa: F401,E402
    from baselines import dwtdct_lstm as _dwtdct_lstm  # noqa: F401,E402
    from baselines import resnet18_grader as _resnet18_grader  # noqa: F401,E402
    from baselines import transfer as _transfer  # noqa: F401,E402
    from baselines import unet3d as _unet3d  # noqa: F401,E402

__all__ = ["Baseline", "FitContext", "get_baseline", "list_baselines", "register_baseline"]
