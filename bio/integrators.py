"""Integrators with OpenMM's update rules, so that trajectories and sampled ensembles match OpenMM's.

Each integrator advances a `State` by one step given the forces at its positions: `integrator.step(state,
evaluate, constraints, generator) -> State`, where `evaluate(positions) -> (potential energy, forces)`. Velocities
are stored as OpenMM stores them (Verlet: half a step behind the positions, leapfrog), and
`kinetic_energy(integrator, state, constraints)` reports what OpenMM's `State.getKineticEnergy()` reports for that integrator.
Units: nm, ps, kJ/mol, amu, K. Positions (..., N, 3); a leading batch dimension runs independent replicas.
"""

import math
from dataclasses import dataclass, replace

import openmm.unit as unit
import torch

from . import checks

BOLTZMANN = unit.MOLAR_GAS_CONSTANT_R.value_in_unit(unit.kilojoule_per_mole / unit.kelvin)  # kJ/mol/K


@dataclass(frozen=True)
class State:
    """The dynamical state: positions (..., N, 3) nm, velocities (..., N, 3) nm/ps, forces (..., N, 3)
    kJ/mol/nm and potential_energy (...,) kJ/mol at the positions, step count and time (ps)."""

    positions: torch.Tensor
    velocities: torch.Tensor
    forces: torch.Tensor
    potential_energy: torch.Tensor
    step: int = 0
    time: float = 0.0


class VerletIntegrator:
    """Leapfrog Verlet for constant energy (NVE), OpenMM's VerletIntegrator.

    step_size: ps. constraint_tolerance: relative, as OpenMM's (default 1e-5).
    """

    # OpenMM reports the kinetic energy of v + (shift * step_size) f/m: the leapfrog velocities brought on-step.
    kinetic_energy_shift = 0.5

    def __init__(self, step_size, constraint_tolerance=1e-5):
        self.step_size = checks.number("step_size", step_size, low=0, unit="ps", owner="VerletIntegrator")
        self.constraint_tolerance = _constraint_tolerance(constraint_tolerance, "VerletIntegrator")

    def step(self, state, evaluate, constraints, generator=None):
        dt = self.step_size
        velocities = state.velocities + dt * state.forces * constraints.inverse_masses[:, None]
        positions = constraints.apply(state.positions, state.positions + dt * velocities, self.constraint_tolerance)
        return _advance(state, positions, (positions - state.positions) / dt, evaluate, dt)

    def __repr__(self):
        return f"VerletIntegrator(step_size={self.step_size} ps)"


class LangevinMiddleIntegrator:
    """Langevin dynamics with OpenMM's LangevinMiddleIntegrator splitting (Zhang et al., J. Phys. Chem. A 123,
    6056 (2019)): a full kick, half a drift, the Ornstein-Uhlenbeck (friction + noise) step, half a drift, then
    constraints, whose displacement (divided by the step size) corrects the velocities as in OpenMM.

    temperature: K. friction: 1/ps. step_size: ps. constraint_tolerance: relative (default 1e-5).
    """

    kinetic_energy_shift = 0.0

    def __init__(self, temperature, friction, step_size, constraint_tolerance=1e-5):
        owner = "LangevinMiddleIntegrator"
        self.temperature = checks.number("temperature", temperature, low=0, unit="K", owner=owner)
        self.friction = checks.number("friction", friction, low=0, low_inclusive=True, unit="1/ps", owner=owner)
        self.step_size = checks.number("step_size", step_size, low=0, unit="ps", owner=owner)
        self.constraint_tolerance = _constraint_tolerance(constraint_tolerance, owner)

    def step(self, state, evaluate, constraints, generator=None):
        dt, tolerance = self.step_size, self.constraint_tolerance
        inverse_masses = constraints.inverse_masses[:, None]
        velocities = state.velocities + dt * state.forces * inverse_masses
        velocities = constraints.apply_to_velocities(state.positions, velocities, tolerance)
        positions = state.positions + 0.5 * dt * velocities
        decay = math.exp(-self.friction * dt)
        noise = torch.randn(velocities.shape, generator=generator, dtype=velocities.dtype, device=velocities.device)
        velocities = decay * velocities + math.sqrt(1 - decay * decay) * (
            BOLTZMANN * self.temperature * inverse_masses).sqrt() * noise
        unconstrained = positions + 0.5 * dt * velocities
        positions = constraints.apply(state.positions, unconstrained, tolerance)
        velocities = velocities + (positions - unconstrained) / dt
        return _advance(state, positions, velocities, evaluate, dt)

    def __repr__(self):
        return (f"LangevinMiddleIntegrator(temperature={self.temperature} K, friction={self.friction}/ps, "
                f"step_size={self.step_size} ps)")


def kinetic_energy(integrator, state, constraints):
    """Kinetic energy (...,) kJ/mol as OpenMM reports it for this integrator: of the velocities shifted by
    `kinetic_energy_shift` steps along the forces, with velocity constraints applied."""
    velocities = state.velocities
    if integrator.kinetic_energy_shift:
        velocities = velocities + (integrator.kinetic_energy_shift * integrator.step_size) * state.forces * \
            constraints.inverse_masses[:, None]
        velocities = constraints.apply_to_velocities(state.positions, velocities, integrator.constraint_tolerance)
    return 0.5 * (constraints.masses[:, None] * velocities * velocities).sum((-2, -1))


def _advance(state, positions, velocities, evaluate, dt):
    energy, forces = evaluate(positions)
    return replace(state, positions=positions, velocities=velocities, forces=forces, potential_energy=energy,
                   step=state.step + 1, time=state.time + dt)


def _constraint_tolerance(value, owner):
    return checks.number("constraint_tolerance", value, low=0, high=1, unit="(relative)", owner=owner)


__all__ = ["BOLTZMANN", "State", "VerletIntegrator", "LangevinMiddleIntegrator", "kinetic_energy"]
