"""Generalized Born implicit solvent with the ACE surface term, in the forms OpenMM offers:

- `GBSAOBCForce`, OpenMM's built-in OBC(II) force (created for AMBER prmtop files with OBC2);
- `AmberCustomGBForce`, the CustomGBForce of `implicit/hct.xml`, `obc1.xml`, `obc2.xml`, `gbn.xml` and
  `gbn2.xml` (openmm.app.internal.customgbforces GBSAHCTForce, GBSAOBC1Force, GBSAOBC2Force, GBSAGBnForce,
  GBSAGBn2Force), recognised by rebuilding that force with the same settings and comparing every expression.

With intrinsic radius R_i, offset radius or_i = R_i - offset (offset 0.009 nm; 0.0195141 nm for GBn2) and
scaled radius sr_i = scale_i * or_i, the Born sum I_i adds, over every other atom j (exclusions do not apply),
the Hawkins-Cramer-Truhlar pair integral of sr_j seen from or_i, plus for GBn/GBn2 the neck integral
s_neck m0_ij / (1 + 100 (r - d0_ij)^2 + 3e5 (r - d0_ij)^6) for r <= R_i + R_j + 0.68 nm (m0, d0 tabulated by
radius). Born radii: HCT B = 1/(1/or - I); the others B = 1/(1/or - tanh(a psi - b psi^2 + c psi^3)/R), psi = I or,
with (a, b, c) = (0.8, 0, 2.909125) for OBC1, (1, 0.8, 4.85) for OBC2, (1.09511284, 1.907992938, 2.50798245)
for GBn and per-atom values for GBn2. Then
E = sum_i -C/2 (1/eps_in - 1/eps_out) q_i^2 / B_i  +  sum_{i<j} -C (1/eps_in - 1/eps_out) q_i q_j / f_ij
    + sum_i A (R_i + 0.14)^2 (R_i / B_i)^6,   f_ij = sqrt(r^2 + B_i B_j exp(-r^2 / (4 B_i B_j))),
and with a cutoff, pairs beyond it are dropped and 1/f becomes 1/f - 1/r_c. The built-in force differs in
details this module reproduces: it adds Tinker's term for an atom buried inside another's scaled sphere, uses
OpenMM's Coulomb constant (the custom force writes 138.935485), applies ACE only where B > 0, and has no salt
screening (the custom force's kappa).
"""

import torch
from openmm.app.internal import customgbforces

from ..constants import COULOMB
from ..errors import UnsupportedForceError
from ..neighbors import NeighborList
from .pairwise import PairCache, PairFunction
from .tables import discrete_2d_table
from .units import strip

PROBE_RADIUS = 0.14  # nm
CUSTOM_GB_COULOMB = 138.935485  # the constant written into OpenMM's custom GB expressions
CUSTOM_GB_ACE = 28.3919551  # kJ/mol/nm^2, 4 pi * 2.25936, as written into OpenMM's custom GB expressions
NECK_CUT = 0.68  # nm


def hct_integral(r, offset_radius_i, scaled_radius_j, buried_term=False):
    """Pair contribution of atom j to atom i's Born sum I_i (OpenMM's 0.5 * HCT integral), per pair, 1/nm.

    r, offset_radius_i (or_i), scaled_radius_j (sr_j) broadcastable tensors in nm. `buried_term` adds the
    GBSAOBCForce correction for atom i lying entirely inside atom j's scaled sphere (or_i < sr_j - r).
    """
    return _hct_integral(r, offset_radius_i, scaled_radius_j, buried_term, derivative=False)[0]


