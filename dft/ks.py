"""Restricted and unrestricted Kohn-Sham (``RKS``, ``UKS``): thin classes around the functions of ``dft.scf``.

A class holds the molecule, the functional, an optional uniform electric field and the integrals (tensors on
the molecule's device, built once); ``kernel()`` runs the SCF and stores its results on the object. Every
step is a function in ``dft.scf`` that can be called on its own (``get_veff``, ``energy_elec``, ``eig``,
``make_rdm1``).

Derivatives. ``kernel()`` converges without gradients, then returns the total energy as a torch scalar that
is differentiable w.r.t. everything upstream that requires grad (integrals and so nuclear coordinates, the
functional's parameters, the field). By default it uses the variational (Hellmann-Feynman/Lagrangian) form

    E(D*, theta) - tr(W* S(theta)),  D* and W* (energy-weighted density matrix) held fixed,

whose value is the SCF energy and whose first derivatives are exact at a converged SCF, at the cost of one
energy evaluation. It is not enough for second derivatives (nuclear Hessian, polarizability): for those,
``kernel(response=True)`` builds the energy from ``dft.response.density_matrix``, the density implicitly
differentiated through the Kohn-Sham fixed point, so double backward is exact.
"""

import warnings
from functools import partial

import numpy as np
import torch
from pyscf.scf import hf, uhf

from inference.optim import check_number

from . import integrals, scf
from .errors import DFTError, OptionError, SCFNotConvergedError, SCFNotConvergedWarning
from .grids import LEVELS, Grid
from .molecule import Molecule
from .properties import nuclear_dipole
from .response import density_matrix
from .xc import get_functional


