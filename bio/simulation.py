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

from dataclasses import replace

import numpy as np
import openmm
import openmm.unit as unit
import torch
from tqdm.auto import tqdm

from inference import checkpoint as checkpoints

from . import checks
from .constraints import Constraints
from .errors import ArgumentError, BioError, ConstraintError
from .integrators import BOLTZMANN, State, kinetic_energy
from .minimize import minimize, positions_tensor
from .system import System

_CHECKPOINT_VERSION = 2


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
        if not isinstance(system, System):
            raise ArgumentError("system", system, "a bio.System (e.g. bio.System.from_openmm(openmm_system))",
                                "Simulation", shown=type(system).__module__ + "." + type(system).__name__)
        if not all(hasattr(integrator, name) for name in ("step", "step_size", "constraint_tolerance",
                                                          "kinetic_energy_shift")):
            raise ArgumentError("integrator", integrator, "a bio integrator (bio.VerletIntegrator or "
                                "bio.LangevinMiddleIntegrator; OpenMM's integrators cannot drive a bio.Simulation)",
                                "Simulation", shown=type(integrator).__module__ + "." + type(integrator).__name__)
        seed = checks.seed(seed, owner="Simulation")
        self.system, self.integrator = system, integrator
        self.constraints = Constraints.from_system(system)
        self.generator = torch.Generator(device=system.device)
        if seed is None:
            self.generator.seed()
        else:
            self.generator.manual_seed(seed)
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
        temperature = checks.number("temperature", temperature, low=0, low_inclusive=True, unit="K",
                                    owner="set_velocities_to_temperature")
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
        """Advance `steps` integration steps (an integer >= 0; 0 does nothing), calling reporters; a tqdm bar with
        energy and temperature if `progress`. Raises ArgumentError for a bad `steps` and ConstraintError if the
        energy becomes NaN/inf (the message names the step)."""
        steps = checks.integer("steps", steps, low=0, owner="Simulation.step")
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
        """Write positions (nm), velocities (nm/ps), step, time (ps) and the random stream's state to `path` with
        `inference.checkpoint.save` (through a temporary file, so an interrupt never leaves a broken checkpoint),
        with a fingerprint of what they continue: the system (number of atoms, dtype, force terms, a hash of the
        force parameters and masses, number of constraints) and the integrator (type and settings)."""
        state = self._state
        data = {"positions": state.positions, "velocities": state.velocities, "step": state.step,
                "time": state.time, "rng_state": self.generator.get_state()}
        checkpoints.save(path, "MD", _CHECKPOINT_VERSION, self._fingerprint(), data)

    def load_checkpoint(self, path):
        """Restore a `save_checkpoint` file (loaded with weights_only=True); continuing then reproduces the
        uninterrupted run bit for bit on the same device (on CUDA, under ``torch.use_deterministic_algorithms(True)``:
        otherwise CUDA's scatter-adds of forces sum in a varying order, which changes the last bits).

        Raises:
            BioError: the file is unreadable (missing, empty, truncated, another kind of checkpoint), or was
                written for another system or integrator (the message names what differs).
        """
        try:
            data = checkpoints.load(path, "MD", _CHECKPOINT_VERSION, map_location=self.system.device)
            checkpoints.check(path, data, self._fingerprint(), "Resume with the system and integrator it was "
                              "written for, or start afresh.")
        except checkpoints.CheckpointError as error:
            raise BioError(str(error)) from None
        self.generator.set_state(data["rng_state"].cpu())
        positions = data["positions"]
        energy, forces = self._evaluate(positions)
        self._state = State(positions, data["velocities"], forces, energy, int(data["step"]), float(data["time"]))

    def _fingerprint(self):
        """What a checkpoint of this simulation continues (see `save_checkpoint`)."""
        system, integrator = self.system, self.integrator
        fingerprint = {"the number of atoms": system.n_atoms, "dtype": str(system.dtype),
                       "the force terms": tuple(system.terms),
                       "the hash of the force parameters": checkpoints.digest(system.parameters),
                       "the hash of the masses": checkpoints.digest(system.masses),
                       "the number of constraints": self.constraints.n_constraints,
                       "the integrator": type(integrator).__name__}
        for name, value in vars(integrator).items():
            fingerprint[f"the integrator's {name}"] = checkpoints.plain(value)
        return fingerprint

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
