"""The CustomNonbondedForce 'acoef(type1, type2)/r^12 - bcoef(type1, type2)/r^6' that OpenMM's
LennardJonesGenerator writes (CHARMM force fields, NBFIX): Lennard-Jones from per-type-pair A and B tables."""

import openmm
import torch

from ..errors import UnsupportedForceError
from ..neighbors import NeighborList, pair_keys
from .nonbonded import switching_function
from .tables import discrete_2d_table
from .units import strip

_METHODS = {
    openmm.CustomNonbondedForce.NoCutoff: None,
    openmm.CustomNonbondedForce.CutoffNonPeriodic: False,
    openmm.CustomNonbondedForce.CutoffPeriodic: True,
}


class LennardJonesTableForce:
    """parameters 'acoef' (T, T) kJ/mol nm^12 and 'bcoef' (T, T) kJ/mol nm^6; each particle's integer type
    is fixed."""

    name = "CustomNonbondedForce"
    known_as = "tabulated Lennard-Jones 'acoef(type1, type2)/r^12 - bcoef(type1, type2)/r^6'"
    EXPRESSION = "acoef(type1,type2)/r^12-bcoef(type1,type2)/r^6;"

    @classmethod
    def recognizes(cls, force):
        return (force.getEnergyFunction().replace(" ", "") == cls.EXPRESSION
                and force.getNumPerParticleParameters() == 1 and force.getPerParticleParameterName(0) == "type"
                and force.getNumGlobalParameters() == 0 and force.getNumComputedValues() == 0
                and discrete_2d_table(force, "acoef") is not None and discrete_2d_table(force, "bcoef") is not None)

    def __init__(self, force, device, dtype):
        if force.getNumInteractionGroups():
            raise UnsupportedForceError("CustomNonbondedForce: interaction groups are not supported yet.")
        if force.getUseLongRangeCorrection():
            raise UnsupportedForceError("CustomNonbondedForce: the long-range correction is not supported yet; "
                                        "create the system with useDispersionCorrection=False.")
        periodic = _METHODS[force.getNonbondedMethod()]
        cutoff = None if periodic is None else strip(force.getCutoffDistance())
        self.switch_distance = (strip(force.getSwitchingDistance())
                                if cutoff is not None and force.getUseSwitchingFunction() else None)
        n = force.getNumParticles()
        self.types = torch.tensor([int(force.getParticleParameters(p)[0]) for p in range(n)], dtype=torch.long,
                                  device=device)
        exclusions = torch.tensor([force.getExclusionParticles(e) for e in range(force.getNumExclusions())],
                                  dtype=torch.long).reshape(-1, 2).T
        self.pairs = NeighborList(n, cutoff, excluded=torch.unique(pair_keys(exclusions, n)).to(device),
                                  periodic=bool(periodic))
        self.cutoff = cutoff
        self.periodic = bool(periodic)
        self.parameters = {name: discrete_2d_table(force, name).to(device=device, dtype=dtype)
                           for name in ("acoef", "bcoef")}
        self.n_types = self.parameters["acoef"].shape[1]

    def energy(self, positions, parameters, box=None):
        (i, j), r = self.pairs.distances(positions, box if self.periodic else None)
        types = self.types.index_select(0, i) * self.n_types + self.types.index_select(0, j)
        inv6 = r ** -6
        e = (parameters["acoef"].reshape(-1).index_select(0, types) * inv6 * inv6
             - parameters["bcoef"].reshape(-1).index_select(0, types) * inv6)
        if self.cutoff is not None:
            if self.switch_distance is not None:
                e = e * switching_function(r, self.switch_distance, self.cutoff)
            e = torch.where(r <= self.cutoff, e, torch.zeros_like(e))
        return e.sum(-1)