class _KohnSham:
    def __init__(self, mol, xc="lda,vwn", grid_level=3, grid_response=False, density_fit=False, auxbasis=None,
                 conv_tol=1e-9, conv_tol_grad=None, max_cycle=50, level_shift=0.0, damp=0.0, diis_space=8,
                 field=None, verbose=False, max_memory=4000):
        where = type(self).__name__
        if not isinstance(mol, Molecule):
            raise OptionError(f"{where}: mol must be a dft.Molecule (dft.Molecule.from_pyscf converts a PySCF Mole), "
                              f"got {type(mol).__name__}.")
        scf.check_controls(where, conv_tol, conv_tol_grad, max_cycle, diis_space, level_shift, damp)
        check = partial(check_number, where, error=OptionError)
        check("grid_level", grid_level, integer=True, at_least=LEVELS[0], at_most=LEVELS[-1])
        check("max_memory", max_memory, above=0)
        for name, flag in (("grid_response", grid_response), ("density_fit", density_fit), ("verbose", verbose)):
            _check_flag(where, name, flag)
        self.functional = get_functional(xc)
        self.field = _check_field(where, field, mol)
        self.grid_level = grid_level
        self.grid_response = grid_response
        self.density_fit = density_fit
        self.auxbasis = auxbasis
        self.conv_tol = conv_tol
        self.conv_tol_grad = conv_tol_grad
        self.max_cycle = max_cycle
        self.level_shift = level_shift
        self.damp = damp
        self.diis_space = diis_space
        self.verbose = verbose
        self.max_memory = max_memory
        self.reset(mol)

    def reset(self, mol):
        """Point this object at ``mol`` (PySCF's ``mf.reset``): rebuild the integrals and the grid from it, keep
        the functional, field and options, and clear the results. Returns ``self``.

        Integrals are differentiable functions of ``mol.coords`` when it requires grad at this call."""
        self.mol = mol
        self.overlap = integrals.overlap(mol)
        self.hcore = integrals.hcore(mol)
        self.dipole_integrals = integrals.dipole(mol)
        hyb = self.functional.hyb
        pure = not torch.is_tensor(hyb) and hyb == 0
        if self.density_fit:
            self.eri = integrals.density_fit(mol, self.auxbasis or integrals.auxiliary_basis(mol, hybrid=not pure))
        elif mol.device.type == "cpu" and not (torch.is_grad_enabled() and mol.coords.requires_grad):
            # PySCF's incore J/K over the 8-fold unique integrals: an eighth of the memory, and its speed.
            self.eri = integrals.eri(mol, self.max_memory, aosym="s8")
        else:
            # Without exact exchange only Coulomb is needed: the 4-fold packed ERIs take a quarter of the memory.
            self.eri = integrals.eri(mol, self.max_memory, aosym="s4" if pure else "s1")
        # Hartree-Fock has no semi-local components: no grid to build or integrate over.
        semilocal = len(self.functional.components) > 0
        deriv = 0 if self.functional.family == "lda" else 1  # GGAs and meta-GGAs need AO gradients
        self.grid = (Grid(mol, self.grid_level, deriv=deriv, max_memory=self.max_memory / 2,
                          grid_response=self.grid_response) if semilocal else None)
        self.converged = False
        self.e_tot = self.mo_energy = self.mo_coeff = self.mo_occ = None
        self.energy_components = {}
        self.cycles = 0
        self.history = []
        return self

    def get_hcore(self):
        """Core Hamiltonian in the field F: T + V + sum_x F_x <i|r_x|j> (origin 0), (nao, nao), Hartree."""
        if self.field is None:
            return self.hcore
        return self.hcore + torch.einsum("x,xij->ij", self.field, self.dipole_integrals)

    def energy_nuc(self):
        """Nuclear energy (Hartree): repulsion, plus -F . sum_A Z_A R_A for the nuclei in the field."""
        if self.field is None:
            return self.mol.energy_nuc()
        return self.mol.energy_nuc() - self.field @ nuclear_dipole(self.mol)

    def get_veff(self, dm, potential=True):
        """Kohn-Sham potential and energy parts of density matrix ``dm`` (see ``scf.get_veff``)."""
        return scf.get_veff(self.eri, dm, self.functional, self.grid, potential=potential)

    def get_fock(self, dm):
        """Kohn-Sham matrix H_core + V_eff of density matrix ``dm`` (shaped like ``dm``), Hartree."""
        return self.get_hcore() + self.get_veff(dm).matrix

    def energy_tot(self, dm):
        """Total energy (Hartree) of density matrix ``dm``: electronic + nuclear (a torch function of ``dm``)."""
        return self._energy_parts(dm)[0]

    def _energy_parts(self, dm):
        e_elec, parts = scf.energy_elec(dm, self.get_hcore(), self.get_veff(dm, potential=False))
        e_nuc = self.energy_nuc()
        return e_elec + e_nuc, {"nuclear": e_nuc, **parts}

    def make_rdm1(self, mo_coeff=None, mo_occ=None):
        """Density matrix of the given (default: converged) orbitals and occupations."""
        return scf.make_rdm1(self.mo_coeff if mo_coeff is None else mo_coeff,
                             self.mo_occ if mo_occ is None else mo_occ)

    def kernel(self, dm0=None, strict=False, response=False):
        """Run the SCF; return the total energy (torch scalar, Hartree).

        When grad mode is on and an input requires grad (``mol.coords``, an integral, a parameter or buffer of
        the functional, its ``hyb``, the field), the energy is differentiable w.r.t. it (see the module
        docstring); otherwise it is a plain value and the SCF costs nothing extra.

        Args:
            dm0: initial density matrix (default: PySCF's minao guess).
            strict: raise :class:`dft.SCFNotConvergedError` instead of warning when not converged.
            response: build the energy from the implicitly differentiated density
                (``dft.response.density_matrix``) so that second derivatives are exact too. The default
                variational form is exact for first derivatives only (and cheaper: no adjoint solve in backward).

        Raises:
            OptionError: ``dm0`` of the wrong shape or not finite, or an SCF control set out of range since
                construction (see ``dft.scf.check_controls``).
            SCFNotConvergedError: with ``strict``, when the SCF does not converge.
        """
        where = f"{type(self).__name__}.kernel"
        _check_flag(where, "strict", strict)
        _check_flag(where, "response", response)
        if dm0 is None:
            dm0 = self.init_guess()
        else:
            dm0 = torch.as_tensor(dm0, dtype=torch.float64, device=self.mol.device)
            nao = self.mol.nao
            shape = (nao, nao) if isinstance(self, RKS) else (2, nao, nao)
            finite = bool(torch.isfinite(dm0).all())
            if tuple(dm0.shape) != shape or not finite:
                got = f"shape {tuple(dm0.shape)}" + ("" if finite else " with NaN/inf entries")
                raise OptionError(f"{where}: dm0 must be a finite {shape} density matrix, got {got}.")
        result = scf.run_scf(self.get_hcore(), self.overlap, self.get_veff, dm0, self._nelec(), self.energy_nuc(),
                             conv_tol=self.conv_tol, conv_tol_grad=self.conv_tol_grad, max_cycle=self.max_cycle,
                             diis_space=self.diis_space, level_shift=self.level_shift, damp=self.damp,
                             verbose=self.verbose)
        self.converged = result.converged
        self.mo_energy, self.mo_coeff, self.mo_occ = result.mo_energy, result.mo_coeff, result.mo_occ
        self.cycles = result.cycles
        self.history = result.history  # (energy, delta_energy, |orbital gradient|) per cycle
        if not result.converged:
            message = scf.not_converged_message(result.history, self.max_cycle, self.conv_tol, self.conv_tol_grad)
            if strict:
                raise SCFNotConvergedError(message)
            warnings.warn(message, SCFNotConvergedWarning, stacklevel=2)
        if response:
            self.e_tot, self.energy_components = self._energy_parts(density_matrix(self))
        elif self._differentiable():
            e_tot, self.energy_components = self._energy_parts(result.dm)
            # Value zero; its derivative is the overlap (Pulay) term -tr(W dS) of the Lagrangian.
            w = scf.make_rdm1e(result.mo_energy, result.mo_coeff, result.mo_occ)
            self.e_tot = e_tot - (w * (self.overlap - self.overlap.detach())).sum()
        else:
            self.e_tot, self.energy_components = result.e_tot, result.energy_components
        return self.e_tot

    def _differentiable(self):
        """Whether grad mode is on and some input of the SCF requires grad."""
        functional = self.functional
        inputs = [self.mol.coords, self.hcore, self.overlap, self.eri, self.field, functional.hyb,
                  *functional.parameters(), *functional.buffers()]
        return torch.is_grad_enabled() and any(torch.is_tensor(t) and t.requires_grad for t in inputs)

    def __repr__(self):
        return f"{type(self).__name__}({self.mol!r}, xc={self.functional.name!r})"


