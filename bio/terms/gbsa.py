"""Generalized Born implicit solvent with OBC(II) Born radii and the ACE surface term, in the two forms
OpenMM offers:

- `GBSAOBCForce`, OpenMM's built-in force (created for AMBER prmtop files with OBC2);
- `OBC2CustomGBForce`, the CustomGBForce that `implicit/obc2.xml` builds
  (openmm.app.internal.customgbforces.GBSAOBC2Force), recognised by rebuilding that force with the same
  settings and comparing every expression.

Both use the Hawkins-Cramer-Truhlar pair integral I, psi = I * or, B = 1/(1/or - tanh(psi - 0.8 psi^2 +
4.85 psi^3)/R) with or = R - 0.009 nm, then
E = sum_i -C/2 (1/eps_in - 1/eps_out) q_i^2 / B_i  +  sum_{i<j} -C (1/eps_in - 1/eps_out) q_i q_j / f_ij
    + sum_i A (R_i + 0.14)^2 (R_i / B_i)^6,   f_ij = sqrt(r^2 + B_i B_j exp(-r^2 / (4 B_i B_j))),
over all pairs (exclusions do not apply); with a cutoff, pairs beyond it are dropped and 1/f becomes
1/f - 1/r_c. They differ in details that this module reproduces: the built-in force adds Tinker's term for an
atom buried inside another's scaled sphere, uses OpenMM's Coulomb constant (the custom force writes
138.935485), applies ACE only where B > 0, and has no salt screening (the custom force's kappa).
"""

import torch
from openmm.app.internal import customgbforces

from ..constants import COULOMB
from ..errors import UnsupportedForceError
from .geometry import displacement
from .pairs import PairList
from .units import strip

DIELECTRIC_OFFSET = 0.009  # nm
PROBE_RADIUS = 0.14  # nm
CUSTOM_GB_COULOMB = 138.935485  # the constant written into OpenMM's custom GB expressions
CUSTOM_GB_ACE = 28.3919551  # kJ/mol/nm^2, 4 pi * 2.25936, as written into OpenMM's custom GB expressions


def hct_integral(r, offset_radius_i, scaled_radius_j, buried_term):
    """Pair contribution of atom j to atom i's Born sum I_i (OpenMM's 0.5 * HCT integral), per pair, 1/nm.

    r, offset_radius_i (or_i), scaled_radius_j (sr_j) broadcastable tensors in nm. `buried_term` adds the
    GBSAOBCForce correction for atom i lying entirely inside atom j's scaled sphere (or_i < sr_j - r).
    """
    upper = r + scaled_radius_j
    lower = torch.maximum(offset_radius_i, (r - scaled_radius_j).abs())
    integral = 0.5 * (1 / lower - 1 / upper + 0.25 * (r - scaled_radius_j**2 / r) * (1 / upper**2 - 1 / lower**2)
                      + 0.5 * torch.log(lower / upper) / r)
    if buried_term:
        integral = integral + torch.where(offset_radius_i < scaled_radius_j - r,
                                          1 / offset_radius_i - 1 / lower, torch.zeros_like(r))
    return torch.where(offset_radius_i < upper, integral, torch.zeros_like(r))


def obc2_born_radii(born_sum, offset_radius):
    """OBC(II) Born radii B (..., N) nm from Born sums I (..., N) 1/nm and offset radii or (N,) nm."""
    psi = born_sum * offset_radius
    return 1 / (1 / offset_radius - torch.tanh(psi - 0.8 * psi**2 + 4.85 * psi**3) / (offset_radius
                                                                                      + DIELECTRIC_OFFSET))


