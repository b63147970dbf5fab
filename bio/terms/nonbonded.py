"""OpenMM's NonbondedForce: Lennard-Jones + Coulomb over all non-excluded pairs, plus exceptions (scaled 1-4
pairs), for the NoCutoff, CutoffNonPeriodic and CutoffPeriodic methods.

Definitions (OpenMM's reference platform):
- pairs: 4 eps ((s/r)^12 - (s/r)^6) with s = (s_i + s_j)/2, eps = sqrt(eps_i eps_j), times OpenMM's switching
  function when enabled; Coulomb C q_i q_j / r without cutoff, and with a cutoff the reaction field
  C q_i q_j (1/r + k_rf r^2 - c_rf), k_rf = (eps_rf - 1) / ((2 eps_rf + 1) r_c^3), c_rf = 3 eps_rf /
  ((2 eps_rf + 1) r_c); pairs beyond the cutoff contribute nothing.
- exceptions: C qq_ij / r + 4 eps_ij ((s_ij/r)^12 - (s_ij/r)^6) with their own parameters, never cut off, no
  reaction field, no periodic image.
- CutoffPeriodic adds the long-range dispersion correction 8 pi N^2 (<eps s^12>/(9 r_c^9) - <eps s^6>/(3 r_c^3))
  / V when the force asks for it, averaged over the (sigma, epsilon) classes of the particles.
"""

import math

import openmm
import torch

from ..constants import COULOMB
from ..errors import UnsupportedForceError
from .geometry import displacement
from .pairs import PairList, pair_keys
from .units import strip

_METHODS = {
    openmm.NonbondedForce.NoCutoff: "nocutoff",
    openmm.NonbondedForce.CutoffNonPeriodic: "cutoff_nonperiodic",
    openmm.NonbondedForce.CutoffPeriodic: "cutoff_periodic",
}


def switching_function(r, switch_distance, cutoff):
    """OpenMM's switch 1 - 10 t^3 + 15 t^4 - 6 t^5, t = (r - r_s)/(r_c - r_s), for r > r_s; 1 below."""
    t = ((r - switch_distance) / (cutoff - switch_distance)).clamp(min=0)
    return 1 + t**3 * (-10 + t * (15 - 6 * t))


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


def dispersion_correction(sigma, epsilon, members, counts, cutoff, volume):
    """OpenMM's long-range dispersion correction (no switching), kJ/mol.

    sigma, epsilon (N,) per particle; members/counts from `dispersion_classes`; volume (...,) nm^3. Each class
    takes its members' mean parameters: OpenMM's value at the classes' parameters, and the exact first-order
    response when one member's parameters change.
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
    sum12 = (weight * e * s6 * s6).sum() / pairs
    sum6 = (weight * e * s6).sum() / pairs
    return 8 * n * n * math.pi * (sum12 / (9 * cutoff**9) - sum6 / (3 * cutoff**3)) / volume


class NonbondedForce:
    """OpenMM NonbondedForce (NoCutoff, CutoffNonPeriodic, CutoffPeriodic).

    parameters: 'charge' (N,) e, 'sigma' (N,) nm, 'epsilon' (N,) kJ/mol, and per exception
    'exception_charge_prod' (E,) e^2, 'exception_sigma' (E,) nm, 'exception_epsilon' (E,) kJ/mol. As in OpenMM,
    exceptions keep their own parameters: changing a charge does not change the 1-4 pairs it belongs to.
    """

    name = "NonbondedForce"

    def __init__(self, force, device, dtype):
        method = force.getNonbondedMethod()
        if method not in _METHODS:
            raise UnsupportedForceError(
                f"NonbondedForce: nonbonded method {_method_name(method)} is not supported yet; use NoCutoff, "
                "CutoffNonPeriodic or CutoffPeriodic (nonbonded_method='nocutoff' or 'cutoff').")
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
        self.pairs = PairList(n, torch.unique(pair_keys(pairs, n)).to(device), self.cutoff,
                              self.method == "cutoff_periodic")
        self.exceptions = pairs[:, active].to(device)
        self.parameters = {
            "charge": values[:, 0].to(device=device, dtype=dtype),
            "sigma": values[:, 1].to(device=device, dtype=dtype),
            "epsilon": values[:, 2].to(device=device, dtype=dtype),
            "exception_charge_prod": exc[active, 0].to(device=device, dtype=dtype),
            "exception_sigma": exc[active, 1].to(device=device, dtype=dtype),
            "exception_epsilon": exc[active, 2].to(device=device, dtype=dtype),
        }
        if self.cutoff is not None:
            eps_rf = force.getReactionFieldDielectric()
            self.k_rf = (eps_rf - 1) / ((2 * eps_rf + 1) * self.cutoff**3)
            self.c_rf = 3 * eps_rf / ((2 * eps_rf + 1) * self.cutoff)
        self.dispersion = None
        if self.method == "cutoff_periodic" and force.getUseDispersionCorrection():
            if self.switch_distance is not None:
                raise UnsupportedForceError("NonbondedForce: the dispersion correction with a switching "
                                            "function is not supported yet; disable one of them.")
            self.dispersion = dispersion_classes(values[:, 1], values[:, 2])
            self.dispersion = tuple(t.to(device) for t in self.dispersion)

    @property
    def periodic(self):
        return self.method == "cutoff_periodic"

    def energy(self, positions, parameters, box=None):
        p = parameters
        i, j = self.pairs(positions, box)
        r = torch.linalg.vector_norm(displacement(positions, i, j, box if self.periodic else None), dim=-1)
        sqrt_eps = torch.sqrt(p["epsilon"])
        lj = lennard_jones(r, 0.5 * (p["sigma"][i] + p["sigma"][j]), sqrt_eps[i] * sqrt_eps[j])
        qq = COULOMB * p["charge"][i] * p["charge"][j]
        if self.cutoff is None:
            pair_energy = lj + qq / r
        else:
            if self.switch_distance is not None:
                lj = lj * switching_function(r, self.switch_distance, self.cutoff)
            pair_energy = lj + qq * (1 / r + self.k_rf * r * r - self.c_rf)
            pair_energy = torch.where(r <= self.cutoff, pair_energy, torch.zeros_like(pair_energy))
        energy = pair_energy.sum(-1)

        a, b = self.exceptions
        r14 = torch.linalg.vector_norm(displacement(positions, a, b), dim=-1)
        energy = energy + (COULOMB * p["exception_charge_prod"] / r14
                           + lennard_jones(r14, p["exception_sigma"], p["exception_epsilon"])).sum(-1)
        if self.dispersion is not None:
            volume = torch.linalg.det(box)
            energy = energy + dispersion_correction(p["sigma"], p["epsilon"], *self.dispersion, self.cutoff, volume)
        return energy


def _method_name(method):
    names = {getattr(openmm.NonbondedForce, n): n for n in
             ("NoCutoff", "CutoffNonPeriodic", "CutoffPeriodic", "Ewald", "PME", "LJPME")}
    return names.get(method, str(method))