def _hct_integral(r, offset_radius_i, scaled_radius_j, buried_term, derivative):
    """(`hct_integral`, its derivative with respect to r or None). Masks are 0/1 factors from clamp and sign
    (every value is finite for r > 0): torch.where and comparisons to bool are several times slower on CPU. The
    derivative, computed only without autograd (inside `PairFunction`), works in place."""
    s = scaled_radius_j
    s2 = s * s
    upper = r + s
    difference = r - s
    distance = difference.abs()
    lower = torch.maximum(offset_radius_i, distance)
    inverse_r, inverse_upper, inverse_lower = r.reciprocal(), upper.reciprocal(), lower.reciprocal()
    u2, l2 = inverse_upper * inverse_upper, inverse_lower * inverse_lower
    log_ratio = torch.log(lower * inverse_upper)
    span = r - s2 * inverse_r  # r - s^2 / r
    u2_l2 = u2 - l2
    integral = (0.5 * (inverse_lower - inverse_upper) + 0.125 * span * u2_l2
                + 0.25 * log_ratio * inverse_r)
    overlaps = (upper - offset_radius_i).clamp(min=0).sign()  # or_i < r + s_j
    buried = (-difference - offset_radius_i).clamp(min=0).sign() if buried_term else None  # or_i < s_j - r
    if buried is not None:
        integral = integral + buried * (offset_radius_i.reciprocal() - inverse_lower)
    integral = integral * overlaps
    if not derivative:
        return integral, None
    # d lower / d r: 0 where lower = or_i, else the sign of r - s_j.
    d_lower = difference.sign_().mul_(distance.sub_(offset_radius_i).clamp_(min=0).sign_())
    d_inverse_lower = d_lower * l2
    d_inverse_lower.neg_()
    curvature = (s2 * inverse_r).mul_(inverse_r).add_(1).mul_(u2_l2)  # (1 + s^2 / r^2) (u^2 - l^2)
    slope = (u2 * inverse_upper).addcmul_(d_inverse_lower, inverse_lower).mul_(span)
    tail = (d_lower * inverse_lower).sub_(inverse_upper).addcmul_(log_ratio, inverse_r, value=-1).mul_(inverse_r)
    d_integral = (d_inverse_lower + u2).add_(curvature, alpha=0.25).add_(slope, alpha=-0.5).add_(tail, alpha=0.5)
    d_integral.mul_(0.5)
    if buried is not None:
        d_integral.addcmul_(buried, d_inverse_lower, value=-1)
    return integral, d_integral.mul_(overlaps)


def neck_integral(r, radius_i, radius_j, m0, d0):
    """The GBn/GBn2 neck integral per pair, 1/nm (before the model's neck scale): r, radii R_i, R_j (nm) and the
    tabulated m0 (1/nm), d0 (nm) of the pair."""
    return _neck_integral(r, radius_i, radius_j, m0, d0, derivative=False)[0]


def _neck_integral(r, radius_i, radius_j, m0, d0, derivative):
    """(`neck_integral`, its derivative with respect to r or None)."""
    x = r - d0
    x2 = x * x
    x4 = x2 * x2
    inverse = 1 / (1 + 100 * x2 + 0.3e6 * x4 * x2)
    within = (r <= radius_i + radius_j + NECK_CUT).to(r.dtype)
    value = m0 * inverse * within
    if not derivative:
        return value, None
    return value, -value * inverse * x * (200 + 1.8e6 * x4)


class BornIntegral:
    """Atom j's contribution to atom i's Born sum (HCT integral plus, for GBn/GBn2, the scaled neck
    integral), zero beyond the cutoff, per pair, 1/nm; a pair function for `PairFunction`.

    Inputs: r (..., P) nm, or_i, sr_j (P,) nm and, with a neck, R_i, R_j (P,) nm, m0 (P,) 1/nm, d0 (P,) nm.
    """

    fast = 1

    def __init__(self, buried_term=False, neck_scale=None, cutoff=None):
        self.buried_term, self.neck_scale, self.cutoff = buried_term, neck_scale, cutoff

    def value(self, r, *parameters):
        return self.value_and_derivatives(r, *parameters, derivatives=False)[0]

    def value_and_derivatives(self, r, offset_radius_i, scaled_radius_j, *neck, derivatives=True):
        value, d_r = _hct_integral(r, offset_radius_i, scaled_radius_j, self.buried_term, derivatives)
        if self.neck_scale is not None:
            neck_value, neck_d_r = _neck_integral(r, *neck, derivatives)
            value = value + self.neck_scale * neck_value
            d_r = d_r + self.neck_scale * neck_d_r if derivatives else None
        if self.cutoff is not None:
            within = (r <= self.cutoff).to(r.dtype)
            value = value * within
            d_r = d_r * within if derivatives else None
        return value, (d_r,) if derivatives else ()


