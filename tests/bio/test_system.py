"""bio.System against OpenMM's Reference platform: every energy component and the forces, for proteins in
implicit solvent, CHARMM36 (CMAP) and a periodic water box; batching; construction paths and errors."""

import numpy as np
import openmm
import openmm.app as app
import openmm.unit as unit
import pytest
import torch

import bio
from bio_reference import ALANINE_DIPEPTIDE, assert_matches_openmm, openmm_reference, perturbed

OBC2 = app.ForceField("amber14-all.xml", "implicit/obc2.xml")


@pytest.mark.parametrize("method", [app.NoCutoff, app.CutoffNonPeriodic], ids=["nocutoff", "cutoff"])
def test_villin_amber14_obc2_matches_openmm(villin, method, device):
    topology, positions = villin
    system = OBC2.createSystem(topology, nonbondedMethod=method, nonbondedCutoff=1.0 * unit.nanometer)
    ours = bio.System.from_openmm(system, topology, positions, device=device)
    assert ours.n_atoms == 582
    assert set(ours.terms) == {"HarmonicBondForce", "HarmonicAngleForce", "PeriodicTorsionForce",
                               "NonbondedForce", "CustomGBForce"}
    assert_matches_openmm(ours)


def test_alanine_dipeptide_amber14_from_pdb(device):
    system = bio.System.from_pdb(ALANINE_DIPEPTIDE, device=device)
    assert system.positions.device.type == device.type and system.positions.dtype == torch.float64
    assert_matches_openmm(system)


def test_alanine_dipeptide_charmm36_with_cmap(charmm_dipeptide, device):
    openmm_system, topology, positions = charmm_dipeptide
    system = bio.System.from_openmm(openmm_system, topology, positions, device=device)
    assert {"CMAPTorsionForce", "CustomTorsionForce", "CustomNonbondedForce", "CustomBondForce"} <= set(system.terms)
    assert_matches_openmm(system)
    # CMAP patches are picked by the angles: check several conformations, not only the input one.
    for conformation in perturbed(system.positions, 3, scale=0.03):
        assert_matches_openmm(system, conformation.to(device))


def test_water_box_reaction_field_matches_openmm(water_box, device):
    topology, positions = water_box
    forcefield = app.ForceField("amber14-all.xml", "amber14/tip3p.xml")
    openmm_system = forcefield.createSystem(topology, nonbondedMethod=app.CutoffPeriodic,
                                            nonbondedCutoff=0.6 * unit.nanometer)
    nonbonded = next(f for f in openmm_system.getForces() if isinstance(f, openmm.NonbondedForce))
    assert nonbonded.getUseDispersionCorrection() and nonbonded.getReactionFieldDielectric() == 78.3
    system = bio.System.from_openmm(openmm_system, topology, positions, device=device)
    assert system.box_vectors is not None
    assert_matches_openmm(system)
    # Wrapped coordinates exercise the minimum image; a box passed per call overrides the default.
    box = system.box_vectors
    wrapped = system.positions - torch.floor(system.positions / box.diagonal()) * box.diagonal()
    assert_matches_openmm(system, wrapped)
    assert_matches_openmm(system, system.positions, box * 1.02)


def test_from_pdb_cutoff_with_box_is_periodic(tmp_path):
    box_pdb = tmp_path / "boxed.pdb"
    with open(ALANINE_DIPEPTIDE) as source:
        box_pdb.write_text("CRYST1   30.000   30.000   30.000  90.00  90.00  90.00 P 1           1\n" + source.read())
    periodic = bio.System.from_pdb(box_pdb, nonbonded_method="cutoff", cutoff=1.0)
    assert periodic.terms["NonbondedForce"].method == "cutoff_periodic"
    assert periodic.terms["CustomGBForce"].periodic
    assert_matches_openmm(periodic)
    plain = bio.System.from_pdb(ALANINE_DIPEPTIDE, nonbonded_method="cutoff", cutoff=1.0)
    assert plain.terms["NonbondedForce"].method == "cutoff_nonperiodic" and plain.box_vectors is None


