"""inference.implicit: fixed points differentiated by the implicit function theorem, and degenerate-safe eigh."""

import math

import numpy as np
import pytest
import scipy.linalg
import scipy.optimize
import torch
from torch.autograd import gradcheck, gradgradcheck

from inference import ConvergenceError, NonFiniteError
from inference.implicit import eigh, fixed_point

F64 = torch.float64


# ---- fixed_point ----


def cos_map(x, a):
    return torch.cos(a * x)


def test_scalar_fixed_point_matches_root_and_closed_form_derivative(device):
    a = torch.tensor(0.7, dtype=F64, device=device, requires_grad=True)
    x = fixed_point(cos_map, torch.tensor(0.0, dtype=F64, device=device), a, tol=1e-14)
    root = scipy.optimize.brentq(lambda x: math.cos(0.7 * x) - x, 0.0, 2.0, xtol=1e-15)
    assert abs(float(x.detach()) - root) < 1e-13
    (dx_da,) = torch.autograd.grad(x, a)
    # x = cos(a x)  =>  dx/da = -x sin(a x) / (1 + a sin(a x))
    expected = -root * math.sin(0.7 * root) / (1 + 0.7 * math.sin(0.7 * root))
    assert abs(float(dx_da) - expected) < 1e-12


def test_scalar_fixed_point_gradcheck_and_gradgradcheck():
    a = torch.tensor(0.7, dtype=F64, requires_grad=True)

    def solve(a):
        return fixed_point(cos_map, torch.tensor(0.0, dtype=F64), a, tol=1e-14, adjoint_tol=1e-14)

    assert gradcheck(solve, (a,))
    assert gradgradcheck(solve, (a,))


def tanh_problem(device, n=5, seed=0):
    """x = tanh(W x + b) with |W| < 1: a contraction."""
    g = torch.Generator().manual_seed(seed)
    W = (0.5 / n**0.5) * torch.randn(n, n, dtype=F64, generator=g)
    b = torch.randn(n, dtype=F64, generator=g)
    return W.to(device).requires_grad_(), b.to(device).requires_grad_()


def tanh_map(x, W, b):
    return torch.tanh(W @ x + b)


@pytest.mark.parametrize("adjoint", ["gmres", "broyden", "anderson", "iterate"])
@pytest.mark.parametrize("solver", ["anderson", "broyden", "iterate"])
def test_tanh_fixed_point_gradient_matches_unrolled_autograd(solver, adjoint, device):
    W, b = tanh_problem(device)
    weights = torch.arange(1.0, 6.0, dtype=F64, device=device)
    x = fixed_point(tanh_map, torch.zeros(5, dtype=F64, device=device), W, b, solver=solver, tol=1e-13,
                    adjoint=adjoint, adjoint_tol=1e-13)
    grads = torch.autograd.grad((weights * x).sum(), (W, b))
    x_unrolled = torch.zeros(5, dtype=F64, device=device)  # reference: autograd through 200 plain iterations
    for _ in range(200):
        x_unrolled = tanh_map(x_unrolled, W, b)
    expected = torch.autograd.grad((weights * x_unrolled).sum(), (W, b))
    torch.testing.assert_close(x, x_unrolled, rtol=0, atol=1e-12)
    for got, want in zip(grads, expected):
        torch.testing.assert_close(got, want, rtol=0, atol=1e-11)


def test_tanh_fixed_point_gradcheck_and_gradgradcheck():
    W, b = tanh_problem("cpu", n=3)

    def solve(W, b):
        return fixed_point(tanh_map, torch.zeros(3, dtype=F64), W, b, tol=1e-13, adjoint_tol=1e-13)

    assert gradcheck(solve, (W, b))
    assert gradgradcheck(solve, (W, b))


@pytest.mark.parametrize("solver, adjoint",
                         [("gmres", "gmres"), ("cg", "cg"), ("anderson", "cg"), ("broyden", "gmres")])