def obc2_energy(positions, pairs, charge, radius, scale, *, coulomb, solute_dielectric, solvent_dielectric,
                kappa=0.0, ace=None, ace_only_positive=False, buried_term=False, cutoff=None, box=None):
    """OBC2 GB energy (...,) kJ/mol.

    positions (..., N, 3) nm; pairs (2, P) with i < j (all pairs, or those within the cutoff); charge (N,) e;
    radius (N,) nm; scale (N,) dimensionless; ace: surface-energy prefactor in kJ/mol/nm^2 (None: no
    surface term); kappa: Debye screening, 1/nm; cutoff nm or None.
    """
    i, j = pairs
    r = torch.linalg.vector_norm(displacement(positions, i, j, box), dim=-1)
    within = r <= cutoff if cutoff is not None else None
    offset_radius = radius - DIELECTRIC_OFFSET
    scaled = scale * offset_radius
    to_i = hct_integral(r, offset_radius[i], scaled[j], buried_term)
    to_j = hct_integral(r, offset_radius[j], scaled[i], buried_term)
    if within is not None:
        to_i = torch.where(within, to_i, torch.zeros_like(to_i))
        to_j = torch.where(within, to_j, torch.zeros_like(to_j))
    born_sum = torch.zeros(positions.shape[:-1], dtype=positions.dtype, device=positions.device)
    born_sum = born_sum.index_add(-1, i, to_i).index_add(-1, j, to_j)
    born = obc2_born_radii(born_sum, offset_radius)

    def screening(x):
        factor = 1 / solute_dielectric - 1 / solvent_dielectric if kappa == 0 else \
            1 / solute_dielectric - torch.exp(-kappa * x) / solvent_dielectric
        return -coulomb * factor

    energy = (0.5 * screening(born) * charge**2 / born).sum(-1)
    bb = born[..., i] * born[..., j]
    f = torch.sqrt(r * r + bb * torch.exp(-r * r / (4 * bb)))
    inverse = 1 / f if cutoff is None else 1 / f - 1 / cutoff
    pair = screening(f) * charge[i] * charge[j] * inverse
    if within is not None:
        pair = torch.where(within, pair, torch.zeros_like(pair))
    energy = energy + pair.sum(-1)
    if ace is not None:
        surface = ace * (radius + PROBE_RADIUS) ** 2 * (radius / born) ** 6
        if ace_only_positive:
            surface = torch.where(born > 0, surface, torch.zeros_like(surface))
        energy = energy + surface.sum(-1)
    return energy


def _cutoff_setting(method, nocutoff, force):
    if method == nocutoff:
        return None, False
    return strip(force.getCutoffDistance()), method == type(force).CutoffPeriodic


class GBSAOBCForce:
    """OpenMM's built-in GBSAOBCForce; parameters 'charge' (N,) e, 'radius' (N,) nm, 'scale' (N,)."""

    name = "GBSAOBCForce"

    def __init__(self, force, device, dtype):
        values = torch.tensor([[strip(v) for v in force.getParticleParameters(p)]
                               for p in range(force.getNumParticles())], dtype=dtype, device=device).reshape(-1, 3)
        self.parameters = {"charge": values[:, 0].clone(), "radius": values[:, 1].clone(),
                           "scale": values[:, 2].clone()}
        self.cutoff, self.periodic = _cutoff_setting(force.getNonbondedMethod(), force.NoCutoff, force)
        self.pairs = PairList(len(values), torch.zeros(0, dtype=torch.long, device=device), self.cutoff,
                              self.periodic)
        self.settings = dict(coulomb=COULOMB, solute_dielectric=force.getSoluteDielectric(),
                             solvent_dielectric=force.getSolventDielectric(),
                             ace=4 * torch.pi * strip(force.getSurfaceAreaEnergy()),
                             ace_only_positive=True, buried_term=True, cutoff=self.cutoff)
        if self.settings["ace"] == 0:
            self.settings["ace"] = None

    def energy(self, positions, parameters, box=None):
        box = box if self.periodic else None
        return obc2_energy(positions, self.pairs(positions, box), parameters["charge"], parameters["radius"],
                           parameters["scale"], box=box, **self.settings)


