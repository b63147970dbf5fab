"""OpenMM's NonbondedForce: Lennard-Jones + Coulomb over all non-excluded pairs, plus exceptions (scaled 1-4
pairs), for the NoCutoff, CutoffNonPeriodic, CutoffPeriodic and PME methods.

Definitions (OpenMM's reference platform):
- pairs: 4 eps ((s/r)^12 - (s/r)^6) with s = (s_i + s_j)/2, eps = sqrt(eps_i eps_j), times OpenMM's switching
  function when enabled; Coulomb C q_i q_j / r without cutoff, and with a cutoff the reaction field
  C q_i q_j (1/r + k_rf r^2 - c_rf), k_rf = (eps_rf - 1) / ((2 eps_rf + 1) r_c^3), c_rf = 3 eps_rf /
  ((2 eps_rf + 1) r_c); pairs beyond the cutoff contribute nothing.
- PME: the direct-space Coulomb is C q_i q_j erfc(alpha r) / r within the cutoff, plus the reciprocal-space
  energy (`pme.ReciprocalSpace`), minus the self energy C alpha / sqrt(pi) sum q_i^2, minus C q_i q_j erf(alpha r)
  / r for every excluded pair (the reciprocal sum includes them; r without periodic image), minus
  pi C Q^2 / (2 V alpha^2) for a net charge Q (a neutralizing background). Exclusions are all exception pairs,
  including those with zero parameters.
- exceptions: C qq_ij / r + 4 eps_ij ((s_ij/r)^12 - (s_ij/r)^6) with their own parameters, never cut off, no
  reaction field, no periodic image.
- CutoffPeriodic and PME add the long-range dispersion correction 8 pi N^2 (<eps s^12>/(9 r_c^9) -
  <eps s^6>/(3 r_c^3) + <eps J(s)>) / V when the force asks for it, averaged over the (sigma, epsilon) classes
  of the particles, with J the integral of the switched-off part of the potential when switching is on.
"""

import math

import openmm
import torch

from ..constants import COULOMB
from ..errors import ArgumentError, UnsupportedForceError
from ..neighbors import NeighborList, pair_keys
from .geometry import displacement
from .pairwise import PairCache, PairRows, pair_energy
from .pme import ReciprocalSpace, pme_parameters
from .units import strip

MAX_PME_GRID_POINTS = 2**28  # 2 GiB per float64 mesh

_METHODS = {
    openmm.NonbondedForce.NoCutoff: "nocutoff",
    openmm.NonbondedForce.CutoffNonPeriodic: "cutoff_nonperiodic",
    openmm.NonbondedForce.CutoffPeriodic: "cutoff_periodic",
    openmm.NonbondedForce.PME: "pme",
}


def switching_function(r, switch_distance, cutoff):
    """OpenMM's switch 1 - 10 t^3 + 15 t^4 - 6 t^5, t = (r - r_s)/(r_c - r_s), for r > r_s; 1 below."""
    t = ((r - switch_distance) / (cutoff - switch_distance)).clamp(min=0)
    return 1 + t * t * t * (-10 + t * (15 - 6 * t))


def switching_derivative(r, switch_distance, cutoff):
    """d/dr of `switching_function`, 1/nm."""
    width = cutoff - switch_distance
    t = ((r - switch_distance) / width).clamp(min=0)
    return t * t * (-30 + t * (60 - 30 * t)) / width


def lennard_jones(r, sigma, epsilon):
    """4 eps ((s/r)^12 - (s/r)^6) elementwise, kJ/mol."""
    s6 = (sigma / r) ** 6
    return 4 * epsilon * (s6 * s6 - s6)


def dispersion_classes(sigma, epsilon):
    """Group particles by identical (sigma, epsilon), as OpenMM does for the dispersion correction.

    Returns (members (N,) class index of each particle, counts (C,))."""
    keys = torch.stack([sigma, epsilon], dim=1)
    _, members, counts = torch.unique(keys, dim=0, return_inverse=True, return_counts=True)
    return members, counts


