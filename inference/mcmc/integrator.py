"""Hamiltonian dynamics on flat, batched positions: kinetic energy, momentum draws, velocity Verlet.

Every tensor carries a leading chain dimension C: positions, momenta and gradients are (C, D), energies and step
sizes (C,). The inverse mass matrix is diagonal, (C, D), or dense, (C, D, D); the kinetic energy is
K(r) = r^T M^{-1} r / 2 (the unit of the potential energy; momenta in the unit of sqrt(energy x mass)).

The potential and its gradient come from a ``PotentialAndGrad``, which turns the errors by which a model says
that its density cannot be computed at a position (``MODEL_ERRORS``) into a rejection of that position.
"""

import math

import torch
from torch.utils._python_dispatch import is_in_torch_dispatch_mode

# The exceptions by which a potential says that its density cannot be computed at a position: a linear-algebra
# failure (a Cholesky factor of a kernel matrix that is not numerically positive definite, a singular solve) or a
# domain error (an argument outside a distribution's support or a function's domain: ValueError; a division by
# zero, an overflow, inference's NonFiniteError: ArithmeticError). Stan rejects a proposal on such a domain error
# and NumPyro meets the NaN it gives; a sampler here rejects the position. Every other exception (TypeError, a
# shape mismatch's RuntimeError, IndexError, KeyboardInterrupt, ...) is a bug or an interrupt and propagates.
MODEL_ERRORS = (torch.linalg.LinAlgError, ValueError, ArithmeticError)


def potential_and_grad(potential_fn, z):
    """Potential energy U(z), (C,), and its gradient dU/dz, (C, D), from one forward and one backward pass.

    ``potential_fn`` maps (C, D) to (C,) with chains independent, so the gradient of the sum over chains is the
    per-chain gradient. (Differentiating the sum rather than passing ``grad_outputs``: torch imports SymPy, a
    second of start-up, the first time ``grad_outputs`` is given.)
    """
    with torch.enable_grad():
        z = z.detach().requires_grad_(True)
        potential = potential_fn(z)
        (grad,) = torch.autograd.grad(potential.sum(), z)
    return potential.detach(), grad


class PotentialAndGrad:
    """``potential_and_grad`` of one potential function, with the positions where the potential raises rejected.

    ``evaluate(z)``, positions (C, D), returns (U (C,), dU/dz (C, D)). Where the potential (its forward or backward
    pass) raises one of ``MODEL_ERRORS``, the chains that raise are found and get U = +inf and a NaN gradient, the
    others their values: an infinite potential has zero density, so a sampler rejects the position and counts a
    divergence (an energy error above any bound), and the NaN gradient carries the failure to the end of a
    fixed-length HMC trajectory. Chains are independent, but vectorized chains share one batched evaluation,
    which one failing chain aborts: the batch is split in halves, recursively, down to the chains that raise
    (about 2 log2(C) evaluations per chain that raises). A chain whose position is not finite (one that raised
    earlier in its trajectory and moved along its NaN gradient) is rejected without evaluation. Evaluations that
    raise nothing cost nothing extra.

    Errors that still raise: any exception not in ``MODEL_ERRORS``; those in the potential's attribute
    ``errors_to_raise`` (a tuple, default none; a model front-end names its own errors there, e.g.
    ``ppl.ModelError`` for a malformed model); and any exception while the evaluation is recorded by a dispatch
    mode (``jit_compile``'s tracing, see ``inference.mcmc.jit``: a rejection would be recorded as a constant).

    Attributes:
        potential_fn: the potential, positions (C, D) -> energies (C,).
        raised: the rows of the batch (chains) whose potential raised since it was last cleared, each with its
            first exception; the kernel clears it at every iteration.
    """

    def __init__(self, potential_fn):
        self.potential_fn = potential_fn
        self.errors_to_raise = getattr(potential_fn, "errors_to_raise", ())
        self.raised = {}

    def __call__(self, z):
        try:
            return potential_and_grad(self.potential_fn, z)
        except MODEL_ERRORS as error:
            if isinstance(error, self.errors_to_raise) or is_in_torch_dispatch_mode():
                raise
            failure = error
        potential = torch.full_like(z[:, 0], math.inf)
        grad = torch.full_like(z, math.nan)
        finite = z.isfinite().all(-1).nonzero().flatten()
        self._search(z, finite, potential, grad, failure if len(finite) == len(z) else None)
        return potential, grad

    def _search(self, z, rows, potential, grad, failure=None):
        """Fill ``potential`` and ``grad`` at ``rows`` (a 1-D index tensor) of ``z``, or record the rows that
        raise; ``failure``: the exception that evaluating exactly these rows raised, if that is known."""
        if failure is None and len(rows):
            try:
                potential[rows], grad[rows] = potential_and_grad(self.potential_fn, z[rows])
                return
            except MODEL_ERRORS as error:
                if isinstance(error, self.errors_to_raise):
                    raise
                failure = error
        if failure is None:
            return
        if len(rows) == 1:
            self.raised.setdefault(int(rows[0]), failure)
            return
        half = len(rows) // 2
        self._search(z, rows[:half], potential, grad)
        self._search(z, rows[half:], potential, grad)


def velocity(inverse_mass_matrix, r):
    """dK/dr = M^{-1} r, (C, D)."""
    if inverse_mass_matrix.dim() == 2:
        return inverse_mass_matrix * r
    return (inverse_mass_matrix @ r.unsqueeze(-1)).squeeze(-1)


def kinetic_energy(inverse_mass_matrix, r):
    """K = r^T M^{-1} r / 2, (C,)."""
    return 0.5 * (velocity(inverse_mass_matrix, r) * r).sum(-1)


def mass_matrix_sqrt(inverse_mass_matrix):
    """A factor A with A A^T = M (the mass matrix), used to draw momenta r = A @ noise ~ N(0, M).

    Diagonal: M^{1/2} = 1 / sqrt(M^{-1}). Dense: with M^{-1} = L L^T (Cholesky), A = L^{-T}.
    """
    if inverse_mass_matrix.dim() == 2:
        return inverse_mass_matrix.rsqrt()
    chol = torch.linalg.cholesky(inverse_mass_matrix)
    eye = torch.eye(chol.shape[-1], dtype=chol.dtype, device=chol.device).expand_as(chol)
    return torch.linalg.solve_triangular(chol.mT, eye, upper=True)


def momentum(mass_matrix_sqrt, noise):
    """Momenta r ~ N(0, M), (C, D), from standard normal noise (C, D)."""
    if mass_matrix_sqrt.dim() == 2:
        return mass_matrix_sqrt * noise
    return (mass_matrix_sqrt @ noise.unsqueeze(-1)).squeeze(-1)


def leapfrog(evaluate, z, r, grad, step_size, inverse_mass_matrix):
    """One velocity-Verlet step of signed size ``step_size`` (C,) for every chain; ``evaluate``: positions
    (C, D) -> (potential (C,), gradient (C, D)), a ``PotentialAndGrad``.

    Returns (z, r, potential, grad) at the end of the step; a chain with step size 0 stays where it is.
    """
    h = step_size.unsqueeze(-1)
    r = torch.addcmul(r, h, grad, value=-0.5)
    z = torch.addcmul(z, h, velocity(inverse_mass_matrix, r))
    potential, grad = evaluate(z)
    r = torch.addcmul(r, h, grad, value=-0.5)
    return z, r, potential, grad