class RKS(_KohnSham):
    """Restricted Kohn-Sham for closed shells (PySCF's ``dft.RKS``); ``xc="hf"`` is restricted Hartree-Fock.

    Args:
        mol: :class:`dft.Molecule` with spin 0.
        xc: functional name (``"lda,vwn"``, ``"pbe"``, ``"b3lyp"``, ...) or a functional module/callable
            ``e = f(rho, sigma=None, spin=0)`` with optional ``hyb`` and ``family`` attributes.
        grid_level: PySCF grid level, an integer 0..9 (3 is PySCF's default).
        grid_response: for derivatives w.r.t. ``mol.coords``, move the grid points and their Becke weights with
            the atoms (PySCF's ``grid_response``); default False keeps the grid fixed in space, as PySCF's
            analytic gradients and Hessians do (see ``dft.grids``).
        density_fit: use density fitting with the auxiliary basis PySCF's ``mf.density_fit()`` chooses (J-fit for
            pure functionals, JK-fit for hybrids; see ``integrals.auxiliary_basis``), or ``auxbasis``.
        conv_tol: energy-change threshold, Hartree (> 0); the orbital gradient must also be below conv_tol_grad.
        max_cycle, diis_space, level_shift (Hartree), damp: SCF controls, PySCF's meaning and defaults: integers
            max_cycle >= 1 and diis_space >= 0 (0: no DIIS), level_shift >= 0, damp in [0, 1).
        conv_tol_grad: orbital-gradient threshold (> 0; default sqrt(conv_tol)).
        field: uniform electric field F, (3,) tensor (or sequence), atomic units (Hartree/(e Bohr)); adds
            F . r (origin 0) to H_core and -F . sum_A Z_A R_A to the nuclear energy, so that the dipole moment
            is -dE/dF (PySCF's finite-field convention; ``dft.dipole``). It may require grad.
        verbose: show a progress bar (cycle, energy, error).
        max_memory: MB allowed for the ERI tensor (> 0); half of it for AO values cached on the grid.

    Raises:
        OptionError: an option out of its range or of the wrong kind (the message names it), ``mol`` not a
            :class:`dft.Molecule`. XCError: an unknown functional. DFTError: ``mol.spin != 0``.

    After ``kernel()``: ``converged``, ``e_tot``, ``mo_energy`` (nmo,), ``mo_coeff`` (nao, nmo), ``mo_occ`` (nmo,),
    ``energy_components`` (nuclear, one_electron, coulomb, exact_exchange, xc; Hartree), ``cycles``,
    ``history`` ((energy, energy change, orbital-gradient norm) per cycle, Hartree).
    """

    def __init__(self, mol, xc="lda,vwn", **options):
        if isinstance(mol, Molecule) and mol.spin != 0:
            raise DFTError(f"RKS needs a closed shell but {mol!r} has spin={mol.spin}; use dft.UKS.")
        super().__init__(mol, xc, **options)

    def _nelec(self):
        return self.mol.nelectron

    def init_guess(self):
        """PySCF's minao guess (superposition of atomic minimal-basis densities projected on the basis)."""
        return torch.as_tensor(hf.init_guess_by_minao(self.mol.pyscf), dtype=torch.float64).to(self.mol.device)