def switched_dispersion_integral(r, switch_distance, cutoff, sigma):
    """OpenMM's indefinite integral (NonbondedForceImpl::evalIntegral) of the Lennard-Jones potential times
    the switching function, per unit epsilon, at r (nm) for sigma (...,) nm."""
    a = 1 / (cutoff - switch_distance)
    a2, a3 = a * a, a**3
    rs, rs2, rs3 = switch_distance, switch_distance**2, switch_distance**3
    r2, r3 = r * r, r**3
    r4, r5, r6, r9 = r**4, r**5, r**6, r**9
    sig6 = sigma**6
    return sig6 * a3 * ((
        sig6 * (rs3 * 28 * (6 * rs2 * a2 + 15 * rs * a + 10)
                - r * rs2 * 945 * (rs2 * a2 + 2 * rs * a + 1)
                + r2 * rs * 1080 * (2 * rs2 * a2 + 3 * rs * a + 1)
                - r3 * 420 * (6 * rs2 * a2 + 6 * rs * a + 1)
                + r4 * 756 * (2 * rs * a2 + a)
                - r5 * 378 * a2)
        - r6 * (rs3 * 84 * (6 * rs2 * a2 + 15 * rs * a + 10)
                - r * rs2 * 3780 * (rs2 * a2 + 2 * rs * a + 1)
                + r2 * rs * 7560 * (2 * rs2 * a2 + 3 * rs * a + 1))) / (252 * r9)
        - math.log(r) * 10 * (6 * rs2 * a2 + 6 * rs * a + 1) + r * 15 * (2 * rs * a2 + a) - r2 * 3 * a2)


def dispersion_correction(sigma, epsilon, members, counts, cutoff, volume, switch_distance=None):
    """OpenMM's long-range dispersion correction, kJ/mol.

    sigma, epsilon (N,) per particle; members/counts from `dispersion_classes`; volume (...,) nm^3;
    switch_distance nm or None. Each class takes its members' mean parameters: OpenMM's value at the classes'
    parameters, and the exact first-order response when one member's parameters change.
    """
    n = float(members.numel())
    counts = counts.to(sigma.dtype)
    cs = torch.zeros_like(counts).index_add_(0, members, sigma) / counts
    ce = torch.zeros_like(counts).index_add_(0, members, epsilon) / counts
    s = 0.5 * (cs[:, None] + cs[None, :])
    e = torch.sqrt(ce[:, None] * ce[None, :])
    weight = counts[:, None] * counts[None, :]
    weight = torch.tril(weight, -1) + torch.diag(counts * (counts + 1) / 2)
    s6 = s**6
    pairs = n * (n + 1) / 2
    total = (weight * e * s6 * s6).sum() / (9 * cutoff**9) - (weight * e * s6).sum() / (3 * cutoff**3)
    if switch_distance is not None:
        switched = (switched_dispersion_integral(cutoff, switch_distance, cutoff, s)
                    - switched_dispersion_integral(switch_distance, switch_distance, cutoff, s))
        total = total + (weight * e * switched).sum()
    return 8 * n * n * math.pi * total / pairs / volume


