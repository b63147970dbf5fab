"""The converged Kohn-Sham solution attached to the autograd graph by implicit differentiation.

``solve(mf)`` returns the density matrix, orbital energies and orbitals of a converged ``RKS``/``UKS``
(``density_matrix(mf)`` the density matrix alone) as differentiable functions of every tensor the SCF depends
on (integrals, and so nuclear coordinates; the functional's parameters; the electric field). The density
matrix is the fixed point of the Kohn-Sham map

    D -> D_new(D, theta) = aufbau occupation of the eigenvectors of F(D, theta) C = S(theta) C e,

found by ``inference.implicit.fixed_point`` warm-started at the SCF's density (so the forward solve costs a
Fock build or two) and differentiated by the implicit function theorem: backward solves one adjoint
equation with vector-Jacobian products of the map; memory does not depend on the number of SCF iterations.
Double backward works (Hessians, polarizabilities).

The eigenproblem is ``inference.implicit.eigh``, whose backward masks (near-)degenerate pairs. The density is
the projector onto the occupied orbitals, invariant under rotations among occupied (or among virtual)
orbitals, so degenerate occupied or virtual levels (N2's pi orbitals) give exact derivatives; only the
occupied-virtual gap must be open: a gap below ``GAP_TOL`` raises :class:`dft.DFTError`. Derivatives of
individual orbitals (or orbital energies) inside a set of levels closer than ``GAP_TOL`` are not defined and
not given; those of the set's projector and of the sum of its energies are.
"""

import copy
from typing import NamedTuple

import torch

from inference.implicit import eigh, fixed_point
from inference.optim import check_number

from . import scf
from .errors import DFTError, OptionError

# Hartree. A HOMO-LUMO gap this small makes the density's response singular; pairs closer than this are
# masked in the eigensolver's backward (exact for the density, whose occupied-virtual pairs are all farther).
GAP_TOL = 1e-6


class Response(NamedTuple):
    """A converged Kohn-Sham solution on the autograd graph (shapes as ``mf.make_rdm1()``, ``mf.mo_*``)."""

    dm: torch.Tensor  # (nao, nao) total, or (2, nao, nao) per spin
    mo_energy: torch.Tensor  # (nao,) or (2, nao), Hartree, ascending
    mo_coeff: torch.Tensor  # (nao, nao) or (2, nao, nao), PySCF's phase convention (scf.fix_phase)
    mo_occ: torch.Tensor  # (nao,) or (2, nao); constants


def solve(mf, tol=None):
    """The converged solution of ``mf`` (after ``mf.kernel()``), differentiable by implicit differentiation:
    the density matrix of :func:`density_matrix` and the orbitals and orbital energies of its Fock matrix.

    Args:
        mf: :class:`dft.RKS` or :class:`dft.UKS` whose ``kernel()`` has run.
        tol: convergence of the fixed point, max |D_new - D| (default sqrt(machine epsilon), 1.5e-8 in float64).

    Returns:
        :class:`Response`. Its tensors require grad when an input of ``mf`` does (and grad mode is on).

    Raises:
        As :func:`density_matrix`.
    """
    dm = density_matrix(mf, tol)
    mo_energy, mo_coeff = eigh(mf.get_fock(dm), mf.overlap, degeneracy_tol=GAP_TOL)
    return Response(dm, mo_energy, scf.fix_phase(mo_coeff), mf.mo_occ)


def density_matrix(mf, tol=None):
    """The converged density matrix of ``mf`` (after ``mf.kernel()``), differentiable by implicit
    differentiation: (nao, nao) total or (2, nao, nao) per spin. All that density-based properties need; a
    Fock build cheaper than :func:`solve`.

    Args:
        mf: :class:`dft.RKS` or :class:`dft.UKS` whose ``kernel()`` has run.
        tol: convergence of the fixed point, max |D_new - D| (> 0; default sqrt(machine epsilon), 1.5e-8 in
            float64).

    Raises:
        OptionError: ``tol`` not a finite number > 0.
        DFTError: ``kernel()`` has not run, the overlap matrix is linearly dependent, or the HOMO-LUMO gap is
            below ``GAP_TOL`` (the derivatives would be singular).
        inference.ConvergenceError: the fixed point or its adjoint did not converge.
    """
    if tol is not None:
        check_number("density_matrix", "tol", tol, above=0, error=OptionError)
    if mf.mo_coeff is None:
        raise DFTError(f"{mf!r}: run mf.kernel() before asking for its response.")
    if mf.mo_coeff.shape[-1] != mf.mol.nao:
        raise DFTError(f"{mf!r}: the basis is linearly dependent (overlap eigenvalues below "
                       f"{scf.OVERLAP_LINDEP:g} were dropped); the response needs a linearly independent basis.")
    check_gap(mf.mo_energy, mf.mo_occ)
    inputs = _inputs(mf)
    names = [name for name, value in inputs.items() if value.requires_grad]
    hyb = next((name for name, t in inputs.items() if t is mf.functional.hyb), None)

    def kohn_sham_map(dm, *values):
        # Every input is substituted, the constants too: a grid block is one (weights, AO values) pair even
        # when only its AO values carry a coordinate derivative.
        model = _substituted(mf, {**inputs, **dict(zip(names, values))}, hyb)
        _, mo_coeff = eigh(model.get_fock(dm), model.overlap, degeneracy_tol=GAP_TOL)
        return scf.make_rdm1(mo_coeff, mf.mo_occ)

    return fixed_point(kohn_sham_map, mf.make_rdm1(), *(inputs[name] for name in names), tol=tol)


