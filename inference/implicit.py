"""Implicit differentiation: fixed points differentiated by the implicit function theorem, and a symmetric
(generalized) eigensolver whose backward is safe at degenerate eigenvalues.

    x = fixed_point(f, x0, theta)      # x = f(x, theta); x.backward() reaches theta by an adjoint solve
    e, C = eigh(F, S)                  # F C = S C diag(e), C^T S C = 1 (Roothaan-Hall)

Residuals and tolerances use the max-abs (infinity) norm, as in ``inference.optim``.
"""

import functools
import math
from dataclasses import dataclass
from typing import Callable

import torch

from inference.errors import ConvergenceError, NonFiniteError

__all__ = ["SOLVERS", "eigh", "fixed_point"]

SOLVERS = ("anderson", "broyden", "iterate", "gmres", "cg")


def fixed_point(
    f: Callable[..., torch.Tensor],
    x0: torch.Tensor,
    *params: torch.Tensor,
    solver: str = "anderson",
    tol: float | None = None,
    max_iter: int = 200,
    adjoint: str = "gmres",
    adjoint_tol: float | None = None,
    adjoint_max_iter: int = 200,
) -> torch.Tensor:
    """The solution x* of x = f(x, *params), differentiable w.r.t. ``params`` by the implicit function theorem.

    The forward iterations run without autograd, so memory does not depend on their number. Backward solves
    the adjoint equation u = g + (df/dx)^T u at x* with vector-Jacobian products of f only (each one f
    backward), warm-started at u = g, then returns (df/dparams)^T u. f itself is evaluated twice: once with the
    params held constant for the products with (df/dx)^T, once more for (df/dparams)^T u; a backward repeated
    over the same graph (``retain_graph=True``, e.g. Hessian rows) reuses both evaluations.
    Double backward works: there the adjoint is itself a ``fixed_point`` (each of its iterations re-evaluates
    f, so it costs about twice as much).

    Args:
        f: ``f(x, *params) -> tensor shaped like x``, built from torch operations (it is differentiated with
            ``torch.func.vjp``). Tensors that f closes over are constants: pass everything that needs a
            gradient in ``params``.
        x0: initial guess (any shape; gets no gradient: x* does not depend on it).
        params: tensors f depends on; they receive gradients.
        solver: ``"anderson"`` (Anderson mixing, memory 5), ``"broyden"`` (Broyden's good method on
            f(x) - x), ``"iterate"`` (x <- f(x); f must be a contraction), or, for f affine in x only,
            ``"gmres"`` (restarted GMRES(20)) and ``"cg"`` (needs I - df/dx symmetric positive definite).
        tol: convergence when max|f(x) - x| <= tol; default sqrt(machine epsilon) of x0's dtype
            (1.5e-8 in float64, 3.5e-4 in float32).
        max_iter: most evaluations of f in the forward solve.
        adjoint: solver for the (affine) adjoint equation: ``"gmres"`` (any f), ``"cg"`` (only when
            I - (df/dx)^T is symmetric positive definite, e.g. f(x) = x - eta grad E(x) with E convex),
            ``"broyden"``, ``"anderson"`` or ``"iterate"``.
        adjoint_tol: adjoint convergence when max|g + J^T u - u| <= adjoint_tol * max|g|; default as ``tol``.
        adjoint_max_iter: most vector-Jacobian products in one adjoint solve.

    Raises:
        ConvergenceError: the forward or adjoint solve missed its tolerance (message gives the residual).
        NonFiniteError: f returned NaN/inf (message names the iteration).
    """
    for name, value in (("solver", solver), ("adjoint", adjoint)):
        if value not in SOLVERS:
            raise ValueError(f"fixed_point: unknown {name} {value!r}; choose one of {SOLVERS}.")
    if not (torch.is_tensor(x0) and x0.is_floating_point()):
        raise TypeError(f"fixed_point: x0 must be a floating-point tensor, got {type(x0).__name__}.")
    for i, p in enumerate(params):
        if not torch.is_tensor(p):
            raise TypeError(f"fixed_point: params[{i}] is a {type(p).__name__}; params must be tensors "
                            "(close over non-tensor constants in f instead).")
    default_tol = math.sqrt(torch.finfo(x0.dtype).eps)
    options = _Options(solver, default_tol if tol is None else tol, max_iter, adjoint,
                       default_tol if adjoint_tol is None else adjoint_tol, adjoint_max_iter)
    return _FixedPoint.apply(f, options, x0, *params)