class GBPair:
    """The pair part of the GB energy, -(1/eps_in - exp(-kappa f)/eps_out) qq (1/f - 1/r_c) with
    f = sqrt(r^2 + B_i B_j exp(-r^2 / (4 B_i B_j))), zero beyond the cutoff r_c (no 1/r_c term without one),
    per pair, kJ/mol; a pair function for `PairFunction`.

    Inputs: r (..., P) nm, Born radii B_i, B_j (..., P) nm, qq (P,) = C q_i q_j kJ nm/mol.
    """

    fast = 3

    def __init__(self, solute_dielectric, solvent_dielectric, kappa=0.0, cutoff=None):
        self.inverse_solute, self.inverse_solvent = 1 / solute_dielectric, 1 / solvent_dielectric
        self.kappa, self.cutoff = kappa, cutoff

    def value(self, r, born_i, born_j, qq):
        return self.value_and_derivatives(r, born_i, born_j, qq, derivatives=False)[0]

    def value_and_derivatives(self, r, born_i, born_j, qq, derivatives=True):
        bb = born_i * born_j
        r2 = r * r
        ratio = r2 / (4 * bb)
        e = torch.exp(-ratio)
        f = torch.sqrt(r2 + bb * e)
        inverse_f = 1 / f
        kernel = inverse_f if self.cutoff is None else inverse_f - 1 / self.cutoff
        if self.kappa == 0:
            factor = -(self.inverse_solute - self.inverse_solvent) * qq
        else:
            screened = torch.exp(-self.kappa * f) * self.inverse_solvent
            factor = -(self.inverse_solute - screened) * qq
        value = factor * kernel
        within = None if self.cutoff is None else (r <= self.cutoff).to(r.dtype)
        if within is not None:
            value = value * within
        if not derivatives:
            return value, ()
        d_f = -factor * inverse_f * inverse_f  # d value / d f
        if self.kappa != 0:
            d_f = d_f - qq * self.kappa * screened * kernel
        if within is not None:
            d_f = d_f * within
        d_r = d_f * r * (4 - e) * 0.25 * inverse_f
        d_bb = d_f * e * (1 + ratio) * 0.5 * inverse_f
        return value, (d_r, d_bb * born_j, d_bb * born_i)


def born_radii(born_sum, offset_radius, radius, coefficients):
    """Born radii B (..., N) nm from Born sums I (..., N) 1/nm, offset radii or (N,) and radii R (N,) nm.

    coefficients: None for HCT (B = 1/(1/or - I)), else (a, b, c) floats or (N,) tensors for
    B = 1/(1/or - tanh(a psi - b psi^2 + c psi^3) / R), psi = I or.
    """
    if coefficients is None:
        return 1 / (1 / offset_radius - born_sum)
    a, b, c = coefficients
    psi = born_sum * offset_radius
    return 1 / (1 / offset_radius - torch.tanh(psi * (a - psi * (b - c * psi))) / radius)


def gb_pair_parameters(pairs, charge, radius, scale, *, offset, coulomb, neck=None):
    """Per-pair inputs of the GB pair functions for pairs (2, P): a dict with 'to_i' and 'to_j' (the
    `BornIntegral` parameters of atom j's contribution to atom i and of i's to j) and 'qq' = C q_i q_j."""
    i, j = pairs
    offset_radius = radius - offset
    scaled = scale * offset_radius
    or_i, or_j = offset_radius.index_select(0, i), offset_radius.index_select(0, j)
    sr_i, sr_j = scaled.index_select(0, i), scaled.index_select(0, j)
    to_i, to_j = [or_i, sr_j], [or_j, sr_i]
    if neck is not None:
        _, index, m0, d0 = neck
        size = m0.shape[1]
        forward = index.index_select(0, i) * size + index.index_select(0, j)
        backward = index.index_select(0, j) * size + index.index_select(0, i)
        m0, d0 = m0.reshape(-1), d0.reshape(-1)
        radius_i, radius_j = radius.index_select(0, i), radius.index_select(0, j)
        to_i += [radius_i, radius_j, m0.index_select(0, forward), d0.index_select(0, forward)]
        to_j += [radius_j, radius_i, m0.index_select(0, backward), d0.index_select(0, backward)]
    return {"to_i": to_i, "to_j": to_j, "qq": coulomb * charge.index_select(0, i) * charge.index_select(0, j)}


