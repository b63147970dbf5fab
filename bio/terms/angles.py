"""Three-atom terms: OpenMM's HarmonicAngleForce."""

import torch

from .geometry import angle
from .units import strip


def harmonic_angle_energy(positions, atoms, theta0, k, box=None):
    """sum 1/2 k (theta - theta0)^2 over angles.

    positions (..., N, 3) nm; atoms (3, M) indices; theta0 (M,) rad; k (M,) kJ/mol/rad^2 -> (...,) kJ/mol.
    """
    theta = angle(positions, atoms[0], atoms[1], atoms[2], box)
    return (0.5 * k * (theta - theta0) ** 2).sum(-1)


class HarmonicAngleForce:
    """OpenMM HarmonicAngleForce; parameters 'angle' (rad) and 'k' (kJ/mol/rad^2), one per angle."""

    name = "HarmonicAngleForce"

    def __init__(self, force, device, dtype):
        rows = [force.getAngleParameters(a) for a in range(force.getNumAngles())]
        self.atoms = torch.tensor([[r[m] for r in rows] for m in range(3)], dtype=torch.long,
                                  device=device).reshape(3, -1)
        self.parameters = {
            "angle": torch.tensor([strip(r[3]) for r in rows], dtype=dtype, device=device),
            "k": torch.tensor([strip(r[4]) for r in rows], dtype=dtype, device=device),
        }
        self.periodic = force.usesPeriodicBoundaryConditions()

    def energy(self, positions, parameters, box=None):
        return harmonic_angle_energy(positions, self.atoms, parameters["angle"], parameters["k"],
                                     box if self.periodic else None)