def test_add_hydrogens_from_heavy_atoms(tmp_path):
    heavy = tmp_path / "heavy.pdb"
    with open(ALANINE_DIPEPTIDE) as source:
        heavy.write_text("".join(line for line in source if not (line.startswith("ATOM") and line[76:78] == " H")))
    with pytest.raises(bio.ParameterizationError):
        bio.System.from_pdb(heavy)
    system = bio.System.from_pdb(heavy, add_hydrogens=True)
    assert system.n_atoms == 22
    assert_matches_openmm(system)


def test_batched_energies_equal_the_loop(device):
    system = bio.System.from_pdb(ALANINE_DIPEPTIDE, device=device)
    batch = perturbed(system.positions, 4).to(device)
    energies = system.energy(batch)
    assert energies.shape == (4,)
    loop = torch.stack([system.energy(x) for x in batch])
    torch.testing.assert_close(energies, loop, rtol=1e-12, atol=1e-9)
    forces = system.forces(batch)
    torch.testing.assert_close(forces, torch.stack([system.forces(x) for x in batch]), rtol=1e-10, atol=1e-8)
    components = system.energy_components(batch)
    assert all(value.shape == (4,) for value in components.values())


def test_batched_periodic_energies_with_batched_boxes(water_box):
    topology, positions = water_box
    openmm_system = app.ForceField("amber14-all.xml", "amber14/tip3p.xml").createSystem(
        topology, nonbondedMethod=app.CutoffPeriodic, nonbondedCutoff=0.6 * unit.nanometer)
    system = bio.System.from_openmm(openmm_system, topology, positions)
    batch = perturbed(system.positions, 3, scale=0.005)
    boxes = system.box_vectors * torch.tensor([1.0, 1.01, 1.02], dtype=torch.float64)[:, None, None]
    energies = system.energy(batch, boxes)
    loop = torch.stack([system.energy(x, b) for x, b in zip(batch, boxes)])
    torch.testing.assert_close(energies, loop, rtol=1e-12, atol=1e-8)
    reference, _ = openmm_reference(openmm_system, batch[2].numpy(), boxes[2].numpy())
    assert abs(energies[2].item() - sum(reference.values())) <= 1e-6 * abs(sum(reference.values())) + 1e-4


def test_float32_energies_close_to_float64():
    system64 = bio.System.from_pdb(ALANINE_DIPEPTIDE)
    system32 = bio.System.from_pdb(ALANINE_DIPEPTIDE, dtype=torch.float32)
    assert system32.energy(system32.positions).dtype == torch.float32
    assert abs(system32.energy(system32.positions).item() - system64.energy(system64.positions).item()) < 1e-2


# ---- errors --------------------------------------------------------------------------------------------


def _rewrite(tmp_path, name, edit):
    with open(ALANINE_DIPEPTIDE) as source:
        lines = source.read().splitlines(keepends=True)
    path = tmp_path / name
    path.write_text("".join(edit(lines)))
    return path


def test_unknown_residue_names_residue_closest_template_and_fix(tmp_path):
    path = _rewrite(tmp_path, "unknown.pdb", lambda lines: [l.replace("ALA A   2", "XYZ A   2") for l in lines])
    with pytest.raises(bio.ParameterizationError) as error:
        bio.System.from_pdb(path)
    message = str(error.value)
    assert "XYZ 2" in message and "chain A" in message
    assert "closest template is ALA" in message
    assert "add hydrogens" in message and "template" in message


def test_missing_atoms_name_what_is_missing(tmp_path):
    path = _rewrite(tmp_path, "missing.pdb", lambda lines: [l for l in lines if " HB1 " not in l])
    with pytest.raises(bio.ParameterizationError, match=r"ALA 2 .*closest template is ALA \(missing 1 H\)"):
        bio.System.from_pdb(path)


