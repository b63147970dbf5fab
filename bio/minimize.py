"""Local energy minimization of a `bio.System`, the way OpenMM's LocalEnergyMinimizer does it.

L-BFGS (from `inference.optim`) stops once the root-mean-square of all gradient components is at most
`tolerance` (kJ/mol/nm), the criterion OpenMM documents. (OpenMM 8's CPU and Reference builds in fact stop at
liblbfgs's test |g| / max(1, |x|) < tolerance / max(1, RMS |x_i|), which depends on where the origin is and
often runs further: compare the two at a tolerance both converge to, e.g. 1 kJ/mol/nm.)

Constraints are handled as OpenMM handles them: the structure is first projected onto the constraints, each
constraint is replaced by a stiff harmonic spring (k = 100 / tolerance kJ/mol/nm^2), and the minimization is
repeated with 10x stiffer springs until every constraint is met to max(1e-4, constraint_tolerance); a final
projection then satisfies them to `constraint_tolerance`.
"""

import math
from dataclasses import dataclass

import numpy as np
import openmm.unit as unit
import torch

from inference.optim import OptimizeResult
from inference.optim import minimize as optimize

from . import checks
from .constraints import Constraints
from .errors import ArgumentError

# OpenMM's maxIterations = 0 means "until converged".
_UNLIMITED = 2**31 - 1


@dataclass
class MinimizationResult:
    """What `minimize` found.

    Attributes:
        positions: (N, 3) nm, constraints satisfied.
        energy: () kJ/mol, potential energy of the system at `positions` (restraints not included).
        initial_energy: () kJ/mol, potential energy at the (constraint-projected) start.
        rms_gradient: kJ/mol/nm, RMS of the minimized objective's gradient (energy + restraints + constraint
            springs) where the last L-BFGS run stopped; `tolerance` applies to it.
        converged: the RMS criterion and the constraints were both met.
        n_steps: L-BFGS steps over all constraint-stiffening rounds.
        message: why it stopped, in words.
        optimize_result: the `inference.optim.OptimizeResult` of the last L-BFGS run.
    """

    positions: torch.Tensor
    energy: torch.Tensor
    initial_energy: torch.Tensor
    rms_gradient: float
    converged: bool
    n_steps: int
    message: str
    optimize_result: OptimizeResult


def minimize(system, positions=None, tolerance=10.0, max_steps=0, restraints=None, constraint_tolerance=1e-5,
             method="lbfgs", progress=False):
    """Minimize the potential energy of `system` from `positions` (default `system.positions`).

    Args:
        positions: (N, 3) nm (tensor, array or OpenMM Quantity).
        tolerance: kJ/mol/nm; stop when the RMS of all gradient components is at most this (OpenMM's default 10).
        max_steps: most L-BFGS steps per round; 0 (OpenMM's default) runs until converged.
        restraints: optional function positions (N, 3) nm -> () kJ/mol added to the energy, e.g.
            `positional_restraints(...)`.
        constraint_tolerance: relative tolerance of the system's constraints (OpenMM's default 1e-5).
        method: an `inference.optim.minimize` method ("lbfgs", as OpenMM, or "fire").
        progress: show a tqdm bar per round.

    Returns a `MinimizationResult`. Raises ValueError for bad positions or arguments and
    inference.NonFiniteError when the energy becomes NaN/inf.
    """
    tolerance, max_steps = check_options(tolerance, max_steps, constraint_tolerance)
    if restraints is not None and not callable(restraints):
        raise ArgumentError("restraints", restraints, "None or a function positions -> energy", "minimize")
    x = positions_tensor(system, positions, "minimize")
    if x.dim() != 2:
        raise ValueError("minimize: one structure (N, 3) at a time; for a batch use inference.optim.minimize "
                         "with method='fire' on system.energy.")
    constraints = Constraints.from_system(system)
    working_tolerance = max(1e-4, constraint_tolerance)
    x = constraints.apply(x, x, working_tolerance)
    initial_energy = system.energy(x).detach()
    start, stiffness, previous_error, n_steps = x, 100.0 / working_tolerance, math.inf, 0

    def rms(gradient):
        return float(gradient.pow(2).mean().sqrt())

    while True:
        objective = _objective(system, restraints, constraints, stiffness)
        result = optimize(objective, x, method=method, tol=tolerance, max_steps=max_steps or _UNLIMITED,
                          callback=lambda step, point, fun, gradient: rms(gradient) <= tolerance, progress=progress)
        n_steps += result.n_steps
        x = result.x
        error = constraints.max_error(x)
        if error <= working_tolerance or error >= previous_error:
            break
        previous_error, stiffness = error, 10 * stiffness
        if error > 100 * working_tolerance:  # too far from a valid structure to recover: start again, stiffer
            x = start
    positions_for_rms = x.detach().requires_grad_(True)
    with torch.enable_grad():
        (gradient,) = torch.autograd.grad(objective(positions_for_rms), positions_for_rms)
    rms_gradient = rms(gradient)
    x = constraints.apply(x, x, constraint_tolerance)
    converged = rms_gradient <= tolerance and error <= working_tolerance
    if converged:
        message = f"converged: RMS gradient {rms_gradient:.3g} <= {tolerance:g} kJ/mol/nm after {n_steps} steps"
    elif error > working_tolerance:
        message = (f"constraints not satisfied: largest relative error {error:.3g} > {working_tolerance:g} after "
                   f"{n_steps} steps")
    else:
        message = f"not converged: RMS gradient {rms_gradient:.3g} > {tolerance:g} kJ/mol/nm ({result.message})"
    return MinimizationResult(positions=x, energy=system.energy(x).detach(), initial_energy=initial_energy,
                              rms_gradient=rms_gradient, converged=converged, n_steps=n_steps, message=message,
                              optimize_result=result)


