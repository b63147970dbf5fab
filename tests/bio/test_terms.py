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
from bio.terms import pairwise
from bio.terms.gbsa import AmberCustomGBForce, BornIntegral, GBPair, gb_energy
from bio.terms.nonbonded import NonbondedPair
from bio.terms.pairwise import PairCache, PairDistance, PairFunction, PairRows
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
    pairs, r = term.pairs.distances(positions)
    without = gb_energy(r, pairs, **term.parameters, **{**term.settings, "buried_term": False})
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


# ---- fused pair kernels ----------------------------------------------------------------------------------


def _random(generator, *shape, low=0.0, high=1.0):
    return (low + (high - low) * torch.rand(*shape, generator=generator, dtype=torch.float64)).requires_grad_(True)


@pytest.mark.parametrize("neck", [False, True], ids=["hct", "neck"])
@pytest.mark.parametrize("cutoff", [None, 0.6])
def test_born_integral_gradients_pass_gradcheck(neck, cutoff):
    """Both branches of the HCT integral (lower limit or_i or |r - sr_j|, atom i buried or not), the neck
    integral and the cutoff: forward-mode derivatives, parameter gradients and second derivatives."""
    generator = torch.Generator().manual_seed(1)
    r = _random(generator, 2, 16, low=0.05, high=0.8)
    inputs = [r, _random(generator, 16, low=0.05, high=0.2), _random(generator, 16, low=0.05, high=0.3)]
    if neck:
        inputs += [_random(generator, 16, low=0.1, high=0.2), _random(generator, 16, low=0.1, high=0.2),
                   _random(generator, 16, low=0.5, high=3.0), _random(generator, 16, low=0.2, high=0.5)]
    integral = BornIntegral(buried_term=True, neck_scale=0.8 if neck else None, cutoff=cutoff)

    def function(*inputs):
        return PairFunction.apply(integral, *inputs)

    assert torch.autograd.gradcheck(function, inputs)
    assert torch.autograd.gradcheck(function, [r] + [x.detach() for x in inputs[1:]])  # positions-only fast path
    assert torch.autograd.gradgradcheck(function, inputs)


@pytest.mark.parametrize("kappa, cutoff", [(0.0, None), (0.9, 0.8)], ids=["plain", "salt-cutoff"])
def test_gb_pair_gradients_pass_gradcheck(kappa, cutoff):
    generator = torch.Generator().manual_seed(2)
    inputs = [_random(generator, 2, 12, low=0.2, high=1.0), _random(generator, 2, 12, low=0.1, high=0.4),
              _random(generator, 2, 12, low=0.1, high=0.4), _random(generator, 12, low=-50.0, high=50.0)]
    pair = GBPair(1.0, 78.5, kappa, cutoff)

    def function(*inputs):
        return PairFunction.apply(pair, *inputs)

    assert torch.autograd.gradcheck(function, inputs)
    assert torch.autograd.gradcheck(function, inputs[:3] + [inputs[3].detach()])
    assert torch.autograd.gradgradcheck(function, inputs)


@pytest.mark.parametrize("whole", [False, True], ids=["pieces", "whole_arrays"])
@pytest.mark.parametrize("periodic", [False, True, "one image"])
def test_pair_distance_gradients_pass_gradcheck(monkeypatch, periodic, whole):
    if whole:  # as on GPUs: all conformations and pairs at once
        monkeypatch.setattr(pairwise, "_pieces", lambda batch, count, device: [(slice(None), slice(None))])
    generator = torch.Generator().manual_seed(3)
    positions = _random(generator, 2, 6, 3, high=1.5)
    i, j = torch.triu_indices(6, 6, 1)
    shift = None
    if periodic:  # image vectors from a box that requires grad (the virial)
        box = (2.0 * torch.eye(3, dtype=torch.float64) + 0.1 * torch.rand(3, 3, generator=generator,
                                                                           dtype=torch.float64).tril(-1))
        images = torch.randint(-1, 2, (i.numel(), 3), generator=generator).to(torch.float64)
        shift = (images if periodic is True else images[0]) @ box.requires_grad_(True)

    def function(positions, shift):
        return PairDistance.apply(positions, i, j, shift)

    assert torch.autograd.gradcheck(function, (positions, shift))
    assert torch.autograd.gradgradcheck(function, (positions, shift))


def test_chunked_pair_kernels_equal_whole_arrays(monkeypatch, dipeptide):
    """Energies and forces computed piece by piece (as for large systems) equal whole-array evaluation."""
    topology, positions = dipeptide
    system = bio.System.from_openmm(app.ForceField("amber14-all.xml", "implicit/gbn2.xml").createSystem(topology),
                                    topology, positions)
    batch = torch.stack([system.positions, system.positions + 0.01])
    whole = system.energy(batch), system.forces(batch)
    monkeypatch.setattr(pairwise, "CHUNK_ELEMENTS", 16)  # 231 pairs in many pieces
    chunked = system.energy(batch), system.forces(batch)
    torch.testing.assert_close(chunked[0], whole[0], rtol=1e-13, atol=1e-10)
    torch.testing.assert_close(chunked[1], whole[1], rtol=1e-12, atol=1e-10)


