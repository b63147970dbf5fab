"""Constraints: the supports of distributions and parameters.

Everything in :mod:`torch.distributions.constraints` is re-exported under its usual name; this module adds
the constraints Pyro and NumPyro users expect that torch lacks: ``integer``, ``less_than_eq``,
``ordered_vector``, ``positive_ordered_vector`` and ``unit_lower_cholesky``. ``biject_to`` in
:mod:`ppl.transforms` maps unconstrained real space onto each continuous one.
"""

from torch.distributions.constraints import *  # noqa: F403
from torch.distributions.constraints import Constraint, __all__ as _torch_constraints, independent, positive


class _Integer(Constraint):
    """All integers (stored in a float or integer tensor)."""

    is_discrete = True

    def check(self, value):
        return value % 1 == 0


class _LessThanEq(Constraint):
    """Reals less than or equal to ``upper_bound`` (a number or a tensor broadcasting with the value)."""

    def __init__(self, upper_bound):
        self.upper_bound = upper_bound
        super().__init__()

    def check(self, value):
        return value <= self.upper_bound

    def __repr__(self):
        return f"{type(self).__name__[1:]}(upper_bound={self.upper_bound})"


class _OrderedVector(Constraint):
    """Real vectors, shape ``(..., n)``, strictly increasing along the last dimension."""

    event_dim = 1

    def check(self, value):
        if value.dim() == 0:
            raise ValueError(f"ordered_vector needs at least one dimension, got a scalar {value}.")
        return (value[..., 1:] > value[..., :-1]).all(dim=-1)


class _PositiveOrderedVector(_OrderedVector):
    """Positive real vectors, shape ``(..., n)``, strictly increasing along the last dimension."""

    def check(self, value):
        return super().check(value) & independent(positive, 1).check(value)


class _UnitLowerCholesky(Constraint):
    """Lower-triangular matrices, shape ``(..., n, n)``, with ones on the diagonal (Pyro's
    ``unit_lower_cholesky``)."""

    event_dim = 2

    def check(self, value):
        lower = (value.tril() == value).flatten(-2).all(-1)
        return lower & (value.diagonal(dim1=-2, dim2=-1) == 1).all(-1)


integer = _Integer()
less_than_eq = _LessThanEq
ordered_vector = _OrderedVector()
positive_ordered_vector = _PositiveOrderedVector()
unit_lower_cholesky = _UnitLowerCholesky()

__all__ = sorted(set(_torch_constraints) | {"integer", "less_than_eq", "ordered_vector", "positive_ordered_vector",
                                            "unit_lower_cholesky"})
