"""Bijections from unconstrained real space onto the supports of distributions.

``biject_to(constraint)`` returns a :class:`torch.distributions.transforms.Transform` ``t`` that maps
unconstrained reals of shape ``t.inverse_shape(shape)`` one-to-one onto the values of shape ``shape`` that
satisfy ``constraint``; ``t.log_abs_det_jacobian(x, y)`` is log|det dy/dx| summed over the constraint's
event dimensions, with ``y`` measured in the constrained space's intrinsic coordinates where it has fewer
dimensions than its embedding (simplex: all but the last entry; ``corr_cholesky``: the strictly lower
triangle; ``lower_cholesky`` and ``positive_definite``: the lower triangle). HMC and ADVI work in the
unconstrained space.

Torch's transforms are reused where they are bijections (exp, sigmoid, affine, stick-breaking,
``CorrCholeskyTransform``). This module adds ``OrderedTransform``, ``LowerCholeskyTransform`` (a vector of
length n(n+1)/2 to a Cholesky factor, unlike torch's square-matrix projection of the same name) and
``CholeskyTransform``. The registry is separate from ``torch.distributions.biject_to``, so torch's global one
is left unchanged; extend it with ``biject_to.register`` as in torch.
"""

import math
from numbers import Number

import torch
from torch.distributions.constraint_registry import ConstraintRegistry
from torch.distributions.transforms import (
    AffineTransform,
    ComposeTransform,
    CorrCholeskyTransform,
    ExpTransform,
    IndependentTransform,
    SigmoidTransform,
    StickBreakingTransform,
    Transform,
    identity_transform,
)

from ppl import constraints

__all__ = [
    "CholeskyTransform",
    "LowerCholeskyTransform",
    "OrderedTransform",
    "UnitLowerCholeskyTransform",
    "biject_to",
    "is_identity",
]


class OrderedTransform(Transform):
    """Reals ``x`` of shape ``(..., n)`` to increasing vectors: ``y_0 = x_0``, ``y_i = y_{i-1} + exp(x_i)``."""

    domain = constraints.real_vector
    codomain = constraints.ordered_vector
    bijective = True
    sign = +1

    def __eq__(self, other):
        return isinstance(other, OrderedTransform)

    def _call(self, x):
        return torch.cat([x[..., :1], x[..., 1:].exp()], dim=-1).cumsum(dim=-1)

    def _inverse(self, y):
        return torch.cat([y[..., :1], (y[..., 1:] - y[..., :-1]).log()], dim=-1)

    def log_abs_det_jacobian(self, x, y):
        return x[..., 1:].sum(dim=-1)


def _matrix_size(vector_length):
    """n such that n(n+1)/2 == vector_length; a clear error when there is none."""
    n = round(((8 * vector_length + 1) ** 0.5 - 1) / 2)
    if n * (n + 1) // 2 != vector_length:
        raise ValueError(
            f"LowerCholeskyTransform needs a last dimension of length n(n+1)/2 (1, 3, 6, 10, ...), got {vector_length}."
        )
    return n


