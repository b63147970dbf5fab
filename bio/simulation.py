"""`bio.Simulation`: molecular dynamics of a `bio.System` with OpenMM's Simulation/Context interface.

    sim = bio.Simulation(system, bio.LangevinMiddleIntegrator(300, 1.0, 0.002), seed=1)
    sim.minimize_energy()
    sim.set_velocities_to_temperature(300)
    sim.reporters.append(bio.StateDataReporter(sys.stdout, 100, step=True, potential_energy=True,
                                               temperature=True))
    sim.step(10_000)
    sim.save_checkpoint("run.pt")      # later: sim.load_checkpoint("run.pt"); sim.step(...)

Positions (N, 3) nm, or (B, N, 3) for B independent replicas run in one vectorized step. Device and dtype are
the system's. Constraints (`constraints=` when building the System) are enforced by SHAKE/RATTLE and SETTLE; a
CMMotionRemover in the OpenMM system removes the centre-of-mass velocity every `frequency` steps, as in OpenMM.
"""

import os
from dataclasses import replace

import numpy as np
import openmm
import openmm.unit as unit
import torch
from tqdm.auto import tqdm

from .constraints import Constraints
from .errors import BioError, ConstraintError
from .integrators import BOLTZMANN, State, kinetic_energy
from .minimize import minimize, positions_tensor

_CHECKPOINT_FORMAT = "diffsci.bio.Simulation checkpoint 1"