def test_linear_fixed_point_matches_scipy_solution_and_ift_gradients(solver, adjoint, device):
    """x = x - eta (H x - c) has x* = H^-1 c; for L = w.x*: dL/dc = H^-1 w, dL/dH = -(H^-1 w) x*^T."""
    rng = np.random.default_rng(2)
    q, _ = np.linalg.qr(rng.normal(size=(6, 6)))
    h = q @ np.diag(np.linspace(0.2, 1.0, 6)) @ q.T
    c, w = rng.normal(size=6), rng.normal(size=6)
    x_ref = scipy.linalg.solve(h, c, assume_a="pos")
    adj = scipy.linalg.solve(h, w, assume_a="pos")
    H, C = (torch.tensor(v, dtype=F64, device=device, requires_grad=True) for v in (h, c))
    x = fixed_point(lambda x, H, C: x - 0.9 * (H @ x - C), torch.zeros(6, dtype=F64, device=device), H, C,
                    solver=solver, adjoint=adjoint, tol=1e-12, adjoint_tol=1e-12)
    gH, gC = torch.autograd.grad(x @ torch.tensor(w, dtype=F64, device=device), (H, C))
    np.testing.assert_allclose(x.detach().cpu().numpy(), x_ref, atol=1e-11)
    np.testing.assert_allclose(gC.cpu().numpy(), adj, atol=1e-10)
    np.testing.assert_allclose(gH.cpu().numpy(), -np.outer(adj, x_ref), atol=1e-10)


def test_float32_fixed_point(device):
    """The default tol in float32 is sqrt(eps) = 3.5e-4 on the residual; |W| <= 1/2 makes |x - x*| <= 2 tol."""
    W, b = tanh_problem(device)
    W32, b32 = (t.detach().float().requires_grad_() for t in (W, b))
    x = fixed_point(tanh_map, torch.zeros(5, device=device), W32, b32)
    x64 = fixed_point(tanh_map, torch.zeros(5, dtype=F64, device=device), W, b, tol=1e-12)
    assert x.dtype == torch.float32
    bound = 2 * math.sqrt(torch.finfo(torch.float32).eps)
    torch.testing.assert_close(x, x64.float(), rtol=0, atol=bound)
    (gW,) = torch.autograd.grad(x.sum(), W32)
    (gW64,) = torch.autograd.grad(x64.sum(), W)
    torch.testing.assert_close(gW, gW64.float(), rtol=0, atol=5 * bound)


def test_only_params_requiring_grad_are_differentiated():
    W, b = tanh_problem("cpu")
    x0 = torch.zeros(5, dtype=F64)
    (expected,) = torch.autograd.grad(fixed_point(tanh_map, x0, W, b, tol=1e-13).sum(), W)
    x = fixed_point(tanh_map, x0, W, b.detach(), tol=1e-13)
    (got,) = torch.autograd.grad(x.sum(), W)
    torch.testing.assert_close(got, expected, rtol=0, atol=1e-13)


def test_backward_cost_does_not_depend_on_forward_iterations():
    """No graph through the forward iterations: backward evaluates f twice (at constant params for the adjoint,
    then for the params' cotangents) however many iterations ran, and a repeated backward not at all."""
    W, b = tanh_problem("cpu")
    calls = []

    def counted(x, W, b):
        calls.append(1)
        return tanh_map(x, W, b)

    backward_calls = []
    for tol in (1e-2, 1e-14):
        calls.clear()
        x = fixed_point(counted, torch.zeros(5, dtype=F64), W, b, solver="iterate", tol=tol)
        forward_calls = len(calls)
        calls.clear()
        x.sum().backward(retain_graph=True)
        first = len(calls)
        calls.clear()
        x.sum().backward()
        backward_calls.append((forward_calls, first, len(calls)))
    (few, *back_few), (many, *back_many) = backward_calls
    assert many > 3 * few
    assert back_few == back_many == [2, 0]


def test_repeated_backward_matches_unrolled_autograd():
    """Rows of a Jacobian by repeated backward over one graph (the reused adjoint operator) match autograd
    through the unrolled iterations."""
    W, b = tanh_problem("cpu")
    x = fixed_point(tanh_map, torch.zeros(5, dtype=F64), W, b, tol=1e-13, adjoint_tol=1e-13)
    x_unrolled = torch.zeros(5, dtype=F64)
    for _ in range(200):
        x_unrolled = tanh_map(x_unrolled, W, b)
    for i in range(3):
        got = torch.autograd.grad(x[i], (W, b), retain_graph=True)
        expected = torch.autograd.grad(x_unrolled[i], (W, b), retain_graph=True)
        for g, e in zip(got, expected):
            torch.testing.assert_close(g, e, rtol=0, atol=1e-10)


def test_forward_not_converging_raises_with_residual():
    with pytest.raises(ConvergenceError, match=r"final residual max\|f\(x\) - x\| = .* > tol") as info:
        fixed_point(lambda x, a: a * x + 1, torch.zeros(3, dtype=F64), torch.tensor(2.0, dtype=F64),
                    solver="iterate", max_iter=20)
    assert info.value.residual > 1e3 and info.value.n_iter == 20