def _tril_gather_index(n, device):
    """Index into ``[strict-lower entries, diagonal, 0]`` (length n(n+1)/2 + 1) giving a row-major n x n matrix."""
    rows, cols = torch.tril_indices(n, n, offset=-1, device=device)
    index = torch.full((n, n), n * (n + 1) // 2, dtype=torch.long, device=device)
    index[rows, cols] = torch.arange(rows.numel(), device=device)
    index[range(n), range(n)] = torch.arange(rows.numel(), rows.numel() + n, device=device)
    return index.reshape(-1)


class LowerCholeskyTransform(Transform):
    """Reals of shape ``(..., n(n+1)/2)`` to lower-triangular matrices ``(..., n, n)`` with positive diagonal.

    The first n(n-1)/2 entries fill the strictly lower triangle row by row (``torch.tril_indices`` order); the
    last n entries are the logarithms of the diagonal. log|det J| is the sum of those last n entries.
    """

    domain = constraints.real_vector
    codomain = constraints.lower_cholesky
    bijective = True

    def __eq__(self, other):
        return isinstance(other, LowerCholeskyTransform)

    def _call(self, x):
        n = _matrix_size(x.shape[-1])
        m = n * (n - 1) // 2
        padded = torch.cat([x[..., :m], x[..., m:].exp(), x.new_zeros(x.shape[:-1] + (1,))], dim=-1)
        return padded[..., _tril_gather_index(n, x.device)].reshape(x.shape[:-1] + (n, n))

    def _inverse(self, y):
        n = y.shape[-1]
        rows, cols = torch.tril_indices(n, n, offset=-1, device=y.device)
        return torch.cat([y[..., rows, cols], y.diagonal(dim1=-2, dim2=-1).log()], dim=-1)

    def log_abs_det_jacobian(self, x, y):
        n = y.shape[-1]
        return x[..., n * (n - 1) // 2 :].sum(dim=-1)

    def forward_shape(self, shape):
        if len(shape) < 1:
            raise ValueError(f"LowerCholeskyTransform needs a vector input, got shape {tuple(shape)}.")
        n = _matrix_size(shape[-1])
        return torch.Size(shape[:-1]) + (n, n)

    def inverse_shape(self, shape):
        if len(shape) < 2 or shape[-1] != shape[-2]:
            raise ValueError(f"LowerCholeskyTransform needs square matrices, got shape {tuple(shape)}.")
        n = shape[-1]
        return torch.Size(shape[:-2]) + (n * (n + 1) // 2,)


class UnitLowerCholeskyTransform(Transform):
    """Reals of shape ``(..., n(n-1)/2)`` to lower-triangular matrices ``(..., n, n)`` with unit diagonal (Pyro's
    ``UnitLowerCholeskyTransform``): the entries fill the strictly lower triangle row by row
    (``torch.tril_indices`` order). Volume-preserving: log|det J| = 0."""

    domain = constraints.real_vector
    codomain = constraints.unit_lower_cholesky
    bijective = True

    def __eq__(self, other):
        return isinstance(other, UnitLowerCholeskyTransform)

    def _call(self, x):
        n = _unit_matrix_size(x.shape[-1])
        ones = x.new_ones(x.shape[:-1] + (n,))
        padded = torch.cat([x, ones, x.new_zeros(x.shape[:-1] + (1,))], dim=-1)
        return padded[..., _tril_gather_index(n, x.device)].reshape(x.shape[:-1] + (n, n))

    def _inverse(self, y):
        n = y.shape[-1]
        rows, cols = torch.tril_indices(n, n, offset=-1, device=y.device)
        return y[..., rows, cols]

    def log_abs_det_jacobian(self, x, y):
        return x.new_zeros(x.shape[:-1])

    def forward_shape(self, shape):
        if len(shape) < 1:
            raise ValueError(f"UnitLowerCholeskyTransform needs a vector input, got shape {tuple(shape)}.")
        n = _unit_matrix_size(shape[-1])
        return torch.Size(shape[:-1]) + (n, n)

    def inverse_shape(self, shape):
        if len(shape) < 2 or shape[-1] != shape[-2]:
            raise ValueError(f"UnitLowerCholeskyTransform needs square matrices, got shape {tuple(shape)}.")
        n = shape[-1]
        return torch.Size(shape[:-2]) + (n * (n - 1) // 2,)


def _unit_matrix_size(vector_length):
    """n such that n(n-1)/2 == vector_length; a clear error when there is none."""
    n = round(((8 * vector_length + 1) ** 0.5 + 1) / 2)
    if n * (n - 1) // 2 != vector_length:
        raise ValueError(f"UnitLowerCholeskyTransform needs a last dimension of length n(n-1)/2 (0, 1, 3, 6, ...), "
                         f"got {vector_length}.")
    return n


class CholeskyTransform(Transform):
    """Symmetric positive-definite matrices ``(..., n, n)`` to their lower Cholesky factors; inverse ``L L^T``.

    log|det J| is taken between the lower triangles (with diagonal) of both matrices:
    log|det d(L L^T)/dL| = n log 2 + sum_i (n - i) log L_ii, with i = 0..n-1.
    """

    domain = constraints.positive_definite
    codomain = constraints.lower_cholesky
    bijective = True

    def __eq__(self, other):
        return isinstance(other, CholeskyTransform)

    def _call(self, x):
        return torch.linalg.cholesky(x)

    def _inverse(self, y):
        return y @ y.mT

    def log_abs_det_jacobian(self, x, y):
        n = y.shape[-1]
        powers = torch.arange(n, 0, -1, dtype=y.dtype, device=y.device)
        return -(n * math.log(2.0) + (powers * y.diagonal(dim1=-2, dim2=-1).log()).sum(dim=-1))


class _BijectionRegistry(ConstraintRegistry):
    def __call__(self, constraint):
        try:
            return super().__call__(constraint)
        except NotImplementedError:
            kind = "a discrete support" if constraint.is_discrete else "a constraint with no registered bijection"
            raise NotImplementedError(
                f"biject_to: {constraint!r} is {kind}, so it has no bijection from unconstrained reals. "
                "Continuous latent sites need a continuous support; register a transform for a new "
                "constraint with `ppl.transforms.biject_to.register(constraint_class, factory)`."
            ) from None


biject_to = _BijectionRegistry()


def is_identity(transform):
    """Whether ``transform`` is the identity (possibly over event dimensions), whose log|det J| is 0."""
    while isinstance(transform, IndependentTransform):
        transform = transform.base_transform
    return isinstance(transform, ComposeTransform) and not transform.parts  # torch's identity_transform is one


@biject_to.register(constraints.real)
def _biject_to_real(constraint):
    return identity_transform


@biject_to.register(constraints.independent)
def _biject_to_independent(constraint):
    return IndependentTransform(biject_to(constraint.base_constraint), constraint.reinterpreted_batch_ndims)


def _is_zero(bound):
    return isinstance(bound, Number) and bound == 0


@biject_to.register(constraints.greater_than)
@biject_to.register(constraints.greater_than_eq)
def _biject_to_greater_than(constraint):
    if _is_zero(constraint.lower_bound):
        return ExpTransform()
    return ComposeTransform([ExpTransform(), AffineTransform(constraint.lower_bound, 1.0)])


@biject_to.register(constraints.less_than)
@biject_to.register(constraints.less_than_eq)
def _biject_to_less_than(constraint):
    return ComposeTransform([ExpTransform(), AffineTransform(constraint.upper_bound, -1.0)])


@biject_to.register(constraints.interval)
@biject_to.register(constraints.half_open_interval)
def _biject_to_interval(constraint):
    lower, upper = constraint.lower_bound, constraint.upper_bound
    if _is_zero(lower) and isinstance(upper, Number) and upper == 1:
        return SigmoidTransform()
    return ComposeTransform([SigmoidTransform(), AffineTransform(lower, upper - lower)])


@biject_to.register(constraints.simplex)
def _biject_to_simplex(constraint):
    return StickBreakingTransform()


@biject_to.register(constraints.ordered_vector)
def _biject_to_ordered_vector(constraint):
    return OrderedTransform()


@biject_to.register(constraints.positive_ordered_vector)
def _biject_to_positive_ordered_vector(constraint):
    return ComposeTransform([OrderedTransform(), ExpTransform()])


@biject_to.register(constraints.corr_cholesky)
def _biject_to_corr_cholesky(constraint):
    return CorrCholeskyTransform()


@biject_to.register(constraints.lower_cholesky)
def _biject_to_lower_cholesky(constraint):
    return LowerCholeskyTransform()


@biject_to.register(constraints.unit_lower_cholesky)
def _biject_to_unit_lower_cholesky(constraint):
    return UnitLowerCholeskyTransform()


@biject_to.register(constraints.positive_definite)
def _biject_to_positive_definite(constraint):
    return ComposeTransform([LowerCholeskyTransform(), CholeskyTransform().inv])
