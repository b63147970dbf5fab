"""Hamiltonian dynamics on flat, batched positions: kinetic energy, momentum draws, velocity Verlet.

Every tensor carries a leading chain dimension C: positions, momenta and gradients are (C, D), energies and step
sizes (C,). The inverse mass matrix is diagonal, (C, D), or dense, (C, D, D); the kinetic energy is
K(r) = r^T M^{-1} r / 2 (the unit of the potential energy; momenta in the unit of sqrt(energy x mass)).
"""

import torch


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


def leapfrog(potential_fn, z, r, grad, step_size, inverse_mass_matrix):
    """One velocity-Verlet step of signed size ``step_size`` (C,) for every chain.

    Returns (z, r, potential, grad) at the end of the step; a chain with step size 0 stays where it is.
    """
    h = step_size.unsqueeze(-1)
    r = torch.addcmul(r, h, grad, value=-0.5)
    z = torch.addcmul(z, h, velocity(inverse_mass_matrix, r))
    potential, grad = potential_and_grad(potential_fn, z)
    r = torch.addcmul(r, h, grad, value=-0.5)
    return z, r, potential, grad