@dataclass(frozen=True)
class _Options:
    solver: str
    tol: float
    max_iter: int
    adjoint: str
    adjoint_tol: float
    adjoint_max_iter: int


class _FixedPoint(torch.autograd.Function):
    @staticmethod
    def forward(f, options, x0, *params):
        return _solve(lambda x: f(x, *params), x0.detach().clone(), options.solver, options.tol,
                      options.max_iter, "fixed_point")

    @staticmethod
    def setup_context(ctx, inputs, output):
        f, options, _, *params = inputs
        ctx.f, ctx.options = f, options
        ctx.save_for_backward(output, *params)
        ctx.vjps = None

    @staticmethod
    def backward(ctx, grad):
        x, *params = ctx.saved_tensors
        o, needs, f = ctx.options, ctx.needs_input_grad[3:], ctx.f

        def f_active(x, *active):  # f of x and of the params that need a gradient; the others stay constant
            given = iter(active)
            return f(x, *(next(given) if need else p for p, need in zip(params, needs)))

        active = [p for p, need in zip(params, needs) if need]
        if not active:  # only x0 asked for a gradient: x* does not depend on it
            return (None,) * (3 + len(params))
        tol = o.adjoint_tol * float(grad.detach().abs().max())
        if torch.is_grad_enabled():  # create_graph: the adjoint solution must itself be differentiable
            _, vjp = torch.func.vjp(f_active, x, *active)
            u = fixed_point(functools.partial(_adjoint_map, f_active), grad, grad, x, *active, solver=o.adjoint,
                            tol=tol, max_iter=o.adjoint_max_iter, adjoint=o.adjoint, adjoint_tol=o.adjoint_tol,
                            adjoint_max_iter=o.adjoint_max_iter)
            grads = iter(vjp(u)[1:])
            return (None, None, None, *(next(grads) if need else None for need in needs))
        # The adjoint iterates with df/dx of f at constant params, which f may evaluate more cheaply than with
        # params requiring grad; the params' cotangents follow once from u. Both vector-Jacobian products are
        # kept: a backward repeated over the same graph (rows of a Hessian) evaluates f no more.
        if ctx.vjps is None:
            constants = [p.detach() for p in params]
            ctx.vjps = (_vjp(lambda x: f(x, *constants), x), _vjp(functools.partial(f_active, x.detach()), *active))
        vjp_x, vjp_params = ctx.vjps
        u = _solve(lambda u: grad + vjp_x(u)[0], grad, o.adjoint, tol, o.adjoint_max_iter,
                   "fixed_point adjoint (backward)")
        grads = iter(vjp_params(u))
        return (None, None, None, *(next(grads) if need else None for need in needs))


def _vjp(f, *primals):
    """``v -> (df/dprimals)^T v`` at ``primals``, by autograd on one evaluation of f, reusable. Plain autograd,
    not ``torch.func.vjp``: f may then differentiate its own intermediates (torch.func forbids requires_grad_
    inside a transform)."""
    with torch.enable_grad():
        leaves = [p.detach().requires_grad_() for p in primals]
        out = f(*leaves)

    def vjp(v):
        if not out.requires_grad:  # f does not depend on the primals
            return [torch.zeros_like(p) for p in leaves]
        return torch.autograd.grad(out, leaves, v, retain_graph=True, allow_unused=True, materialize_grads=True)

    return vjp


