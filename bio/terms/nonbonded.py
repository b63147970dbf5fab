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
from ..errors import UnsupportedForceError
from ..neighbors import NeighborList, pair_keys
from .geometry import displacement
from .pairwise import PairCache, pair_energy
from .pme import ReciprocalSpace, pme_parameters
from .units import strip

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
    """The pair energy LJ(r) S(r) + qq K(r) for r <= cutoff (0 beyond), per pair, kJ/mol, for
    `pairwise.pair_energy`.

    Inputs: r (..., P) nm; qq (P,) = C q_i q_j; sigma (P,) nm; epsilon (P,) kJ/mol. K is the Coulomb kernel of
    the nonbonded method (1/r; reaction field 1/r + k_rf r^2 - c_rf; Ewald erfc(alpha r)/r) and S the
    Lennard-Jones switching function (switch distance or None).
    """

    fast = 1  # derivatives with respect to r are computed in forward

    def __init__(self, cutoff=None, switch_distance=None, reaction_field=None, alpha=None):
        self.cutoff, self.switch_distance = cutoff, switch_distance
        self.reaction_field, self.alpha = reaction_field, alpha

    def value(self, r, qq, sigma, epsilon):
        return self.value_and_derivatives(r, qq, sigma, epsilon, derivatives=False)[0]

    def value_and_derivatives(self, r, qq, sigma, epsilon, derivatives=True):
        inverse = 1 / r
        s2 = sigma * inverse
        s2 = s2 * s2
        s6 = s2 * s2 * s2
        lj = 4 * epsilon * (s6 * s6 - s6)
        if self.alpha is not None:
            erfc = torch.special.erfc(self.alpha * r)
            coulomb = erfc * inverse
        elif self.reaction_field is not None:
            k_rf, c_rf = self.reaction_field
            coulomb = inverse + k_rf * r * r - c_rf
        else:
            coulomb = inverse
        energy = qq * coulomb
        switch = None
        if self.switch_distance is not None:
            switch = switching_function(r, self.switch_distance, self.cutoff)
            energy = energy + lj * switch
        else:
            energy = energy + lj
        within = None if self.cutoff is None else (r <= self.cutoff).to(r.dtype)
        if within is not None:
            energy = energy * within
        if not derivatives:
            return energy, ()
        # d/dr of 4 eps (s^12 - s^6) and of the Coulomb kernel
        d_lj = 24 * epsilon * (s6 - 2 * s6 * s6) * inverse
        if self.alpha is not None:
            ar = self.alpha * r
            d_coulomb = -(erfc + 2 / math.sqrt(math.pi) * ar * torch.exp(-ar * ar)) * inverse * inverse
        elif self.reaction_field is not None:
            d_coulomb = 2 * self.reaction_field[0] * r - inverse * inverse
        else:
            d_coulomb = -inverse * inverse
        d_r = qq * d_coulomb
        if switch is not None:
            d_r = d_r + d_lj * switch + lj * switching_derivative(r, self.switch_distance, self.cutoff)
        else:
            d_r = d_r + d_lj
        if within is not None:
            d_r = d_r * within
        return energy, (d_r,)


def combined_parameters(pairs, charge, sigma, epsilon):
    """Per-pair C q_i q_j (kJ nm/mol), Lorentz-Berthelot sigma_ij = (s_i + s_j)/2 (nm) and epsilon_ij =
    sqrt(eps_i eps_j) (kJ/mol) for pairs (2, P) from per-particle (N,) parameters."""
    i, j = pairs
    sqrt_eps = torch.sqrt(epsilon)
    return (COULOMB * charge.index_select(0, i) * charge.index_select(0, j),
            0.5 * (sigma.index_select(0, i) + sigma.index_select(0, j)),
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
            self.reciprocal = ReciprocalSpace(alpha, grid, COULOMB, device, dtype)
            self.excluded = torch.stack([excluded // n, excluded % n]).to(device)
        self.pair = NonbondedPair(self.cutoff, self.switch_distance, reaction_field, self.alpha)
        self._pair_parameters = PairCache()
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
        pairs, shift = self.pairs.images_of(positions, box if self.periodic else None)
        charge = p["charge"]
        qq, sigma, epsilon = self._pair_parameters(pairs, (charge, p["sigma"], p["epsilon"]),
                                                   lambda: combined_parameters(pairs, charge, p["sigma"], p["epsilon"]))
        energy = pair_energy(self.pair, positions, pairs[0], pairs[1], shift, qq, sigma, epsilon)

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


def _method_name(method):
    names = {getattr(openmm.NonbondedForce, n): n for n in
             ("NoCutoff", "CutoffNonPeriodic", "CutoffPeriodic", "Ewald", "PME", "LJPME")}
    return names.get(method, str(method))