def check_gap(mo_energy, mo_occ, tol=GAP_TOL):
    """Raise :class:`DFTError` if, in a spin channel, the lowest virtual level is not above the highest
    occupied one by more than ``tol`` (Hartree): the density's derivatives would be singular there."""
    for spin, (energy, occ) in enumerate(zip(mo_energy.reshape(-1, mo_energy.shape[-1]),
                                             mo_occ.reshape(-1, mo_occ.shape[-1]))):
        occupied = occ > 0
        if not occupied.any() or occupied.all():
            continue
        homo, lumo = float(energy[occupied].max()), float(energy[~occupied].min())
        if lumo - homo <= tol:
            where = "" if mo_energy.ndim == 1 else f" ({'alpha' if spin == 0 else 'beta'} spin)"
            raise DFTError(f"HOMO-LUMO gap {lumo - homo:.3g} Ha{where} is below {tol:g} Ha: the occupied and "
                           "virtual levels are degenerate, so the density (and any derivative through it) is not "
                           "differentiable. Break the degeneracy (geometry, spin state, UKS) or use only "
                           "variational quantities (mf.kernel()'s energy and its first derivatives).")


def _inputs(mf):
    """Every tensor the Kohn-Sham map of ``mf`` depends on, by name (see :func:`_substituted`)."""
    inputs = {"hcore": mf.hcore, "overlap": mf.overlap, "eri": mf.eri}
    if mf.field is not None:
        inputs["field"], inputs["dipole_integrals"] = mf.field, mf.dipole_integrals
    functional = mf.functional
    inputs.update((f"xc.{name}", t) for name, t in functional.named_parameters())
    inputs.update((f"xc.{name}", t) for name, t in functional.named_buffers())
    if torch.is_tensor(functional.hyb) and not any(t is functional.hyb for t in inputs.values()):
        inputs["hyb"] = functional.hyb
    if mf.grid is not None:
        blocks = list(mf.grid.blocks())
        if any(t.requires_grad for block in blocks for t in block):
            for i, (weights, ao) in enumerate(blocks):
                inputs[f"grid.{i}.weights"], inputs[f"grid.{i}.ao"] = weights, ao
    return inputs


def _substituted(mf, values, hyb):
    """A shallow copy of ``mf`` computing with ``values`` (every name from :func:`_inputs`) in place of its own;
    ``hyb`` names the functional's exact-exchange fraction among them, if it is a tensor."""
    model = copy.copy(mf)
    for name in ("hcore", "overlap", "eri", "dipole_integrals", "field"):
        if name in values:
            setattr(model, name, values[name])
    xc = {name.removeprefix("xc."): t for name, t in values.items() if name.startswith("xc.")}
    if xc or hyb in values:
        model.functional = _Functional(mf.functional, xc, values.get(hyb, mf.functional.hyb))
    nblocks = sum(name.startswith("grid.") for name in values) // 2
    if nblocks:
        model.grid = _Blocks([(values[f"grid.{i}.weights"], values[f"grid.{i}.ao"]) for i in range(nblocks)])
    return model


class _Functional:
    """A functional module evaluated with some of its parameters/buffers replaced (``functional_call``)."""

    def __init__(self, module, tensors, hyb):
        self.module, self.tensors, self.hyb, self.family = module, tensors, hyb, module.family

    def __call__(self, rho, sigma=None, spin=0, tau=None):
        kwargs = {"spin": spin} if tau is None else {"spin": spin, "tau": tau}
        return torch.func.functional_call(self.module, self.tensors, (rho, sigma), kwargs)

    def parameters(self):
        """The tensors the functional computes with that may require grad: the substituted ones and the
        module's own parameters not substituted."""
        return [*self.tensors.values(), *(t for name, t in self.module.named_parameters() if name not in self.tensors)]


class _Blocks:
    """Grid blocks given as a list of (weights, ao) tensors (the interface of ``dft.grids.Grid``)."""

    def __init__(self, blocks):
        self._blocks = blocks

    def blocks(self):
        return iter(self._blocks)
