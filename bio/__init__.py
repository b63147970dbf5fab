"""bio: differentiable molecular-mechanics energies for proteins and protein-ligand work (OpenMM units:
nm, kJ/mol, ps, elementary charge).

    import bio
    system = bio.System.from_pdb("protein.pdb")                # amber14 + OBC2 implicit solvent via OpenMM
    energy = system.energy(system.positions)                    # kJ/mol, differentiable
    forces = system.forces(system.positions)                    # kJ/mol/nm
    system.parameters["NonbondedForce"]["charge"].requires_grad_()

    result = bio.minimize(system)                               # L-BFGS, OpenMM's convergence criterion
    sim = bio.Simulation(system, bio.LangevinMiddleIntegrator(300, 1.0, 0.002), result.positions, seed=1)
    sim.reporters.append(bio.DCDReporter("trajectory.dcd", 500))
    sim.step(10_000)

    ligand = bio.Ligand.from_smiles("CC(=O)Oc1ccccc1C(=O)O", num_conformers=8)   # RDKit ETKDG, nm
    energy = bio.mmff_energy(ligand)                                             # MMFF94 in Å -> kcal/mol
    energies = energy(ligand.conformers_angstrom)                                # (8,), matches RDKit

    receptor = bio.Receptor.from_pdb("protein.pdb", ph=7.4)       # PDBFixer hydrogens, AutoDock types
    score = bio.vina_score(ligand, receptor, center=(x, y, z), size=(20, 20, 20))
    score(ligand.conformers_angstrom)                             # (8,) kcal/mol, AutoDock Vina's score
    result = bio.dock(receptor, ligand, center=(x, y, z), box_size=(22, 22, 22))   # batched MC + BFGS
    result.scores["total"], result.coordinates                    # (K,) kcal/mol, (K, N, 3) Å, best first
"""

from .constraints import Constraints
from . import checks
from .errors import (ArgumentError, BioError, ConstraintError, LigandError, ParameterizationError, StructureError,
                     UnsafeInputError, UnsupportedForceError)
from .integrators import LangevinMiddleIntegrator, State, VerletIntegrator
from .io import read_structure
from .ligand import Ligand
from .minimize import MinimizationResult, minimize, positional_restraints
from .openmm_reference import openmm_energy_components
from .mmff import mmff_components, mmff_energy, mmff_parameters
from .receptor import Receptor
from .autodock import read_pdbqt
from .vina import vina_score
from .pose import Pose, TorsionTree
from .docking import DockingResult, dock
from .reporters import CheckpointReporter, DCDReporter, PDBReporter, StateDataReporter
from .simulation import Simulation
from .system import System

__all__ = ["BioError", "ArgumentError", "ConstraintError", "ParameterizationError", "StructureError",
           "UnsafeInputError", "UnsupportedForceError", "System",
           "read_structure", "Constraints", "minimize", "MinimizationResult", "positional_restraints",
           "VerletIntegrator", "LangevinMiddleIntegrator", "State", "Simulation", "StateDataReporter",
           "PDBReporter", "DCDReporter", "CheckpointReporter", "Ligand", "LigandError", "mmff_energy",
           "mmff_parameters", "mmff_components", "openmm_energy_components", "Receptor", "read_pdbqt",
           "vina_score", "Pose", "TorsionTree", "dock", "DockingResult"]
