"""Automatic guides for SVI (Pyro's ``pyro.infer.autoguide`` names): each builds a variational family over a
model's unconstrained latent space from the model alone.

    from inference.autoguide import AutoNormal
    guide = AutoNormal(model)
"""

from inference.autoguide.continuous import (
    AutoContinuous,
    AutoDiagonalNormal,
    AutoLaplaceApproximation,
    AutoLowRankMultivariateNormal,
    AutoMultivariateNormal,
)
from inference.autoguide.flows import AffineAutoregressive, AutoIAFNormal, MADE
from inference.autoguide.guide import AutoDelta, AutoGuide, AutoGuideList, AutoNormal

__all__ = [
    "AffineAutoregressive",
    "AutoContinuous",
    "AutoDelta",
    "AutoDiagonalNormal",
    "AutoGuide",
    "AutoGuideList",
    "AutoIAFNormal",
    "AutoLaplaceApproximation",
    "AutoLowRankMultivariateNormal",
    "AutoMultivariateNormal",
    "AutoNormal",
    "MADE",
]