def test_adjoint_not_converging_raises_in_backward():
    a = torch.tensor(2.0, dtype=F64, requires_grad=True)
    x = fixed_point(lambda x, a: a * x + 1, torch.zeros(3, dtype=F64), a, solver="anderson", adjoint="iterate")
    torch.testing.assert_close(x, torch.full((3,), -1.0, dtype=F64))  # x = 2x + 1 has the (repelling) root -1
    with pytest.raises(ConvergenceError, match="adjoint"):
        x.sum().backward()


def test_nonfinite_map_raises():
    with pytest.raises(NonFiniteError, match="iteration 2"):
        fixed_point(lambda x: torch.log(x - 1), torch.full((2,), 3.0, dtype=F64))


def test_bad_arguments():
    with pytest.raises(ValueError, match="unknown solver 'newton'"):
        fixed_point(cos_map, torch.zeros(()), torch.tensor(1.0), solver="newton")
    with pytest.raises(TypeError, match="params must be tensors"):
        fixed_point(cos_map, torch.zeros(()), 0.5)
    with pytest.raises(ValueError, match="shaped like x"):
        fixed_point(lambda x: x.sum(), torch.zeros(3))


# ---- eigh ----


def test_eigh_matches_scipy(device, dtype):
    rng = np.random.default_rng(3)
    x, y = rng.normal(size=(2, 4, 4)), rng.normal(size=(2, 4, 4))
    a = x + x.transpose(0, 2, 1)
    b = y @ y.transpose(0, 2, 1) + 4 * np.eye(4)
    A, B = (torch.tensor(v, dtype=dtype, device=device) for v in (a, b))
    tol = 1e-12 if dtype == F64 else 1e-4
    e, V = eigh(A)
    np.testing.assert_allclose(e.cpu().numpy(), np.linalg.eigvalsh(a), atol=tol * 10)
    e, C = eigh(A, B)
    for k in range(2):
        np.testing.assert_allclose(e[k].cpu().numpy(), scipy.linalg.eigh(a[k], b[k], eigvals_only=True),
                                   atol=tol * 10)
    eye = torch.eye(4, dtype=dtype, device=device).expand(2, 4, 4)
    torch.testing.assert_close(C.mT @ B @ C, eye, rtol=0, atol=tol * 10)
    torch.testing.assert_close(A @ C, B @ C * e.unsqueeze(-2), rtol=0, atol=tol * 100)


def test_generalized_eigh_gradcheck_and_gradgradcheck():
    """Non-degenerate, B-dependent: values and (sign-fixed) vectors differentiated w.r.t. A and B."""
    g = torch.Generator().manual_seed(4)
    X = torch.randn(2, 4, 4, dtype=F64, generator=g).requires_grad_()
    Y = torch.randn(2, 4, 4, dtype=F64, generator=g).requires_grad_()

    def solve(X, Y):
        e, C = eigh(X + X.mT, Y @ Y.mT + 4 * torch.eye(4, dtype=F64))
        return e, C * C[..., :1, :].sign()

    assert gradcheck(solve, (X, Y))
    assert gradgradcheck(solve, (X, Y))


def occupied_loss(eig, A, M, k, B=None):
    """An invariant of the lowest-k subspace: sum of its eigenvalues + tr(D M), D = C_occ C_occ^T."""
    e, C = eig(A) if B is None else eig(A, B)
    occ = C[..., :k]
    return e[..., :k].sum() + ((occ @ occ.mT) * M).sum()


def central_difference(loss, A, direction, h=1e-5):
    with torch.no_grad():
        return (loss(A + h * direction) - loss(A - h * direction)) / (2 * h)


def random_symmetric(n, generator):
    x = torch.randn(n, n, dtype=F64, generator=generator)
    return x + x.T


