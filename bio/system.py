"""`bio.System`: an OpenMM-parameterized system as torch energy terms.

Built from an OpenMM `System` (directly, from a PDB/PDBx file through OpenMM's ForceField, or from AMBER
prmtop/inpcrd files), it holds every force's parameters as tensors on one device and dtype, created once.
Energies are plain differentiable functions of positions (nm) and those parameters (kJ/mol); forces come from
autograd.
"""

import os

import numpy as np
import openmm
import openmm.app as app
import openmm.unit as unit
import torch

from . import checks
from . import forcefield as ff
from .errors import ArgumentError, StructureError, UnsupportedForceError, one_line
from .io import read_structure
from .terms import NO_ENERGY, build_term
from .terms.units import strip


class System:
    """Torch energy terms of an OpenMM system.

    Attributes:
        terms: dict key -> term; keys are OpenMM force class names, with '[k]' appended to the k-th repeat.
        parameters: dict key -> dict name -> tensor; set `requires_grad_()` on any of them to differentiate
            energies w.r.t. it, or pass replacements to `energy(..., parameters=...)`.
        masses: (N,) amu. box_vectors: (3, 3) nm (rows a, b, c) or None for non-periodic systems.
        positions: (N, 3) nm from the input file, or None. topology: openmm.app.Topology or None.
        openmm_system: the openmm.System the terms were built from.
    """

    def __init__(self, openmm_system, topology=None, positions=None, device=None, dtype=torch.float64):
        device = checks.device(device, owner="System")
        checks.dtype(dtype, owner="System")
        if not isinstance(openmm_system, openmm.System):
            raise ArgumentError("openmm_system", openmm_system, "an openmm.System", "System")
        n = openmm_system.getNumParticles()
        if any(openmm_system.isVirtualSite(p) for p in range(n)):
            raise UnsupportedForceError("virtual sites (e.g. TIP4P/TIP5P water) are not supported yet.")
        self.openmm_system = openmm_system
        self.topology = topology
        self.device, self.dtype = device, dtype
        self.masses = torch.tensor([strip(openmm_system.getParticleMass(p)) for p in range(n)], dtype=dtype,
                                   device=device)
        default_box = [strip(v) for v in openmm_system.getDefaultPeriodicBoxVectors()]
        _check_cutoffs(openmm_system, default_box)
        self.terms = {}
        for force in openmm_system.getForces():
            if isinstance(force, NO_ENERGY):
                continue
            term = build_term(force, device, dtype, default_box)
            key, k = term.name, 1
            while key in self.terms:
                key, k = f"{term.name}[{k}]", k + 1
            self.terms[key] = term
        self.box_vectors = None
        if openmm_system.usesPeriodicBoundaryConditions():
            self.box_vectors = torch.tensor(default_box, dtype=dtype, device=device)
        self.positions = None
        if positions is not None:
            if unit.is_quantity(positions):
                positions = positions.value_in_unit(unit.nanometer)
            positions = np.asarray(positions, dtype=np.float64)
            if positions.shape != (n, 3):
                raise ArgumentError("positions", positions, f"an (N, 3) array in nm with N = {n} atoms", "System",
                                    shown=f"shape {positions.shape}")
            if not np.isfinite(positions).all():
                raise ArgumentError("positions", positions, "finite (nm)", "System", shown="NaN or inf")
            self.positions = torch.as_tensor(positions, dtype=dtype, device=device)

    @property
    def n_atoms(self):
        return self.masses.shape[0]

    @property
    def parameters(self):
        """Per-term parameter tensors, dict key -> dict name -> tensor (the live tensors, not copies)."""
        return {key: term.parameters for key, term in self.terms.items()}

    # ---- construction -------------------------------------------------------------------------------

    @classmethod
    def from_openmm(cls, system, topology=None, positions=None, device=None, dtype=torch.float64):
        """From an openmm.System (positions optional: Quantity or (N, 3) nm). Every force must be supported:
        an unsupported force raises UnsupportedForceError naming it (nothing is silently dropped)."""
        return cls(system, topology, positions, device, dtype)

    @classmethod
    def from_pdb(cls, path, forcefield=("amber14-all.xml", "implicit/obc2.xml"), nonbonded_method="nocutoff",
                 cutoff=1.0, add_hydrogens=False, constraints=None, device=None, dtype=torch.float64,
                 ewald_error_tolerance=0.0005, trust_scripts=False):
        """Read a PDB or PDBx/mmCIF file and parameterize it with OpenMM's ForceField.

        forcefield: XML file names (OpenMM's bundled ones or paths). nonbonded_method: 'nocutoff', 'cutoff'
        (periodic when the file has a box, else non-periodic), 'cutoff_nonperiodic', 'cutoff_periodic' or
        'pme'. cutoff: nm, in [1e-6, 1e6] (periodic: at most half the box's smallest width). constraints: None,
        'hbonds', 'allbonds', 'hangles' (recorded in `openmm_system`; energies are unaffected).
        ewald_error_tolerance: PME's relative accuracy, in (0, 1). device: 'cpu' or an available 'cuda[:k]'.
        dtype: torch.float64 or float32.
        trust_scripts: allow force-field files (other than OpenMM's own) that hold Python code, which OpenMM runs
        (<Script>); refused by default.
        Raises ArgumentError for bad options, StructureError for bad files, UnsafeInputError for force-field
        files with code and ParameterizationError for residues the force field cannot match.
        """
        ff.check_system_options(nonbonded_method, cutoff, constraints, ewald_error_tolerance)
        checks.device(device)
        checks.dtype(dtype)
        topology, positions = read_structure(path)
        system, topology, positions = ff.parameterize(
            topology, positions, forcefield, nonbonded_method=nonbonded_method, cutoff=cutoff,
            add_hydrogens=add_hydrogens, constraints=constraints, ewald_error_tolerance=ewald_error_tolerance,
            trust_scripts=trust_scripts, source=path)
        return cls(system, topology, positions, device, dtype)

    @classmethod
    def from_amber(cls, prmtop, inpcrd=None, nonbonded_method="nocutoff", cutoff=1.0, implicit_solvent=None,
                   constraints=None, device=None, dtype=torch.float64, ewald_error_tolerance=0.0005):
        """From AMBER prmtop (and optional inpcrd/rst7) files through OpenMM's AmberPrmtopFile.

        implicit_solvent: None or an OpenMM model name: 'OBC2' (OpenMM's built-in GBSAOBCForce), 'HCT', 'OBC1',
        'GBn' or 'GBn2' (CustomGBForces). Other options as for `from_pdb`.
        """
        ff.check_system_options(nonbonded_method, cutoff, constraints, ewald_error_tolerance)
        checks.choice("implicit_solvent", implicit_solvent, (None, "OBC2", "HCT", "OBC1", "GBn", "GBn2"))
        checks.device(device)
        checks.dtype(dtype)
        for path in (prmtop, inpcrd):
            if path is not None and not os.path.isfile(path):
                raise StructureError(f"{path}: no such file.")
        try:
            parm = app.AmberPrmtopFile(str(prmtop))
            coordinates = app.AmberInpcrdFile(str(inpcrd)) if inpcrd is not None else None
        except Exception as error:
            raise StructureError(f"could not read AMBER files {prmtop}, {inpcrd}: {one_line(error)}") from error
        topology = parm.topology
        if coordinates is not None and coordinates.boxVectors is not None:
            topology.setPeriodicBoxVectors(coordinates.boxVectors)
        method = ff.resolve_nonbonded_method(nonbonded_method, topology)
        if method in (app.CutoffPeriodic, app.PME):
            ff.check_cutoff_fits_box(cutoff, topology.getPeriodicBoxVectors().value_in_unit(unit.nanometer))
        solvent = getattr(app, implicit_solvent) if implicit_solvent is not None else None
        system = parm.createSystem(nonbondedMethod=method, nonbondedCutoff=cutoff * unit.nanometer,
                                   implicitSolvent=solvent, constraints=ff.CONSTRAINTS[constraints],
                                   ewaldErrorTolerance=ewald_error_tolerance)
        if coordinates is not None and coordinates.boxVectors is not None:
            system.setDefaultPeriodicBoxVectors(*coordinates.boxVectors)
        return cls(system, topology, coordinates.positions if coordinates is not None else None, device, dtype)

    # ---- energies -----------------------------------------------------------------------------------

    def energy_components(self, positions, box_vectors=None, parameters=None):
        """Energy of each force, dict OpenMM force class name -> (...,) kJ/mol (repeats of a class summed).

        positions: (N, 3) or (B, N, 3) nm. box_vectors: (3, 3) or (B, 3, 3) nm, default `self.box_vectors`.
        parameters: optional dict key -> dict name -> tensor overriding entries of `self.parameters`.
        """
        positions = self._check_positions(positions)
        box = self.box_vectors if box_vectors is None else torch.as_tensor(box_vectors, dtype=positions.dtype,
                                                                          device=positions.device)
        parameters = parameters or {}
        components = {}
        for key, term in self.terms.items():
            values = {**term.parameters, **parameters.get(key, {})}
            energy = term.energy(positions, values, box)
            components[term.name] = components[term.name] + energy if term.name in components else energy
        return components

    def energy(self, positions, box_vectors=None, parameters=None):
        """Total potential energy (...,) kJ/mol for positions (N, 3) or (B, N, 3) nm (see energy_components)."""
        positions = self._check_positions(positions)
        components = self.energy_components(positions, box_vectors, parameters)
        if not components:
            return torch.zeros(positions.shape[:-2], dtype=positions.dtype, device=positions.device)
        return sum(components.values())

    def forces(self, positions, box_vectors=None, parameters=None):
        """Forces -dE/dx, same shape as positions, kJ/mol/nm (detached from any graph)."""
        positions = self._check_positions(positions).detach().requires_grad_(True)
        with torch.enable_grad():
            energy = self.energy(positions, box_vectors, parameters)
            (gradient,) = torch.autograd.grad(energy.sum(), positions)
        return -gradient

    def _check_positions(self, positions):
        if not isinstance(positions, torch.Tensor):
            positions = torch.as_tensor(np.asarray(positions), dtype=self.dtype, device=self.device)
        if positions.dim() not in (2, 3) or positions.shape[-2:] != (self.n_atoms, 3):
            raise ValueError(f"positions must have shape (N, 3) or (B, N, 3) with N = {self.n_atoms} atoms (nm); "
                             f"got {tuple(positions.shape)}.")
        return positions

    def __repr__(self):
        return (f"System({self.n_atoms} atoms, terms={list(self.terms)}, device={self.device}, "
                f"dtype={self.dtype})")


def _check_cutoffs(openmm_system, box):
    """Each force's cutoff (where its method uses one; NoCutoff is 0 in every OpenMM force): in [1e-6, 1e6] nm
    (`forcefield.check_cutoff`) and, with periodic boundary conditions, at most half the box's smallest width, as
    OpenMM requires."""
    for force in openmm_system.getForces():
        if not (hasattr(force, "getCutoffDistance") and hasattr(force, "getNonbondedMethod")) or \
                force.getNonbondedMethod() == 0:
            continue
        name = f"{type(force).__name__} cutoff"
        cutoff = ff.check_cutoff(strip(force.getCutoffDistance()), name, "System")
        if force.usesPeriodicBoundaryConditions():
            ff.check_cutoff_fits_box(cutoff, box, name=name, owner="System")


__all__ = ["System"]
