"""biject_to: log|det J| against autograd Jacobians, round trips, constraint membership, errors."""

import pytest
import torch

from ppl import constraints
from ppl.transforms import LowerCholeskyTransform, biject_to


def _flat(y, event_ndim):
    return y.reshape(y.shape[: y.dim() - event_ndim] + (-1,))


def _strict_lower(y):
    rows, cols = torch.tril_indices(y.shape[-1], y.shape[-1], offset=-1, device=y.device)
    return y[..., rows, cols]


def _lower(y):
    rows, cols = torch.tril_indices(y.shape[-1], y.shape[-1], device=y.device)
    return y[..., rows, cols]


def _vector(y):
    return y


def _simplex_coordinates(y):
    return y[..., :-1]


# (name, constraint factory on device/dtype, constrained shape (batch (2,) + event), intrinsic coordinates)
# Scalar constraints use a (2, 3) value whose last dimension is treated as the event.
CASES = [
    ("real", lambda t: constraints.real, (2, 3), _vector),
    ("positive", lambda t: constraints.positive, (2, 3), _vector),
    ("nonnegative", lambda t: constraints.nonnegative, (2, 3), _vector),
    ("greater_than", lambda t: constraints.greater_than(t([[-1.5], [2.0]])), (2, 3), _vector),
    ("greater_than_eq", lambda t: constraints.greater_than_eq(3.0), (2, 3), _vector),
    ("less_than", lambda t: constraints.less_than(t([[-1.5], [2.0]])), (2, 3), _vector),
    ("less_than_eq", lambda t: constraints.less_than_eq(-0.5), (2, 3), _vector),
    ("interval", lambda t: constraints.interval(t([[-1.0], [2.0]]), t([[3.0], [2.5]])), (2, 3), _vector),
    ("half_open_interval", lambda t: constraints.half_open_interval(-2.0, 5.0), (2, 3), _vector),
    ("unit_interval", lambda t: constraints.unit_interval, (2, 3), _vector),
    ("independent_positive", lambda t: constraints.independent(constraints.positive, 1), (2, 3), _vector),
    ("real_vector", lambda t: constraints.real_vector, (2, 3), _vector),
    ("simplex", lambda t: constraints.simplex, (2, 4), _simplex_coordinates),
    ("ordered_vector", lambda t: constraints.ordered_vector, (2, 4), _vector),
    ("positive_ordered_vector", lambda t: constraints.positive_ordered_vector, (2, 4), _vector),
    ("corr_cholesky", lambda t: constraints.corr_cholesky, (2, 4, 4), _strict_lower),
    ("lower_cholesky", lambda t: constraints.lower_cholesky, (2, 3, 3), _lower),
    ("unit_lower_cholesky", lambda t: constraints.unit_lower_cholesky, (2, 4, 4), _strict_lower),
    ("positive_definite", lambda t: constraints.positive_definite, (2, 3, 3), _lower),
]


def _setup(case, device, dtype):
    name, make, shape, intrinsic = case
    constraint = make(lambda v: torch.tensor(v, device=device, dtype=dtype))
    transform = biject_to(constraint)
    x = torch.randn(transform.inverse_shape(shape), device=device, dtype=dtype)
    return constraint, transform, x, shape, intrinsic


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_log_abs_det_jacobian_matches_autograd(case, device):
    constraint, transform, x, shape, intrinsic = _setup(case, device, torch.float64)
    y = transform(x)
    log_det = transform.log_abs_det_jacobian(x, y)
    # elementwise transforms return per-element terms; sum them over the (2, 3) value's last dimension
    log_det = log_det.reshape(log_det.shape[:1] + (-1,)).sum(-1)
    assert log_det.shape == (2,)
    x_event_ndim = x.dim() - 1
    for b in range(2):

        def forward(flat_x, b=b):
            xb = x.clone()
            xb[b] = flat_x.reshape(x.shape[1:])
            return _flat(intrinsic(transform(xb))[b], intrinsic(y).dim() - 1)

        jac = torch.autograd.functional.jacobian(forward, _flat(x[b], x_event_ndim))
        assert jac.shape[0] == jac.shape[1], "intrinsic coordinates must match the unconstrained dimension"
        expected = torch.linalg.slogdet(jac).logabsdet
        torch.testing.assert_close(log_det[b], expected, rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_round_trip_and_support(case, device, dtype):
    constraint, transform, x, shape, intrinsic = _setup(case, device, dtype)
    y = transform(x)
    assert y.shape == shape and y.dtype == dtype and y.device == x.device
    assert transform.forward_shape(x.shape) == shape
    assert constraint.check(y).all()
    tol = 1e-4 if dtype == torch.float32 else 1e-10
    torch.testing.assert_close(transform.inv(y), x, rtol=tol, atol=tol)


def test_transform_is_batched_like_per_event_calls(device):
    transform = biject_to(constraints.corr_cholesky)
    x = torch.randn(5, 3, 6, device=device, dtype=torch.float64)
    y = transform(x)
    log_det = transform.log_abs_det_jacobian(x, y)
    assert log_det.shape == (5, 3)
    torch.testing.assert_close(y[2, 1], transform(x[2, 1]))
    torch.testing.assert_close(log_det[2, 1], transform.log_abs_det_jacobian(x[2, 1], y[2, 1]))


def test_boundary_constraints_are_reached_from_large_inputs(device):
    x = torch.tensor([-30.0, 0.0, 30.0], device=device, dtype=torch.float64)
    y = biject_to(constraints.interval(-1.0, 1.0))(x)
    assert ((y > -1) & (y < 1)).all()


@pytest.mark.parametrize(
    "constraint",
    [constraints.nonnegative_integer, constraints.boolean, constraints.independent(constraints.integer, 1)],
    ids=["nonnegative_integer", "boolean", "independent_integer"],
)
def test_discrete_constraints_raise_clear_error(constraint):
    with pytest.raises(NotImplementedError, match="discrete support"):
        biject_to(constraint)


def test_lower_cholesky_rejects_non_triangular_vector_length():
    with pytest.raises(ValueError, match=r"n\(n\+1\)/2"):
        LowerCholeskyTransform()(torch.zeros(4))


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_transform_works_under_vmap(case, device):
    """The potential maps a batch of chains with torch.func.vmap; each transform must support it."""
    constraint, transform, x, shape, intrinsic = _setup(case, device, torch.float64)
    chains = torch.stack([x, 0.5 * x])

    def forward(x):
        y = transform(x)
        return y, transform.log_abs_det_jacobian(x, y), transform.inv(y)

    y, log_det, x_back = torch.func.vmap(forward)(chains)
    for c in range(2):
        expected = forward(chains[c])
        torch.testing.assert_close(y[c], expected[0])
        torch.testing.assert_close(log_det[c], expected[1])
        torch.testing.assert_close(x_back[c], expected[2])