class UKS(_KohnSham):
    """Unrestricted Kohn-Sham (PySCF's ``dft.UKS``); ``xc="hf"`` is unrestricted Hartree-Fock.

    Takes the arguments of :class:`RKS`. Occupations: N_alpha - N_beta = ``mol.spin``. Results carry a leading
    spin axis: ``mo_energy`` (2, nmo), ``mo_coeff`` (2, nao, nmo), ``mo_occ`` (2, nmo), ``make_rdm1()``
    (2, nao, nao).
    """

    def _nelec(self):
        return self.mol.nelec

    def init_guess(self):
        """PySCF's minao guess split between spins (with PySCF's spin-symmetry breaking for singlets)."""
        return torch.as_tensor(uhf.init_guess_by_minao(self.mol.pyscf), dtype=torch.float64).to(self.mol.device)


def _check_flag(where, name, value):
    if not (isinstance(value, (bool, np.bool_)) or (isinstance(value, int) and value in (0, 1))):
        raise OptionError(f"{where}: {name} must be True or False, got {value!r}.", argument=name)


def _check_field(where, field, mol):
    """The field as a (3,) float64 tensor on the molecule's device (None stays None)."""
    if field is None:
        return None
    try:
        tensor = torch.as_tensor(field, dtype=torch.float64, device=mol.device)
    except (TypeError, ValueError, RuntimeError):
        tensor = None
    if tensor is None or tensor.shape != (3,) or not bool(torch.isfinite(tensor).all()):
        shown = repr(field) if tensor is None else f"shape {tuple(tensor.shape)} {tensor.detach().cpu().tolist()}"
        raise OptionError(f"{where}: field must be a finite (3,) tensor (Ex, Ey, Ez) in atomic units, got "
                          f"{shown if len(shown) <= 80 else shown[:77] + '...'}.", argument="field")
    return tensor