def check_options(tolerance=10.0, max_steps=0, constraint_tolerance=1e-5, owner="minimize"):
    """(tolerance, max_steps) checked: tolerance finite > 0 kJ/mol/nm, max_steps an integer >= 0,
    constraint_tolerance in (0, 1). Raises ArgumentError."""
    tolerance = checks.number("tolerance", tolerance, low=0, unit="kJ/mol/nm", owner=owner)
    max_steps = checks.integer("max_steps", max_steps, low=0, unit="(0 = until converged)", owner=owner)
    checks.number("constraint_tolerance", constraint_tolerance, low=0, high=1, unit="(relative)", owner=owner)
    return tolerance, max_steps


def positional_restraints(atoms, reference, k):
    """Harmonic positional restraints, sum over `atoms` of 1/2 k |x_i - reference_i|^2 (non-periodic distance).

    atoms: indices (M,); reference: (N, 3) nm positions of the whole system (tensor); k: kJ/mol/nm^2.
    Returns a function positions (..., N, 3) nm -> (...,) kJ/mol, for `minimize(..., restraints=...)`.
    """
    checks.number("k", k, low=0, low_inclusive=True, unit="kJ/mol/nm^2", owner="positional_restraints")
    atoms = torch.as_tensor(atoms, device=reference.device).reshape(-1)
    if atoms.is_floating_point() or atoms.dtype == torch.bool or (atoms.numel() and not (
            0 <= int(atoms.min()) and int(atoms.max()) < reference.shape[-2])):
        raise ArgumentError("atoms", atoms.tolist() if atoms.numel() <= 10 else atoms, "atom indices in "
                                   f"0..{reference.shape[-2] - 1}", "positional_restraints",
                                   shown=None if atoms.numel() <= 10 else f"{atoms.numel()} indices")
    atoms = atoms.long()
    anchors = reference.detach()[atoms]

    def energy(positions):
        displacement = positions[..., atoms, :] - anchors
        return 0.5 * k * (displacement * displacement).sum((-2, -1))

    return energy


def _objective(system, restraints, constraints, stiffness):
    i, j = constraints.pairs[:, 0], constraints.pairs[:, 1]

    def objective(x):
        energy = system.energy(x)
        if restraints is not None:
            energy = energy + restraints(x)
        if constraints.n_constraints:
            stretch = (x[i] - x[j]).norm(dim=-1) - constraints.distances
            energy = energy + 0.5 * stiffness * (stretch * stretch).sum()
        return energy

    return objective


def positions_tensor(system, positions, name):
    """positions (..., N, 3) nm as a detached tensor on the system's device/dtype, checked; None means
    `system.positions`. Accepts tensors, arrays and OpenMM Quantities. `name` prefixes error messages."""
    if positions is None:
        positions = system.positions
        if positions is None:
            raise ValueError(f"{name}: the system has no positions; pass positions (N, 3) in nm.")
    if unit.is_quantity(positions):
        positions = np.asarray(positions.value_in_unit(unit.nanometer), dtype=np.float64)
    positions = torch.as_tensor(positions, dtype=system.dtype, device=system.device).detach()
    if positions.dim() not in (2, 3) or positions.shape[-2:] != (system.n_atoms, 3):
        raise ValueError(f"{name}: positions must have shape (N, 3) or (B, N, 3) with N = {system.n_atoms} atoms "
                         f"(nm), got {tuple(positions.shape)}.")
    if not bool(torch.isfinite(positions).all()):
        raise ArgumentError("positions", positions, "finite (nm)", name, shown="NaN or inf")
    return positions


__all__ = ["MinimizationResult", "minimize", "positional_restraints", "check_options"]
