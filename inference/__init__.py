"""inference: the shared numerical engine (optimizers, implicit differentiation, MCMC, VI, diagnostics)."""

from inference.errors import ConvergenceError, InferenceError, NonFiniteError

__all__ = ["ConvergenceError", "InferenceError", "NonFiniteError"]
