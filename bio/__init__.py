"""bio: differentiable molecular-mechanics energies for proteins and protein-ligand work (OpenMM units:
nm, kJ/mol, ps, elementary charge).

    import bio
    system = bio.System.from_pdb("protein.pdb")                # amber14 + OBC2 implicit solvent via OpenMM
    energy = system.energy(system.positions)                    # kJ/mol, differentiable
    forces = system.forces(system.positions)                    # kJ/mol/nm
    system.parameters["NonbondedForce"]["charge"].requires_grad_()
"""

from .errors import BioError, ParameterizationError, StructureError, UnsupportedForceError
from .io import read_structure
from .system import System

__all__ = ["BioError", "ParameterizationError", "StructureError", "UnsupportedForceError", "System",
           "read_structure"]
