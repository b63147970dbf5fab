"""Torch energy terms, one per OpenMM force class (or per recognised custom-force expression).

Every term has `name` (the OpenMM force class), `parameters` (dict of tensors) and
`energy(positions, parameters, box=None) -> (...,)` kJ/mol for positions (..., N, 3) nm.
`term_for(force)` picks the term class of an OpenMM force or raises UnsupportedForceError naming it;
`build_term(force, device, dtype, default_box)` constructs it.
"""

import openmm

from ..errors import UnsupportedForceError
from .angles import HarmonicAngleForce
from .bonds import HarmonicBondForce, LennardJonesBondForce
from .cmap import CMAPTorsionForce
from .gbsa import AmberCustomGBForce, GBSAOBCForce
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
    openmm.CustomGBForce: [AmberCustomGBForce],
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


def build_term(force, device, dtype, default_box=None):
    """The torch term of an OpenMM force, its parameters as tensors on `device` with `dtype`; default_box:
    the system's default box vectors (3, 3) nm, which fix the PME grid."""
    kind = term_for(force)
    if kind is NonbondedForce:
        return kind(force, device, dtype, default_box)
    return kind(force, device, dtype)


__all__ = ["NO_ENERGY", "term_for", "build_term", "HarmonicBondForce", "HarmonicAngleForce", "PeriodicTorsionForce",
           "CMAPTorsionForce", "NonbondedForce", "GBSAOBCForce", "AmberCustomGBForce", "LennardJonesBondForce",
           "HarmonicTorsionForce", "LennardJonesTableForce"]