def test_pair_cache_follows_parameter_changes():
    """Cached per-pair products are refreshed when a parameter changes and bypassed while one requires grad."""
    system = bio.System.from_pdb(ALANINE_DIPEPTIDE)
    before = system.energy(system.positions)
    calls = []
    cache = PairCache()
    pairs = torch.tensor([[0, 1], [1, 2]])
    charge = torch.tensor([1.0, 2.0, 3.0], dtype=torch.float64)

    def compute():
        calls.append(1)
        return charge.index_select(0, pairs[0]) * charge.index_select(0, pairs[1])

    first = cache(pairs, (charge,), compute)
    assert cache(pairs, (charge,), compute) is first and len(calls) == 1
    charge[0] = 5.0
    assert cache(pairs, (charge,), compute)[0].item() == 10.0 and len(calls) == 2
    assert cache(pairs.clone(), (charge,), compute) is not first and len(calls) == 3  # a rebuilt list
    charge.requires_grad_(True)
    assert cache(pairs, (charge,), compute).requires_grad and len(calls) == 4
    # In a System: in-place parameter edits are seen by the next energy.
    system.parameters["CustomGBForce"]["charge"][3] += 0.2
    system.parameters["NonbondedForce"]["sigma"][5] *= 1.1
    after = system.energy(system.positions)
    reference, _ = openmm_reference(system.openmm_system, system.positions.numpy())
    assert abs(before.item() - sum(reference.values())) < 1e-4 and abs(after.item() - before.item()) > 1e-2


_PAIRS = {"ewald-switch": dict(cutoff=0.9, switch_distance=0.7, alpha=3.0), "ewald": dict(cutoff=0.9, alpha=3.0),
          "reaction-field": dict(cutoff=0.9, reaction_field=(0.3, 1.2)), "no-cutoff": {}}


@pytest.mark.parametrize("lennard_jones", [True, False], ids=["lj", "coulomb"])
@pytest.mark.parametrize("kind", list(_PAIRS))
@pytest.mark.parametrize("periodic", [False, True])
def test_pair_rows_energy_and_forces_equal_autograd_of_the_pair_value(monkeypatch, periodic, kind, lennard_jones):
    """PairRows (rows of partners, ghost atoms for periodic images, padded pieces) gives the energy of
    NonbondedPair.value over the pairs and, with its forces computed in forward (energy_and_force), autograd's
    gradient of it; in pieces of a few entries and in one piece (as on GPUs), batched, and to second order."""
    generator = torch.Generator().manual_seed(4)
    corners = torch.cartesian_prod(*[torch.tensor([0.0, 0.6], dtype=torch.float64)] * 3)[:7]  # 0.6-1.04 nm apart
    positions = corners + 0.1 * _random(generator, 2, 7, 3)  # some pairs beyond the cutoff
    i, j = torch.triu_indices(7, 7, 1)
    box, images = None, None
    if periodic:
        box = (1.4 * torch.eye(3, dtype=torch.float64) + 0.1 * torch.rand(3, 3, generator=generator,
                                                                           dtype=torch.float64).tril(-1))
        images = torch.randint(-1, 2, (i.numel(), 3), generator=generator).to(torch.float64)
        positions = positions[:1]  # images are per list, for one conformation
    qq, sigma, epsilon = (_random(generator, i.numel(), low=low, high=high).detach()
                          for low, high in ((-50.0, 50.0), (0.2, 0.35), (0.1, 1.0)))
    parameters = (qq, sigma, epsilon) if lennard_jones else (qq,)
    pair = NonbondedPair(**_PAIRS[kind])

    def expected(positions, box):
        d = positions[..., j, :] - positions[..., i, :]
        r = torch.linalg.vector_norm(d if box is None else d + images @ box, dim=-1)
        return pair.value(r, *parameters).sum(-1)

    x = positions.detach().requires_grad_(True)
    reference = expected(x, box)
    (reference_gradient,) = torch.autograd.grad(reference.sum(), x)
    for chunk in (5, 1 << 15):
        monkeypatch.setattr(pairwise, "CHUNK_ELEMENTS", chunk)
        rows = PairRows(i, j, images, 7, parameters)
        assert (len(rows.pieces) > 1) == (chunk == 5) and (rows.ghost_images is not None) == periodic
        energy = rows.energy(pair, x, box)
        assert type(energy.grad_fn).__name__ == "_RowsEnergyBackward"
        (gradient,) = torch.autograd.grad(energy.sum(), x)
        torch.testing.assert_close(energy, reference, rtol=1e-13, atol=1e-10)
        torch.testing.assert_close(gradient, reference_gradient, rtol=1e-12, atol=1e-10)
    assert torch.autograd.gradcheck(lambda x: rows.energy(pair, x, box), (x,))
    assert torch.autograd.gradgradcheck(lambda x: rows.energy(pair, x, box), (x,))
    if periodic:  # box gradients (the virial) through the ghosts' image vectors
        box = box.clone().requires_grad_(True)
        (box_gradient,) = torch.autograd.grad(rows.energy(pair, x, box).sum(), box)
        (reference_box_gradient,) = torch.autograd.grad(expected(x, box).sum(), box)
        torch.testing.assert_close(box_gradient, reference_box_gradient, rtol=1e-12, atol=1e-10)
