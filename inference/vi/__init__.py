"""Stochastic variational inference (Pyro's names): ``SVI``, the ELBO estimators and optimizers.

    from inference.vi import SVI, Trace_ELBO, Adam
    from inference.autoguide import AutoNormal
    svi = SVI(model, AutoNormal(model), Adam({"lr": 0.01}), Trace_ELBO())
"""

from inference.vi.elbo import ELBO, RenyiELBO, Trace_ELBO, TraceGraph_ELBO, TraceMeanField_ELBO
from inference.vi.jit import JitTrace_ELBO, JitTraceMeanField_ELBO
from inference.vi.optim import (
    SGD,
    Adam,
    AdamW,
    ClippedAdam,
    CosineAnnealingLR,
    ExponentialLR,
    LRScheduler,
    MultiStepLR,
    PyroOptim,
    RMSprop,
    StepLR,
)
from inference.vi.svi import SVI, SVIRunResult
from inference.vi.traceenum_elbo import TraceEnum_ELBO

__all__ = [
    "ELBO",
    "SGD",
    "SVI",
    "Adam",
    "AdamW",
    "ClippedAdam",
    "CosineAnnealingLR",
    "ExponentialLR",
    "JitTrace_ELBO",
    "JitTraceMeanField_ELBO",
    "LRScheduler",
    "MultiStepLR",
    "PyroOptim",
    "RMSprop",
    "RenyiELBO",
    "SVIRunResult",
    "StepLR",
    "TraceEnum_ELBO",
    "TraceGraph_ELBO",
    "TraceMeanField_ELBO",
    "Trace_ELBO",
]
