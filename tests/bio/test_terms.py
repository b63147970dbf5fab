"""Individual energy terms against OpenMM's Reference platform (built-in GBSAOBCForce, switching, triclinic
boxes), and parameter gradients against central finite differences of OpenMM's own energies."""

import numpy as np
import openmm
import openmm.app as app
import openmm.unit as unit
import pytest
import torch
from openmm.app.internal.customgbforces import GBSAOBC2Force

import bio
from bio.terms import geometry
from bio.terms.gbsa import AmberCustomGBForce, gb_energy
from bio.terms.units import strip
from bio_reference import ALANINE_DIPEPTIDE, assert_matches_openmm, openmm_reference


def _with_builtin_obc(topology, method=app.NoCutoff, cutoff=1.0):
    """amber14 with OpenMM's built-in GBSAOBCForce, parameterized as OpenMM's AMBER prmtop reader does."""
    system = app.ForceField("amber14-all.xml").createSystem(topology, nonbondedMethod=method,
                                                            nonbondedCutoff=cutoff * unit.nanometer)
    nonbonded = next(f for f in system.getForces() if isinstance(f, openmm.NonbondedForce))
    gb = openmm.GBSAOBCForce()
    for atom, (radius, scale) in enumerate(GBSAOBC2Force.getStandardParameters(topology)):
        gb.addParticle(nonbonded.getParticleParameters(atom)[0], radius, scale)
    if method != app.NoCutoff:
        gb.setNonbondedMethod(openmm.GBSAOBCForce.CutoffNonPeriodic)
        gb.setCutoffDistance(cutoff)
    system.addForce(gb)
    return system


def test_builtin_gbsaobc_on_villin(villin, device):
    topology, positions = villin
    system = bio.System.from_openmm(_with_builtin_obc(topology), topology, positions, device=device)
    assert "GBSAOBCForce" in system.terms
    assert_matches_openmm(system)


def test_builtin_gbsaobc_with_cutoff(dipeptide, device):
    topology, positions = dipeptide
    system = _with_builtin_obc(topology, app.CutoffNonPeriodic, cutoff=0.5)
    assert_matches_openmm(bio.System.from_openmm(system, topology, positions, device=device))


def test_builtin_gbsaobc_atom_buried_in_a_scaled_sphere(device):
    """Tinker's correction for an atom inside another's scaled sphere, which only the built-in force has."""
    system = openmm.System()
    gb = openmm.GBSAOBCForce()
    for charge, radius, scale in [(0.5, 0.15, 0.8), (-0.3, 0.05, 0.8), (-0.2, 0.12, 0.7)]:
        system.addParticle(12.0)
        gb.addParticle(charge, radius, scale)
    system.addForce(gb)
    positions = torch.tensor([[0.0, 0.0, 0.0], [0.05, 0.0, 0.0], [0.02, 0.25, 0.03]], dtype=torch.float64,
                             device=device)
    ours = bio.System.from_openmm(system, positions=positions.cpu().numpy(), device=device)
    assert_matches_openmm(ours, positions)
    term = ours.terms["GBSAOBCForce"]
    without = gb_energy(positions, term.pairs(positions), **term.parameters, **{**term.settings, "buried_term": False})
    assert abs(without.item() - ours.energy(positions).item()) > 1e-3  # the test exercises the correction


def test_switching_function(water_box, device):
    topology, positions = water_box
    system = app.ForceField("amber14-all.xml", "amber14/tip3p.xml").createSystem(
        topology, nonbondedMethod=app.CutoffPeriodic, nonbondedCutoff=0.6 * unit.nanometer,
        switchDistance=0.5 * unit.nanometer)
    nonbonded = next(f for f in system.getForces() if isinstance(f, openmm.NonbondedForce))
    assert nonbonded.getUseSwitchingFunction()
    nonbonded.setUseDispersionCorrection(False)
    assert_matches_openmm(bio.System.from_openmm(system, topology, positions, device=device))


def test_triclinic_box_minimum_image(dipeptide, device):
    forcefield = app.ForceField("amber14-all.xml", "amber14/tip3p.xml")
    modeller = app.Modeller(*dipeptide)
    modeller.addSolvent(forcefield, padding=0.7 * unit.nanometer, boxShape="dodecahedron")
    a, b, c = modeller.topology.getPeriodicBoxVectors().value_in_unit(unit.nanometer)
    assert b[0] != 0 or c[0] != 0  # really triclinic
    system = forcefield.createSystem(modeller.topology, nonbondedMethod=app.CutoffPeriodic,
                                     nonbondedCutoff=0.5 * unit.nanometer)
    assert_matches_openmm(bio.System.from_openmm(system, modeller.topology, modeller.positions, device=device))


def test_custom_gb_force_is_recognised_with_salt_and_without_surface_term(dipeptide):
    topology, positions = dipeptide
    forcefield = app.ForceField("amber14-all.xml", "implicit/obc2.xml")
    system = forcefield.createSystem(topology, implicitSolventKappa=1.0 / unit.nanometer, sasaMethod=None,
                                     soluteDielectric=2.0, solventDielectric=80.0)
    gb = next(f for f in system.getForces() if isinstance(f, openmm.CustomGBForce))
    assert AmberCustomGBForce.settings_of(gb) == ("OBC2", dict(solventDielectric=80.0, soluteDielectric=2.0,
                                                               kappa=1.0, cutoff=None, SA=None))
    assert_matches_openmm(bio.System.from_openmm(system, topology, positions))


# ---- parameter gradients -------------------------------------------------------------------------------


def _openmm_energy(system, positions):
    context = openmm.Context(system, openmm.VerletIntegrator(1.0), openmm.Platform.getPlatformByName("Reference"))
    context.setPositions(positions)
    return context, lambda: context.getState(getEnergy=True).getPotentialEnergy().value_in_unit(
        unit.kilojoule_per_mole)


