"""The exceptions raised by ``inference``: numerical failures, with what went wrong, where, and what to do."""


class InferenceError(Exception):
    """Base class of every error raised by ``inference``."""


class NonFiniteError(InferenceError, FloatingPointError):
    """An objective, gradient or iterate became NaN or infinite (the message names the step)."""


class ConvergenceError(InferenceError):
    """An iterative solver stopped before reaching its tolerance.

    Attributes:
        residual: the final residual (same norm as the tolerance it was compared with).
        n_iter: the number of iterations (function evaluations) spent.
    """

    def __init__(self, message: str, residual: float, n_iter: int):
        super().__init__(message)
        self.residual = residual
        self.n_iter = n_iter
