"""Four-atom terms: OpenMM's PeriodicTorsionForce and the harmonic-improper CustomTorsionForce
'k*(theta-theta0)^2' that CHARMM force fields use."""

import torch

from .geometry import dihedral
from .units import strip


def periodic_torsion_energy(positions, atoms, periodicity, phase, k, box=None):
    """sum k (1 + cos(n phi - phase)) over torsions.

    positions (..., N, 3) nm; atoms (4, M); periodicity (M,) integers n; phase (M,) rad; k (M,) kJ/mol
    -> (...,) kJ/mol.
    """
    phi = dihedral(positions, atoms[0], atoms[1], atoms[2], atoms[3], box)
    return (k * (1 + torch.cos(periodicity * phi - phase))).sum(-1)


def harmonic_torsion_energy(positions, atoms, theta0, k, box=None):
    """sum k (phi - theta0)^2 over torsions, phi in (-pi, pi] unwrapped as OpenMM does.

    positions (..., N, 3) nm; atoms (4, M); theta0 (M,) rad; k (M,) kJ/mol/rad^2 -> (...,) kJ/mol.
    """
    phi = dihedral(positions, atoms[0], atoms[1], atoms[2], atoms[3], box)
    return (k * (phi - theta0) ** 2).sum(-1)


def _atoms(rows, device):
    return torch.tensor([[r[m] for r in rows] for m in range(4)], dtype=torch.long, device=device).reshape(4, -1)


class PeriodicTorsionForce:
    """OpenMM PeriodicTorsionForce; parameters 'phase' (rad) and 'k' (kJ/mol) per torsion (the integer
    periodicity is fixed)."""

    name = "PeriodicTorsionForce"

    def __init__(self, force, device, dtype):
        rows = [force.getTorsionParameters(t) for t in range(force.getNumTorsions())]
        self.atoms = _atoms(rows, device)
        self.periodicity = torch.tensor([r[4] for r in rows], dtype=dtype, device=device)
        self.parameters = {
            "phase": torch.tensor([strip(r[5]) for r in rows], dtype=dtype, device=device),
            "k": torch.tensor([strip(r[6]) for r in rows], dtype=dtype, device=device),
        }
        self.periodic = force.usesPeriodicBoundaryConditions()

    def energy(self, positions, parameters, box=None):
        return periodic_torsion_energy(positions, self.atoms, self.periodicity, parameters["phase"],
                                       parameters["k"], box if self.periodic else None)


class HarmonicTorsionForce:
    """The CustomTorsionForce 'k*(theta-theta0)^2' (CHARMM impropers); parameters 'theta0' (rad) and
    'k' (kJ/mol/rad^2) per torsion."""

    name = "CustomTorsionForce"
    known_as = "harmonic impropers 'k*(theta-theta0)^2'"
    EXPRESSION = "k*(theta-theta0)^2"

    @classmethod
    def recognizes(cls, force):
        names = [force.getPerTorsionParameterName(p) for p in range(force.getNumPerTorsionParameters())]
        return (force.getEnergyFunction().replace(" ", "") == cls.EXPRESSION
                and force.getNumGlobalParameters() == 0 and sorted(names) == ["k", "theta0"])

    def __init__(self, force, device, dtype):
        names = [force.getPerTorsionParameterName(p) for p in range(force.getNumPerTorsionParameters())]
        rows = [force.getTorsionParameters(t) for t in range(force.getNumTorsions())]
        self.atoms = _atoms(rows, device)
        values = torch.tensor([list(r[4]) for r in rows], dtype=dtype, device=device).reshape(-1, 2)
        self.parameters = {name: values[:, c].clone() for c, name in enumerate(names)}
        self.periodic = force.usesPeriodicBoundaryConditions()

    def energy(self, positions, parameters, box=None):
        return harmonic_torsion_energy(positions, self.atoms, parameters["theta0"], parameters["k"],
                                       box if self.periodic else None)