def gb_energy(r, pairs, charge, radius, scale, *, offset, coefficients, coulomb, solute_dielectric,
              solvent_dielectric, kappa=0.0, neck=None, ace=None, ace_only_positive=False, buried_term=False,
              cutoff=None, pair_parameters=None):
    """Generalized Born energy (...,) kJ/mol (see the module docstring).

    r (..., P) nm: distances of the pairs (2, P) with i < j (all pairs, or a neighbour list of those within the
    cutoff); charge (N,) e; radius (N,) nm; scale (N,); offset nm; coefficients: see `born_radii`;
    neck: None or (scale, table index (N,) long, m0 (T, T) 1/nm, d0 (T, T) nm); ace: surface-energy prefactor
    in kJ/mol/nm^2 (None: no surface term); kappa: Debye screening, 1/nm; cutoff nm or None;
    pair_parameters: `gb_pair_parameters` of these inputs, when the caller has them already.
    """
    i, j = pairs
    if pair_parameters is None:
        pair_parameters = gb_pair_parameters(pairs, charge, radius, scale, offset=offset, coulomb=coulomb, neck=neck)
    integral = BornIntegral(buried_term, None if neck is None else neck[0], cutoff)
    born_sum = torch.zeros(*r.shape[:-1], charge.shape[0], dtype=r.dtype, device=r.device)
    born_sum = born_sum.index_add(-1, i, PairFunction.apply(integral, r, *pair_parameters["to_i"]))
    born_sum = born_sum.index_add(-1, j, PairFunction.apply(integral, r, *pair_parameters["to_j"]))
    offset_radius = radius - offset
    born = born_radii(born_sum, offset_radius, radius, coefficients)

    screening = -coulomb * (1 / solute_dielectric - (1 if kappa == 0 else torch.exp(-kappa * born))
                            / solvent_dielectric)
    energy = (0.5 * screening * charge**2 / born).sum(-1)
    pair = GBPair(solute_dielectric, solvent_dielectric, kappa, cutoff)
    energy = energy + PairFunction.apply(pair, r, born.index_select(-1, i), born.index_select(-1, j),
                                         pair_parameters["qq"]).sum(-1)
    if ace is not None:
        surface = ace * (radius + PROBE_RADIUS) ** 2 * (radius / born) ** 6
        if ace_only_positive:
            surface = torch.where(born > 0, surface, torch.zeros_like(surface))
        energy = energy + surface.sum(-1)
    return energy


def _cutoff_setting(method, force):
    if method == type(force).NoCutoff:
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
        self.cutoff, self.periodic = _cutoff_setting(force.getNonbondedMethod(), force)
        self.pairs = NeighborList(len(values), self.cutoff, periodic=self.periodic)
        self.pair_cache = PairCache()
        ace = 4 * torch.pi * strip(force.getSurfaceAreaEnergy())
        self.settings = dict(offset=0.009, coefficients=(1.0, 0.8, 4.85), coulomb=COULOMB,
                             solute_dielectric=force.getSoluteDielectric(),
                             solvent_dielectric=force.getSolventDielectric(), ace=ace if ace != 0 else None,
                             ace_only_positive=True, buried_term=True, cutoff=self.cutoff)

    def energy(self, positions, parameters, box=None):
        box = box if self.periodic else None
        pairs, r = self.pairs.distances(positions, box)
        return gb_energy(r, pairs, parameters["charge"], parameters["radius"], parameters["scale"],
                         pair_parameters=_cached_pair_parameters(self, pairs, parameters), **self.settings)


# OpenMM's Amber GB models: generator class, Born-radius coefficients (None: HCT; "per atom": GBn2's alpha,
# beta, gamma parameters), neck scale (None: no neck integral), radius offset (nm).
MODELS = {
    "HCT": (customgbforces.GBSAHCTForce, None, None, 0.009),
    "OBC1": (customgbforces.GBSAOBC1Force, (0.8, 0.0, 2.909125), None, 0.009),
    "OBC2": (customgbforces.GBSAOBC2Force, (1.0, 0.8, 4.85), None, 0.009),
    "GBn": (customgbforces.GBSAGBnForce, (1.09511284, 1.907992938, 2.50798245), 0.361825, 0.009),
    "GBn2": (customgbforces.GBSAGBn2Force, "per atom", 0.826836, 0.0195141),
}


