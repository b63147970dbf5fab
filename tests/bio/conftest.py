"""Test systems for bio (built once per session)."""

import openmm.app as app
import openmm.unit as unit
import pytest

from bio_reference import ALANINE_DIPEPTIDE, VILLIN_IN_WATER

# OpenMM atom names of the capped dipeptide mapped onto the single CHARMM residue ALAD (cap atoms renamed).
_CHARMM_NAMES = {("ACE", "CH3"): "CL", ("ACE", "HH31"): "HL1", ("ACE", "HH32"): "HL2", ("ACE", "HH33"): "HL3",
                 ("ACE", "C"): "CLP", ("ACE", "O"): "OL", ("ALA", "N"): "NL", ("ALA", "H"): "HL",
                 ("ALA", "C"): "CRP", ("ALA", "O"): "OR", ("NME", "N"): "NR", ("NME", "H"): "HR",
                 ("NME", "CH3"): "CR", ("NME", "HH31"): "HR1", ("NME", "HH32"): "HR2", ("NME", "HH33"): "HR3"}


@pytest.fixture(scope="session")
def villin():
    """Villin headpiece from OpenMM's test.pdb with water and ions removed: (topology, positions), 582 atoms."""
    pdb = app.PDBFile(VILLIN_IN_WATER)
    modeller = app.Modeller(pdb.topology, pdb.positions)
    modeller.deleteWater()
    modeller.delete([residue for residue in modeller.topology.residues() if len(residue) == 1])  # Cl- ions
    return modeller.topology, modeller.positions


@pytest.fixture(scope="session")
def dipeptide():
    pdb = app.PDBFile(ALANINE_DIPEPTIDE)
    return pdb.topology, pdb.positions


@pytest.fixture(scope="session")
def charmm_dipeptide(dipeptide):
    """Alanine dipeptide as CHARMM36's single residue ALAD: (openmm.System, topology, positions)."""
    source, positions = dipeptide
    topology = app.Topology()
    residue = topology.addResidue("ALAD", topology.addChain())
    atoms = {atom: topology.addAtom(_CHARMM_NAMES.get((atom.residue.name, atom.name), atom.name), atom.element,
                                    residue) for atom in source.atoms()}
    for a, b in source.bonds():
        topology.addBond(atoms[a], atoms[b])
    system = app.ForceField("charmm36.xml").createSystem(topology, residueTemplates={residue: "ALAD"})
    return system, topology, positions


@pytest.fixture(scope="session")
def water_box(dipeptide):
    """Alanine dipeptide in a small TIP3P box (cube, 0.6 nm padding): (topology, positions)."""
    forcefield = app.ForceField("amber14-all.xml", "amber14/tip3p.xml")
    modeller = app.Modeller(*dipeptide)
    modeller.addSolvent(forcefield, padding=0.6 * unit.nanometer)
    return modeller.topology, modeller.positions

