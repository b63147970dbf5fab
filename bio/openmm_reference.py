"""OpenMM's own energies, per force class, for comparing with `System.energy_components` side by side."""

import numpy as np
import openmm
import openmm.unit as unit
import torch


def openmm_energy_components(openmm_system, positions):
    """Energy (kJ/mol) of each force class of `openmm_system` at `positions`, from OpenMM's Reference platform.

    positions: (N, 3) nm, as a tensor, an array or an OpenMM Quantity. Each force is put in its own force group
    of a copy of the system (the caller's system is left as it is). Keys are OpenMM's force class names, as in
    `System.energy_components`; forces without an energy (CMMotionRemover) are left out.
    """
    if isinstance(positions, unit.Quantity):
        positions = positions.value_in_unit(unit.nanometer)
    elif torch.is_tensor(positions):
        positions = positions.detach().cpu().numpy()
    system = openmm.XmlSerializer.deserialize(openmm.XmlSerializer.serialize(openmm_system))
    names = {}
    for group, force in enumerate(system.getForces()):
        force.setForceGroup(group)
        names[group] = type(force).__name__
    context = openmm.Context(system, openmm.VerletIntegrator(0.001), openmm.Platform.getPlatformByName("Reference"))
    context.setPositions(np.asarray(positions, dtype=np.float64))
    energies = {}
    for group, name in names.items():
        if name == "CMMotionRemover":
            continue
        energy = context.getState(getEnergy=True, groups={group}).getPotentialEnergy()
        energies[name] = energies.get(name, 0.0) + energy.value_in_unit(unit.kilojoule_per_mole)
    return energies