def test_truncated_file_is_a_structure_error(tmp_path):
    path = _rewrite(tmp_path, "truncated.pdb", lambda lines: lines[:12] + [lines[12][:40]])
    with pytest.raises(bio.StructureError, match="line 13: truncated ATOM record"):
        bio.System.from_pdb(path)


def test_nan_coordinates_are_a_structure_error(tmp_path):
    path = _rewrite(tmp_path, "nan.pdb", lambda lines: [l[:30] + "     nan" + l[38:] if " CB " in l else l
                                                         for l in lines])
    with pytest.raises(bio.StructureError, match="non-finite coordinates for atom CB of residue ALA 2"):
        bio.System.from_pdb(path)


def test_missing_or_empty_files_are_structure_errors(tmp_path):
    with pytest.raises(bio.StructureError, match="no such file"):
        bio.System.from_pdb(tmp_path / "absent.pdb")
    (tmp_path / "empty.pdb").write_text("END\n")
    with pytest.raises(bio.StructureError, match="no atoms"):
        bio.System.from_pdb(tmp_path / "empty.pdb")


def test_unsupported_forces_are_named_never_dropped(dipeptide, water_box):
    topology, positions = dipeptide
    system = OBC2.createSystem(topology)
    system.addForce(openmm.CustomExternalForce("x^2"))
    with pytest.raises(bio.UnsupportedForceError, match="CustomExternalForce"):
        bio.System.from_openmm(system)
    custom = openmm.CustomBondForce("k*r^4")
    custom.addPerBondParameter("k")
    system = OBC2.createSystem(topology)
    system.addForce(custom)
    with pytest.raises(bio.UnsupportedForceError, match=r"CustomBondForce .*'k\*r\^4'"):
        bio.System.from_openmm(system)
    ewald = app.ForceField("amber14-all.xml", "amber14/tip3p.xml").createSystem(
        water_box[0], nonbondedMethod=app.Ewald, nonbondedCutoff=0.6 * unit.nanometer)
    with pytest.raises(bio.UnsupportedForceError, match="NonbondedForce: nonbonded method Ewald"):
        bio.System.from_openmm(ewald)


def test_unrecognised_custom_gb_force_is_an_error(dipeptide):
    topology, positions = dipeptide
    system = OBC2.createSystem(topology)
    gb = next(f for f in system.getForces() if isinstance(f, openmm.CustomGBForce))
    name, expression, kind = gb.getComputedValueParameters(1)
    gb.setComputedValueParameters(1, name, expression.replace("4.85", "4.9"), kind)  # not OpenMM's OBC2
    with pytest.raises(bio.UnsupportedForceError, match="CustomGBForce .*HCT/OBC1/OBC2/GBn/GBn2"):
        bio.System.from_openmm(system)


def test_bad_positions_shape_is_explained():
    system = bio.System.from_pdb(ALANINE_DIPEPTIDE)
    with pytest.raises(ValueError, match=r"\(N, 3\) or \(B, N, 3\) with N = 22"):
        system.energy(torch.zeros(21, 3, dtype=torch.float64))
    assert np.isfinite(system.energy(system.positions.numpy()).item())


def test_openmm_energy_components_are_openmms_per_force_energies():
    """bio.openmm_energy_components (the OpenMM side of a parity table) against the tests' own reference, for
    every way of passing positions."""
    system = bio.System.from_pdb(ALANINE_DIPEPTIDE)
    reference, _ = openmm_reference(system.openmm_system, system.positions.numpy())
    reference.pop("CMMotionRemover", None)
    quantity = system.positions.numpy() * unit.nanometer
    for positions in (system.positions, system.positions.numpy(), quantity):
        assert bio.openmm_energy_components(system.openmm_system, positions) == pytest.approx(reference, rel=1e-12)
