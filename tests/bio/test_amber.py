"""bio.System.from_amber against OpenMM's AmberPrmtopFile.createSystem on the Reference platform: T4 lysozyme
L99A with p-xylene (openmmtools' AMBER files, 2,621 atoms) in OBC2 and GBn2 implicit solvent, the other GB models
on alanine dipeptide, and a TIP3P water box with PME.

The files are located without importing openmmtools: importing it imports pymbar, which switches JAX to 64-bit
mode for the whole test process.
"""

import importlib.util
import os

import openmm.app as app
import openmm.unit as unit
import pytest

import bio
from bio_reference import assert_matches_openmm

_SPEC = importlib.util.find_spec("openmmtools")
pytestmark = [pytest.mark.skipif(_SPEC is None, reason="openmmtools (the test extra) ships the AMBER files"),
              # mbondi2 radii with HCT/GBn/GBn2: not the radii those models were fitted with, still OpenMM's system
              pytest.mark.filterwarnings("ignore:Non-optimal GB parameters")]
DATA = os.path.join(_SPEC.submodule_search_locations[0], "data") if _SPEC is not None else ""
T4 = os.path.join(DATA, "T4-lysozyme-L99A-implicit")
DIPEPTIDE = os.path.join(DATA, "alanine-dipeptide-gbsa")
DIPEPTIDE_IN_WATER = os.path.join(DATA, "alanine-dipeptide-explicit")


def _openmm_system(prmtop, **options):
    """OpenMM's own System for the prmtop, built here as users build it."""
    return app.AmberPrmtopFile(prmtop).createSystem(**options)


def _same_forces(ours, reference):
    assert [type(f).__name__ for f in ours.getForces()] == [type(f).__name__ for f in reference.getForces()]


@pytest.mark.parametrize("solvent", ["OBC2", "GBn2"])
def test_t4_lysozyme_implicit_solvent_matches_openmm(solvent):
    prmtop = os.path.join(T4, "complex.prmtop")
    system = bio.System.from_amber(prmtop, os.path.join(T4, "complex.crd"), implicit_solvent=solvent)
    assert system.n_atoms == 2621
    expected = "GBSAOBCForce" if solvent == "OBC2" else "CustomGBForce"  # OBC2: OpenMM's built-in force
    assert expected in system.terms
    if solvent == "GBn2":
        assert system.terms["CustomGBForce"].model == "GBn2"
    _same_forces(system.openmm_system, _openmm_system(prmtop, implicitSolvent=getattr(app, solvent)))
    assert_matches_openmm(system)


@pytest.mark.parametrize("solvent", ["HCT", "OBC1", "GBn"])
def test_other_gb_models_on_alanine_dipeptide_match_openmm(solvent, device):
    system = bio.System.from_amber(os.path.join(DIPEPTIDE, "alanine-dipeptide.prmtop"),
                                   os.path.join(DIPEPTIDE, "alanine-dipeptide.crd"), implicit_solvent=solvent,
                                   device=device)
    assert system.terms["CustomGBForce"].model == solvent
    assert_matches_openmm(system)


def test_water_box_with_pme_matches_openmm(device):
    """Alanine dipeptide in 2,269 atoms of TIP3P water, PME with a 1 nm cutoff and the box from the files.

    (openmmtools' waterbox/watbox216.prmtop is not used: its box angles are stored as 5156.6 degrees, 90 radians
    written as degrees, so OpenMM reads a box in which the water molecules overlap.)
    """
    prmtop = os.path.join(DIPEPTIDE_IN_WATER, "alanine-dipeptide.prmtop")
    system = bio.System.from_amber(prmtop, os.path.join(DIPEPTIDE_IN_WATER, "alanine-dipeptide.crd"),
                                   nonbonded_method="pme", cutoff=1.0, device=device)
    assert system.n_atoms == 2269 and system.terms["NonbondedForce"].method == "pme"
    assert system.box_vectors is not None
    _same_forces(system.openmm_system, _openmm_system(prmtop, nonbondedMethod=app.PME,
                                                      nonbondedCutoff=1.0 * unit.nanometer))
    assert_matches_openmm(system)


def test_missing_amber_files_are_structure_errors(tmp_path):
    with pytest.raises(bio.StructureError, match="no such file"):
        bio.System.from_amber(tmp_path / "absent.prmtop")
    (tmp_path / "bad.prmtop").write_text("%VERSION nonsense\n")
    with pytest.raises(bio.StructureError, match="could not read AMBER files"):
        bio.System.from_amber(tmp_path / "bad.prmtop")