def _adjoint_map(f, u, g, x, *params):
    """u -> g + (df/dx at x)^T u, whose fixed point is the adjoint of ``fixed_point``."""
    _, vjp = torch.func.vjp(lambda x_: f(x_, *params), x)
    return g + vjp(u)[0]


# ---- solvers of x = f(x) (no autograd; small scalars as Python floats for the control flow) ----


class _Map:
    """f with its evaluation count; refuses non-finite values."""

    def __init__(self, f, what: str, solver: str):
        self.f, self.what, self.solver, self.n = f, what, solver, 0

    def __call__(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(f(x), f(x) - x)."""
        self.n += 1
        fx = self.f(x)
        if not (torch.is_tensor(fx) and fx.shape == x.shape):
            raise ValueError(f"{self.what}: f(x) must return a tensor shaped like x {tuple(x.shape)}, got "
                             f"{tuple(fx.shape) if torch.is_tensor(fx) else type(fx).__name__}.")
        if not bool(torch.isfinite(fx).all()):
            raise NonFiniteError(f"{self.what}(solver={self.solver!r}): f returned NaN/inf at iteration {self.n}. "
                                 "Check f near x0, start closer to the solution, or use a more cautious solver "
                                 "('iterate' for a contraction).")
        return fx, fx - x


def _solve(f, x0: torch.Tensor, solver: str, tol: float, max_iter: int, what: str) -> torch.Tensor:
    """Solve x = f(x) to max|f(x) - x| <= tol with at most about max_iter evaluations of f."""
    fmap = _Map(f, what, solver)
    with torch.no_grad():
        x, residual = _SOLVER_FUNCTIONS[solver](fmap, x0, tol, max_iter)
    res = float(residual.abs().max())
    if not res <= tol:
        hint = ("increase adjoint_max_iter or adjoint_tol, or use adjoint='gmres' ('cg' needs I - J^T symmetric "
                "positive definite)" if "adjoint" in what else
                "increase max_iter, loosen tol, try solver='anderson' or 'broyden', or start closer to the solution "
                "('iterate' needs a contraction; 'gmres'/'cg' need f affine in x)")
        raise ConvergenceError(f"{what}(solver={solver!r}) did not converge after {fmap.n} evaluations of f: "
                               f"final residual max|f(x) - x| = {res:.3g} > tol = {tol:.3g}. To fix: {hint}.",
                               residual=res, n_iter=fmap.n)
    return x


def _iterate(fmap, x, tol, max_iter):
    fx, r = fmap(x)
    while fmap.n < max_iter and _max_abs(r) > tol:
        x = fx
        fx, r = fmap(x)
    return x, r


def _anderson(fmap, x, tol, max_iter, memory=5):
    """Anderson mixing (type II, full step; Walker & Ni, SIAM J. Numer. Anal. 49, 1715 (2011))."""
    fx, r = fmap(x)
    fs, rs = [fx.flatten()], [r.flatten()]
    while fmap.n < max_iter and _max_abs(r) > tol:
        if len(rs) > 1:
            d_r = torch.stack([b - a for a, b in zip(rs[:-1], rs[1:])])
            d_f = torch.stack([b - a for a, b in zip(fs[:-1], fs[1:])])
            gram = d_r @ d_r.mT
            regularization = 1e-12 * float(gram.diagonal().max()) + torch.finfo(x.dtype).tiny
            gram = gram + regularization * torch.eye(len(gram), dtype=x.dtype, device=x.device)
            gamma = torch.linalg.solve(gram, d_r @ rs[-1])
            x = (fs[-1] - gamma @ d_f).view_as(x)
        else:
            x = fx
        fx, r = fmap(x)
        fs, rs = (fs + [fx.flatten()])[-memory - 1:], (rs + [r.flatten()])[-memory - 1:]
    return x, r


def _broyden(fmap, x, tol, max_iter, memory=50):
    """Broyden's good method on r(x) = f(x) - x, with a limited-memory inverse Jacobian H = -1 + sum u v^T."""
    shape = x.shape
    x = x.flatten()
    fx, r = fmap(x.view(shape))
    r = r.flatten()
    us, vs = [], []

    def apply(vec, transpose=False):
        out = -vec
        for u, v in zip(us, vs):
            out = out + (v * (u @ vec) if transpose else u * (v @ vec))
        return out

    while fmap.n < max_iter and _max_abs(r) > tol:
        dx = -apply(r)
        x = x + dx
        _, r_new = fmap(x.view(shape))
        r_new = r_new.flatten()
        dr, r = r_new - r, r_new
        h_dr, v = apply(dr), apply(dx, transpose=True)
        denom = float(v @ dr)
        if denom != 0.0:
            us, vs = (us + [(dx - h_dr) / denom])[-memory:], (vs + [v])[-memory:]
    return x.view(shape), r.view(shape)


def _krylov_operator(fmap, base, r_base):
    """v -> (1 - J) v for f affine in x, from the residual at base + v / |v| (unit steps keep it exact)."""

    def matvec(v):
        norm = v.norm()
        _, r = fmap(base + v / norm)
        return (r_base - r) * norm

    return matvec


def _gmres(fmap, x, tol, max_iter, restart=20):
    """Restarted GMRES (Saad & Schultz 1986, Givens rotations) on (1 - J) dx = f(x) - x; converged on its own
    residual estimate (the returned residual is then that 2-norm, a 0-dim tensor)."""
    fx, r = fmap(x)
    while fmap.n < max_iter and _max_abs(r) > tol:
        matvec = _krylov_operator(fmap, x, r)
        beta = float(r.norm())
        basis = [r / beta]
        h = [[0.0] * restart for _ in range(restart + 1)]
        cs, sn, g = [], [], [beta] + [0.0] * restart
        k = 0
        for j in range(restart):
            if fmap.n >= max_iter:
                break
            w = matvec(basis[j])
            for i in range(j + 1):
                h[i][j] = float(w.flatten() @ basis[i].flatten())
                w = w - h[i][j] * basis[i]
            h_next = float(w.norm())
            for i in range(j):
                h[i][j], h[i + 1][j] = cs[i] * h[i][j] + sn[i] * h[i + 1][j], -sn[i] * h[i][j] + cs[i] * h[i + 1][j]
            rho = math.hypot(h[j][j], h_next)
            if rho == 0.0:  # (1 - J) maps this Krylov direction to zero: singular
                break
            cs.append(h[j][j] / rho)
            sn.append(h_next / rho)
            h[j][j] = rho
            g[j + 1], g[j] = -sn[j] * g[j], cs[j] * g[j]
            k = j + 1
            if abs(g[k]) <= tol or h_next <= torch.finfo(x.dtype).eps * beta:
                break
            basis.append(w / h_next)
        if k == 0:
            break
        y = [0.0] * k
        for i in reversed(range(k)):
            y[i] = (g[i] - sum(h[i][m] * y[m] for m in range(i + 1, k))) / h[i][i]
        x = x + sum(yi * b for yi, b in zip(y, basis))
        if abs(g[k]) <= tol:  # |g_k| is |f(x) - x|_2 >= its max norm, exactly for f affine: no check evaluation
            return x, x.new_tensor(abs(g[k]))
        fx, r = fmap(x)
    return x, r


def _cg(fmap, x, tol, max_iter):
    """Conjugate gradients on (1 - J) dx = f(x) - x; valid only when 1 - J is symmetric positive definite."""
    _, r = fmap(x)
    matvec = _krylov_operator(fmap, x, r)
    p, rr = r, float((r * r).sum())
    while fmap.n < max_iter and _max_abs(r) > tol:
        mp = matvec(p)
        curvature = float((p * mp).sum())
        if not curvature > 0:
            raise ConvergenceError(f"{fmap.what}(solver='cg'): 1 - df/dx is not positive definite (p.Ap = "
                                   f"{curvature:.3g}); use 'gmres'.", residual=_max_abs(r), n_iter=fmap.n)
        alpha = rr / curvature
        x, r = x + alpha * p, r - alpha * mp
        rr, rr_old = float((r * r).sum()), rr
        p = r + (rr / rr_old) * p
    _, r = fmap(x)  # the true residual: the recurrence above drifts
    return x, r


def _max_abs(r: torch.Tensor) -> float:
    return float(r.abs().max())


_SOLVER_FUNCTIONS = {"anderson": _anderson, "broyden": _broyden, "iterate": _iterate, "gmres": _gmres, "cg": _cg}


# ---- eigh ----


def eigh(A: torch.Tensor, B: torch.Tensor | None = None,
         degeneracy_tol: float = 1e-9) -> tuple[torch.Tensor, torch.Tensor]:
    """Eigenvalues (ascending) and eigenvectors of the real symmetric A, or of A C = B C diag(e) with B SPD.

    Like ``torch.linalg.eigh`` (batched over leading dimensions; only the lower triangles are read), but the
    backward sets the 1/(e_j - e_i) factors of pairs with |e_j - e_i| <= ``degeneracy_tol`` to zero. Gradients of
    quantities invariant under rotations within a degenerate subspace (sums of eigenvalues, projectors C_occ
    C_occ^T onto subspaces bounded by a gap, densities) are then finite and exact where the plain backward
    gives NaN/inf; gradients of individual eigenvectors inside a degenerate subspace are not defined and are
    not given. The generalized problem is reduced by the Cholesky factor B = L L^T; its eigenvectors are
    B-orthonormal (C^T B C = 1) and its derivatives w.r.t. A and B follow by autograd through the reduction.
    Gradients w.r.t. A and B are symmetric. Double backward is supported.

    Args:
        A: (..., n, n) symmetric.
        B: (..., n, n) symmetric positive definite (e.g. an overlap matrix), or None.
        degeneracy_tol: absolute eigenvalue gap, in the units of the eigenvalues, below which a pair counts as
            degenerate. The default suits float64; in float32 use about 1e-5 times the eigenvalue scale.

    Returns:
        e: (..., n) eigenvalues, ascending.
        C: (..., n, n) eigenvectors as columns.
    """
    if A.is_complex() or (B is not None and B.is_complex()):
        raise TypeError("eigh: only real symmetric matrices are supported.")
    if B is None:
        return _Eigh.apply(A, degeneracy_tol)
    L, info = torch.linalg.cholesky_ex(B)
    if bool((info > 0).any()):
        raise ValueError("eigh: B is not positive definite (its Cholesky factorization failed at leading minor "
                         f"{int(info.max())}); B must be symmetric positive definite, e.g. an overlap matrix of "
                         "linearly independent basis functions.")
    half = torch.linalg.solve_triangular(L, A, upper=False)
    reduced = torch.linalg.solve_triangular(L, half.mT, upper=False)  # L^-1 A L^-T
    e, W = _Eigh.apply(reduced, degeneracy_tol)
    return e, torch.linalg.solve_triangular(L.mT, W, upper=True)


class _Eigh(torch.autograd.Function):
    """torch.linalg.eigh with a backward that masks degenerate pairs (see ``eigh``)."""

    generate_vmap_rule = True

    @staticmethod
    def forward(A, degeneracy_tol):
        e, V = torch.linalg.eigh(A)
        return e, V

    @staticmethod
    def setup_context(ctx, inputs, output):
        ctx.degeneracy_tol = inputs[1]
        ctx.save_for_backward(*output)

    @staticmethod
    def backward(ctx, grad_e, grad_V):
        e, V = ctx.saved_tensors
        gap = e.unsqueeze(-2) - e.unsqueeze(-1)  # gap[..., i, j] = e_j - e_i
        resolved = gap.abs() > ctx.degeneracy_tol
        inverse_gap = torch.where(resolved, 1 / torch.where(resolved, gap, 1.0), 0.0)
        inner = torch.diag_embed(grad_e) + inverse_gap * (V.mT @ grad_V)
        grad_A = V @ inner @ V.mT
        return (grad_A + grad_A.mT) / 2, None