class NonbondedPair:
    """The pair energy LJ(r) S(r) + qq K(r) for r < cutoff (0 beyond), per pair, kJ/mol, for
    `pairwise.pair_energy` and `pairwise.PairFunction`.

    Inputs: r (..., P) nm; qq (P,) = C q_i q_j; sigma (P,) nm; epsilon (P,) kJ/mol, or neither for pairs without
    Lennard-Jones (Coulomb only). K is the Coulomb kernel of the nonbonded method (1/r; reaction field 1/r +
    k_rf r^2 - c_rf; Ewald erfc(alpha r)/r) and S the Lennard-Jones switching function (switch distance or None).

    `value` is the definition (plain differentiable torch); `energy_and_force` is the same energy with its radial
    derivative, written for speed, and checked against `value` by gradcheck.
    """

    fast = 1  # derivatives with respect to r are computed in forward

    def __init__(self, cutoff=None, switch_distance=None, reaction_field=None, alpha=None):
        self.cutoff, self.switch_distance = cutoff, switch_distance
        self.reaction_field, self.alpha = reaction_field, alpha

    def value(self, r, qq, sigma=None, epsilon=None):
        if self.alpha is not None:
            coulomb = torch.special.erfc(self.alpha * r) / r
        elif self.reaction_field is not None:
            k_rf, c_rf = self.reaction_field
            coulomb = 1 / r + k_rf * r * r - c_rf
        else:
            coulomb = 1 / r
        energy = qq * coulomb
        if epsilon is not None:
            lj = lennard_jones(r, sigma, epsilon)
            if self.switch_distance is not None:
                lj = lj * switching_function(r, self.switch_distance, self.cutoff)
            energy = energy + lj
        if self.cutoff is not None:
            energy = energy * (r < self.cutoff).to(r.dtype)
        return energy

    def value_and_derivatives(self, r, qq, sigma=None, epsilon=None):
        energy, force = self.energy_and_force(r * r, qq, sigma, epsilon)
        return energy, (-force * r,)

    def energy_and_force(self, r2, qq, sigma=None, epsilon=None):
        """(energy (..., P) kJ/mol, f = -(dE/dr) / r (..., P) kJ/mol/nm^2: the force on atom j is f (x_j - x_i))
        for squared distances r2 (..., P) nm^2, in few passes over the pairs (on CPUs a pass costs more than its
        arithmetic)."""
        inverse2 = r2.reciprocal()
        if self.cutoff is not None:  # zero 1/r^2 beyond the cutoff, and with it every term but the reaction field's
            inverse2 = torch.nn.functional.threshold_(inverse2, self.cutoff**-2, 0.0)
        if self.alpha is not None:  # K = erfc(alpha r) / r; -r dK/dr = K + 2 alpha / sqrt(pi) exp(-alpha^2 r^2)
            r = r2.sqrt()
            coulomb = (r * self.alpha).erfc_().mul_(r.mul_(inverse2))
            gaussian = torch.rsub(r2, math.log(2 * self.alpha / math.sqrt(math.pi)), alpha=self.alpha**2).exp_()
            energy = coulomb.mul_(qq)
            force = torch.addcmul(energy, gaussian, qq)  # -r dE/dr
        elif self.reaction_field is not None:
            # K = 1/r + k_rf r^2 - c_rf within the cutoff; -r dK/dr = 1/r - 2 k_rf r^2
            k_rf, c_rf = self.reaction_field
            inverse = inverse2.sqrt()
            energy = torch.addcmul(inverse, r2.mul(k_rf).sub_(c_rf), r2 * inverse2).mul_(qq)
            force = torch.add(inverse, r2, alpha=-2 * k_rf).mul_(qq)
        else:  # K = 1/r; -r dK/dr = 1/r
            inverse = inverse2.sqrt()
            energy, force = inverse * qq, inverse.mul_(qq)
        if epsilon is not None:  # LJ = 4 (e12 - e6), -r dLJ/dr = 48 e12 - 24 e6; e6 = eps (s/r)^6, e12 = eps (s/r)^12
            s2 = inverse2 * sigma
            s2.mul_(sigma)
            s6 = s2 * s2
            s6.mul_(s2)
            e6 = s6 * epsilon
            e12 = s6.mul_(e6)
            if self.switch_distance is None:
                energy.add_(e12, alpha=4).sub_(e6, alpha=4)
                force.add_(e12, alpha=48).sub_(e6, alpha=24)
            else:  # E = LJ S: -r dE/dr = -r dLJ/dr S - LJ r dS/dr
                r = r2.sqrt()
                lj = torch.sub(e12, e6).mul_(4)
                d_lj = e12.mul_(48).sub_(e6, alpha=24)
                switch = switching_function(r, self.switch_distance, self.cutoff)
                force.addcmul_(d_lj, switch).sub_(lj * r * switching_derivative(r, self.switch_distance, self.cutoff))
                energy.addcmul_(lj, switch)
        return energy, force.mul_(inverse2)


def combined_parameters(pairs, charge, sigma=None, epsilon=None):
    """Per-pair C q_i q_j (kJ nm/mol) and, given sigma and epsilon, Lorentz-Berthelot sigma_ij = (s_i + s_j)/2
    (nm) and epsilon_ij = sqrt(eps_i eps_j) (kJ/mol), for pairs (2, P) from per-particle (N,) parameters."""
    i, j = pairs
    qq = COULOMB * charge.index_select(0, i) * charge.index_select(0, j)
    if epsilon is None:
        return (qq,)
    sqrt_eps = torch.sqrt(epsilon)
    return (qq, 0.5 * (sigma.index_select(0, i) + sigma.index_select(0, j)),
            sqrt_eps.index_select(0, i) * sqrt_eps.index_select(0, j))


def excluded_reciprocal_energy(r, qq, alpha):
    """C q_i q_j erf(alpha r) / r per excluded pair (its limit 2 alpha / sqrt(pi) C q_i q_j where erf(alpha r) is
    at most 1e-6, as OpenMM), kJ/mol; qq = C q_i q_j."""
    erf = torch.special.erf(alpha * r)
    small = erf <= 1e-6
    return torch.where(small, qq * (2 * alpha / math.sqrt(math.pi)), qq * erf / torch.where(small, 1.0, r))


