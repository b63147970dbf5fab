"""Two-atom terms: OpenMM's HarmonicBondForce and the CustomBondForce that carries scaled 1-4 Lennard-Jones
pairs (written by OpenMM's LennardJonesGenerator, e.g. for CHARMM force fields)."""

import re

import torch

from .geometry import distance
from .units import strip


def harmonic_bond_energy(positions, atoms, length, k, box=None):
    """sum 1/2 k (r - length)^2 over bonds.

    positions (..., N, 3) nm; atoms (2, M) indices; length (M,) nm; k (M,) kJ/mol/nm^2 -> (...,) kJ/mol.
    """
    r = distance(positions, atoms[0], atoms[1], box)
    return (0.5 * k * (r - length) ** 2).sum(-1)


def lennard_jones_pair_energy(positions, atoms, sigma, epsilon, scale, box=None):
    """sum scale * epsilon ((sigma/r)^12 - (sigma/r)^6) over pairs (scale = 4 * the 1-4 scale).

    positions (..., N, 3) nm; atoms (2, M); sigma (M,) nm; epsilon (M,) kJ/mol -> (...,) kJ/mol.
    """
    r = distance(positions, atoms[0], atoms[1], box)
    s6 = (sigma / r) ** 6
    return (scale * epsilon * (s6 * s6 - s6)).sum(-1)


class HarmonicBondForce:
    """OpenMM HarmonicBondForce; parameters 'length' (nm) and 'k' (kJ/mol/nm^2), one per bond."""

    name = "HarmonicBondForce"

    def __init__(self, force, device, dtype):
        rows = [force.getBondParameters(b) for b in range(force.getNumBonds())]
        self.atoms = torch.tensor([[r[0] for r in rows], [r[1] for r in rows]], dtype=torch.long,
                                  device=device).reshape(2, -1)
        self.parameters = {
            "length": torch.tensor([strip(r[2]) for r in rows], dtype=dtype, device=device),
            "k": torch.tensor([strip(r[3]) for r in rows], dtype=dtype, device=device),
        }
        self.periodic = force.usesPeriodicBoundaryConditions()

    def energy(self, positions, parameters, box=None):
        return harmonic_bond_energy(positions, self.atoms, parameters["length"], parameters["k"],
                                    box if self.periodic else None)


class LennardJonesBondForce:
    """The CustomBondForce 'S*epsilon*((sigma/r)^12-(sigma/r)^6)' OpenMM writes for 1-4 Lennard-Jones pairs;
    parameters 'sigma' (nm) and 'epsilon' (kJ/mol), one per pair."""

    name = "CustomBondForce"
    known_as = "1-4 Lennard-Jones 'S*epsilon*((sigma/r)^12-(sigma/r)^6)'"
    EXPRESSION = re.compile(r"^([0-9.eE+-]+)\*epsilon\*\(\(sigma/r\)\^12-\(sigma/r\)\^6\)$")

    @classmethod
    def recognizes(cls, force):
        return (cls.EXPRESSION.match(force.getEnergyFunction()) is not None
                and force.getNumGlobalParameters() == 0
                and [force.getPerBondParameterName(p) for p in range(force.getNumPerBondParameters())]
                == ["sigma", "epsilon"])

    def __init__(self, force, device, dtype):
        self.scale = float(self.EXPRESSION.match(force.getEnergyFunction()).group(1))
        rows = [force.getBondParameters(b) for b in range(force.getNumBonds())]
        self.atoms = torch.tensor([[r[0] for r in rows], [r[1] for r in rows]], dtype=torch.long,
                                  device=device).reshape(2, -1)
        params = torch.tensor([list(r[2]) for r in rows], dtype=dtype, device=device).reshape(-1, 2)
        self.parameters = {"sigma": params[:, 0].clone(), "epsilon": params[:, 1].clone()}
        self.periodic = force.usesPeriodicBoundaryConditions()

    def energy(self, positions, parameters, box=None):
        return lennard_jones_pair_energy(positions, self.atoms, parameters["sigma"], parameters["epsilon"],
                                         self.scale, box if self.periodic else None)