class OBC2CustomGBForce:
    """The CustomGBForce of OpenMM's `implicit/obc2.xml` (GBSAOBC2Force); parameters 'charge' (N,) e,
    'radius' (N,) nm and 'scale' (N,) (OpenMM stores or = radius - 0.009 and sr = scale * or)."""

    name = "CustomGBForce"
    known_as = "OBC2 of implicit/obc2.xml (GBSAOBC2Force)"

    @staticmethod
    def settings_of(force):
        """The GBSAOBC2Force settings that rebuild `force` expression for expression, or None."""
        if force.getNumEnergyTerms() < 2 or force.getNumComputedValues() != 2:
            return None
        definitions = {}
        for part in force.getEnergyTermParameters(0)[0].split(";")[1:]:
            name, _, value = part.partition("=")
            try:
                definitions[name.strip()] = float(value)
            except ValueError:
                return None
        if not {"solventDielectric", "soluteDielectric", "kappa"} <= definitions.keys():
            return None
        settings = dict(solventDielectric=definitions["solventDielectric"],
                        soluteDielectric=definitions["soluteDielectric"], kappa=definitions["kappa"],
                        cutoff=definitions.get("cutoff"), SA="ACE" if force.getNumEnergyTerms() == 3 else None)
        try:
            reference = customgbforces.GBSAOBC2Force(**settings)
        except ValueError:
            return None
        if not _same_expressions(force, reference):
            return None
        return settings

    @classmethod
    def recognizes(cls, force):
        return cls.settings_of(force) is not None

    def __init__(self, force, device, dtype):
        settings = self.settings_of(force)
        values = torch.tensor([list(force.getParticleParameters(p)) for p in range(force.getNumParticles())],
                              dtype=torch.float64).reshape(-1, 3)
        offset_radius = values[:, 1]
        self.parameters = {"charge": values[:, 0].to(device=device, dtype=dtype),
                           "radius": (offset_radius + DIELECTRIC_OFFSET).to(device=device, dtype=dtype),
                           "scale": (values[:, 2] / offset_radius).to(device=device, dtype=dtype)}
        method = force.getNonbondedMethod()
        if method not in (force.NoCutoff, force.CutoffNonPeriodic, force.CutoffPeriodic):
            raise UnsupportedForceError(f"CustomGBForce: nonbonded method {method} is not supported.")
        self.cutoff, self.periodic = _cutoff_setting(method, force.NoCutoff, force)
        if (self.cutoff is None) != (settings["cutoff"] is None) or (
                self.cutoff is not None and abs(self.cutoff - settings["cutoff"]) > 1e-12):
            raise UnsupportedForceError("CustomGBForce: the cutoff in its expressions differs from its cutoff "
                                        "distance; build the force with GBSAOBC2Force(cutoff=...).")
        self.pairs = PairList(len(values), torch.zeros(0, dtype=torch.long, device=device), self.cutoff,
                              self.periodic)
        self.settings = dict(coulomb=CUSTOM_GB_COULOMB, solute_dielectric=settings["soluteDielectric"],
                             solvent_dielectric=settings["solventDielectric"], kappa=settings["kappa"],
                             ace=CUSTOM_GB_ACE if settings["SA"] == "ACE" else None, cutoff=self.cutoff)

    def energy(self, positions, parameters, box=None):
        box = box if self.periodic else None
        return obc2_energy(positions, self.pairs(positions, box), parameters["charge"], parameters["radius"],
                           parameters["scale"], box=box, **self.settings)


def _same_expressions(force, reference):
    if [force.getPerParticleParameterName(p) for p in range(force.getNumPerParticleParameters())] != \
            [reference.getPerParticleParameterName(p) for p in range(reference.getNumPerParticleParameters())]:
        return False
    if force.getNumGlobalParameters() or force.getNumTabulatedFunctions():
        return False
    for count, get in (("getNumComputedValues", "getComputedValueParameters"),
                       ("getNumEnergyTerms", "getEnergyTermParameters")):
        if getattr(force, count)() != getattr(reference, count)():
            return False
        for k in range(getattr(force, count)()):
            if tuple(getattr(force, get)(k)) != tuple(getattr(reference, get)(k)):
                return False
    return True