class NonbondedForce:
    """OpenMM NonbondedForce (NoCutoff, CutoffNonPeriodic, CutoffPeriodic, PME).

    parameters: 'charge' (N,) e, 'sigma' (N,) nm, 'epsilon' (N,) kJ/mol, and per exception
    'exception_charge_prod' (E,) e^2, 'exception_sigma' (E,) nm, 'exception_epsilon' (E,) kJ/mol. As in OpenMM,
    exceptions keep their own parameters: changing a charge does not change the 1-4 pairs it belongs to.
    With PME, `alpha` (1/nm) and `grid` (nx, ny, nz) are OpenMM's (`pme.pme_parameters`, or the force's own
    `getPMEParameters()` when set) and stay fixed, as in OpenMM, when a different box is passed.
    """

    name = "NonbondedForce"

    def __init__(self, force, device, dtype, default_box=None):
        method = force.getNonbondedMethod()
        if method not in _METHODS:
            raise UnsupportedForceError(
                f"NonbondedForce: nonbonded method {_method_name(method)} is not supported yet; use NoCutoff, "
                "CutoffNonPeriodic, CutoffPeriodic or PME (nonbonded_method='nocutoff', 'cutoff' or 'pme').")
        if force.getNumParticleParameterOffsets() or force.getNumExceptionParameterOffsets():
            raise UnsupportedForceError("NonbondedForce: parameter offsets (global-parameter dependent charges "
                                        "or LJ parameters) are not supported.")
        if force.getExceptionsUsePeriodicBoundaryConditions():
            raise UnsupportedForceError("NonbondedForce: periodic exceptions are not supported.")
        self.method = _METHODS[method]
        self.cutoff = strip(force.getCutoffDistance()) if self.method != "nocutoff" else None
        self.switch_distance = (strip(force.getSwitchingDistance())
                                if self.cutoff is not None and force.getUseSwitchingFunction() else None)
        n = force.getNumParticles()
        particles = [force.getParticleParameters(p) for p in range(n)]
        values = torch.tensor([[strip(v) for v in row] for row in particles], dtype=torch.float64).reshape(-1, 3)
        rows = [force.getExceptionParameters(e) for e in range(force.getNumExceptions())]
        pairs = torch.tensor([[r[0] for r in rows], [r[1] for r in rows]], dtype=torch.long).reshape(2, -1)
        exc = torch.tensor([[strip(v) for v in r[2:]] for r in rows], dtype=torch.float64).reshape(-1, 3)
        active = (exc[:, 0] != 0) | (exc[:, 2] != 0)
        excluded = torch.unique(pair_keys(pairs, n))
        self.pairs = NeighborList(n, self.cutoff, excluded=excluded.to(device), periodic=self.periodic)
        self.exceptions = pairs[:, active].to(device)
        self.parameters = {
            "charge": values[:, 0].to(device=device, dtype=dtype),
            "sigma": values[:, 1].to(device=device, dtype=dtype),
            "epsilon": values[:, 2].to(device=device, dtype=dtype),
            "exception_charge_prod": exc[active, 0].to(device=device, dtype=dtype),
            "exception_sigma": exc[active, 1].to(device=device, dtype=dtype),
            "exception_epsilon": exc[active, 2].to(device=device, dtype=dtype),
        }
        reaction_field = None
        if self.method in ("cutoff_nonperiodic", "cutoff_periodic"):
            eps_rf = force.getReactionFieldDielectric()
            reaction_field = ((eps_rf - 1) / ((2 * eps_rf + 1) * self.cutoff**3),
                              3 * eps_rf / ((2 * eps_rf + 1) * self.cutoff))
        self.reciprocal = None
        if self.method == "pme":
            alpha, *grid = force.getPMEParameters()
            alpha = strip(alpha)
            if alpha == 0:
                if default_box is None:
                    raise UnsupportedForceError("NonbondedForce: PME needs the system's default box vectors.")
                alpha, grid = pme_parameters(self.cutoff, default_box, force.getEwaldErrorTolerance())
                if math.prod(grid) > MAX_PME_GRID_POINTS:  # (tiny cutoffs: grids of many GB, never a useful run)
                    need = self.cutoff * (math.prod(grid) / MAX_PME_GRID_POINTS) ** (1 / 3)
                    raise ArgumentError("cutoff", self.cutoff, f"at least {need:.3g} nm for PME in this box (OpenMM's "
                                        f"grid for it is {'x'.join(map(str, grid))}, over 2**28 points)",
                                        "NonbondedForce")
            if math.prod(grid) > MAX_PME_GRID_POINTS:
                raise UnsupportedForceError(f"NonbondedForce: the PME grid {'x'.join(map(str, grid))} has over 2**28 "
                                            "points; use a coarser grid (setPMEParameters).")
            self.reciprocal = ReciprocalSpace(alpha, grid, COULOMB, device, dtype)
            self.excluded = torch.stack([excluded // n, excluded % n]).to(device)
        self.pair = NonbondedPair(self.cutoff, self.switch_distance, reaction_field, self.alpha)
        self._pair_parameters = PairCache()
        self._rows = PairCache()
        self.dispersion = None
        if self.periodic and force.getUseDispersionCorrection():
            self.dispersion = tuple(t.to(device) for t in dispersion_classes(values[:, 1], values[:, 2]))

    @property
    def periodic(self):
        return self.method in ("cutoff_periodic", "pme")

    @property
    def alpha(self):
        return self.reciprocal.alpha if self.reciprocal is not None else None

    def energy(self, positions, parameters, box=None):
        p = parameters
        box = box if self.periodic else None
        charge = p["charge"]
        energy = self._direct_energy(positions, (charge, p["sigma"], p["epsilon"]), box)

        a, b = self.exceptions
        r14 = torch.linalg.vector_norm(displacement(positions, a, b), dim=-1)
        energy = energy + (COULOMB * p["exception_charge_prod"] / r14
                           + lennard_jones(r14, p["exception_sigma"], p["exception_epsilon"])).sum(-1)
        if self.reciprocal is not None:
            energy = energy + self._ewald_corrections(positions, charge, box)
        if self.dispersion is not None:
            volume = torch.linalg.det(box)
            energy = energy + dispersion_correction(p["sigma"], p["epsilon"], *self.dispersion, self.cutoff, volume,
                                                    self.switch_distance)
        return energy

    def _direct_energy(self, positions, values, box):
        """The pair energies within the cutoff, (...,) kJ/mol, from per-particle values (charge, sigma, epsilon).
        While these need no gradient and the images are fixed (one conformation, or no periodicity), the pairs are
        laid out in rows (`pairwise.PairRows`, built once per neighbour list) in two sets: pairs with
        epsilon_ij = 0 (most pairs in water, those of its hydrogens) skip the Lennard-Jones arithmetic."""
        if self.pairs.periodic and positions.dim() > 2 or any(
                v.requires_grad or torch._C._functorch.is_functorch_wrapped_tensor(v) for v in values):
            pairs, shift = self.pairs.images_of(positions, box)
            parameters = self._pair_parameters(pairs, values, lambda: combined_parameters(pairs, *values))
            return pair_energy(self.pair, positions, pairs[0], pairs[1], shift, *parameters)
        pairs = self.pairs(positions, box)  # (the rows hold the images as ghost atoms: no image vectors needed)
        layouts = self._rows(pairs, values, lambda: _pair_rows(pairs, self.pairs.images, *values))
        return sum(rows.energy(self.pair, positions, box) for rows in layouts)

    def _ewald_corrections(self, positions, charge, box):
        """Reciprocal-space energy minus the self and excluded-pair terms it includes, and the neutralizing
        background of a net charge Q, -pi C Q^2 / (2 V alpha^2); (...,) kJ/mol."""
        self_energy = COULOMB * self.alpha / math.sqrt(math.pi) * (charge * charge).sum()
        a, b = self.excluded
        r = torch.linalg.vector_norm(displacement(positions, a, b), dim=-1)
        qq = COULOMB * charge.index_select(0, a) * charge.index_select(0, b)
        excluded = excluded_reciprocal_energy(r, qq, self.alpha).sum(-1)
        volume = torch.linalg.det(box)
        background = math.pi * COULOMB * charge.sum() ** 2 / (2 * volume * self.alpha**2)
        return self.reciprocal.energy(positions, charge, box) - self_energy - excluded - background


def _pair_rows(pairs, images, charge, sigma, epsilon):
    """The pairs (2, P) with their `combined_parameters` as `PairRows`: those with epsilon_ij != 0 (C q_i q_j,
    sigma_ij, epsilon_ij), then the others (C q_i q_j). images: None or (P, 3) box vectors from atom i to the image
    of atom j; charge, sigma, epsilon (N,) per particle."""
    no_lj = epsilon == 0
    coulomb_only = no_lj.index_select(0, pairs[0]) | no_lj.index_select(0, pairs[1])
    layouts = []
    for subset, lennard_jones in ((~coulomb_only, (sigma, epsilon)), (coulomb_only, ())):
        subset = subset.nonzero().squeeze(1)
        part = pairs.index_select(1, subset)
        layouts.append(PairRows(*part, None if images is None else images.index_select(0, subset), charge.shape[0],
                                combined_parameters(part, charge, *lennard_jones)))
    return layouts


def _method_name(method):
    names = {getattr(openmm.NonbondedForce, n): n for n in
             ("NoCutoff", "CutoffNonPeriodic", "CutoffPeriodic", "Ewald", "PME", "LJPME")}
    return names.get(method, str(method))
