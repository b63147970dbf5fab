"""Molecular properties of a converged Kohn-Sham calculation, all differentiable (atomic units).

Non-variational properties (dipole, density, orbital gap) come from the implicitly differentiated solution
(``dft.response``), so their gradients w.r.t. functional parameters, nuclear positions or the field
include the response of the density. The polarizability is the second field derivative of the energy, by
double backward through that response.

Dipoles are taken about the origin of the coordinates, as PySCF's ``mf.dip_moment`` (origin-independent
for neutral molecules).
"""

import copy

import torch

from . import scf
from .errors import DFTError
from .response import density_matrix, solve


def nuclear_dipole(mol):
    """sum_A Z_A R_A, (3,), e Bohr; a torch function of ``mol.coords``."""
    return mol.nuclear_charges @ mol.coords


def dipole(mf):
    """Dipole moment mu = sum_A Z_A R_A - tr(D r), (3,) tensor, atomic units (e Bohr; 1 a.u. = 2.5417 Debye).

    Equal to -dE/dF at the field of ``mf`` and to PySCF's ``mf.dip_moment(unit="au")``; differentiable
    through the implicit response of the density.
    """
    dm = density_matrix(mf)
    total = dm if dm.ndim == 2 else dm[0] + dm[1]
    return nuclear_dipole(mf.mol) - torch.einsum("xij,ji->x", mf.dipole_integrals, total)


def polarizability(mf):
    """Static dipole polarizability alpha_ij = -d^2E / dF_i dF_j at the field of ``mf`` (zero if none),
    (3, 3) tensor, atomic units (e^2 Bohr^2 / Hartree = Bohr^3), by double backward of the energy through the
    implicit response."""
    field = torch.zeros(3, dtype=torch.float64, device=mf.mol.device) if mf.field is None else mf.field
    field = field.detach().requires_grad_()
    # The same converged state with the field as a fresh leaf to differentiate against.
    at_field = copy.copy(mf)
    at_field.field = field
    with torch.enable_grad():
        energy = at_field.energy_tot(density_matrix(at_field))
        (gradient,) = torch.autograd.grad(energy, field, create_graph=True)
        rows = [torch.autograd.grad(gradient[i], field, retain_graph=i < 2)[0] for i in range(3)]
    return -torch.stack(rows)


def homo_lumo_gap(mf):
    """Lowest virtual minus highest occupied orbital energy (over both spins for UKS), Hartree; a scalar
    tensor differentiable through the implicit response."""
    sol = solve(mf)
    occupied = sol.mo_occ > 0
    if occupied.all():
        raise DFTError(f"{mf!r}: every orbital is occupied, there is no LUMO; use a larger basis.")
    return sol.mo_energy[~occupied].min() - sol.mo_energy[occupied].max()


def density(mf):
    """Electron density on the integration grid ``mf.grid`` (points ``mf.grid.coords``), bohr^-3: (N,) total
    for RKS, (2, N) per spin for UKS; differentiable through the implicit response."""
    if mf.grid is None:
        raise DFTError(f"{mf!r} has no integration grid (Hartree-Fock builds none); use a density functional.")
    dm = density_matrix(mf)
    return torch.cat([scf.eval_rho(ao, dm)[0] for _, ao in mf.grid.blocks()], dim=-1)
