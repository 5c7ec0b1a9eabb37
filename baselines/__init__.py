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

__all__ = ["Baseline", "FitContext", "get_baseline", "list_baselines", "register_baseline"]
