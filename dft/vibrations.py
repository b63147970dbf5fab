"""Vibrations: the nuclear Hessian of a converged Kohn-Sham calculation and its harmonic analysis.

Hessian. At a converged SCF the energy gradient is the Lagrangian's partial derivative at fixed density matrix D and
energy-weighted density matrix W (``dft.ks``):

    g(R) = d/dR [E(D, R) - tr(W S(R))]  at fixed D, W,

an identity that holds at every geometry. Its total derivative, with D(R) and W(R) = D F(D) D / 2 (restricted;
D_s F_s D_s per spin) from ``dft.response.density_matrix``, is the Hessian: for each of the 3 natm rows, one
backward through the second derivatives of the integrals (``dft.integral_grad``) and one through the
implicitly differentiated Kohn-Sham fixed point (a single adjoint solve; the coupled-perturbed equations of
PySCF's analytic Hessian, solved one row at a time). This costs about half of differentiating
``kernel(response=True)`` twice, whose second backward differentiates the adjoint solve itself. W is built
from D and F rather than from orbitals, so degenerate occupied levels need no care.
"""

import copy
from typing import NamedTuple

import torch
from pyscf.data import nist

from .errors import DFTError, OptionError
from .response import density_matrix


def hessian(mf):
    """Nuclear Hessian of the converged ``mf`` (after ``mf.kernel()``), Hartree/Bohr^2.

    The integrals are rebuilt on a fresh copy of ``mf.mol.coords`` (``mf`` is left as it is), so ``mf``
    itself need not have been built with ``coords.requires_grad``. The grid follows ``mf``'s choice: fixed in
    space by default, as PySCF's analytic Hessian (``mf.Hessian().kernel()``), or moving with the atoms with
    ``grid_response=True``.

    Returns:
        (natm, 3, natm, 3) tensor H[A, x, B, y] = d2E/dR_Ax dR_By, symmetric; a plain value (third derivatives
        are not available). PySCF's array is ordered (natm, natm, 3, 3).

    Raises:
        DFTError: ``mf.kernel()`` has not run, the HOMO-LUMO gap is closed, or ``mf`` has an electric field
            (the dipole integrals have no second coordinate derivatives).
    """
    if mf.mo_coeff is None:
        raise DFTError(f"{mf!r}: run mf.kernel() before asking for its Hessian.")
    coords = mf.mol.coords.detach().clone().requires_grad_()
    model = copy.copy(mf)
    with torch.enable_grad():
        model.reset(mf.mol.with_coords(coords))
        model.mo_energy, model.mo_coeff, model.mo_occ = mf.mo_energy, mf.mo_coeff, mf.mo_occ
        dm = density_matrix(model)
        w = _energy_weighted(dm, model.get_fock(dm))
        dm_fixed, w_fixed = dm.detach().requires_grad_(), w.detach().requires_grad_()
        lagrangian = model.energy_tot(dm_fixed) - (_total(w_fixed) * model.overlap).sum()
        (gradient,) = torch.autograd.grad(lagrangian, coords, create_graph=True)
        rows = []
        for component in gradient.reshape(-1):
            direct, d_dm, d_w = torch.autograd.grad(component, (coords, dm_fixed, w_fixed), retain_graph=True,
                                                    allow_unused=True)
            (through_response,) = torch.autograd.grad((dm, w), coords, grad_outputs=(d_dm, d_w), retain_graph=True)
            rows.append(through_response if direct is None else direct + through_response)
    natm = mf.mol.natm
    return torch.stack(rows).reshape(natm, 3, natm, 3)


def _energy_weighted(dm, fock):
    """W = sum_occ n_p e_p C_p C_p^T from D and F: D F D / 2 (restricted, D total), D_s F_s D_s per spin."""
    return dm @ fock @ dm / 2 if dm.ndim == 2 else dm @ fock @ dm


def _total(w):
    return w if w.ndim == 2 else w[0] + w[1]


# Frequency (Hz) of a unit force constant (Hartree/Bohr^2) on a unit mass (amu), and the cm^-1 it makes.
_AU_TO_HZ = (nist.HARTREE2J / (nist.ATOMIC_MASS * nist.BOHR_SI**2)) ** 0.5 / (2 * torch.pi)
_AU_TO_WAVENUMBER = _AU_TO_HZ / nist.LIGHT_SPEED_SI * 1e-2
# PySCF's thresholds: projector eigenvalues counted as zero, and rotational constants (GHz) of a zero moment.
_LINDEP = 1e-7
_ZERO_MOMENT = 1e-9


