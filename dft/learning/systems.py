"""Self-consistent calculations of one functional on many systems, as a training loop needs them.

:class:`Calculations` builds each system's ``RKS``/``UKS`` once (integrals and grid are reused across
evaluations: the functional's parameters change in place), warm-starts every SCF from that system's last
converged density, and retries an SCF that does not converge before giving up on it for this evaluation:

1. from the warm start (or PySCF's minao guess) with the dataset's SCF settings;
2. with damping 0.5 and a 0.3 Hartree level shift, from PySCF's minao guess;
3. the same, from the converged density of the base functional (default PBE; a better guess, computed once).

A system that fails all three raises :class:`SCFFailed`, which the loss turns into "skipped for this step".
"""

import warnings

import torch

from ..errors import SCFNotConvergedWarning
from ..ks import RKS, UKS
from . import datasets

RETRY_DAMP = 0.5
RETRY_LEVEL_SHIFT = 0.3  # Hartree


class SCFFailed(Exception):
    """The SCF of ``system`` did not converge in any of the retries (``attempts`` lists their last errors)."""

    def __init__(self, system, attempts):
        self.system = system
        self.attempts = attempts
        super().__init__(f"SCF of {system_label(system)} did not converge after {len(attempts)} attempts "
                         f"(warm start; damping + level shift; a PBE guess): last |orbital gradient| per attempt "
                         f"{', '.join(f'{a:.1e}' for a in attempts)}")


def system_label(system):
    """'N2', or 'N2+' for the cation: a system is (G2 name, charge)."""
    name, charge = system
    return name + ("+" * charge if charge > 0 else "-" * -charge)


class Calculations:
    """SCFs of ``functional`` on G2 systems (name, charge) in ``basis``, warm-started and retried.

    Args:
        functional: the functional (an ``XCFunctional``; trained in place by the caller).
        basis: basis set name, e.g. "6-31g*".
        grid_level, conv_tol, max_cycle: SCF settings (PySCF's meaning).
        device: torch device of the calculations.
        base: the functional whose converged densities are the third attempt's guess (a NeuralXC's base).

    Attribute ``dms``: system -> last converged density matrix (the warm starts; saved by checkpoints).
    """

    def __init__(self, functional, basis, grid_level=3, conv_tol=1e-8, max_cycle=60, device=None, base="pbe"):
        self.functional = functional
        self.base = base
        self.basis = basis
        self.options = {"grid_level": grid_level, "conv_tol": conv_tol, "max_cycle": max_cycle}
        self.device = device
        self.dms = {}
        self._objects = {}
        self._guesses = {}

    def solver(self, system):
        """The ``RKS``/``UKS`` of ``system`` with this functional (built once)."""
        if system not in self._objects:
            self._objects[system] = self._build(system, self.functional)
        return self._objects[system]

    def _build(self, system, functional):
        name, charge = system
        mol = datasets.molecule(name, self.basis, device=self.device, charge=charge)
        return (RKS if mol.spin == 0 else UKS)(mol, xc=functional, **self.options)

    def energy(self, system, response=False):
        """Total energy of ``system`` [Hartree], differentiable w.r.t. the functional's parameters (with
        ``response``, built from the implicitly differentiated density: second derivatives exact too).

        Raises:
            SCFFailed: no attempt converged.
        """
        mf = self.solver(system)
        attempts = []
        for attempt in range(3):
            if attempt == 0:
                dm0, damp, shift = self.dms.get(system), 0.0, 0.0
            else:
                dm0 = None if attempt == 1 else self.guess_solution(system).make_rdm1()
                damp, shift = RETRY_DAMP, RETRY_LEVEL_SHIFT
            mf.damp, mf.level_shift = damp, shift
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", SCFNotConvergedWarning)
                e_tot = mf.kernel(dm0=dm0, response=response)
            mf.damp, mf.level_shift = 0.0, 0.0
            if mf.converged and bool(torch.isfinite(e_tot)):
                self.dms[system] = mf.make_rdm1().detach()
                return e_tot
            attempts.append(float(mf.history[-1][2]) if mf.history else float("nan"))
        raise SCFFailed(system, attempts)

    def guess_solution(self, system):
        """The converged ``RKS``/``UKS`` of the base functional for ``system`` (computed once): the third
        attempt's guess, and the reference orbitals of the SCF-stability loss."""
        if system not in self._guesses:
            mf = self._build(system, self.base)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", SCFNotConvergedWarning)
                with torch.no_grad():
                    mf.kernel()
            self._guesses[system] = mf
        return self._guesses[system]