@pytest.mark.parametrize("rotated", [False, True], ids=["diagonal", "rotated"])
def test_degenerate_eigh_gradient_is_finite_and_correct(rotated, device):
    """Eigenvalues (1, 1, 2, 3, 3), k = 3 lowest occupied (gap 1): the plain backward fails, ours is exact."""
    g = torch.Generator().manual_seed(5)
    A = torch.diag(torch.tensor([1.0, 1.0, 2.0, 3.0, 3.0], dtype=F64))
    if rotated:  # eigenvalues then differ by rounding only: plain eigh gives finite but wrong gradients
        q, _ = torch.linalg.qr(torch.randn(5, 5, dtype=F64, generator=g))
        A = q @ A @ q.T
        A = (A + A.T) / 2
    M = random_symmetric(5, g).to(device)
    directions = [random_symmetric(5, g).to(device) for _ in range(3)]
    A = A.to(device).requires_grad_()
    (grad,) = torch.autograd.grad(occupied_loss(eigh, A, M, 3), A)
    assert bool(torch.isfinite(grad).all())
    for E in directions:
        fd = central_difference(lambda A: occupied_loss(torch.linalg.eigh, A, M, 3), A, E)
        assert abs(float((grad * E).sum()) - float(fd)) < 1e-7
    if not rotated:
        (naive,) = torch.autograd.grad(occupied_loss(torch.linalg.eigh, A, M, 3), A)
        assert not bool(torch.isfinite(naive).all())


def test_degenerate_generalized_eigh_roothaan_hall_ring(device):
    """Hückel ring of 6 sites with overlap (F C = S C e): levels -2, -1, -1 | 1, 1, 2 (degenerate pairs).
    Gradients of the occupied density w.r.t. F and S agree with finite differences."""
    ring = torch.zeros(6, 6, dtype=F64)
    for i in range(6):
        ring[i, (i + 1) % 6] = ring[(i + 1) % 6, i] = 1.0
    F = (-1.0 * ring).to(device).requires_grad_()
    S = (torch.eye(6, dtype=F64) + 0.2 * ring).to(device).requires_grad_()
    g = torch.Generator().manual_seed(6)
    M = random_symmetric(6, g).to(device)
    e, _ = eigh(F.detach(), S.detach())
    assert float(e[2] - e[1]) < 1e-12 and float(e[3] - e[2]) > 0.5
    gF, gS = torch.autograd.grad(occupied_loss(eigh, F, M, 3, S), (F, S))
    assert bool(torch.isfinite(gF).all() & torch.isfinite(gS).all())
    for _ in range(2):
        E = random_symmetric(6, g).to(device)
        fd_F = central_difference(lambda F: occupied_loss(eigh, F, M, 3, S), F, E)
        fd_S = central_difference(lambda S: occupied_loss(eigh, F, M, 3, S), S, 0.05 * E)
        assert abs(float((gF * E).sum()) - float(fd_F)) < 1e-7
        assert abs(float((gS * 0.05 * E).sum()) - float(fd_S)) < 1e-7


def test_self_consistent_field_through_fixed_point_and_eigh(device):
    """A toy SCF, D = occupied projector of H0 + U diag(D), on the degenerate ring: fixed_point + eigh give
    d tr(D M)/d(U, onsite) equal to finite differences of the converged solution."""
    ring = torch.zeros(6, 6, dtype=F64)
    for i in range(6):
        ring[i, (i + 1) % 6] = ring[(i + 1) % 6, i] = -1.0
    ring = ring.to(device)

    def density(D, U, onsite):
        _, C = eigh(ring + torch.diag(onsite + U * D.diagonal()))
        return C[:, :3] @ C[:, :3].T

    def observable(U, onsite, M):
        D = fixed_point(density, torch.eye(6, dtype=F64, device=device) / 2, U, onsite, tol=1e-12,
                        adjoint_tol=1e-12)
        return (D * M).sum()

    g = torch.Generator().manual_seed(7)
    M = random_symmetric(6, g).to(device)
    U = torch.tensor(0.5, dtype=F64, device=device, requires_grad=True)
    onsite = torch.zeros(6, dtype=F64, device=device, requires_grad=True)
    gU, g_onsite = torch.autograd.grad(observable(U, onsite, M), (U, onsite))
    h = 1e-5
    direction = torch.randn(6, dtype=F64, generator=g).to(device)
    with torch.no_grad():
        fd_U = (observable(U + h, onsite, M) - observable(U - h, onsite, M)) / (2 * h)
        fd_onsite = (observable(U, onsite + h * direction, M) - observable(U, onsite - h * direction, M)) / (2 * h)
    assert abs(float(gU) - float(fd_U)) < 1e-7
    assert abs(float(g_onsite @ direction) - float(fd_onsite)) < 1e-7


def test_eigh_rejects_non_positive_definite_B():
    with pytest.raises(ValueError, match="B is not positive definite"):
        eigh(torch.eye(3, dtype=F64), torch.diag(torch.tensor([1.0, -1.0, 1.0], dtype=F64)))
