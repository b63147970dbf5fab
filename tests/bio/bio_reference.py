"""OpenMM's Reference platform as the judge of every bio energy and force, and shared test inputs."""

import os

import numpy as np
import openmm
import openmm.app as app
import openmm.unit as unit
import torch

DATA = os.path.join(os.path.dirname(__file__), "data")
ALANINE_DIPEPTIDE = os.path.join(DATA, "alanine_dipeptide.pdb")
VILLIN_IN_WATER = os.path.join(os.path.dirname(app.__file__), "data", "test.pdb")


def openmm_reference(system, positions, box=None):
    """Per-force-class energies (kJ/mol) and forces (N, 3) kJ/mol/nm from OpenMM's Reference platform, each
    force isolated in its own force group."""
    system = openmm.XmlSerializer.deserialize(openmm.XmlSerializer.serialize(system))
    names = {}
    for group, force in enumerate(system.getForces()):
        force.setForceGroup(group)
        names[group] = type(force).__name__
    context = openmm.Context(system, openmm.VerletIntegrator(1.0), openmm.Platform.getPlatformByName("Reference"))
    context.setPositions(np.asarray(positions, dtype=np.float64))
    if box is not None:
        context.setPeriodicBoxVectors(*np.asarray(box, dtype=np.float64))
    energies = {}
    for group, name in names.items():
        state = context.getState(getEnergy=True, groups={group})
        energies[name] = energies.get(name, 0.0) + state.getPotentialEnergy().value_in_unit(unit.kilojoule_per_mole)
    forces = context.getState(getForces=True).getForces(asNumpy=True)
    return energies, np.asarray(forces.value_in_unit(unit.kilojoule_per_mole / unit.nanometer))


def assert_matches_openmm(system, positions=None, box=None):
    """Every energy component within 1e-6 relative (or 1e-4 kJ/mol) and forces within 1e-3 kJ/mol/nm of
    OpenMM's Reference platform, float64."""
    positions = system.positions if positions is None else positions
    ours = system.energy_components(positions, box)
    forces = system.forces(positions, box)
    reference, reference_forces = openmm_reference(system.openmm_system, positions.cpu().numpy(),
                                                   None if box is None else box.cpu().numpy())
    reference.pop("CMMotionRemover", None)
    assert set(ours) == set(reference)
    for name, value in reference.items():
        assert abs(ours[name].item() - value) <= max(1e-4, 1e-6 * abs(value)), (name, ours[name].item(), value)
    assert np.abs(forces.cpu().numpy() - reference_forces).max() <= 1e-3


def perturbed(positions, count, scale=0.01, seed=0):
    """`count` copies of positions (N, 3) nm with Gaussian noise of `scale` nm: (count, N, 3)."""
    generator = torch.Generator().manual_seed(seed)
    noise = scale * torch.randn((count, *positions.shape), generator=generator, dtype=torch.float64)
    return positions.cpu().unsqueeze(0) + noise
