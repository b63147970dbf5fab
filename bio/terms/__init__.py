"""Torch energy terms, one per OpenMM force class (or per recognised custom-force expression).

Every term has `name` (the OpenMM force class), `parameters` (dict of tensors) and
`energy(positions, parameters, box=None) -> (...,)` kJ/mol for positions (..., N, 3) nm.
`term_for(force)` picks the term class of an OpenMM force or raises UnsupportedForceError naming it.
"""

import openmm

from ..errors import UnsupportedForceError
from .angles import HarmonicAngleForce
from .bonds import HarmonicBondForce, LennardJonesBondForce
from .cmap import CMAPTorsionForce
from .gbsa import GBSAOBCForce, OBC2CustomGBForce
from .lj_table import LennardJonesTableForce
from .nonbonded import NonbondedForce
from .torsions import HarmonicTorsionForce, PeriodicTorsionForce

# Forces that contribute no energy.
NO_ENERGY = (openmm.CMMotionRemover, openmm.AndersenThermostat, openmm.MonteCarloBarostat)

_BUILT_IN = {
    openmm.HarmonicBondForce: HarmonicBondForce,
    openmm.HarmonicAngleForce: HarmonicAngleForce,
    openmm.PeriodicTorsionForce: PeriodicTorsionForce,
    openmm.CMAPTorsionForce: CMAPTorsionForce,
    openmm.NonbondedForce: NonbondedForce,
    openmm.GBSAOBCForce: GBSAOBCForce,
}

# Custom forces are recognised by their exact expressions, never interpreted in general.
_CUSTOM = {
    openmm.CustomBondForce: [LennardJonesBondForce],
    openmm.CustomTorsionForce: [HarmonicTorsionForce],
    openmm.CustomNonbondedForce: [LennardJonesTableForce],
    openmm.CustomGBForce: [OBC2CustomGBForce],
}


def term_for(force):
    """The term class for an OpenMM force, or raise UnsupportedForceError naming the force."""
    kind = type(force)
    if kind in _BUILT_IN:
        return _BUILT_IN[kind]
    for candidate in _CUSTOM.get(kind, []):
        if candidate.recognizes(force):
            return candidate
    name = kind.__name__
    if kind in _CUSTOM:
        expression = force.getEnergyFunction() if hasattr(force, "getEnergyFunction") else \
            "; ".join(force.getEnergyTermParameters(t)[0] for t in range(force.getNumEnergyTerms()))
        raise UnsupportedForceError(
            f"{name} '{force.getName()}' with energy {expression!r} is not one bio recognises (supported: "
            + ", ".join(c.known_as for c in _CUSTOM[kind])
            + "). Implement it as a term in bio/terms, or remove it from the System.")
    raise UnsupportedForceError(f"{name} '{force.getName()}' has no torch implementation in bio yet; remove it "
                                "from the System or implement it in bio/terms.")


__all__ = ["NO_ENERGY", "term_for", "HarmonicBondForce", "HarmonicAngleForce", "PeriodicTorsionForce",
           "CMAPTorsionForce", "NonbondedForce", "GBSAOBCForce", "OBC2CustomGBForce", "LennardJonesBondForce",
           "HarmonicTorsionForce", "LennardJonesTableForce"]