def _central_difference(context, energy, force, set_value, h):
    set_value(+h)
    force.updateParametersInContext(context)
    plus = energy()
    set_value(-h)
    force.updateParametersInContext(context)
    minus = energy()
    set_value(0.0)
    force.updateParametersInContext(context)
    return (plus - minus) / (2 * h)


def test_parameter_gradients_match_openmm_finite_differences(dipeptide):
    """d E / d (charge, sigma, epsilon, bond k, GB radius, GB scale) by autograd vs central differences of
    OpenMM's energy with the parameter changed in its System."""
    topology, positions = dipeptide
    openmm_system = app.ForceField("amber14-all.xml", "implicit/obc2.xml").createSystem(topology)
    ours = bio.System.from_openmm(openmm_system, topology, positions)
    forces = {type(f).__name__: f for f in openmm_system.getForces()}
    nonbonded, bonds, gb = forces["NonbondedForce"], forces["HarmonicBondForce"], forces["CustomGBForce"]
    context, energy = _openmm_energy(openmm_system, ours.positions.numpy())

    atom, bond = 8, 3  # ALA CA (non-zero sigma, epsilon) and one bond
    q, sigma, epsilon = [v.value_in_unit_system(unit.md_unit_system) for v in nonbonded.getParticleParameters(atom)]
    b_i, b_j, length, k = [strip(v) for v in bonds.getBondParameters(bond)]
    gq, g_or, g_sr = gb.getParticleParameters(atom)
    cases = {
        ("NonbondedForce", "charge"): (nonbonded, lambda d: nonbonded.setParticleParameters(atom, q + d, sigma,
                                                                                            epsilon), 1e-4),
        ("NonbondedForce", "sigma"): (nonbonded, lambda d: nonbonded.setParticleParameters(atom, q, sigma + d,
                                                                                           epsilon), 1e-5),
        ("NonbondedForce", "epsilon"): (nonbonded, lambda d: nonbonded.setParticleParameters(atom, q, sigma,
                                                                                             epsilon + d), 1e-4),
        ("HarmonicBondForce", "k"): (bonds, lambda d: bonds.setBondParameters(bond, b_i, b_j, length, k + d), 1.0),
        ("CustomGBForce", "radius"): (gb, lambda d: gb.setParticleParameters(atom, [gq, g_or + d,
                                                                                    g_sr + d * g_sr / g_or]), 1e-5),
        ("CustomGBForce", "scale"): (gb, lambda d: gb.setParticleParameters(atom, [gq, g_or, g_sr + d * g_or]), 1e-4),
    }
    for (key, name), (force, set_value, h) in cases.items():
        parameter = ours.parameters[key][name]
        parameter.requires_grad_(True)
        (gradient,) = torch.autograd.grad(ours.energy(ours.positions), parameter)
        parameter.requires_grad_(False)
        index = bond if key == "HarmonicBondForce" else atom
        expected = _central_difference(context, energy, force, set_value, h)
        assert abs(gradient[index].item() - expected) <= 1e-5 * abs(expected) + 1e-5, (key, name, expected)


def test_cmap_map_gradient_matches_openmm_finite_differences(charmm_dipeptide):
    openmm_system, topology, positions = charmm_dipeptide
    ours = bio.System.from_openmm(openmm_system, topology, positions)
    cmap = next(f for f in openmm_system.getForces() if isinstance(f, openmm.CMAPTorsionForce))
    maps = ours.parameters["CMAPTorsionForce"]["maps"].requires_grad_(True)
    (gradient,) = torch.autograd.grad(ours.energy(ours.positions), maps)
    maps.requires_grad_(False)
    context, energy = _openmm_energy(openmm_system, ours.positions.numpy())
    used = int(ours.terms["CMAPTorsionForce"].map_index[0])
    size, grid = cmap.getMapParameters(used)
    grid = np.asarray(grid.value_in_unit(unit.kilojoule_per_mole))
    i, j = np.unravel_index(np.argmax(np.abs(gradient[used].numpy())), (size, size))

    def set_value(d):
        changed = grid.copy()
        changed[i + size * j] += d
        cmap.setMapParameters(used, size, changed)

    expected = _central_difference(context, energy, cmap, set_value, 1e-3)
    assert abs(expected) > 1e-3
    assert abs(gradient[used, i, j].item() - expected) <= 1e-6 * abs(expected) + 1e-7


def test_parameters_override_matches_in_place_change():
    system = bio.System.from_pdb(ALANINE_DIPEPTIDE)
    charges = system.parameters["NonbondedForce"]["charge"] * 1.1
    override = system.energy(system.positions, parameters={"NonbondedForce": {"charge": charges}})
    system.parameters["NonbondedForce"]["charge"].mul_(1.1)
    assert torch.allclose(override, system.energy(system.positions), rtol=1e-13)
    reference, _ = openmm_reference(system.openmm_system, system.positions.numpy())
    assert abs(override.item() - sum(reference.values())) > 1.0  # the charges really changed


@pytest.mark.parametrize("name", ["distance", "angle", "dihedral"])
def test_geometry_keeps_batch_dimensions(name):
    positions = torch.randn(5, 7, 3, dtype=torch.float64)
    atoms = [torch.tensor([0, 1]), torch.tensor([2, 3]), torch.tensor([4, 5]), torch.tensor([6, 0])]
    count = {"distance": 2, "angle": 3, "dihedral": 4}[name]
    batched = getattr(geometry, name)(positions, *atoms[:count])
    single = torch.stack([getattr(geometry, name)(p, *atoms[:count]) for p in positions])
    assert batched.shape == (5, 2)
    torch.testing.assert_close(batched, single)