class AmberCustomGBForce:
    """The CustomGBForce of OpenMM's `implicit/{hct,obc1,obc2,gbn,gbn2}.xml`.

    parameters: 'charge' (N,) e, 'radius' (N,) nm (the intrinsic radius; OpenMM stores or = radius - offset)
    and 'scale' (N,) (OpenMM stores sr = scale * or); GBn2 adds 'alpha', 'beta', 'gamma' (N,). The neck tables
    of GBn/GBn2 are looked up by each atom's fixed radius index, so d E / d radius holds the table entry fixed.
    `model` is one of MODELS.
    """

    name = "CustomGBForce"
    known_as = "HCT/OBC1/OBC2/GBn/GBn2 of implicit/*.xml (openmm.app.internal.customgbforces)"

    @staticmethod
    def settings_of(force):
        """(model, settings) whose generator class rebuilds `force` expression for expression, or None."""
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
        for model, (generator, coefficients, _, _) in MODELS.items():
            try:
                reference = generator(**settings)
                if coefficients == "per atom" or generator is customgbforces.GBSAGBnForce:
                    reference.addParticle([0.0, 0.15, 0.5] + ([1.0, 0.8, 4.85] if coefficients == "per atom"
                                                               else []))
                    reference.finalize()
            except ValueError:
                return None
            if _same_expressions(force, reference):
                return model, settings
        return None

    @classmethod
    def recognizes(cls, force):
        return cls.settings_of(force) is not None

    def __init__(self, force, device, dtype):
        self.model, settings = self.settings_of(force)
        _, coefficients, neck_scale, offset = MODELS[self.model]
        n = force.getNumParticles()
        values = torch.tensor([list(force.getParticleParameters(p)) for p in range(n)],
                              dtype=torch.float64).reshape(n, -1)
        offset_radius = values[:, 1]
        columns = {"charge": values[:, 0], "radius": offset_radius + offset, "scale": values[:, 2] / offset_radius}
        if coefficients == "per atom":
            columns.update(alpha=values[:, 3], beta=values[:, 4], gamma=values[:, 5])
        self.parameters = {name: column.to(device=device, dtype=dtype) for name, column in columns.items()}
        self.neck = None
        if neck_scale is not None:
            tables = [discrete_2d_table(force, name).to(device=device, dtype=dtype) for name in ("getm0", "getd0")]
            self.neck = (neck_scale, values[:, -1].round().long().to(device), *tables)
        method = force.getNonbondedMethod()
        if method not in (force.NoCutoff, force.CutoffNonPeriodic, force.CutoffPeriodic):
            raise UnsupportedForceError(f"CustomGBForce: nonbonded method {method} is not supported.")
        self.cutoff, self.periodic = _cutoff_setting(method, force)
        if (self.cutoff is None) != (settings["cutoff"] is None) or (
                self.cutoff is not None and abs(self.cutoff - settings["cutoff"]) > 1e-12):
            raise UnsupportedForceError("CustomGBForce: the cutoff in its expressions differs from its cutoff "
                                        f"distance; build the force with {MODELS[self.model][0].__name__}"
                                        "(cutoff=...).")
        self.pairs = NeighborList(n, self.cutoff, periodic=self.periodic)
        self.pair_cache = PairCache()
        self.coefficients = None if coefficients == "per atom" else coefficients
        self.settings = dict(offset=offset, coulomb=CUSTOM_GB_COULOMB, solute_dielectric=settings["soluteDielectric"],
                             solvent_dielectric=settings["solventDielectric"], kappa=settings["kappa"],
                             ace=CUSTOM_GB_ACE if settings["SA"] == "ACE" else None, cutoff=self.cutoff)

    def energy(self, positions, parameters, box=None):
        box = box if self.periodic else None
        coefficients = self.coefficients
        if "alpha" in parameters:
            coefficients = (parameters["alpha"], parameters["beta"], parameters["gamma"])
        pairs, r = self.pairs.distances(positions, box)
        return gb_energy(r, pairs, parameters["charge"], parameters["radius"], parameters["scale"],
                         coefficients=coefficients, neck=self.neck,
                         pair_parameters=_cached_pair_parameters(self, pairs, parameters, self.neck), **self.settings)


def _cached_pair_parameters(term, pairs, parameters, neck=None):
    """`gb_pair_parameters` of a GB term, kept in the term's PairCache while pairs and parameters are unchanged."""
    values = (parameters["charge"], parameters["radius"], parameters["scale"])
    settings = term.settings
    return term.pair_cache(pairs, values, lambda: gb_pair_parameters(
        pairs, *values, offset=settings["offset"], coulomb=settings["coulomb"], neck=neck))


def _parameter_names(force):
    return [force.getPerParticleParameterName(p) for p in range(force.getNumPerParticleParameters())]


def _table_names(force):
    return sorted(force.getTabulatedFunctionName(t) for t in range(force.getNumTabulatedFunctions()))


def _same_expressions(force, reference):
    if (_parameter_names(force) != _parameter_names(reference) or _table_names(force) != _table_names(reference)
            or force.getNumGlobalParameters()):
        return False
    for count, get in (("getNumComputedValues", "getComputedValueParameters"),
                       ("getNumEnergyTerms", "getEnergyTermParameters")):
        if getattr(force, count)() != getattr(reference, count)():
            return False
        for k in range(getattr(force, count)()):
            if tuple(getattr(force, get)(k)) != tuple(getattr(reference, get)(k)):
                return False
    return True