class HarmonicAnalysis(NamedTuple):
    """Normal modes, lowest first (PySCF's ``harmonic_analysis`` fields)."""

    frequencies: torch.Tensor  # (nmodes,) cm^-1; an imaginary frequency i|w| is given as -|w|
    force_constants: torch.Tensor  # (nmodes,) eigenvalues of the mass-weighted Hessian, Hartree/(Bohr^2 amu)
    modes: torch.Tensor  # (nmodes, natm, 3) Cartesian displacements, PySCF's ``norm_mode`` (unit: amu^-1/2)
    reduced_masses: torch.Tensor  # (nmodes,) amu


def masses(mol):
    """Isotope-averaged atomic masses (amu) as PySCF's harmonic analysis uses, (natm,) float64 tensor."""
    return torch.as_tensor(mol.pyscf.atom_mass_list(isotope_avg=True), dtype=torch.float64, device=mol.device)


def harmonic_analysis(mol, hess):
    """Harmonic frequencies and normal modes of a Hessian, as ``pyscf.hessian.thermo.harmonic_analysis``.

    Args:
        mol: :class:`dft.Molecule` (positions and masses).
        hess: (natm, 3, natm, 3) (or (3 natm, 3 natm)) finite Hessian, Hartree/Bohr^2 (:func:`hessian`).

    Returns:
        :class:`HarmonicAnalysis` with 3 natm - 6 modes (3 natm - 5 for a linear molecule, 3 for an atom). A
        torch function of ``hess`` and ``mol.coords`` (differentiable where the frequencies are distinct).
    """
    natm = mol.natm
    if not torch.is_tensor(hess) or hess.shape not in ((natm, 3, natm, 3), (3 * natm, 3 * natm)):
        raise OptionError(f"harmonic_analysis: hess must be a ({natm}, 3, {natm}, 3) tensor (Hartree/Bohr^2) for "
                          f"{mol!r}, got {tuple(hess.shape) if torch.is_tensor(hess) else type(hess).__name__}.")
    if not bool(torch.isfinite(hess).all()):
        raise OptionError("harmonic_analysis: hess has NaN or infinite entries.")
    mass = masses(mol)
    coords = mol.coords - (mass @ mol.coords) / mass.sum()
    inv_sqrt = mass.rsqrt().repeat_interleave(3)
    h = hess.reshape(3 * natm, 3 * natm) * inv_sqrt[:, None] * inv_sqrt[None, :]
    space = torch.linalg.qr(_rigid_motions(mass, coords).T).Q
    eye = torch.eye(3 * natm, dtype=h.dtype, device=h.device)
    w, v = torch.linalg.eigh(eye - space @ space.T)
    basis = v[:, w > _LINDEP]
    force_constants, vectors = torch.linalg.eigh(basis.T @ h @ basis)
    frequencies = force_constants.sign() * force_constants.abs().sqrt() * _AU_TO_WAVENUMBER
    modes = ((basis @ vectors) * inv_sqrt[:, None]).T.reshape(-1, natm, 3)
    reduced = 1 / (modes * modes).sum((1, 2))
    return HarmonicAnalysis(frequencies, force_constants, modes, reduced)


def _rigid_motions(mass, coords):
    """Mass-weighted translations (3) and rotations about the principal axes (3; 2 if linear, 0 for an atom),
    (n, 3 natm), as PySCF's ``thermo._get_TR`` and rotor classification."""
    natm = len(mass)
    sqrt_mass = mass.sqrt()
    eye = torch.eye(3, dtype=coords.dtype, device=coords.device)
    motions = [(sqrt_mass[:, None] * eye[x]).reshape(-1) for x in range(3)]
    inertia = torch.einsum("m,mx,my->xy", mass, coords, coords)
    inertia = eye * inertia.trace() - inertia
    moments, axes = torch.linalg.eigh(inertia)
    moments, axes = moments.flip(0), axes.flip(1)  # the last axis has the smallest moment
    if natm == 1:
        return torch.stack(motions)
    c = coords @ axes
    ex, ey, ez = axes.T
    rotations = [sqrt_mass[:, None] * (c[:, 1:2] * ez - c[:, 2:3] * ey),
                 sqrt_mass[:, None] * (c[:, 2:3] * ex - c[:, 0:1] * ez),
                 sqrt_mass[:, None] * (c[:, 0:1] * ey - c[:, 1:2] * ex)]
    linear = bool(moments[-1].abs() < _ZERO_MOMENT)
    motions += [r.reshape(-1) for r in (rotations[:2] if linear else rotations)]
    return torch.stack(motions)


def frequencies(mf):
    """Harmonic vibrational frequencies of the converged ``mf`` (at its geometry, which should be a minimum),
    (nmodes,) tensor in cm^-1, lowest first; imaginary frequencies are negative. See :func:`harmonic_analysis`
    for the modes."""
    return harmonic_analysis(mf.mol, hessian(mf)).frequencies