class Simulation:
    """A System, an integrator and the current state, with reporters.

    Args:
        system: a `bio.System`.
        integrator: `VerletIntegrator` or `LangevinMiddleIntegrator`.
        positions: (N, 3) or (B, N, 3) nm; default `system.positions`. Projected onto the constraints.
        velocities: same shape, nm/ps; default zero.
        seed: seed of the random stream (Langevin noise, `set_velocities_to_temperature`); None draws one.

    Attributes: system, integrator, constraints (`bio.Constraints`), reporters (list; each reporter's
    `report(simulation)` runs after every step that is a multiple of its `report_interval`), generator.
    """

    def __init__(self, system, integrator, positions=None, velocities=None, seed=None):
        self.system, self.integrator = system, integrator
        self.constraints = Constraints.from_system(system)
        self.generator = torch.Generator(device=system.device)
        if seed is None:
            self.generator.seed()
        else:
            self.generator.manual_seed(int(seed))
        self.reporters = []
        removers = [f for f in system.openmm_system.getForces() if isinstance(f, openmm.CMMotionRemover)]
        self._cm_frequency = removers[0].getFrequency() if removers else 0
        positions = positions_tensor(system, positions, "Simulation")
        positions = self.constraints.apply(positions, positions, integrator.constraint_tolerance)
        velocities = torch.zeros_like(positions) if velocities is None else self._velocities(velocities, positions)
        energy, forces = self._evaluate(positions)
        self._state = State(positions, velocities, forces, energy)
        self._check_finite("the initial positions")

    # ---- state ------------------------------------------------------------------------------------------

    @property
    def state(self):
        """The current `bio.State` (positions, velocities, forces, potential_energy, step, time)."""
        return self._state

    @property
    def positions(self):
        return self._state.positions

    @property
    def velocities(self):
        return self._state.velocities

    @property
    def current_step(self):
        return self._state.step

    @property
    def time(self):
        """Simulated time, ps."""
        return self._state.time

    @property
    def potential_energy(self):
        """(...,) kJ/mol at the current positions."""
        return self._state.potential_energy

    def kinetic_energy(self):
        """(...,) kJ/mol, as OpenMM reports it for the integrator (Verlet: on-step velocities)."""
        return kinetic_energy(self.integrator, self._state, self.constraints)

    @property
    def degrees_of_freedom(self):
        """3 x (particles with mass) - constraints - 3 when a CMMotionRemover is present (OpenMM's count)."""
        massive = int((self.system.masses > 0).sum())
        return 3 * massive - self.constraints.n_constraints - (3 if self._cm_frequency else 0)

    def temperature(self):
        """Instantaneous kinetic temperature (...,) K: 2 KE / (degrees of freedom x k_B)."""
        return 2 * self.kinetic_energy() / (self.degrees_of_freedom * BOLTZMANN)

    def set_velocities_to_temperature(self, temperature):
        """Draw Maxwell-Boltzmann velocities at `temperature` (K) from the simulation's random stream, then
        remove the velocity components along constraints and (with a CMMotionRemover) the centre-of-mass motion."""
        scale = (BOLTZMANN * temperature * self.constraints.inverse_masses).sqrt()[:, None]
        noise = torch.randn(self.positions.shape, generator=self.generator, dtype=self.positions.dtype,
                            device=self.positions.device)
        velocities = self.constraints.apply_to_velocities(self.positions, scale * noise,
                                                          self.integrator.constraint_tolerance)
        if self._cm_frequency:
            velocities = self._remove_center_of_mass_motion(velocities)
        self._state = replace(self._state, velocities=velocities)

    # ---- running ----------------------------------------------------------------------------------------

    def step(self, steps, progress=False):
        """Advance `steps` integration steps, calling reporters; a tqdm bar with energy and temperature if
        `progress`. Raises ConstraintError if the energy becomes NaN/inf (the message names the step)."""
        every = max(1, steps // 100)
        with tqdm(total=steps, desc="md", disable=not progress) as bar:
            for n in range(1, steps + 1):
                state = self._state
                if self._cm_frequency and state.step % self._cm_frequency == 0:
                    state = replace(state, velocities=self._remove_center_of_mass_motion(state.velocities))
                self._state = self.integrator.step(state, self._evaluate, self.constraints, self.generator)
                self._check_finite(f"step {self._state.step}")
                for reporter in self.reporters:
                    if self._state.step % reporter.report_interval == 0:
                        reporter.report(self)
                if progress and (n % every == 0 or n == steps):
                    bar.update(n - bar.n)
                    bar.set_postfix(energy=f"{float(self.potential_energy.mean()):.6g} kJ/mol",
                                    T=f"{float(self.temperature().mean()):.1f} K")

    def minimize_energy(self, tolerance=10.0, max_steps=0, restraints=None, progress=False):
        """Minimize from the current positions with `bio.minimize` (OpenMM's criterion: RMS gradient <=
        tolerance kJ/mol/nm; max_steps 0 = until converged) and keep the result; velocities are unchanged.
        Returns the `MinimizationResult`."""
        if self.positions.dim() != 2:
            raise ValueError("minimize_energy: minimizes one structure; this simulation holds a batch of replicas.")
        result = minimize(self.system, self.positions, tolerance=tolerance, max_steps=max_steps,
                          restraints=restraints, constraint_tolerance=self.integrator.constraint_tolerance,
                          progress=progress)
        energy, forces = self._evaluate(result.positions)
        self._state = replace(self._state, positions=result.positions, forces=forces, potential_energy=energy)
        return result

    # ---- checkpoints ------------------------------------------------------------------------------------

    def save_checkpoint(self, path):
        """Write positions, velocities, step, time and the random stream's state to `path` (torch.save,
        written to a temporary file first so an interrupt never leaves a broken checkpoint)."""
        state = self._state
        data = {"format": _CHECKPOINT_FORMAT, "positions": state.positions, "velocities": state.velocities,
                "step": state.step, "time": state.time, "rng_state": self.generator.get_state()}
        temporary = f"{path}.tmp"
        torch.save(data, temporary)
        os.replace(temporary, path)

    def load_checkpoint(self, path):
        """Restore a `save_checkpoint` file (loaded with weights_only=True); continuing then reproduces the
        uninterrupted run bit for bit on the same device (on CUDA, under ``torch.use_deterministic_algorithms(True)``:
        otherwise CUDA's scatter-adds of forces sum in a varying order, which changes the last bits)."""
        try:
            data = torch.load(path, map_location=self.system.device, weights_only=True)
        except Exception as error:  # torch raises pickle/zip/OS errors of many kinds
            raise BioError(f"{path}: not a readable checkpoint ({type(error).__name__}: {error}).") from error
        if not isinstance(data, dict) or data.get("format") != _CHECKPOINT_FORMAT:
            raise BioError(f"{path}: not a bio.Simulation checkpoint (written by Simulation.save_checkpoint).")
        positions = data["positions"].to(self.system.dtype)
        if positions.shape[-2:] != (self.system.n_atoms, 3):
            raise BioError(f"{path}: checkpoint holds positions of shape {tuple(positions.shape)}; this system has "
                           f"{self.system.n_atoms} atoms.")
        self.generator.set_state(data["rng_state"].cpu())
        energy, forces = self._evaluate(positions)
        self._state = State(positions, data["velocities"].to(self.system.dtype), forces, energy, int(data["step"]),
                            float(data["time"]))

    # ---- internals --------------------------------------------------------------------------------------

    def _evaluate(self, positions):
        """(potential energy (...,) kJ/mol, forces (..., N, 3) kJ/mol/nm), both detached."""
        positions = positions.detach().requires_grad_(True)
        with torch.enable_grad():
            energy = self.system.energy(positions)
            (gradient,) = torch.autograd.grad(energy.sum(), positions)
        return energy.detach(), -gradient

    def _velocities(self, velocities, positions):
        if unit.is_quantity(velocities):
            velocities = np.asarray(velocities.value_in_unit(unit.nanometer / unit.picosecond), dtype=np.float64)
        velocities = torch.as_tensor(velocities, dtype=positions.dtype, device=positions.device)
        if velocities.shape != positions.shape:
            raise ValueError(f"Simulation: velocities must have the shape of positions {tuple(positions.shape)} "
                             f"(nm/ps), got {tuple(velocities.shape)}.")
        return velocities * (self.system.masses > 0)[:, None]

    def _remove_center_of_mass_motion(self, velocities):
        masses = self.system.masses[:, None]
        momentum = (masses * velocities).sum(-2, keepdim=True)
        return velocities - (momentum / masses.sum()) * (masses > 0)

    def _check_finite(self, where):
        if not bool(torch.isfinite(self._state.potential_energy).all()):
            raise ConstraintError(f"the potential energy is NaN or infinite at {where}: the structure has blown up. Minimize "
                           "the energy first, lower the step size, or add constraints (e.g. constraints='hbonds').")


__all__ = ["Simulation"]
