"""Restricted and unrestricted Kohn-Sham (``RKS``, ``UKS``): thin classes around the functions of ``dft.scf``.

A class holds the molecule, the functional and the integrals (tensors on the molecule's device, built once);
``kernel()`` runs the SCF and stores its results on the object. Every step is a function in ``dft.scf`` that
can be called on its own (``get_veff``, ``energy_elec``, ``eig``, ``make_rdm1``).
"""

import warnings

import torch
from pyscf.scf import hf, uhf

from . import integrals, scf
from .errors import DFTError, SCFNotConvergedError, SCFNotConvergedWarning
from .grids import Grid
from .xc import get_functional


class _KohnSham:
    def __init__(self, mol, xc="lda,vwn", grid_level=3, density_fit=False, auxbasis=None, conv_tol=1e-9,
                 max_cycle=50, level_shift=0.0, damp=0.0, diis_space=8, verbose=False, max_memory=4000):
        self.mol = mol
        self.functional = get_functional(xc)
        self.conv_tol = conv_tol
        self.max_cycle = max_cycle
        self.level_shift = level_shift
        self.damp = damp
        self.diis_space = diis_space
        self.verbose = verbose
        self.overlap = integrals.overlap(mol)
        self.hcore = integrals.hcore(mol)
        hyb = self.functional.hyb
        pure = not torch.is_tensor(hyb) and hyb == 0
        if density_fit:
            self.eri = integrals.density_fit(mol, auxbasis or integrals.auxiliary_basis(mol, hybrid=not pure))
        else:
            # Without exact exchange only Coulomb is needed: the packed ERIs take a quarter of the memory.
            self.eri = integrals.eri(mol, max_memory, packed=pure)
        # Hartree-Fock has no semi-local components: no grid to build or integrate over.
        semilocal = len(self.functional.components) > 0
        deriv = 1 if self.functional.family == "gga" else 0
        self.grid = Grid(mol, grid_level, deriv=deriv, max_memory=max_memory / 2) if semilocal else None
        self.converged = False
        self.e_tot = self.mo_energy = self.mo_coeff = self.mo_occ = None
        self.energy_components = {}
        self.cycles = 0

    def get_veff(self, dm):
        """Kohn-Sham potential and energy parts of density matrix ``dm`` (see ``scf.get_veff``)."""
        return scf.get_veff(self.eri, dm, self.functional, self.grid)

    def energy_tot(self, dm):
        """Total energy (Hartree) of density matrix ``dm``: electronic + nuclear repulsion."""
        e_elec, _ = scf.energy_elec(dm, self.hcore, self.get_veff(dm))
        return e_elec + self.mol.energy_nuc()

    def make_rdm1(self, mo_coeff=None, mo_occ=None):
        """Density matrix of the given (default: converged) orbitals and occupations."""
        return scf.make_rdm1(self.mo_coeff if mo_coeff is None else mo_coeff,
                             self.mo_occ if mo_occ is None else mo_occ)

    def kernel(self, dm0=None, strict=False):
        """Run the SCF; return the total energy (torch scalar, Hartree).

        Args:
            dm0: initial density matrix (default: PySCF's minao guess).
            strict: raise :class:`dft.SCFNotConvergedError` instead of warning when not converged.
        """
        if dm0 is None:
            dm0 = self.init_guess()
        result = scf.run_scf(self.hcore, self.overlap, self.get_veff, dm0, self._nelec(), self.mol.energy_nuc(),
                             conv_tol=self.conv_tol, max_cycle=self.max_cycle, diis_space=self.diis_space,
                             level_shift=self.level_shift, damp=self.damp, verbose=self.verbose)
        self.converged = result.converged
        self.e_tot = result.e_tot
        self.mo_energy, self.mo_coeff, self.mo_occ = result.mo_energy, result.mo_coeff, result.mo_occ
        self.energy_components = result.energy_components
        self.cycles = result.cycles
        if not result.converged:
            message = scf.not_converged_message(result.history, self.max_cycle, self.conv_tol)
            if strict:
                raise SCFNotConvergedError(message)
            warnings.warn(message, SCFNotConvergedWarning, stacklevel=2)
        return self.e_tot

    def __repr__(self):
        return f"{type(self).__name__}({self.mol!r}, xc={self.functional.name!r})"


class RKS(_KohnSham):
    """Restricted Kohn-Sham for closed shells (PySCF's ``dft.RKS``); ``xc="hf"`` is restricted Hartree-Fock.

    Args:
        mol: :class:`dft.Molecule` with spin 0.
        xc: functional name (``"lda,vwn"``, ``"pbe"``, ``"b3lyp"``, ...) or a functional module/callable
            ``e = f(rho, sigma=None, spin=0)`` with optional ``hyb`` and ``family`` attributes.
        grid_level: PySCF grid level (3 is PySCF's default).
        density_fit: use density fitting with the auxiliary basis PySCF's ``mf.density_fit()`` chooses (J-fit for
            pure functionals, JK-fit for hybrids; see ``integrals.auxiliary_basis``), or ``auxbasis``.
        conv_tol: energy-change threshold, Hartree; the orbital gradient must also be below sqrt(conv_tol).
        max_cycle, diis_space, level_shift (Hartree), damp: SCF controls, PySCF's meaning and defaults.
        verbose: show a progress bar (cycle, energy, error).
        max_memory: MB allowed for the ERI tensor; half of it for AO values cached on the grid.

    After ``kernel()``: ``converged``, ``e_tot``, ``mo_energy`` (nmo,), ``mo_coeff`` (nao, nmo), ``mo_occ`` (nmo,),
    ``energy_components`` (nuclear, one_electron, coulomb, exact_exchange, xc; Hartree), ``cycles``.
    """

    def __init__(self, mol, xc="lda,vwn", **options):
        if mol.spin != 0:
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
